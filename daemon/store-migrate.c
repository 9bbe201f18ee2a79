/* store-migrate.c: the queue database's schema: created in a new database, migrated in an older one. */
#include <stdlib.h>

#include <sqlite3.h>

#include "store-int.h"
#include "util.h"

#define STORE_SCHEMA 7

static const char schema_v1[] =
    "CREATE TABLE jobs ("
    " id INTEGER PRIMARY KEY,"
    " install TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " not_before INTEGER NOT NULL DEFAULT 0,"
    " http_status INTEGER,"
    " message TEXT,"
    " created_at INTEGER NOT NULL,"
    " started_at INTEGER,"
    " finished_at INTEGER);"
    "CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'sending');"
    "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;"
    "CREATE TABLE requests ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job INTEGER NOT NULL,"
    " install TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " reason TEXT,"
    " uid INTEGER,"
    " pid INTEGER,"
    " coalesced INTEGER NOT NULL,"
    " enqueued_at INTEGER NOT NULL,"
    " finished_at INTEGER);"
    "CREATE INDEX requests_job ON requests(job);"
    "CREATE INDEX requests_finished ON requests(finished_at) WHERE finished_at IS NOT NULL;"
    "CREATE TABLE limits ("
    " install TEXT NOT NULL,"
    " class INTEGER NOT NULL,"
    " last_start INTEGER NOT NULL,"
    " blocked_until INTEGER NOT NULL,"
    " strikes INTEGER NOT NULL,"
    " PRIMARY KEY (install, class)) WITHOUT ROWID;";

/* Schema 2: a row a storage probe can always write (recovery after write errors). */
static const char schema_v2[] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;";

/* Schema 3: the unfinished requests by job and requester, read at every (re)load. */
static const char schema_v3[] =
    "CREATE INDEX requests_live ON requests(job, uid) WHERE state = 'queued';";

/*
 * Schema 4: no index of every request by job. Every lookup by job is of unfinished
 * requests (requests_live serves it) and pruning does without (S_PRUNE_JOB); the
 * index cost each enqueue a B-tree page written and synced (about 10 % of throughput).
 */
static const char schema_v4[] =
    "DROP INDEX requests_job;"
    /*
     * And no AUTOINCREMENT: its sqlite_sequence row was one more page per commit. Ids
     * are given by the store from a high-water mark kept in meta when pruning would
     * lower max(id), so an id is still never given twice (jobs' ids too, now).
     */
    "CREATE TABLE requests4 ("
    " id INTEGER PRIMARY KEY,"
    " job INTEGER NOT NULL,"
    " install TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " reason TEXT,"
    " uid INTEGER,"
    " pid INTEGER,"
    " coalesced INTEGER NOT NULL,"
    " enqueued_at INTEGER NOT NULL,"
    " finished_at INTEGER);"
    "INSERT INTO requests4 SELECT id, job, install, type, state, reason, uid, pid,"
    " coalesced, enqueued_at, finished_at FROM requests;"
    "INSERT OR REPLACE INTO meta (key, value) SELECT 'request_seq', seq FROM"
    " sqlite_sequence WHERE name = 'requests';"
    "DROP TABLE requests;"
    "ALTER TABLE requests4 RENAME TO requests;"
    "CREATE INDEX requests_finished ON requests(finished_at) WHERE finished_at IS NOT NULL;"
    "CREATE INDEX requests_live ON requests(job, uid) WHERE state = 'queued';";

/*
 * Schema 5: the installs catalog (store-catalog.c); a request's install name, and the
 * error of one that never got a job (a name that did not resolve). A request by a name
 * the catalog did not have yet has job 0 and install '' until it resolves.
 */
static const char schema_v5[] =
    "CREATE TABLE installs ("
    " id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " environment TEXT,"
    " primary_domain TEXT,"
    " account_id TEXT,"
    " fetched_at INTEGER NOT NULL,"
    " last_purge INTEGER) WITHOUT ROWID;"
    "ALTER TABLE requests ADD COLUMN name TEXT;"
    "ALTER TABLE requests ADD COLUMN error TEXT;"
    "CREATE INDEX requests_held ON requests(id) WHERE state = 'queued' AND job = 0;";

