/* store.c: the SQLite queue: schema and migrations, prepared statements, transactions. */
#include <sys/file.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "durable.h"
#include "store-int.h"
#include "util.h"

#define STORE_APP_ID 0x57504550 /* "WPEP": refuse databases that are not ours */
#define STORE_SCHEMA 7

static const char *state_names[JOB_NSTATES] = { "queued", "sending", "done", "failed",
	"cancelled", "expired" };


static const char *stmt_sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_REQUEUE_JOB] = "UPDATE jobs SET state = 'queued' WHERE id = ?1 AND state = 'sending'",
	[S_LOAD_SENDING] = "SELECT id, install, type, started_at FROM jobs WHERE state = 'sending'",
	[S_LOAD_JOBS] = "SELECT id, install, type, attempts, not_before, http_status, message,"
	    " created_at, started_at FROM jobs WHERE state = 'queued' ORDER BY id",
	[S_LOAD_LIMITS] = "SELECT install, class, last_start, blocked_until, strikes"
	    " FROM limits",
	[S_LOAD_MEMBERS] = "SELECT job, uid, count(*) FROM requests WHERE state = 'queued'"
	    " GROUP BY job, uid",
	[S_JOB_INSERT] = "INSERT INTO jobs (install, type, state, attempts, not_before,"
	    " created_at, id, who) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7)",
	[S_JOB_UPDATE] = "UPDATE jobs SET state = ?2, attempts = ?3, not_before = ?4,"
	    " http_status = ?5, message = ?6, started_at = ?7, finished_at = ?8 WHERE id = ?1",
	[S_JOB_ABSORB] = "UPDATE jobs SET state = 'cancelled', message = ?2, finished_at = ?3"
	    " WHERE id = ?1",
	[S_PROBE] = "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?1)",
	[S_REQ_INSERT] = "INSERT INTO requests (job, install, type, state, reason, uid, pid,"
	    " coalesced, enqueued_at, name, id, source, idem_key, who) VALUES (?1, ?2, ?3,"
	    " 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[S_REQ_MOVE] = "UPDATE requests SET job = ?2 WHERE job = ?1 AND state = 'queued'",
	[S_REQ_FINISH] = "UPDATE requests SET state = ?2, finished_at = ?3"
	    " WHERE job = ?1 AND state = 'queued'",
	[S_REQ_LIVE] = "SELECT count(*) FROM requests WHERE job = ?1 AND state = 'queued'",
	[S_REQ_GET] = "SELECT r.id, r.install, r.type, r.state, r.job, j.type, j.state,"
	    " j.attempts, j.http_status, j.message, r.reason, r.enqueued_at, r.finished_at,"
	    " r.uid, r.name, r.error, r.source, r.who, r.requeued_from FROM requests r"
	    " LEFT JOIN jobs j ON j.id = r.job"
	    " WHERE r.id = ?1",
	[S_REQ_CANCEL] = "UPDATE requests SET state = 'cancelled', finished_at = ?2"
	    " WHERE id = ?1 AND state = 'queued'",
	[S_LIMIT_PUT] = "INSERT OR REPLACE INTO limits (install, class, last_start,"
	    " blocked_until, strikes) VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_LIMIT_TOUCH] = "INSERT INTO limits (install, class, last_start, blocked_until, strikes)"
	    " VALUES (?1, ?2, ?3, 0, 0) ON CONFLICT (install, class) DO UPDATE"
	    " SET last_start = max(last_start, excluded.last_start)",
	[S_PRUNE_REQ] = "DELETE FROM requests WHERE id IN (SELECT id FROM requests"
	    " WHERE finished_at IS NOT NULL AND finished_at < ?1 LIMIT ?2)",
	/*
	 * A finished request finished no later than its job (with it, or cancelled or
	 * moved away before), and unfinished requests belong to unfinished jobs: so a job
	 * that finished before every remaining finished request has no request left.
	 * This needs no index on requests(job), which every enqueue would pay for.
	 */
	[S_PRUNE_JOB] = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
	    " WHERE finished_at IS NOT NULL AND finished_at < min(?1, coalesce((SELECT"
	    " min(finished_at) FROM requests WHERE finished_at IS NOT NULL), ?1)) LIMIT ?2)",
	[S_OLDEST_FINISHED] = "SELECT min(m) FROM (SELECT min(finished_at) AS m FROM requests"
	    " WHERE finished_at IS NOT NULL UNION ALL SELECT min(finished_at) FROM jobs"
	    " WHERE finished_at IS NOT NULL)",
	/* The highest id ever given, whether or not its row is still there (pruning). */
	[S_SEQ_GET] = "SELECT max(coalesce((SELECT max(id) FROM jobs), 0), coalesce((SELECT"
	    " value FROM meta WHERE key = 'job_seq'), 0)), max(coalesce((SELECT max(id) FROM"
	    " requests), 0), coalesce((SELECT value FROM meta WHERE key = 'request_seq'), 0))",
	[S_SEQ_PUT] = "INSERT INTO meta (key, value) VALUES ('job_seq', ?1), ('request_seq', ?2)"
	    " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
};

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

