/* store-catalog.c: the installs catalog's SQL and the requests by name still waiting for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "store-int.h"
#include "util.h"

enum cstmt {
	C_LOAD, C_FETCHED_GET, C_FETCHED_PUT, C_UPSERT, C_DELETE_OLD, C_PURGED,
	C_HELD_LOAD, C_HELD_RESOLVE, C_HELD_FAIL, C_COUNT
};

_Static_assert(C_COUNT == STORE_CAT_STMTS, "STORE_CAT_STMTS: its statements and struct store's array");

static const char *cstmt_sql[C_COUNT] = {
	[C_LOAD] = "SELECT id, name, environment, primary_domain, account_id, last_purge"
	    " FROM installs ORDER BY name",
	[C_FETCHED_GET] = "SELECT value FROM meta WHERE key = 'catalog_fetched_at'",
	[C_FETCHED_PUT] = "INSERT OR REPLACE INTO meta (key, value)"
	    " VALUES ('catalog_fetched_at', ?1)",
	[C_UPSERT] = "INSERT INTO installs (id, name, environment, primary_domain, account_id,"
	    " fetched_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET"
	    " name = excluded.name, environment = excluded.environment,"
	    " primary_domain = excluded.primary_domain, account_id = excluded.account_id,"
	    " fetched_at = excluded.fetched_at",
	[C_DELETE_OLD] = "DELETE FROM installs WHERE fetched_at <> ?1",
	[C_PURGED] = "UPDATE installs SET last_purge = ?2 WHERE id = ?1",
	[C_HELD_LOAD] = "SELECT id, name, type, uid, pid, enqueued_at, who FROM requests"
	    " WHERE state = 'queued' AND job = 0 ORDER BY id",
	[C_HELD_RESOLVE] = "UPDATE requests SET job = ?2, install = ?3, coalesced = ?4"
	    " WHERE id = ?1 AND state = 'queued' AND job = 0",
	[C_HELD_FAIL] = "UPDATE requests SET state = 'failed', error = ?2, finished_at = ?3"
	    " WHERE id = ?1 AND state = 'queued' AND job = 0",
};

int
store_catalog_prepare(struct store *st, const char *path, char **cause)
{
	return store_prepare_set(st, st->cst, cstmt_sql, C_COUNT, "catalog ", path,
	    cause);
}

int
store_catalog_load(struct store *st, struct catalog *c)
{
	sqlite3_stmt *s = store_stmt(st->cst[C_FETCHED_GET]);
	struct catalog_entry e;
	int rc;

	catalog_clear(c);
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		c->fetched_at = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto fail;
	s = store_stmt(st->cst[C_LOAD]);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(&e, 0, sizeof e);
		store_copy_text(e.id, sizeof e.id, sqlite3_column_text(s, 0));
		store_copy_text(e.name, sizeof e.name, sqlite3_column_text(s, 1));
		store_copy_text(e.environment, sizeof e.environment, sqlite3_column_text(s, 2));
		if (sqlite3_column_text(s, 3) != NULL)
			e.domain = (char *)sqlite3_column_text(s, 3);
		store_copy_text(e.account, sizeof e.account, sqlite3_column_text(s, 4));
		e.last_purge = sqlite3_column_int64(s, 5);
		/* The store is ours, but a damaged row must not become a path or a name. */
		if (!uuid_valid(e.id) || !install_name_valid(e.name) || catalog_add(c, &e) != 0)
			log_warn("database: catalog row %.36s is not a valid install; skipped",
			    e.id);
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		goto fail;
	return 0;
fail:
	log_error("database: loading the installs catalog: %s", sqlite3_errmsg(st->db));
	catalog_clear(c);
	return -1;
}

int
store_catalog_replace(struct store *st, const struct catalog *c)
{
	sqlite3_stmt *s;
	const struct catalog_entry *e;
	size_t i;

	for (i = 0; i < catalog_len(c); i++) {
		e = catalog_at(c, i);
		s = store_stmt(st->cst[C_UPSERT]);
		sqlite3_bind_text(s, 1, e->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, e->name, -1, SQLITE_STATIC);
		store_bind_text_opt(s, 3, e->environment);
		store_bind_text_opt(s, 4, e->domain);
		store_bind_text_opt(s, 5, e->account);
		sqlite3_bind_int64(s, 6, c->fetched_at);
		if (store_run(st, s) != 0)
			return -1;
	}
	s = store_stmt(st->cst[C_DELETE_OLD]);
	sqlite3_bind_int64(s, 1, c->fetched_at);
	if (store_run(st, s) != 0)
		return -1;
	s = store_stmt(st->cst[C_FETCHED_PUT]);
	sqlite3_bind_int64(s, 1, c->fetched_at);
	return store_run(st, s);
}

int
store_catalog_purged(struct store *st, const char *id, int64_t when)
{
	sqlite3_stmt *s = store_stmt(st->cst[C_PURGED]);

	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, when);
	return store_run(st, s);
}

int
store_held_load(struct store *st, void (*cb)(void *, int64_t, const char *, enum purge_type,
    int64_t, int64_t, int64_t, const char *), void *arg)
{
	sqlite3_stmt *s = store_stmt(st->cst[C_HELD_LOAD]);
	char name[INSTALL_NAME_MAX + 2];
	enum purge_type t;
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		store_copy_text(name, sizeof name, sqlite3_column_text(s, 1));
		if (!install_name_valid(name) || sqlite3_column_text(s, 2) == NULL ||
		    purge_type_parse((const char *)sqlite3_column_text(s, 2), &t) != 0) {
			log_warn("database: request %lld has a bad install name or type; skipped",
			    (long long)sqlite3_column_int64(s, 0));
			continue;
		}
		cb(arg, sqlite3_column_int64(s, 0), name, t,
		    sqlite3_column_type(s, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 3),
		    sqlite3_column_type(s, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 4),
		    sqlite3_column_int64(s, 5), sqlite3_column_text(s, 6) != NULL ?
		    (const char *)sqlite3_column_text(s, 6) : "");
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		log_error("database: %s", sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

int
store_held_resolve(struct store *st, int64_t id, int64_t job, const char *install,
    int coalesced)
{
	sqlite3_stmt *s = store_stmt(st->cst[C_HELD_RESOLVE]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, job);
	sqlite3_bind_text(s, 3, install, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 4, coalesced);
	return store_run(st, s);
}

int
store_held_fail(struct store *st, int64_t id, const char *error, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->cst[C_HELD_FAIL]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return store_run(st, s);
}