/*
 * Schema 6: who asked (store-provenance.c): a request's "source" (JSON) and its label,
 * a job's label (its first request's), and idempotency keys, unique per requester.
 */
static const char schema_v6[] =
    "ALTER TABLE requests ADD COLUMN source TEXT;"
    "ALTER TABLE requests ADD COLUMN idem_key TEXT;"
    "ALTER TABLE requests ADD COLUMN who TEXT;"
    "ALTER TABLE jobs ADD COLUMN who TEXT;"
    "CREATE UNIQUE INDEX requests_idem ON requests(uid, idem_key)"
    " WHERE idem_key IS NOT NULL;";

/*
 * Schema 7: a request made by requeueing another says which (the state "expired" and
 * the persisted pause, a meta row, need no schema).
 */
static const char schema_v7[] =
    "ALTER TABLE requests ADD COLUMN requeued_from INTEGER;";

/* migrations[v] takes schema v to v + 1; a new database runs them all after schema 1. */
static const char *const migrations[STORE_SCHEMA] = {
	[1] = schema_v2, [2] = schema_v3, [3] = schema_v4, [4] = schema_v5, [5] = schema_v6,
	[6] = schema_v7,
};

/* Create the schema in a new database, or check and migrate an existing one. */
int
store_migrate(struct store *st, const char *path, char **cause)
{
	int64_t app, version, objects;
	int created = 0;
	char *sql;

	if (store_exec(st, "BEGIN IMMEDIATE") != 0) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(st->db));
		return -1;
	}
	app = store_pragma_int(st, "PRAGMA application_id");
	version = store_pragma_int(st, "PRAGMA user_version");
	objects = store_pragma_int(st, "SELECT count(*) FROM sqlite_schema");
	if (app < 0 || version < 0 || objects < 0) {
		xasprintf(cause, "%s: not a usable SQLite database: %s", path,
		    sqlite3_errmsg(st->db));
		goto fail;
	}
	if (objects == 0 && app == 0 && version == 0) {
		xasprintf(&sql, "%s PRAGMA application_id = %d;", schema_v1, STORE_APP_ID);
		if (store_exec(st, sql) != 0) {
			free(sql);
			xasprintf(cause, "%s: cannot create the schema: %s", path,
			    sqlite3_errmsg(st->db));
			goto fail;
		}
		free(sql);
		created = 1;
		version = 1;
	} else if (app != STORE_APP_ID) {
		xasprintf(cause, "%s is a SQLite database that wpe-purged did not create "
		    "(application_id %lld); refusing to touch it", path, (long long)app);
		goto fail;
	} else if (version > STORE_SCHEMA) {
		xasprintf(cause, "%s has schema %lld, newer than this wpe-purged (%d)", path,
		    (long long)version, STORE_SCHEMA);
		goto fail;
	} else if (version < 1) {
		xasprintf(cause, "%s has no wpe-purged schema (user_version %lld)", path,
		    (long long)version);
		goto fail;
	}
	for (; version < STORE_SCHEMA; version++) {
		xasprintf(&sql, "%s PRAGMA user_version = %lld;", migrations[version],
		    (long long)version + 1);
		if (store_exec(st, sql) != 0) {
			free(sql);
			xasprintf(cause, "%s: cannot migrate to schema %lld: %s", path,
			    (long long)version + 1, sqlite3_errmsg(st->db));
			goto fail;
		}
		free(sql);
		if (!created)
			log_notice("migrated queue database %s to schema %lld", path,
			    (long long)version + 1);
	}
	if (created)
		log_notice("created queue database %s (schema %d)", path, STORE_SCHEMA);
	if (store_exec(st, "COMMIT") != 0) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	return 0;
fail:
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}
