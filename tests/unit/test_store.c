/* test_store.c: the SQLite queue on temporary databases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"
#include "tmpdir.h"

#define A "294deacc-d8b8-4005-82c4-0727ba8ddde0"

static char path[300];

struct loaded {
	int njobs, nlimits, nmembers;
	int64_t mjob[16], muid[16];
	int mn[16];
	int64_t ids[16];
	struct class_state cs;
};

static void
on_job(void *arg, const struct store_job *j)
{
	struct loaded *l = arg;

	l->ids[l->njobs++] = j->id;
}

static void
on_limit(void *arg, const char *install, int cls, const struct class_state *cs)
{
	struct loaded *l = arg;

	(void)install;
	(void)cls;
	l->cs = *cs;
	l->nlimits++;
}

static void
on_member(void *arg, int64_t job, int64_t uid, int n)
{
	struct loaded *l = arg;

	l->mjob[l->nmembers] = job;
	l->muid[l->nmembers] = uid;
	l->mn[l->nmembers++] = n;
}

static void
on_recovered(void *arg, int64_t id, const char *install, enum purge_type type,
    int64_t started_at)
{
	int *n = arg;

	(void)started_at;
	assert_true(id > 0);
	assert_string_equal(install, A);
	assert_int_equal(type, PURGE_PAGE);
	(*n)++;
}

static struct store *
fresh(void)
{
	static int n;
	struct store *st;
	char *cause = NULL;

	snprintf(path, sizeof path, "%s/q%d.sqlite", dir, n++);
	st = store_open(path, &cause);
	if (st == NULL)
		fail_msg("store_open: %s", cause);
	return st;
}

static void
test_enqueue_and_status(void **state)
{
	struct store *st = fresh();
	struct store_status ss;
	int64_t j, r1, r2;

	(void)state;
	assert_int_equal(store_begin(st), 0);
	j = store_job_insert(st, A, PURGE_OBJECT, 0, 0, 1000, NULL);
	assert_true(j > 0);
	r1 = store_request_insert(st, j, A, PURGE_OBJECT, "deploy", 1000, 42, 0, 1000, NULL, NULL);
	r2 = store_request_insert(st, j, A, PURGE_OBJECT, NULL, 1000, 43, 1, 1001, NULL, NULL);
	assert_int_equal(store_commit(st), 0);
	assert_true(r2 > r1);

	assert_int_equal(store_request_get(st, r1, &ss), 1);
	assert_int_equal(ss.state, JOB_QUEUED);
	assert_int_equal(ss.job, j);
	assert_string_equal(ss.install, A);
	assert_string_equal(ss.reason, "deploy");
	assert_int_equal(ss.enqueued_at, 1000);
	assert_int_equal(ss.finished_at, 0);
	store_status_free(&ss);
	assert_int_equal(store_request_get(st, 999, &ss), 0);
	assert_int_equal(store_job_live_requests(st, j), 2);

	/* Cancel one: the job still has a live request. */
	assert_int_equal(store_request_cancel(st, r1, 2000), 1);
	assert_int_equal(store_request_cancel(st, r1, 2000), 0); /* not twice */
	assert_int_equal(store_job_live_requests(st, j), 1);
	assert_int_equal(store_request_get(st, r1, &ss), 1);
	assert_int_equal(ss.state, JOB_CANCELLED);
	assert_int_equal(ss.finished_at, 2000);
	store_status_free(&ss);

	/* Finish the job: the remaining request follows; the cancelled one stays. */
	struct store_job row = { .id = j, .state = JOB_DONE, .attempts = 1,
		.http_status = 202, .started_at = 2500, .finished_at = 3000 };
	assert_int_equal(store_job_update(st, &row), 0);
	assert_int_equal(store_requests_finish(st, j, JOB_DONE, 3000), 0);
	assert_int_equal(store_request_get(st, r2, &ss), 1);
	assert_int_equal(ss.state, JOB_DONE);
	assert_int_equal(ss.http_status, 202);
	assert_int_equal(ss.attempts, 1);
	store_status_free(&ss);
	assert_int_equal(store_request_get(st, r1, &ss), 1);
	assert_int_equal(ss.state, JOB_CANCELLED);
	store_status_free(&ss);
	store_close(st);
}

