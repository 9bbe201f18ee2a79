/* store.h: the SQLite queue database; the only module that speaks SQL. */
#ifndef WPE_STORE_H
#define WPE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "sched.h"

enum job_state { JOB_QUEUED = 0, JOB_SENDING, JOB_DONE, JOB_FAILED, JOB_CANCELLED,
	JOB_EXPIRED };
#define JOB_NSTATES 6
const char *job_state_name(enum job_state);
/* Done, failed, cancelled or expired: nothing more happens to it. */
static inline int job_state_final(enum job_state s) { return s >= JOB_DONE; }

/* A job row as the store reads and writes it; times are wall-clock unix ms. */
struct store_job {
	int64_t id;
	char install[37];
	enum purge_type type;
	enum job_state state;
	int attempts;
	int64_t not_before;
	long http_status;       /* 0: none yet */
	char *message;          /* last API message, may be NULL */
	int64_t created_at;
	int64_t started_at;     /* 0: never */
	int64_t finished_at;    /* 0: not finished */
};

/* What "status" reports of one request. */
struct store_status {
	int64_t id;
	char install[37];
	enum purge_type type;
	enum job_state state;
	int64_t job;
	enum purge_type job_type;
	int attempts;
	long http_status;
	char *message;
	char *reason;
	int64_t enqueued_at;
	int64_t finished_at;
	int64_t uid;
	char name[INSTALL_NAME_MAX + 1]; /* the install's name when it was asked for, or "" */
	char *source;           /* the "source" object as JSON text, or NULL */
	char *who;              /* who asked, as a label ("github:org/repo#12", "uid 1000") */
	int64_t requeued_from;  /* the request this one requeued, 0: none */
};

/* Who asked, as stored with a request (store-provenance.c); any field may be NULL. */
struct store_prov {
	const char *source;     /* the "source" object as JSON text */
	const char *idem_key;   /* idempotency key, unique per requester (uid) */
	const char *who;        /* a label for people */
};

/* A request found by its idempotency key, as an enqueue's answer repeats it. */
struct store_idem {
	int64_t id, job;
	char install[37];
	char name[INSTALL_NAME_MAX + 1];
	enum purge_type type;
	enum job_state state;   /* as "status" says it */
	int coalesced;
};

struct store;

/* Open or create the database. NULL and *cause on failure (foreign or corrupt file). */
struct store *store_open(const char *path, char **cause);
void store_close(struct store *);
/* The message of the last error, for answers and logs. */
const char *store_errmsg(struct store *);

int store_begin(struct store *);
/* Commit, durable on return (as synchronous=FULL). */
int store_commit(struct store *);
/*
 * Commit without waiting for the disk: durable once store_durable() reaches *gen (0:
 * already). store_durable_fd() becomes readable when it moves (-1: it never needs to).
 */
int store_commit_async(struct store *, uint64_t *gen);
int store_durable_fd(struct store *);
void store_durable_drain(struct store *);   /* from that fd's callback only */
uint64_t store_durable(struct store *);
/* Make every commit so far durable now. */
void store_sync(struct store *);
void store_rollback(struct store *);

/*
 * Call cb for every job the store says is being sent (id, install, type, started_at wall
 * ms). 0, or -1.
 */
int store_sending(struct store *,
    void (*cb)(void *, int64_t, const char *, enum purge_type, int64_t), void *arg);
/* A job whose sending was interrupted (or whose outcome was never recorded) is queued. */
int store_job_requeue(struct store *, int64_t id);
/* Write a row that exists only to prove the database takes writes again. */
int store_probe(struct store *, int64_t now);
/*
 * Call job_cb for each queued job (oldest first), limit_cb for each limit row, then
 * member_cb(arg, job, uid, n) for each requester's n unfinished requests on a job (uid
 * -1: unknown). 0, or -1.
 */
int store_load(struct store *, void (*job_cb)(void *, const struct store_job *),
    void (*limit_cb)(void *, const char *, int, const struct class_state *),
    void (*member_cb)(void *, int64_t, int64_t, int), void *arg);

/* who: a label of who asked for it (NULL: none). */
int64_t store_job_insert(struct store *, const char *install, enum purge_type,
    int64_t not_before, int attempts, int64_t now, const char *who);
int store_job_update(struct store *, const struct store_job *);
/* A job taken over by another: finished as cancelled, with a message saying which. */
int store_job_absorb(struct store *, int64_t id, const char *message, int64_t now);
/* job 0 and install "": a request by a name not resolved yet (name required then). */
int64_t store_request_insert(struct store *, int64_t job, const char *install,
    enum purge_type, const char *reason, int64_t uid, int64_t pid, int coalesced,
    int64_t now, const char *name, const struct store_prov *);
