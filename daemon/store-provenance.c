/* store-provenance.c: the SQL of who asked for a request and of its idempotency key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store-int.h"
#include "util.h"

enum pstmt { P_IDEM_FIND, P_JOB_WHO, P_COUNT };

_Static_assert(P_COUNT == STORE_PROV_STMTS, "STORE_PROV_STMTS: its statements and struct store's array");

static const char *pstmt_sql[P_COUNT] = {
	/* The index requests_idem (uid, idem_key): one lookup, never a scan. */
	[P_IDEM_FIND] = "SELECT r.id, r.job, r.install, r.name, r.type, r.state, j.state,"
	    " r.coalesced FROM requests r LEFT JOIN jobs j ON j.id = r.job"
	    " WHERE r.uid = ?1 AND r.idem_key = ?2",
	[P_JOB_WHO] = "SELECT who FROM jobs WHERE id = ?1",
};

int
store_prov_prepare(struct store *st, const char *path, char **cause)
{
	return store_prepare_set(st, st->pst, pstmt_sql, P_COUNT, "provenance ", path,
	    cause);
}

void
store_prov_bind(sqlite3_stmt *s, int first, const struct store_prov *prov)
{
	if (prov == NULL)
		return;
	store_bind_text_opt(s, first, prov->source);
	store_bind_text_opt(s, first + 1, prov->idem_key);
	store_bind_text_opt(s, first + 2, prov->who);
}

int
store_idem_find(struct store *st, int64_t uid, const char *key, struct store_idem *out)
{
	sqlite3_stmt *s = store_stmt(st->pst[P_IDEM_FIND]);
	const unsigned char *t;
	enum purge_type type;
	int rc, rs, js;

	memset(out, 0, sizeof *out);
	if (uid == -1)
		return 0;       /* an unknown requester (NULL uid) has no keys */
	sqlite3_bind_int64(s, 1, uid);
	sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
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
	out->job = sqlite3_column_int64(s, 1);
	if ((t = sqlite3_column_text(s, 2)) != NULL)
		snprintf(out->install, sizeof out->install, "%s", (const char *)t);
	if ((t = sqlite3_column_text(s, 3)) != NULL)
		snprintf(out->name, sizeof out->name, "%s", (const char *)t);
	t = sqlite3_column_text(s, 4);
	out->type = t != NULL && purge_type_parse((const char *)t, &type) == 0 ? type :
	    PURGE_ALL;
	/* As "status": an unfinished request is in its job's state. */
	rs = store_state_parse((const char *)sqlite3_column_text(s, 5));
	js = store_state_parse((const char *)sqlite3_column_text(s, 6));
	out->state = rs < 0 ? JOB_FAILED : rs != JOB_QUEUED || js < 0 ? (enum job_state)rs :
	    (enum job_state)js;
	out->coalesced = sqlite3_column_int(s, 7);
	sqlite3_reset(s);
	return 1;
}

int
store_job_who(struct store *st, int64_t job, char *buf, size_t len)
{
	sqlite3_stmt *s = store_stmt(st->pst[P_JOB_WHO]);
	const unsigned char *t;
	int rc;

	buf[0] = '\0';
	sqlite3_bind_int64(s, 1, job);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && (t = sqlite3_column_text(s, 0)) != NULL)
		snprintf(buf, len, "%s", (const char *)t);
	sqlite3_reset(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_error("database: %s", sqlite3_errmsg(st->db));
		return -1;
	}
	return 0;
}