static void
test_absorb(void **state)
{
	struct store *st = fresh();
	struct store_status ss;
	int64_t jo, jp, ja, ro, rp, rc;

	(void)state;
	store_begin(st);
	jo = store_job_insert(st, A, PURGE_OBJECT, 0, 0, 1, NULL);
	jp = store_job_insert(st, A, PURGE_PAGE, 0, 0, 1, NULL);
	ro = store_request_insert(st, jo, A, PURGE_OBJECT, NULL, 0, 0, 0, 1, NULL, NULL);
	rp = store_request_insert(st, jp, A, PURGE_PAGE, NULL, 0, 0, 0, 1, NULL, NULL);
	/* A cancelled request stays with the absorbed job and must stay readable. */
	rc = store_request_insert(st, jo, A, PURGE_OBJECT, NULL, 0, 0, 1, 1, NULL, NULL);
	assert_int_equal(store_request_cancel(st, rc, 1), 1);
	ja = store_job_insert(st, A, PURGE_ALL, 0, 0, 2, NULL);
	assert_int_equal(store_requests_move(st, jo, ja), 0);
	assert_int_equal(store_requests_move(st, jp, ja), 0);
	assert_int_equal(store_job_absorb(st, jo, "absorbed", 2), 0);
	assert_int_equal(store_job_absorb(st, jp, "absorbed", 2), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_job_live_requests(st, ja), 2);
	assert_int_equal(store_request_get(st, ro, &ss), 1);
	assert_int_equal(ss.job, ja);
	assert_int_equal(ss.type, PURGE_OBJECT);   /* what was asked */
	assert_int_equal(ss.job_type, PURGE_ALL);  /* what will be sent */
	store_status_free(&ss);
	assert_int_equal(store_request_get(st, rp, &ss), 1);
	assert_int_equal(ss.job, ja);
	store_status_free(&ss);
	assert_int_equal(store_request_get(st, rc, &ss), 1);
	assert_int_equal(ss.state, JOB_CANCELLED);
	assert_int_equal(ss.job, jo);
	store_status_free(&ss);
	store_close(st);
}

static void
test_rollback(void **state)
{
	struct store *st = fresh();
	struct store_status ss;
	int64_t j, r;

	(void)state;
	store_begin(st);
	j = store_job_insert(st, A, PURGE_ALL, 0, 0, 1, NULL);
	r = store_request_insert(st, j, A, PURGE_ALL, NULL, 0, 0, 0, 1, NULL, NULL);
	store_rollback(st);
	assert_int_equal(store_request_get(st, r, &ss), 0);
	store_close(st);
}

