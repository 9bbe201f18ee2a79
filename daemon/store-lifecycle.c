/* store-lifecycle.c: the SQL of requests that expire, requeues, the persisted pause and the limits table's pruning. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store-int.h"
#include "util.h"

enum lstmt {
	L_LIVE_FIRST, L_LIVE_SCAN, L_JOB_EXPIRED, L_LIVE_BELOW, L_EXPIRE, L_REQUEUED_FROM,
	L_PAUSED_GET, L_PAUSED_PUT, L_PAUSED_DEL, L_LIMITS_FORGET, L_COUNT
};

_Static_assert(L_COUNT == STORE_LIFE_STMTS, "STORE_LIFE_STMTS: its statements and struct store's array");

static const char *lstmt_sql[L_COUNT] = {
	/* min(id) from the partial index requests_live (state = 'queued'): live rows only. */
	[L_LIVE_FIRST] = "SELECT id, enqueued_at FROM requests WHERE id ="
	    " (SELECT min(id) FROM requests WHERE state = 'queued')",
	/* From an id on, in id order (the rowid range): finished rows included. */
	[L_LIVE_SCAN] = "SELECT id, job, uid, enqueued_at, state = 'queued' FROM requests"
	    " WHERE id >= ?1 ORDER BY id LIMIT ?2",
	[L_JOB_EXPIRED] = "SELECT id, job, uid, enqueued_at, 1 FROM requests"
	    " WHERE job = ?1 AND state = 'queued' AND id < ?2 ORDER BY id LIMIT ?3",
	[L_LIVE_BELOW] = "SELECT id, job, uid, enqueued_at, 1 FROM requests"
	    " WHERE state = 'queued' AND id < ?1 ORDER BY id",
	[L_EXPIRE] = "UPDATE requests SET state = 'expired', error = ?2, finished_at = ?3"
	    " WHERE id = ?1 AND state = 'queued'",
	[L_REQUEUED_FROM] = "UPDATE requests SET requeued_from = ?2 WHERE id = ?1",
	[L_PAUSED_GET] = "SELECT value FROM meta WHERE key = 'paused_since'",
	[L_PAUSED_PUT] = "INSERT OR REPLACE INTO meta (key, value) VALUES ('paused_since', ?1)",
	[L_PAUSED_DEL] = "DELETE FROM meta WHERE key = 'paused_since'",
	[L_LIMITS_FORGET] = "DELETE FROM limits WHERE install = ?1",
};

int
store_lifecycle_prepare(struct store *st, const char *path, char **cause)
{
	return store_prepare_set(st, st->lst, lstmt_sql, L_COUNT, "lifecycle ", path,
	    cause);
}

int
store_live_first(struct store *st, int64_t *id, int64_t *enqueued_at)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_LIVE_FIRST]);
	int rc = sqlite3_step(s);

	*id = *enqueued_at = 0;
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		*enqueued_at = sqlite3_column_int64(s, 1);
	}
	sqlite3_reset(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("database: finding the oldest unfinished request: %s",
		    sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

/* Rows of s to cb until it says stop (non-zero): 0, or -1. */
static int
live_rows(struct store *st, sqlite3_stmt *s, store_live_cb cb, void *arg)
{
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (cb(arg, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
		    sqlite3_column_type(s, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 2),
		    sqlite3_column_int64(s, 3), sqlite3_column_int(s, 4)) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		log_error("database: reading unfinished requests: %s", sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

int
store_live_scan(struct store *st, int64_t from, int limit, store_live_cb cb, void *arg)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_LIVE_SCAN]);

	sqlite3_bind_int64(s, 1, from);
	sqlite3_bind_int(s, 2, limit);
	return live_rows(st, s, cb, arg);
}

int
store_job_expired(struct store *st, int64_t job, int64_t below, int limit, store_live_cb cb,
    void *arg)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_JOB_EXPIRED]);

	sqlite3_bind_int64(s, 1, job);
	sqlite3_bind_int64(s, 2, below);
	sqlite3_bind_int(s, 3, limit);
	return live_rows(st, s, cb, arg);
}

int
store_live_below(struct store *st, int64_t below, store_live_cb cb, void *arg)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_LIVE_BELOW]);

	sqlite3_bind_int64(s, 1, below);
	return live_rows(st, s, cb, arg);
}

int
store_request_expire(struct store *st, int64_t id, const char *error, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_EXPIRE]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, error, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	if (store_run(st, s) != 0)
		return -1;
	return sqlite3_changes(st->db);
}

int
store_request_requeued_from(struct store *st, int64_t id, int64_t from)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_REQUEUED_FROM]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, from);
	return store_run(st, s);
}

int64_t
store_paused_get(struct store *st)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_PAUSED_GET]);
	int64_t v = -1;
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0) > 0 ? sqlite3_column_int64(s, 0) : 1;
	else if (rc == SQLITE_DONE)
		v = 0;
	else
		log_error("database: %s", sqlite3_errmsg(st->db));
	sqlite3_reset(s);
	return v;
}

int
store_paused_put(struct store *st, int64_t since)
{
	sqlite3_stmt *s;

	if (since == 0)
		return store_run(st, store_stmt(st->lst[L_PAUSED_DEL]));
	s = store_stmt(st->lst[L_PAUSED_PUT]);
	sqlite3_bind_int64(s, 1, since);
	return store_run(st, s);
}

int
store_limits_forget(struct store *st, const char *install)
{
	sqlite3_stmt *s = store_stmt(st->lst[L_LIMITS_FORGET]);

	sqlite3_bind_text(s, 1, install, -1, SQLITE_STATIC);
	return store_run(st, s);
}
