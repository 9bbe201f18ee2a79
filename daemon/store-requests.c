/* store-requests.c: the SQL of a request's row: accepted, moved to another job, finished, read, cancelled. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store-int.h"
#include "util.h"

enum rstmt { R_INSERT, R_MOVE, R_FINISH, R_LIVE, R_GET, R_CANCEL, R_COUNT };

_Static_assert(R_COUNT == STORE_REQ_STMTS, "STORE_REQ_STMTS: its statements and struct store's array");

static const char *rstmt_sql[R_COUNT] = {
	[R_INSERT] = "INSERT INTO requests (job, install, type, state, reason, uid, pid,"
	    " coalesced, enqueued_at, name, id, source, idem_key, who) VALUES (?1, ?2, ?3,"
	    " 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
	[R_MOVE] = "UPDATE requests SET job = ?2 WHERE job = ?1 AND state = 'queued'",
	[R_FINISH] = "UPDATE requests SET state = ?2, finished_at = ?3"
	    " WHERE job = ?1 AND state = 'queued'",
	[R_LIVE] = "SELECT count(*) FROM requests WHERE job = ?1 AND state = 'queued'",
	[R_GET] = "SELECT r.id, r.install, r.type, r.state, r.job, j.type, j.state,"
	    " j.attempts, j.http_status, j.message, r.reason, r.enqueued_at, r.finished_at,"
	    " r.uid, r.name, r.error, r.source, r.who, r.requeued_from FROM requests r"
	    " LEFT JOIN jobs j ON j.id = r.job"
	    " WHERE r.id = ?1",
	[R_CANCEL] = "UPDATE requests SET state = 'cancelled', finished_at = ?2"
	    " WHERE id = ?1 AND state = 'queued'",
};

int
store_requests_prepare(struct store *st, const char *path, char **cause)
{
	return store_prepare_set(st, st->rst, rstmt_sql, R_COUNT, "request ", path, cause);
}

int64_t
store_request_insert(struct store *st, int64_t job, const char *install,
    enum purge_type type, const char *reason, int64_t uid, int64_t pid, int coalesced,
    int64_t now, const char *name, const struct store_prov *prov)
{
	sqlite3_stmt *s = store_stmt(st->rst[R_INSERT]);

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
	sqlite3_stmt *s = store_stmt(st->rst[R_MOVE]);

	sqlite3_bind_int64(s, 1, from);
	sqlite3_bind_int64(s, 2, to);
	return store_run(st, s);
}

int
store_requests_finish(struct store *st, int64_t job, enum job_state state, int64_t now)
{
	sqlite3_stmt *s = store_stmt(st->rst[R_FINISH]);

	sqlite3_bind_int64(s, 1, job);
	sqlite3_bind_text(s, 2, job_state_name(state), -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	return store_run(st, s);
}

int
store_job_live_requests(struct store *st, int64_t job)
{
	sqlite3_stmt *s = store_stmt(st->rst[R_LIVE]);
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
	sqlite3_stmt *s = store_stmt(st->rst[R_GET]);
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
	if (sqlite3_column_text(s, 1) != NULL)
		snprintf(out->install, sizeof out->install, "%s",
		    (const char *)sqlite3_column_text(s, 1));
	t = store_type_parse((const char *)sqlite3_column_text(s, 2));
	rs = store_state_parse((const char *)sqlite3_column_text(s, 3));
	out->job = sqlite3_column_int64(s, 4);
	jt = store_type_parse((const char *)sqlite3_column_text(s, 5));
	js = store_state_parse((const char *)sqlite3_column_text(s, 6));
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
	sqlite3_stmt *s = store_stmt(st->rst[R_CANCEL]);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, now);
	if (store_run(st, s) != 0)
		return -1;
	return sqlite3_changes(st->db);
}