/* Move the unfinished requests of job from to job to. */
int store_requests_move(struct store *, int64_t from, int64_t to);
/* Finish the unfinished requests of a job with state. */
int store_requests_finish(struct store *, int64_t job, enum job_state, int64_t now);
/* Unfinished requests that still belong to job. -1 on error. */
int store_job_live_requests(struct store *, int64_t job);
/* 1 and *out filled (free with store_status_free), 0 if there is no such request, -1. */
int store_request_get(struct store *, int64_t id, struct store_status *out);
void store_status_free(struct store_status *);
int store_request_cancel(struct store *, int64_t id, int64_t now);
int store_limit_put(struct store *, const char *install, int cls, const struct class_state *);
/* A window starts again at last_start (wall ms), unless it already started later. */
int store_limit_touch(struct store *, const char *install, int cls, int64_t last_start);
/* Delete up to batch finished requests and jobs older than before. Returns rows. */
int store_prune(struct store *, int64_t before, int batch);
/* When the oldest finished row finished (wall ms); 0 if there is none, -1 on error. */
int64_t store_oldest_finished(struct store *);

/* store-provenance.c: idempotency keys and who asked. */
/*
 * The request requester uid made with key: 1 and *out filled, 0 if none (or pruned),
 * -1. Sees the caller's transaction (a key used earlier in the same group commit).
 */
int store_idem_find(struct store *, int64_t uid, const char *key, struct store_idem *out);
/* The label of who asked for job (buf "" if none): 0, or -1. */
int store_job_who(struct store *, int64_t job, char *buf, size_t len);

/* store-catalog.c: the installs catalog and the requests waiting for a name. */
struct catalog;
struct catalog_entry;
/* Read the stored catalog into c (empty, fetched_at 0: never fetched). 0, or -1. */
int store_catalog_load(struct store *, struct catalog *c);
/*
 * Replace the stored catalog by c in one transaction (the caller's): rows of installs no
 * longer listed go, the others keep their last purge. 0, or -1.
 */
int store_catalog_replace(struct store *, const struct catalog *c);
/* An install's purge was accepted at when (wall ms); inside the caller's transaction. */
int store_catalog_purged(struct store *, const char *id, int64_t when);
/*
 * Call cb for every unfinished request by a name that has no job yet (who: the label of
 * who asked, "" if none). 0, or -1.
 */
int store_held_load(struct store *, void (*cb)(void *, int64_t id, const char *name,
    enum purge_type, int64_t uid, int64_t pid, int64_t enqueued_at, const char *who),
    void *arg);
/* A held request resolved: now part of job, for install. */
int store_held_resolve(struct store *, int64_t id, int64_t job, const char *install,
    int coalesced);
/* A held request whose name does not exist: failed, with error. */
int store_held_fail(struct store *, int64_t id, const char *error, int64_t now);

/*
 * store-lifecycle.c: requests that expire, requeues, the persisted pause, and pruning the
 * limits table. Writes are inside the caller's transaction.
 */
/* A request row for expiry: job 0 is held for a name, uid -1 unknown; queued 0: finished. */
typedef int (*store_live_cb)(void *, int64_t id, int64_t job, int64_t uid,
    int64_t enqueued_at, int queued);
/* The unfinished request with the lowest id and when it was accepted (0, 0: none). */
int store_live_first(struct store *, int64_t *id, int64_t *enqueued_at);
/* Requests from id from on, in id order, at most limit, to cb until it returns non-zero. */
int store_live_scan(struct store *, int64_t from, int limit, store_live_cb, void *);
/* Unfinished requests of job below id below, at most limit. */
int store_job_expired(struct store *, int64_t job, int64_t below, int limit, store_live_cb,
    void *);
/* Every unfinished request below id below (queue-check). */
int store_live_below(struct store *, int64_t below, store_live_cb, void *);
/* An unfinished request expired, with why. 1 expired, 0 it was not unfinished, -1. */
int store_request_expire(struct store *, int64_t id, const char *error, int64_t now);
/* Request id was made by requeueing request from. */
int store_request_requeued_from(struct store *, int64_t id, int64_t from);
/* Since when sending is paused (wall ms), 0 if it is not; -1 on error. */
int64_t store_paused_get(struct store *);
/* Persist the pause (since: wall ms) or, with 0, the resume. */
int store_paused_put(struct store *, int64_t since);
/* Forget an install's limit rows (every window and block of it is over). */
int store_limits_forget(struct store *, const char *install);

#endif
