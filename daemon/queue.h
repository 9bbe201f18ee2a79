/* queue.h: the purge queue: requests, jobs, coalescing, sending and waiting. */
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

/* Answer for an enqueue once its group commit is done: a JSON object the callee owns. */
typedef void (*queue_answer_cb)(void *arg, json_object *answer);

struct queue *queue_create(struct event_base *, struct config *, struct store *);
/* Load the queue from the store and start scheduling. 0, or -1. */
int queue_start(struct queue *);
void queue_free(struct queue *);

/*
 * Enqueue: committed with the other requests of this loop turn, then answered through
 * cb(arg, ...). If the asker goes away first, queue_enqueue_forget(arg) drops every
 * answer still owed to it (the requests themselves stay queued).
 */
void queue_enqueue(struct queue *, const struct proto_request *, uid_t, pid_t,
    queue_answer_cb, void *arg);
void queue_enqueue_forget(struct queue *, void *arg);

json_object *queue_status(struct queue *, int64_t id, uid_t, int admin);
/*
 * Wait for a request to finish. Answers at once (returns NULL) when it already is or does
 * not exist; otherwise returns a waiter that will answer through cb exactly once, unless
 * it is cancelled first with queue_wait_cancel. cb never runs a client's next request:
 * it may only record the answer.
 */
struct waiter *queue_wait(struct queue *, int64_t id, int64_t timeout_ms, uid_t, int admin,
    queue_answer_cb, void *arg);
void queue_wait_cancel(struct queue *, struct waiter *);
/* Cancel a request; only its owner or an administrator may. */
json_object *queue_cancel(struct queue *, int64_t id, uid_t, int admin);
/* One page of unfinished jobs, filtered as the request says (see docs/protocol.md). */
json_object *queue_list(struct queue *, const struct proto_request *);
json_object *queue_stats(struct queue *, int connections);
json_object *queue_pause(struct queue *, int paused);

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
/* A one-line summary for sd_notify STATUS=. */
void queue_summary(struct queue *, char *buf, size_t len);

#endif