static void
test_recover_and_load(void **state)
{
	struct store *st = fresh();
	struct loaded l;
	struct class_state cs = { 5000, 6000, 2 };
	int64_t j1, j2, j3;
	int nrec;
	char *cause = NULL;

	(void)state;
	store_begin(st);
	j1 = store_job_insert(st, A, PURGE_OBJECT, 0, 0, 1, NULL);
	j2 = store_job_insert(st, A, PURGE_PAGE, 0, 0, 1, NULL);
	j3 = store_job_insert(st, A, PURGE_CDN, 0, 0, 1, NULL);
	/* Two requests of uid 1000 and one of uid 1001 on j1; one of 1000 on j2 (sending). */
	store_request_insert(st, j1, A, PURGE_OBJECT, NULL, 1000, 1, 0, 1, NULL, NULL);
	store_request_insert(st, j1, A, PURGE_OBJECT, NULL, 1000, 2, 1, 1, NULL, NULL);
	store_request_insert(st, j1, A, PURGE_OBJECT, NULL, 1001, 3, 1, 1, NULL, NULL);
	store_request_insert(st, j2, A, PURGE_PAGE, NULL, 1000, 4, 0, 1, NULL, NULL);
	store_request_cancel(st, store_request_insert(st, j1, A, PURGE_OBJECT, NULL, 1002,
	    5, 1, 1, NULL, NULL), 2);
	struct store_job row = { .id = j2, .state = JOB_SENDING, .attempts = 1 };
	store_job_update(st, &row);
	row.id = j3;
	row.state = JOB_DONE;
	row.finished_at = 9;
	store_job_update(st, &row);
	store_limit_put(st, A, CLASS_OBJECT, &cs);
	store_commit(st);
	store_close(st);

	/* Reopen as after kill -9: the sending job is queued again; done stays done. */
	st = store_open(path, &cause);
	assert_non_null(st);
	nrec = 0;
	assert_int_equal(store_sending(st, on_recovered, &nrec), 0);
	assert_int_equal(nrec, 1);
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_job_requeue(st, j2), 0);
	assert_int_equal(store_probe(st, 7), 0);
	assert_int_equal(store_commit(st), 0);
	memset(&l, 0, sizeof l);
	assert_int_equal(store_load(st, on_job, on_limit, on_member, &l), 0);
	assert_int_equal(l.njobs, 2);
	assert_int_equal(l.ids[0], j1);
	assert_int_equal(l.ids[1], j2);
	assert_int_equal(l.nlimits, 1);
	assert_int_equal(l.cs.last_start, 5000);
	assert_int_equal(l.cs.blocked_until, 6000);
	assert_int_equal(l.cs.strikes, 2);
	/* Unfinished requests by job and requester; the cancelled one is not counted. */
	assert_int_equal(l.nmembers, 3);
	for (int i = 0; i < l.nmembers; i++) {
		if (l.mjob[i] == j1 && l.muid[i] == 1000)
			assert_int_equal(l.mn[i], 2);
		else if (l.mjob[i] == j1)
			assert_true(l.muid[i] == 1001 && l.mn[i] == 1);
		else
			assert_true(l.mjob[i] == j2 && l.muid[i] == 1000 && l.mn[i] == 1);
	}
	store_close(st);
}

static void
test_prune(void **state)
{
	struct store *st = fresh();
	struct store_status ss;
	int64_t j, r[5];
	int i;

	(void)state;
	store_begin(st);
	j = store_job_insert(st, A, PURGE_ALL, 0, 0, 1, NULL);
	for (i = 0; i < 5; i++)
		r[i] = store_request_insert(st, j, A, PURGE_ALL, NULL, 0, 0, 0, 1, NULL, NULL);
	struct store_job row = { .id = j, .state = JOB_DONE, .finished_at = 100 };
	store_job_update(st, &row);
	store_requests_finish(st, j, JOB_DONE, 100);
	store_commit(st);
	/* Not old enough: nothing goes. */
	assert_int_equal(store_prune(st, 50, 10), 0);
	/* In batches: 2 requests, then the rest, then the job. */
	assert_int_equal(store_prune(st, 200, 2), 2);
	assert_int_equal(store_prune(st, 200, 10), 3 + 1);
	assert_int_equal(store_request_get(st, r[4], &ss), 0);
	store_close(st);
}

static int
count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	int n;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return n;
}

/*
 * Pruning jobs without an index of requests by job (schema 4): a job goes only when no
 * request of it is left, whatever the batch size, and everything old goes in the end.
 */