const char *
job_state_name(enum job_state s)
{
	return state_names[s];
}

static int
state_parse(const char *s)
{
	int i;

	for (i = 0; s != NULL && i < JOB_NSTATES; i++) {
		if (strcmp(s, state_names[i]) == 0)
			return i;
	}
	return -1;
}

static int
type_parse(const char *s)
{
	enum purge_type t;

	if (s == NULL || purge_type_parse(s, &t) != 0)
		return -1;
	return (int)t;
}

const char *
store_errmsg(struct store *st)
{
	return sqlite3_errmsg(st->db);
}

static int
store_exec(struct store *st, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(st->db, sql, NULL, NULL, &err) != SQLITE_OK) {
		log_error("database: %s", err != NULL ? err : sqlite3_errmsg(st->db));
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

static int64_t
pragma_int(struct store *st, const char *sql)
{
	sqlite3_stmt *s;
	int64_t v = -1;

	if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Create the schema in a new database, or check and migrate an existing one. */
static int
store_migrate(struct store *st, const char *path, char **cause)
{
	int64_t app, version, objects;
	int created = 0;
	char *sql;

	if (store_exec(st, "BEGIN IMMEDIATE") != 0) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(st->db));
		return -1;
	}
	app = pragma_int(st, "PRAGMA application_id");
	version = pragma_int(st, "PRAGMA user_version");
	objects = pragma_int(st, "SELECT count(*) FROM sqlite_schema");
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

int
store_prepare_set(struct store *st, sqlite3_stmt **sts, const char *const *sql, int n,
    const char *what, const char *path, char **cause)
{
	int i;

	for (i = 0; i < n; i++) {
		if (sqlite3_prepare_v3(st->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		    &sts[i], NULL) != SQLITE_OK) {
			xasprintf(cause, "%s: preparing %sstatement %d: %s", path, what, i,
			    sqlite3_errmsg(st->db));
			return -1;
		}
	}
	return 0;
}

struct store *
store_open(const char *path, char **cause)
{
	struct store *st = xcalloc(1, sizeof *st);
	char *lockpath, *walpath, *dcause = NULL;
	int rc;

	st->lockfd = -1;
	/*
	 * A lock file beside the database: SQLite's own locks allow several writers in turn,
	 * but two daemons sharing one queue would both send it.
	 */
	xasprintf(&lockpath, "%s.lock", path);
	st->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (st->lockfd == -1) {
		xasprintf(cause, "%s: %s", lockpath, strerror(errno));
		free(lockpath);
		goto fail;
	}
	if (flock(st->lockfd, LOCK_EX | LOCK_NB) != 0) {
		xasprintf(cause, "%s is in use by another wpe-purged (%s is locked)", path,
		    lockpath);
		free(lockpath);
		goto fail;
	}
	free(lockpath);

	/* No allocation statistics: a mutex on every allocation buys nothing here. */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, st->db ? sqlite3_errmsg(st->db) :
		    sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	sqlite3_busy_timeout(st->db, 5000);
	if (sqlite3_db_readonly(st->db, "main") == 1) {
		xasprintf(cause, "%s is read-only; wpe-purged needs to write its queue", path);
		goto fail;
	}
	/* Check it is ours before anything writes to it (WAL mode writes the header). */
	if (pragma_int(st, "SELECT count(*) FROM sqlite_schema") < 0) {
		xasprintf(cause, "%s is not a SQLite database (or is corrupt): %s; refusing to "
		    "overwrite it", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (pragma_int(st, "PRAGMA application_id") != STORE_APP_ID &&
	    pragma_int(st, "SELECT count(*) FROM sqlite_schema") != 0) {
		xasprintf(cause, "%s is a SQLite database that wpe-purged did not create; "
		    "refusing to touch it", path);
		goto fail;
	}
	/*
	 * WAL with synchronous=FULL: an acknowledged enqueue is on disk even if the machine
	 * loses power, and group commit keeps that to one fsync per event-loop turn.
	 */
	if (store_exec(st, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
	    " PRAGMA foreign_keys = ON;") != 0) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (store_migrate(st, path, cause) != 0)
		goto fail;
	/*
	 * Durability stays exactly that of synchronous=FULL (the WAL is synced before any
	 * commit is acknowledged or acted on), but the sync is ours: inline after COMMIT
	 * (store_commit) or, for enqueue batches, on a worker thread (store_commit_async).
	 */
	/* The WAL SQLite itself uses (beside a symlink's target, not the link). */
	xasprintf(&walpath, "%s", sqlite3_filename_wal(sqlite3_db_filename(st->db, "main")));
	if ((st->dur = durable_open(walpath, &dcause)) != NULL) {
		if (store_exec(st, "PRAGMA synchronous = NORMAL;") != 0) {
			durable_close(st->dur);
			st->dur = NULL;
		}
	} else {
		log_warn("%s; enqueues are synced inside their commit instead", dcause);
		free(dcause);
	}
	free(walpath);
	if (store_prepare_set(st, st->st, stmt_sql, S_COUNT, "", path, cause) != 0)
		goto fail;
	if (sqlite3_step(st->st[S_SEQ_GET]) != SQLITE_ROW) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	st->last_job = sqlite3_column_int64(st->st[S_SEQ_GET], 0);
	st->last_request = sqlite3_column_int64(st->st[S_SEQ_GET], 1);
	sqlite3_reset(st->st[S_SEQ_GET]);
	if (store_catalog_prepare(st, path, cause) != 0 ||
	    store_prov_prepare(st, path, cause) != 0 ||
	    store_lifecycle_prepare(st, path, cause) != 0)
		goto fail;
	return st;
fail:
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	int i;

	if (st == NULL)
		return;
	durable_close(st->dur);
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->st[i]);
	for (i = 0; i < STORE_CAT_STMTS; i++)
		sqlite3_finalize(st->cst[i]);
	for (i = 0; i < STORE_PROV_STMTS; i++)
		sqlite3_finalize(st->pst[i]);
	for (i = 0; i < STORE_LIFE_STMTS; i++)
		sqlite3_finalize(st->lst[i]);
	sqlite3_close(st->db);
	if (st->lockfd != -1)
		close(st->lockfd);
	free(st);
}

sqlite3_stmt *
store_stmt(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

int
store_run(struct store *st, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		log_error("database: %s", sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

int
store_begin(struct store *st)
{
	return store_run(st, store_stmt(st->st[S_BEGIN]));
}

int
store_commit(struct store *st)
{
	if (store_run(st, store_stmt(st->st[S_COMMIT])) != 0)
		return -1;
	if (st->dur != NULL)
		durable_now(st->dur);
	return 0;
}

int
store_commit_async(struct store *st, uint64_t *gen)
{
	if (store_run(st, store_stmt(st->st[S_COMMIT])) != 0)
		return -1;
	*gen = st->dur != NULL ? durable_request(st->dur) : 0;
	return 0;
}

int
store_durable_fd(struct store *st)
{
	return st->dur != NULL ? durable_fd(st->dur) : -1;
}

void
store_durable_drain(struct store *st)
{
	if (st->dur != NULL)
		durable_drain(st->dur);
}

uint64_t
store_durable(struct store *st)
{
	return st->dur != NULL ? durable_done(st->dur) : UINT64_MAX;
}

void
store_sync(struct store *st)
{
	if (st->dur != NULL)
		durable_now(st->dur);
}

void
store_rollback(struct store *st)
{
	if (!sqlite3_get_autocommit(st->db))
		store_run(st, store_stmt(st->st[S_ROLLBACK]));
}

int
store_sending(struct store *st,
    void (*cb)(void *, int64_t, const char *, enum purge_type, int64_t), void *arg)
{
	sqlite3_stmt *s = store_stmt(st->st[S_LOAD_SENDING]);
	char install[37];
	int rc, t;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		snprintf(install, sizeof install, "%s", sqlite3_column_text(s, 1) != NULL ?
		    (const char *)sqlite3_column_text(s, 1) : "");
		t = type_parse((const char *)sqlite3_column_text(s, 2));
		if (t >= 0 && uuid_valid(install))
			cb(arg, sqlite3_column_int64(s, 0), install, (enum purge_type)t,
			    sqlite3_column_int64(s, 3));
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		log_error("database: %s", sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}

int
store_job_requeue(struct store *st, int64_t id)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQUEUE_JOB]);

	sqlite3_bind_int64(s, 1, id);
	return store_run(st, s);
}

int
store_probe(struct store *st, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->st[S_PROBE]);

	sqlite3_bind_int64(s, 1, now);
	return store_run(st, s);
}

static void
copy_install(char *dst, const unsigned char *src)
{
	snprintf(dst, 37, "%s", src != NULL ? (const char *)src : "");
}

int
store_load(struct store *st, void (*job_cb)(void *, const struct store_job *),
    void (*limit_cb)(void *, const char *, int, const struct class_state *),
    void (*member_cb)(void *, int64_t, int64_t, int), void *arg)
{
	sqlite3_stmt *s;
	struct store_job j;
	struct class_state cs;
	int rc, t, cls;

	s = store_stmt(st->st[S_LOAD_JOBS]);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(&j, 0, sizeof j);
		j.id = sqlite3_column_int64(s, 0);
		copy_install(j.install, sqlite3_column_text(s, 1));
		if ((t = type_parse((const char *)sqlite3_column_text(s, 2))) < 0 ||
		    !uuid_valid(j.install)) {
			log_warn("database: job %lld has a bad install or type; skipped",
			    (long long)j.id);
			continue;
		}
		j.type = (enum purge_type)t;
		j.state = JOB_QUEUED;
		j.attempts = sqlite3_column_int(s, 3);
		j.not_before = sqlite3_column_int64(s, 4);
		j.http_status = sqlite3_column_int(s, 5);
		j.message = (char *)sqlite3_column_text(s, 6);
		j.created_at = sqlite3_column_int64(s, 7);
		j.started_at = sqlite3_column_int64(s, 8);
		job_cb(arg, &j);
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		goto fail;

	s = store_stmt(st->st[S_LOAD_LIMITS]);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char install[37];

		copy_install(install, sqlite3_column_text(s, 0));
		cls = sqlite3_column_int(s, 1);
		if (!uuid_valid(install) || cls < 0 || cls >= NCLASSES)
			continue;
		cs.last_start = sqlite3_column_int64(s, 2);
		cs.blocked_until = sqlite3_column_int64(s, 3);
		cs.strikes = sqlite3_column_int(s, 4);
		limit_cb(arg, install, cls, &cs);
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		goto fail;

	s = store_stmt(st->st[S_LOAD_MEMBERS]);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		member_cb(arg, sqlite3_column_int64(s, 0), sqlite3_column_type(s, 1) == SQLITE_NULL ?
		    -1 : sqlite3_column_int64(s, 1), sqlite3_column_int(s, 2));
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		goto fail;
	return 0;
fail:
	log_error("database: loading the queue: %s", sqlite3_errmsg(st->db));
	return -1;
}

int64_t
store_job_insert(struct store *st, const char *install, enum purge_type type,
    int64_t not_before, int attempts, int64_t now, const char *who)
{
	sqlite3_stmt *s = store_stmt(st->st[S_JOB_INSERT]);

	sqlite3_bind_text(s, 1, install, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, purge_type_name(type), -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, attempts);
	sqlite3_bind_int64(s, 4, not_before);
	sqlite3_bind_int64(s, 5, now);
	sqlite3_bind_int64(s, 6, st->last_job + 1);
	if (who != NULL && who[0] != '\0')
		sqlite3_bind_text(s, 7, who, -1, SQLITE_STATIC);
	if (store_run(st, s) != 0)
		return -1;
	return ++st->last_job;   /* an id of a rolled-back row is not given again either */
}

static void
bind_opt_int64(sqlite3_stmt *s, int i, int64_t v)
{
	if (v == 0)
		sqlite3_bind_null(s, i);
	else
		sqlite3_bind_int64(s, i, v);
}

int
store_job_update(struct store *st, const struct store_job *j)
{
	sqlite3_stmt *s = store_stmt(st->st[S_JOB_UPDATE]);

	sqlite3_bind_int64(s, 1, j->id);
	sqlite3_bind_text(s, 2, job_state_name(j->state), -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, j->attempts);
	sqlite3_bind_int64(s, 4, j->not_before);
	bind_opt_int64(s, 5, j->http_status);
	if (j->message != NULL)
		sqlite3_bind_text(s, 6, j->message, -1, SQLITE_STATIC);
	bind_opt_int64(s, 7, j->started_at);
	bind_opt_int64(s, 8, j->finished_at);
	return store_run(st, s);
}

int
store_job_absorb(struct store *st, int64_t id, const char *message, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->st[S_JOB_ABSORB]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_text(s, 2, message, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return store_run(st, s);
}

int64_t
store_request_insert(struct store *st, int64_t job, const char *install,
    enum purge_type type, const char *reason, int64_t uid, int64_t pid, int coalesced,
    int64_t now, const char *name, const struct store_prov *prov)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_INSERT]);

	sqlite3_bind_int64(s, 1, job);
	sqlite3_bind_text(s, 2, install, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, purge_type_name(type), -1, SQLITE_STATIC);
	if (reason != NULL)
		sqlite3_bind_text(s, 4, reason, -1, SQLITE_STATIC);
	if (uid != -1)      /* -1: unknown (NULL); tokens are below -1 */
		sqlite3_bind_int64(s, 5, uid);
	if (pid >= 0)
		sqlite3_bind_int64(s, 6, pid);
	sqlite3_bind_int(s, 7, coalesced);
	sqlite3_bind_int64(s, 8, now);
	if (name != NULL && name[0] != '\0')
		sqlite3_bind_text(s, 9, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 10, st->last_request + 1);
	store_prov_bind(s, 11, prov);
	if (store_run(st, s) != 0)
		return -1;
	return ++st->last_request;
}

