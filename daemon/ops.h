/* ops.h: the queue's operations as JSON answers: what every transport calls. */
#ifndef WPE_OPS_H
#define WPE_OPS_H

#include <sys/types.h>

#include <stdint.h>

#include <json-c/json.h>

#include "proto.h"
#include "queue.h"
#include "util.h"

/*
 * Who is asking, as the transport authenticated them: the requester the queue counts
 * (quota, fairness, ownership of reasons and cancels) and whether they administer it.
 * The Unix socket's requester is the peer's uid; an HTTP token's is a stable negative
 * id derived from its name (tokens_requester), so tokens never collide with uids.
 */
struct ops_caller {
	uid_t uid;               /* Unix socket: the peer's credentials (logs only) */
	pid_t pid;
	int admin;
	int64_t requester;       /* who owns the requests: quota, fair turns, reasons */
	const char *name;        /* NULL: named by uid and pid in logs; else e.g. a token */
};

/*
 * Enqueue: committed with the other requests of this loop turn, then answered through
 * cb(arg, ...). If the asker goes away first, ops_forget(arg) drops every answer still
 * owed to it (the requests themselves stay queued).
 * req->source (who asked, may be NULL) is stored with the request. req->idem_key ("" for
 * none) is scoped to c->requester: a request that requester made with the same key is
 * answered again ("replayed": true, nothing created), or refused with
 * idempotency_conflict if it was for another install or type. A transport only fills
 * the two fields (HTTP: the body's "source", the Idempotency-Key header checked with
 * proto_idem_key_valid).
 */
void ops_enqueue(struct queue *, const struct proto_request *, const struct ops_caller *,
    queue_answer_cb, void *arg);
void ops_forget(struct queue *, void *arg);
json_object *ops_status(struct queue *, int64_t id, const struct ops_caller *);
/*
 * Wait for a request to finish. Answers at once (returns NULL) when it already is or does
 * not exist; otherwise returns a waiter that will answer through cb exactly once, unless
 * it is cancelled first with ops_wait_cancel. cb never runs a client's next request: it
 * may only record the answer.
 */
struct waiter *ops_wait(struct queue *, int64_t id, int64_t timeout_ms,
    const struct ops_caller *, queue_answer_cb, void *arg);
void ops_wait_cancel(struct queue *, struct waiter *);
/* Cancel a request; only its owner or an administrator may. */
json_object *ops_cancel(struct queue *, int64_t id, const struct ops_caller *);
/* One page of unfinished jobs, filtered as the request says (see docs/protocol.md). */
json_object *ops_list(struct queue *, const struct proto_request *);
/*
 * The same, seeing only the jobs visible(arg, install) accepts: the filter applies before
 * the page, "total" and "next" are cut, so nothing outside it shows (a scoped token).
 */
json_object *ops_list_visible(struct queue *, const struct proto_request *,
    int (*visible)(const void *, const char *), const void *arg);
/* 1 while the loop runs and the store takes writes (the last write succeeded). */
int ops_healthy(struct queue *);
json_object *ops_stats(struct queue *, int connections);
/*
 * Pause or resume sending (ops-lifecycle.c): persisted first, so a paused daemon stays
 * paused across restarts until resumed. {"ok":true,"paused":B,"paused_since":T}, or a
 * storage error (nothing changed).
 */
json_object *ops_pause(struct queue *, int paused);
/*
 * Requeue a failed, expired or cancelled request: a new request with its fields (and
 * requeued_from) through the usual enqueue path, owned by the same requester. Returns an
 * error answer at once (not_found, forbidden, not_requeueable, storage), or NULL: then
 * cb(arg, answer) answers like an enqueue, once committed (ops_forget drops it). Only
 * the request's owner or an administrator may.
 */
json_object *ops_requeue(struct queue *, int64_t id, const struct ops_caller *,
    queue_answer_cb, void *arg);
/* A one-line summary for sd_notify STATUS=. */
void ops_summary(struct queue *, char *buf, size_t len);

/*
 * The installs catalog (ops-installs.c). ops_installs answers the whole catalog (sorted by
 * name: name, environment, domain, id, account, last purge, queued jobs) at once and
 * returns NULL; with req->refresh it first reads it again from the API (an administrator
 * any time, anyone else at most once a minute) and returns a waiter that answers through
 * cb once that fetch settled, unless cancelled first with ops_wait_cancel.
 */
/*
 * visible (NULL: everything) limits the answer to the installs it accepts, before the
 * page, "count" and "next" are cut (a scoped HTTP token); varg must outlive the waiter.
 */
typedef int (*ops_visible_fn)(const void *varg, const char *id, const char *name);
struct waiter *ops_installs(struct queue *, const struct proto_request *,
    const struct ops_caller *, queue_answer_cb, void *arg, ops_visible_fn visible,
    const void *varg);
/* Installs by name after after ("" or NULL: from the first), at most limit (0: all). */
json_object *ops_installs_list(struct queue *, const char *after, int64_t limit,
    ops_visible_fn visible, const void *varg);
json_object *ops_catalog_stats(struct queue *);
/*
 * Resolve what a client calls an install (a UUID or a name) with the catalog as it is:
 * 1 and id (and name, "" if the catalog does not know it) filled; 0 for a name the
 * catalog does not know (or a malformed one). A UUID always resolves. No fetch.
 */
int ops_install_resolve(struct queue *, const char *what, char id[37],
    char name[INSTALL_NAME_MAX + 1]);
/* The catalog itself, to walk with catalog_len/catalog_at (catalog.h); never NULL. */
const struct catalog *ops_catalog(struct queue *);

/* For the queue's own asynchronous answers. */
json_object *ops_error(const char *code, const char *fmt, ...) printflike(2, 3);
json_object *ops_enqueue_answer(const struct queue_placed *);
json_object *ops_status_object(const struct store_status *, int64_t requester, int admin);

#endif