static void
test_prune_jobs_after_their_requests(void **state)
{
	struct store *st = fresh();
	sqlite3 *db;
	int64_t j, r, live;
	int i, k, n, total = 0;

	(void)state;
	store_begin(st);
	/* Job k finishes at 100 + 10k; one of its 3 requests was cancelled before, at 90. */
	for (k = 0; k < 3; k++) {
		j = store_job_insert(st, A, (enum purge_type)k, 0, 0, 1, NULL);
		for (i = 0; i < 3; i++)
			r = store_request_insert(st, j, A, (enum purge_type)k, NULL, 0, 0, 0, 1, NULL, NULL);
		assert_int_equal(store_request_cancel(st, r, 90), 1);
		struct store_job row = { .id = j, .state = JOB_DONE,
		    .finished_at = 100 + 10 * k };
		assert_int_equal(store_job_update(st, &row), 0);
		assert_int_equal(store_requests_finish(st, j, JOB_DONE, 100 + 10 * k), 0);
	}
	/* A job still queued, with its request: never pruned. */
	live = store_job_insert(st, A, PURGE_CDN, 0, 0, 1, NULL);
	store_request_insert(st, live, A, PURGE_CDN, NULL, 0, 0, 0, 1, NULL, NULL);
	store_commit(st);

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	for (i = 0; i < 20; i++) {
		store_begin(st);
		n = store_prune(st, 1000, 1);
		store_commit(st);
		assert_true(n >= 0);
		total += n;
		/* The invariant: no request outlives its job. */
		assert_int_equal(count(db, "SELECT count(*) FROM requests r WHERE NOT EXISTS"
		    " (SELECT 1 FROM jobs j WHERE j.id = r.job)"), 0);
		if (n == 0)
			break;
	}
	/* All 9 finished requests and their 3 jobs went, the live job and request stay. */
	assert_int_equal(total, 9 + 3);
	assert_int_equal(count(db, "SELECT count(*) FROM jobs"), 1);
	assert_int_equal(count(db, "SELECT count(*) FROM requests"), 1);
	sqlite3_close(db);
	store_close(st);
}

/*
 * A schema-3 database gets schemas 4 and 5: no index of every request by job, no AUTOINCREMENT,
 * its rows kept, and the id high-water mark carried over (7 was given, then deleted).
 */
static void
test_migrate_to_4(void **state)
{
	struct store *st = fresh();
	sqlite3 *db;
	char *cause = NULL;
	int64_t j, r;

	(void)state;
	store_close(st);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DROP TABLE requests; DROP TABLE installs;"
	    "ALTER TABLE jobs DROP COLUMN who;"
	    "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, job INTEGER NOT NULL,"
	    " install TEXT NOT NULL, type TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,"
	    " uid INTEGER, pid INTEGER, coalesced INTEGER NOT NULL, enqueued_at INTEGER NOT"
	    " NULL, finished_at INTEGER);"
	    "CREATE INDEX requests_job ON requests(job);"
	    "CREATE INDEX requests_finished ON requests(finished_at) WHERE finished_at IS NOT"
	    " NULL;"
	    "CREATE INDEX requests_live ON requests(job, uid) WHERE state = 'queued';"
	    "INSERT INTO jobs (id, install, type, state, created_at) VALUES (1, '" A "',"
	    " 'all', 'queued', 1);"
	    "INSERT INTO requests (id, job, install, type, state, reason, uid, coalesced,"
	    " enqueued_at) VALUES (6, 1, '" A "', 'all', 'queued', 'kept', 1000, 0, 1),"
	    " (7, 1, '" A "', 'all', 'queued', NULL, 1000, 0, 1);"
	    "DELETE FROM requests WHERE id = 7;"
	    "PRAGMA user_version = 3;", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	st = store_open(path, &cause);
	if (st == NULL)
		fail_msg("store_open: %s", cause);
	store_begin(st);
	j = store_job_insert(st, A, PURGE_PAGE, 0, 0, 1, NULL);
	r = store_request_insert(st, j, A, PURGE_PAGE, NULL, 0, 0, 0, 1, NULL, NULL);
	store_commit(st);
	assert_int_equal(j, 2);
	assert_int_equal(r, 8);
	store_close(st);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(count(db, "SELECT count(*) FROM sqlite_schema WHERE name ="
	    " 'requests_job' OR sql LIKE '%AUTOINCREMENT%'"), 0);
	assert_int_equal(count(db, "SELECT count(*) FROM requests WHERE id = 6 AND reason ="
	    " 'kept' AND uid = 1000"), 1);
	assert_int_equal(count(db, "SELECT count(*) FROM requests WHERE state = 'queued'"
	    " AND job = 1"), 1);
	assert_int_equal(count(db, "PRAGMA user_version"), 7);
	sqlite3_close(db);
}

struct live_rows {
	int n, stop;
	int64_t id[8], job[8], uid[8], at[8];
	int queued[8];
};

static int
on_live(void *arg, int64_t id, int64_t job, int64_t uid, int64_t at, int queued)
{
	struct live_rows *l = arg;

	l->id[l->n] = id;
	l->job[l->n] = job;
	l->uid[l->n] = uid;
	l->queued[l->n] = queued;
	l->at[l->n++] = at;
	return l->n == l->stop;
}