int
store_requests_move(struct store *st, int64_t from, int64_t to)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_MOVE]);

	sqlite3_bind_int64(s, 1, from);
	sqlite3_bind_int64(s, 2, to);
	return store_run(st, s);
}

int
store_requests_finish(struct store *st, int64_t job, enum job_state state, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_FINISH]);

	sqlite3_bind_int64(s, 1, job);
	sqlite3_bind_text(s, 2, job_state_name(state), -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return store_run(st, s);
}

int
store_job_live_requests(struct store *st, int64_t job)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_LIVE]);
	int n = -1;

	sqlite3_bind_int64(s, 1, job);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	else
		log_error("database: %s", sqlite3_errmsg(st->db));
	sqlite3_reset(s);
	return n;
}

static char *
dup_text(const unsigned char *t)
{
	return t != NULL ? xstrdup((const char *)t) : NULL;
}

int
store_request_get(struct store *st, int64_t id, struct store_status *out)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_GET]);
	int rc, t, jt, rs, js;

	memset(out, 0, sizeof *out);
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return 0;
	}
	if (rc != SQLITE_ROW) {
		log_error("database: %s", sqlite3_errmsg(st->db));
		sqlite3_reset(s);
		return -1;
	}
	out->id = sqlite3_column_int64(s, 0);
	copy_install(out->install, sqlite3_column_text(s, 1));
	t = type_parse((const char *)sqlite3_column_text(s, 2));
	rs = state_parse((const char *)sqlite3_column_text(s, 3));
	out->job = sqlite3_column_int64(s, 4);
	jt = type_parse((const char *)sqlite3_column_text(s, 5));
	js = state_parse((const char *)sqlite3_column_text(s, 6));
	out->type = t < 0 ? PURGE_ALL : (enum purge_type)t;
	out->job_type = jt < 0 ? out->type : (enum purge_type)jt;
	/*
	 * An unfinished request is in whatever state its job is; a finished one in its own.
	 * A request whose job row is missing (a damaged database) keeps its own state.
	 */
	if (rs < 0)
		out->state = JOB_FAILED;
	else if (rs != JOB_QUEUED || js < 0)
		out->state = (enum job_state)rs;
	else
		out->state = (enum job_state)js;
	out->attempts = sqlite3_column_int(s, 7);
	out->http_status = sqlite3_column_int(s, 8);
	out->message = dup_text(sqlite3_column_text(s, 9));
	out->reason = dup_text(sqlite3_column_text(s, 10));
	out->enqueued_at = sqlite3_column_int64(s, 11);
	out->finished_at = sqlite3_column_int64(s, 12);
	out->uid = sqlite3_column_type(s, 13) == SQLITE_NULL ? -1 :
	    sqlite3_column_int64(s, 13);
	if (sqlite3_column_text(s, 14) != NULL)
		snprintf(out->name, sizeof out->name, "%s",
		    (const char *)sqlite3_column_text(s, 14));
	/*
	 * A request that never had a job (an unknown name) keeps its own reason; so does an
	 * expired one (why its purges could not be sent).
	 */
	if (out->message == NULL || (rs == JOB_EXPIRED && sqlite3_column_text(s, 15) != NULL)) {
		free(out->message);
		out->message = dup_text(sqlite3_column_text(s, 15));
	}
	out->source = dup_text(sqlite3_column_text(s, 16));
	out->who = dup_text(sqlite3_column_text(s, 17));
	out->requeued_from = sqlite3_column_int64(s, 18);
	sqlite3_reset(s);
	return 1;
}

