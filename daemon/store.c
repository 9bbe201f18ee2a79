/* store.c: the SQLite queue: opening it, prepared statements, transactions, jobs and limits. */
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

const char *
job_state_name(enum job_state s)
{
	return state_names[s];
}

int
store_state_parse(const char *s)
{
	int i;

	for (i = 0; s != NULL && i < JOB_NSTATES; i++) {
		if (strcmp(s, state_names[i]) == 0)
			return i;
	}
	return -1;
}

/* A text column into dst (len bytes, cut if longer; NULL: empty). */
void
store_copy_text(char *dst, size_t len, const unsigned char *t)
{
	snprintf(dst, len, "%s", t != NULL ? (const char *)t : "");
}

/* Bind t to parameter i, or leave it NULL when t is NULL or empty (t outlives the step). */
void
store_bind_text_opt(sqlite3_stmt *s, int i, const char *t)
{
	if (t != NULL && t[0] != '\0')
		sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
}

int
store_type_parse(const char *s)
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

int
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

int64_t
store_pragma_int(struct store *st, const char *sql)
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
	if (store_pragma_int(st, "SELECT count(*) FROM sqlite_schema") < 0) {
		xasprintf(cause, "%s is not a SQLite database (or is corrupt): %s; refusing to "
		    "overwrite it", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (store_pragma_int(st, "PRAGMA application_id") != STORE_APP_ID &&
	    store_pragma_int(st, "SELECT count(*) FROM sqlite_schema") != 0) {
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
	    store_lifecycle_prepare(st, path, cause) != 0 ||
	    store_requests_prepare(st, path, cause) != 0)
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
	for (i = 0; i < STORE_REQ_STMTS; i++)
		sqlite3_finalize(st->rst[i]);
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
		t = store_type_parse((const char *)sqlite3_column_text(s, 2));
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
		store_copy_text(j.install, sizeof j.install, sqlite3_column_text(s, 1));
		if ((t = store_type_parse((const char *)sqlite3_column_text(s, 2))) < 0 ||
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

		store_copy_text(install, sizeof install, sqlite3_column_text(s, 0));
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