/* Expiry, requeues, the persisted pause and forgetting limits (store-lifecycle.c). */
static void
test_lifecycle(void **state)
{
	struct store *st = fresh();
	struct store_status ss;
	struct live_rows lr = { 0 };
	struct class_state cs = { 1000, 0, 0 };
	sqlite3 *db;
	int64_t j, r1, r2, r3;

	(void)state;
	store_begin(st);
	j = store_job_insert(st, A, PURGE_ALL, 0, 0, 1, NULL);
	r1 = store_request_insert(st, j, A, PURGE_ALL, "one", 1000, 1, 0, 100, NULL, NULL);
	r2 = store_request_insert(st, j, A, PURGE_ALL, NULL, 1001, 2, 1, 200, NULL, NULL);
	r3 = store_request_insert(st, 0, "", PURGE_PAGE, NULL, 1000, 3, 0, 300, "mysite",
	    NULL);
	assert_int_equal(store_limit_put(st, A, 0, &cs), 0);
	store_commit(st);

	/* The oldest unfinished request; requests in id order, with their job (0: held),
	 * requester and acceptance; a job's below an id; cb stops the reading. */
	{
		int64_t fid, fat;

		assert_int_equal(store_live_first(st, &fid, &fat), 0);
		assert_int_equal(fid, r1);
		assert_int_equal(fat, 100);
	}
	assert_int_equal(store_live_scan(st, r1, 10, on_live, &lr), 0);
	assert_int_equal(lr.n, 3);
	assert_int_equal(lr.id[0], r1);
	assert_int_equal(lr.job[0], j);
	assert_int_equal(lr.id[1], r2);
	assert_int_equal(lr.uid[1], 1001);
	assert_int_equal(lr.at[1], 200);
	assert_int_equal(lr.job[2], 0);
	assert_true(lr.queued[0] && lr.queued[1] && lr.queued[2]);
	memset(&lr, 0, sizeof lr);
	lr.stop = 1;
	assert_int_equal(store_live_scan(st, r2, 10, on_live, &lr), 0);
	assert_int_equal(lr.n, 1);
	assert_int_equal(lr.id[0], r2);
	memset(&lr, 0, sizeof lr);
	assert_int_equal(store_job_expired(st, j, r2, 10, on_live, &lr), 0);
	assert_int_equal(lr.n, 1);
	assert_int_equal(lr.id[0], r1);
	memset(&lr, 0, sizeof lr);
	assert_int_equal(store_live_below(st, r3, on_live, &lr), 0);
	assert_int_equal(lr.n, 2);

	/* Expired: finished, with its reason before the job's message; once only. */
	store_begin(st);
	assert_int_equal(store_request_expire(st, r1, "not sent within max_age (1d): x", 500), 1);
	assert_int_equal(store_request_expire(st, r1, "again", 600), 0);
	store_commit(st);
	assert_int_equal(store_request_get(st, r1, &ss), 1);
	assert_int_equal(ss.state, JOB_EXPIRED);
	assert_string_equal(job_state_name(ss.state), "expired");
	assert_string_equal(ss.message, "not sent within max_age (1d): x");
	assert_int_equal(ss.finished_at, 500);
	assert_int_equal(ss.requeued_from, 0);
	store_status_free(&ss);
	assert_int_equal(store_job_live_requests(st, j), 1);
	assert_true(job_state_final(JOB_EXPIRED) && job_state_final(JOB_CANCELLED) &&
	    !job_state_final(JOB_SENDING));

	/* A requeue says where it came from. */
	store_begin(st);
	assert_int_equal(store_request_requeued_from(st, r3, r1), 0);
	store_commit(st);
	assert_int_equal(store_request_get(st, r3, &ss), 1);
	assert_int_equal(ss.requeued_from, r1);
	store_status_free(&ss);

	/* The pause: absent, put, kept, removed. */
	assert_int_equal(store_paused_get(st), 0);
	store_begin(st);
	assert_int_equal(store_paused_put(st, 12345), 0);
	store_commit(st);
	store_close(st);
	st = store_open(path, &(char *){ NULL });
	assert_non_null(st);
	assert_int_equal(store_paused_get(st), 12345);
	store_begin(st);
	assert_int_equal(store_paused_put(st, 0), 0);
	store_commit(st);
	assert_int_equal(store_paused_get(st), 0);

	/* Limits forgotten, every class of that install. */
	store_begin(st);
	assert_int_equal(store_limits_forget(st, A), 0);
	store_commit(st);
	store_close(st);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(count(db, "SELECT count(*) FROM limits"), 0);
	assert_int_equal(count(db, "SELECT count(*) FROM requests WHERE state = 'expired'"), 1);
	sqlite3_close(db);
}