void
store_status_free(struct store_status *ss)
{
	free(ss->message);
	free(ss->reason);
	free(ss->source);
	free(ss->who);
	ss->message = ss->reason = ss->source = ss->who = NULL;
}

int
store_request_cancel(struct store *st, int64_t id, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->st[S_REQ_CANCEL]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, now);
	if (store_run(st, s) != 0)
		return -1;
	return sqlite3_changes(st->db);
}

int
store_limit_put(struct store *st, const char *install, int cls, const struct class_state *cs)
{
	sqlite3_stmt *s = store_stmt(st->st[S_LIMIT_PUT]);

	sqlite3_bind_text(s, 1, install, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, cls);
	sqlite3_bind_int64(s, 3, cs->last_start);
	sqlite3_bind_int64(s, 4, cs->blocked_until);
	sqlite3_bind_int(s, 5, cs->strikes);
	return store_run(st, s);
}

int
store_limit_touch(struct store *st, const char *install, int cls, int64_t last_start)
{
	sqlite3_stmt *s = store_stmt(st->st[S_LIMIT_TOUCH]);

	sqlite3_bind_text(s, 1, install, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, cls);
	sqlite3_bind_int64(s, 3, last_start);
	return store_run(st, s);
}

int
store_prune(struct store *st, int64_t before, int batch)
{
	sqlite3_stmt *s;
	int n;

	/* What goes may include the newest ids: remember them first. */
	s = store_stmt(st->st[S_SEQ_PUT]);
	sqlite3_bind_int64(s, 1, st->last_job);
	sqlite3_bind_int64(s, 2, st->last_request);
	if (store_run(st, s) != 0)
		return -1;
	s = store_stmt(st->st[S_PRUNE_REQ]);
	sqlite3_bind_int64(s, 1, before);
	sqlite3_bind_int(s, 2, batch);
	if (store_run(st, s) != 0)
		return -1;
	n = sqlite3_changes(st->db);
	s = store_stmt(st->st[S_PRUNE_JOB]);
	sqlite3_bind_int64(s, 1, before);
	sqlite3_bind_int(s, 2, batch);
	if (store_run(st, s) != 0)
		return -1;
	return n + sqlite3_changes(st->db);
}

int64_t
store_oldest_finished(struct store *st)
{
	sqlite3_stmt *s = store_stmt(st->st[S_OLDEST_FINISHED]);
	int64_t v = -1;

	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_type(s, 0) == SQLITE_NULL ? 0 : sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return v;
}
