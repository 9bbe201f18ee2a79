/* store-int.h: the store's handle and statement helpers, shared by its files (store*.c). */
#ifndef WPE_STORE_INT_H
#define WPE_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

#define STORE_CAT_STMTS 12
#define STORE_PROV_STMTS 2
#define STORE_LIFE_STMTS 10

/* store.c's prepared statements. */
enum stmt {
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_REQUEUE_JOB, S_LOAD_SENDING, S_LOAD_JOBS, S_LOAD_LIMITS, S_LOAD_MEMBERS,
	S_JOB_INSERT, S_JOB_UPDATE, S_JOB_ABSORB, S_PROBE,
	S_REQ_INSERT, S_REQ_MOVE, S_REQ_FINISH, S_REQ_LIVE, S_REQ_GET, S_REQ_CANCEL,
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

/* Prepare store-catalog.c's statements at open. 0, or -1 with *cause. */
int store_catalog_prepare(struct store *, const char *path, char **cause);
/* The same for store-provenance.c, and store-lifecycle.c. */
int store_prov_prepare(struct store *, const char *path, char **cause);
int store_lifecycle_prepare(struct store *, const char *path, char **cause);
/* Bind prov's source, idempotency key and label from parameter first on (NULL: none). */
void store_prov_bind(sqlite3_stmt *, int first, const struct store_prov *prov);

#endif