/* Ids are never given twice, even when pruning took the newest rows (no AUTOINCREMENT). */
static void
test_ids_survive_pruning(void **state)
{
	struct store *st = fresh();
	char *cause = NULL;
	int64_t j, r;

	(void)state;
	store_begin(st);
	j = store_job_insert(st, A, PURGE_ALL, 0, 0, 1, NULL);
	r = store_request_insert(st, j, A, PURGE_ALL, NULL, 0, 0, 0, 1, NULL, NULL);
	/* A rolled-back id is not given again either. */
	store_commit(st);
	store_begin(st);
	assert_int_equal(store_request_insert(st, j, A, PURGE_ALL, NULL, 0, 0, 0, 1, NULL, NULL), r + 1);
	store_rollback(st);
	store_begin(st);
	struct store_job row = { .id = j, .state = JOB_DONE, .finished_at = 100 };
	store_job_update(st, &row);
	store_requests_finish(st, j, JOB_DONE, 100);
	store_commit(st);
	store_begin(st);
	assert_int_equal(store_prune(st, 200, 10), 2);
	store_commit(st);
	store_close(st);
	st = store_open(path, &cause);
	if (st == NULL)
		fail_msg("store_open: %s", cause);
	store_begin(st);
	assert_int_equal(store_job_insert(st, A, PURGE_ALL, 0, 0, 1, NULL), j + 1);
	assert_true(store_request_insert(st, j + 1, A, PURGE_ALL, NULL, 0, 0, 0, 1, NULL, NULL) > r);
	store_commit(st);
	store_close(st);
}

static void
test_foreign_and_corrupt(void **state)
{
	char p[320], *cause = NULL;
	sqlite3 *db;
	FILE *f;

	(void)state;
	/* A SQLite database of someone else's: refused, untouched. */
	snprintf(p, sizeof p, "%s/foreign.sqlite", dir);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE precious(x); INSERT INTO precious "
	    "VALUES (1);", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_null(store_open(p, &cause));
	assert_non_null(strstr(cause, "did not create"));
	free(cause);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "SELECT x FROM precious", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);

	/* Not a database at all: refused, not overwritten. */
	snprintf(p, sizeof p, "%s/garbage.sqlite", dir);
	f = fopen(p, "w");
	fputs("this is not a database, and it is 100 bytes long or so, which sqlite "
	    "will look at and reject.......", f);
	fclose(f);
	cause = NULL;
	assert_null(store_open(p, &cause));
	assert_non_null(cause);
	free(cause);
	f = fopen(p, "r");
	char buf[16];
	assert_int_equal(fread(buf, 1, 7, f), 7);
	fclose(f);
	assert_memory_equal(buf, "this is", 7);
}

static void
test_one_daemon_per_database(void **state)
{
	struct store *st = fresh(), *second;
	char *cause = NULL;

	(void)state;
	second = store_open(path, &cause);
	assert_null(second);
	assert_non_null(strstr(cause, "in use by another wpe-purged"));
	free(cause);
	store_close(st);
	/* Once the first is gone the database opens again. */
	second = store_open(path, &cause);
	assert_non_null(second);
	store_close(second);
}

/*
 * Idempotency keys: found by requester and key through their index (no scan), seen in
 * the transaction that stored them, forgotten with a rolled-back one, pruned with their
 * request; a job keeps who asked for it.
 */
