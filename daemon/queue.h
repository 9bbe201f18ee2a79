/* queue.h: the purge queue's life cycle; transports talk to it through ops.h. */
#ifndef WPE_QUEUE_H
#define WPE_QUEUE_H

#include <sys/types.h>

#include <stdint.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "config.h"
#include "proto.h"
#include "store.h"

struct queue;
struct waiter;

/* An answer for a transport: a JSON object the callee owns. */
typedef void (*queue_answer_cb)(void *arg, json_object *answer);

/* A histogram for /metrics: counts per bucket (not cumulative; the last is +Inf). */
#define HIST_BUCKETS 12
struct histogram {
	uint64_t n[HIST_BUCKETS];
	uint64_t count;
	double sum;
};

/* Counters behind "stats": every figure is kept as it changes, never counted on demand. */
struct queue_stats {
	uint64_t requests, coalesced, jobs, cancelled, merged, rejected_full;
	uint64_t api_calls, api_2xx, api_400, api_401, api_403, api_404, api_429, api_5xx,
	    api_other, api_transport;
	uint64_t retries, done, failed, commits, storage_errors, rebuilds;
	uint64_t expired, requeued;      /* requests past max_age; requests made by requeue */
	uint64_t limits_forgotten;       /* installs whose lapsed limit rows were pruned */
	int64_t waiters;
	/* The installs catalog: fetches begun, pages read, fetches failed, its API calls. */
	uint64_t catalog_fetches, catalog_pages, catalog_failed, catalog_calls;
	uint64_t unknown_installs;       /* enqueues refused: a name that does not exist */
	uint64_t replayed, idempotency_conflicts; /* enqueues answered from an earlier one */
	/* For /metrics (daemon/metrics.c). */
	uint64_t requests_type[PURGE_NTYPES];
	struct histogram api_seconds;    /* API call durations */
	struct histogram done_seconds;   /* a job's first request to the API's acceptance */
};

/* The outcome of one enqueue, as its group commit decided it. */
struct queue_placed {
	const char *error;       /* NULL: queued; else an error code ("storage", "queue_full") */
	char message[512];       /* for an error */
	int64_t request_id, job_id;
	int coalesced;
	char install[37];        /* "" while held */
	char name[INSTALL_NAME_MAX + 1]; /* "" when the catalog does not know the install */
	int held;                /* by a name, waiting for a first catalog (no job yet) */
	int64_t requeued_from;   /* a requeue: the request it enqueued again, or 0 */
	int resolving;           /* waiting for a catalog fetch: not answered yet */
	int replayed;            /* an earlier request with the same idempotency key */
	enum job_state state;    /* of that request, when replayed */
};

struct queue *queue_create(struct event_base *, struct config *, struct store *);
/* Load the queue from the store and start scheduling. 0, or -1. */
int queue_start(struct queue *);
void queue_free(struct queue *);

/* Apply new [limits] after SIGHUP and reschedule. */
void queue_reload(struct queue *, const struct limits *);
/*
 * Stop sending: no new requests start; those in flight get grace_ms to finish. done is
 * called once nothing is in flight any more.
 */
void queue_shutdown(struct queue *, int64_t grace_ms, void (*done)(void *), void *arg);
/*
 * Is the queue making progress? 0 when an enqueue has waited more than max_ms for its
 * commit: the watchdog stops pinging, and systemd restarts a daemon that turns but stalls.
 */
int queue_progressing(struct queue *, int64_t max_ms);
/* cb(arg) runs after every change of the queue (never re-entering it). */
void queue_set_changed_cb(struct queue *, void (*cb)(void *), void *arg);

#endif
