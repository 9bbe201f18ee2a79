/* store-int.h: the store's handle and statement helpers, shared by its files (store*.c). */
#ifndef WPE_STORE_INT_H
#define WPE_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

#define STORE_CAT_STMTS 9
#define STORE_PROV_STMTS 2
#define STORE_LIFE_STMTS 10
#define STORE_REQ_STMTS 6

#define STORE_APP_ID 0x57504550 /* "WPEP": refuse databases that are not ours */

/* store.c's prepared statements. */
enum stmt {
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_REQUEUE_JOB, S_LOAD_SENDING, S_LOAD_JOBS, S_LOAD_LIMITS, S_LOAD_MEMBERS,
	S_JOB_INSERT, S_JOB_UPDATE, S_JOB_ABSORB, S_PROBE,
	S_LIMIT_PUT, S_LIMIT_TOUCH, S_PRUNE_REQ, S_PRUNE_JOB, S_OLDEST_FINISHED, S_SEQ_GET,
	S_SEQ_PUT, S_COUNT
};

struct store {
	int lockfd;     /* flock()ed for the daemon's lifetime: one daemon per database */
	sqlite3 *db;
	struct durable *dur; /* syncs the WAL after commits (NULL: synchronous=FULL does) */
	sqlite3_stmt *st[S_COUNT];
	sqlite3_stmt *cst[STORE_CAT_STMTS]; /* store-catalog.c's */
	sqlite3_stmt *pst[STORE_PROV_STMTS]; /* store-provenance.c's */
	sqlite3_stmt *lst[STORE_LIFE_STMTS]; /* store-lifecycle.c's */
	sqlite3_stmt *rst[STORE_REQ_STMTS]; /* store-requests.c's */
	int64_t last_job, last_request; /* the highest ids given */
};

/*
 * Prepare n statements from sql into sts, for the database's lifetime. 0, or -1 with
 * *cause naming the set (what: "catalog ", or "" for store.c's) and the statement.
 */
int store_prepare_set(struct store *, sqlite3_stmt **sts, const char *const *sql, int n,
    const char *what, const char *path, char **cause);
/* A prepared statement reset for reuse: every bind starts from a clean slate. */
sqlite3_stmt *store_stmt(sqlite3_stmt *);
/* Step a statement that returns no rows: 0, or -1 (logged). */
int store_run(struct store *, sqlite3_stmt *);

/* Run SQL text (no rows): 0, or -1 (logged). */
int store_exec(struct store *, const char *sql);
/* The first column of the first row of SQL text (a pragma, a count), or -1. */
int64_t store_pragma_int(struct store *, const char *sql);
/* The job state, or purge type, a stored name says: -1 for NULL or an unknown name. */
int store_state_parse(const char *);
void store_bind_text_opt(sqlite3_stmt *, int, const char *);
void store_copy_text(char *dst, size_t len, const unsigned char *t);
int store_type_parse(const char *);

/* store-migrate.c: create the schema in a new database, or check and migrate one. */
int store_migrate(struct store *, const char *path, char **cause);

/* Prepare store-catalog.c's statements at open. 0, or -1 with *cause. */
int store_catalog_prepare(struct store *, const char *path, char **cause);
/* The same for store-provenance.c, store-lifecycle.c and store-requests.c. */
int store_prov_prepare(struct store *, const char *path, char **cause);
int store_lifecycle_prepare(struct store *, const char *path, char **cause);
int store_requests_prepare(struct store *, const char *path, char **cause);
/* Bind prov's source, idempotency key and label from parameter first on (NULL: none). */
void store_prov_bind(sqlite3_stmt *, int first, const struct store_prov *prov);

#endif