static void
test_idempotency_keys(void **state)
{
	struct store *st = fresh();
	struct store_prov prov = { "{\"ci\":\"github\"}", "k1", "github:o/r#1" };
	struct store_idem r;
	struct store_status ss;
	sqlite3 *db;
	char who[64];
	int64_t j, id;

	(void)state;
	assert_int_equal(store_begin(st), 0);
	j = store_job_insert(st, A, PURGE_PAGE, 0, 0, 100, "github:o/r#1");
	id = store_request_insert(st, j, A, PURGE_PAGE, NULL, 1000, 1, 0, 100, "site", &prov);
	assert_int_equal(store_idem_find(st, 1000, "k1", &r), 1);   /* in its transaction */
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_idem_find(st, 1000, "k1", &r), 1);
	assert_int_equal(r.id, id);
	assert_int_equal(r.job, j);
	assert_int_equal(r.type, PURGE_PAGE);
	assert_int_equal(r.state, JOB_QUEUED);
	assert_string_equal(r.install, A);
	assert_string_equal(r.name, "site");
	assert_int_equal(store_idem_find(st, 1001, "k1", &r), 0);   /* another uid's */
	assert_int_equal(store_idem_find(st, 1000, "k2", &r), 0);
	assert_int_equal(store_idem_find(st, -1, "k1", &r), 0);
	assert_int_equal(store_job_who(st, j, who, sizeof who), 0);
	assert_string_equal(who, "github:o/r#1");
	assert_int_equal(store_request_get(st, id, &ss), 1);
	assert_string_equal(ss.source, "{\"ci\":\"github\"}");
	assert_string_equal(ss.who, "github:o/r#1");
	store_status_free(&ss);

	/* A rolled-back request's key is not remembered. */
	prov.idem_key = "k2";
	assert_int_equal(store_begin(st), 0);
	assert_true(store_request_insert(st, j, A, PURGE_PAGE, NULL, 1000, 1, 1, 100, NULL,
	    &prov) > 0);
	store_rollback(st);
	assert_int_equal(store_idem_find(st, 1000, "k2", &r), 0);

	/* The lookup uses the index. */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(count(db, "SELECT count(*) FROM (SELECT 1 FROM pragma_index_list("
	    "'requests') WHERE name = 'requests_idem' AND \"unique\" = 1)"), 1);
	{
		sqlite3_stmt *s;
		int indexed = 0;

		assert_int_equal(sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN SELECT r.id, j.state FROM"
		    " requests r LEFT JOIN jobs j ON j.id = r.job WHERE r.uid = 1000 AND"
		    " r.idem_key = 'k1'", -1, &s, NULL), SQLITE_OK);
		while (sqlite3_step(s) == SQLITE_ROW)
			indexed |= strstr((const char *)sqlite3_column_text(s, 3),
			    "SEARCH r USING INDEX requests_idem (uid=? AND idem_key=?)") != NULL;
		sqlite3_finalize(s);
		assert_true(indexed);
	}
	sqlite3_close(db);

	/* Finished and pruned: the key goes with its request. */
	assert_int_equal(store_begin(st), 0);
	assert_int_equal(store_requests_finish(st, j, JOB_DONE, 150), 0);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_idem_find(st, 1000, "k1", &r), 1);
	assert_int_equal(r.state, JOB_DONE);
	assert_int_equal(store_begin(st), 0);
	assert_true(store_prune(st, 200, 10) >= 1);
	assert_int_equal(store_commit(st), 0);
	assert_int_equal(store_idem_find(st, 1000, "k1", &r), 0);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enqueue_and_status),
		cmocka_unit_test(test_absorb),
		cmocka_unit_test(test_rollback),
		cmocka_unit_test(test_recover_and_load),
		cmocka_unit_test(test_prune),
		cmocka_unit_test(test_prune_jobs_after_their_requests),
		cmocka_unit_test(test_migrate_to_4),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_ids_survive_pruning),
		cmocka_unit_test(test_foreign_and_corrupt),
		cmocka_unit_test(test_one_daemon_per_database),
		cmocka_unit_test(test_idempotency_keys),
	};

	return cmocka_run_group_tests_name("store", tests, setup, teardown);
}
