/* queue-waiters.c: clients waiting for requests to finish, found by request and by job. */
#include "compat.h"

#include <stdlib.h>

#include "ops.h"
#include "queue-int.h"
#include "util.h"

static void
waiter_hook(struct queue *q, struct waiter *w)
{
	htab_insert(&q->waiters_req, &w->by_req, htab_hash_u64((uint64_t)w->request_id));
	htab_insert(&q->waiters_job, &w->by_job, htab_hash_u64((uint64_t)w->job_id));
	w->waiting = 1;
}

static void
waiter_unhook(struct queue *q, struct waiter *w)
{
	if (w->waiting) {
		htab_remove(&q->waiters_req, &w->by_req);
		htab_remove(&q->waiters_job, &w->by_job);
		w->waiting = 0;
	}
	if (w->batch != NULL) {
		TAILQ_REMOVE(w->batch, w, entry);
		w->batch = NULL;
	}
}

void
waiter_free(struct waiter *w)
{
	waiter_unhook(w->q, w);
	w->q->stats.waiters--;
	if (w->timer != NULL)
		event_free(w->timer);
	free(w);
}

/*
 * Answer one waiter exactly once. It is off every table and freed before the callback
 * runs, so nothing the callback does can reach it.
 */
static void
waiter_answer(struct waiter *w, json_object *o)
{
	queue_answer_cb cb = w->cb;
	void *arg = w->arg;

	waiter_free(w);
	cb(arg, o);
}

static void
waiter_timeout(evutil_socket_t fd, short events, void *arg)
{
	struct waiter *w = arg;
	json_object *o;

	(void)fd;
	(void)events;
	o = ops_error("timeout", "request %lld is not finished yet; it stays queued",
	    (long long)w->request_id);
	json_object_object_add(o, "id", json_object_new_int64(w->request_id));
	waiter_answer(w, o);
}

/* A waiter on request_id, now part of job_id, answered by cb(arg) once it finishes. */
struct waiter *
waiter_new(struct queue *q, int64_t request_id, int64_t job_id, int64_t timeout_ms,
    int64_t requester, int admin, queue_answer_cb cb, void *arg)
{
	struct waiter *w = xcalloc(1, sizeof *w);
	struct timeval tv;

	w->q = q;
	w->request_id = request_id;
	w->job_id = job_id;
	w->requester = requester;
	w->admin = admin;
	w->cb = cb;
	w->arg = arg;
	if (timeout_ms >= 0) {
		if ((w->timer = evtimer_new(q->base, waiter_timeout, w)) == NULL)
			fatalx("out of memory creating a timer");
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
		evtimer_add(w->timer, &tv);
	}
	waiter_hook(q, w);
	q->stats.waiters++;
	return w;
}

/*
 * Settle a batch of waiters whose request may have finished: answered if it did, back on
 * the tables (under its current job) if not. Each is taken from the head of the batch
 * before anything runs, and a waiter freed by a callback leaves the batch as it goes, so
 * callbacks that add or cancel waiters never leave this loop holding a freed pointer.
 */
static void
waiters_settle(struct queue *q, struct waiters *batch)
{
	struct waiter *w;
	struct store_status ss;
	json_object *o;
	int rc;

	while ((w = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, w, entry);
		w->batch = NULL;
		rc = store_request_get(q->store, w->request_id, &ss);
		if (rc == 1 && !job_state_final(ss.state)) {
			/* Still unfinished (e.g. a cancelled sibling): keep waiting. */
			w->job_id = ss.job;
			store_status_free(&ss);
			waiter_hook(q, w);
		} else if (rc >= 0) {
			o = rc == 1 ? ops_status_object(&ss, w->requester, w->admin) :
			    ops_error("not_found", "there is no request %lld",
			    (long long)w->request_id);
			if (rc == 1)
				store_status_free(&ss);
			waiter_answer(w, o);
		} else {
			/* Unreadable now: keep waiting; the next wake or the timeout answers. */
			waiter_hook(q, w);
		}
	}
}

static void
batch_add(struct queue *q, struct waiters *batch, struct waiter *w)
{
	waiter_unhook(q, w);
	TAILQ_INSERT_TAIL(batch, w, entry);
	w->batch = batch;
}

/* Answer the finished waiters on request id, or on the requests of job if id is 0. */
void
waiters_wake(struct queue *q, int64_t request_id, int64_t job_id)
{
	struct waiters batch = TAILQ_HEAD_INITIALIZER(batch);
	struct hnode *n, *next;
	struct waiter *w;

	if (request_id != 0) {
		for (n = htab_first(&q->waiters_req, htab_hash_u64((uint64_t)request_id));
		    n != NULL; n = next) {
			next = htab_next(n);
			w = container_of(n, struct waiter, by_req);
			if (w->request_id == request_id)
				batch_add(q, &batch, w);
		}
	} else {
		for (n = htab_first(&q->waiters_job, htab_hash_u64((uint64_t)job_id));
		    n != NULL; n = next) {
			next = htab_next(n);
			w = container_of(n, struct waiter, by_job);
			if (w->job_id == job_id)
				batch_add(q, &batch, w);
		}
	}
	waiters_settle(q, &batch);
}

struct all_batch {
	struct queue *q;
	struct waiters *batch;
};

static void
add_to_batch(struct hnode *n, void *arg)
{
	struct all_batch *ab = arg;

	batch_add(ab->q, ab->batch, container_of(n, struct waiter, by_req));
}

/* After a rebuild: every waiter whose request finished meanwhile is answered. */
void
waiters_recheck(struct queue *q)
{
	struct waiters batch = TAILQ_HEAD_INITIALIZER(batch);
	struct all_batch ab = { q, &batch };

	htab_foreach(&q->waiters_req, add_to_batch, &ab);
	waiters_settle(q, &batch);
}

/* Waiters on the requests of job from now wait on job to (their requests moved). */
void
waiters_move(struct queue *q, int64_t from, int64_t to)
{
	struct waiters moved = TAILQ_HEAD_INITIALIZER(moved);
	struct hnode *n, *next;
	struct waiter *w;

	for (n = htab_first(&q->waiters_job, htab_hash_u64((uint64_t)from)); n != NULL;
	    n = next) {
		next = htab_next(n);
		w = container_of(n, struct waiter, by_job);
		if (w->job_id != from)
			continue;
		/* Held on a local list (a waiting waiter is in no batch) until re-keyed. */
		htab_remove(&q->waiters_job, &w->by_job);
		TAILQ_INSERT_TAIL(&moved, w, entry);
	}
	while ((w = TAILQ_FIRST(&moved)) != NULL) {
		TAILQ_REMOVE(&moved, w, entry);
		w->job_id = to;
		htab_insert(&q->waiters_job, &w->by_job, htab_hash_u64((uint64_t)to));
	}
}

static void
free_one(struct hnode *n, void *arg)
{
	(void)arg;
	waiter_free(container_of(n, struct waiter, by_req));
}

void
waiters_free_all(struct queue *q)
{
	struct waiter *w;

	htab_foreach(&q->waiters_req, free_one, NULL);
	/* The analyzer cannot follow TAILQ_REMOVE in waiter_free: a known false positive. */
	while ((w = TAILQ_FIRST(&q->fetch.waiters)) != NULL) /* NOLINT(clang-analyzer-unix.Malloc) */
		waiter_free(w); /* NOLINT(clang-analyzer-unix.Malloc) */
}

/* A client waiting for the catalog fetch under way (installs --refresh). */
struct waiter *
waiter_catalog_new(struct queue *q, int64_t requester, int admin, queue_answer_cb cb,
    void *arg)
{
	struct waiter *w = xcalloc(1, sizeof *w);

	w->q = q;
	w->requester = requester;
	w->admin = admin;
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&q->fetch.waiters, w, entry);
	w->batch = &q->fetch.waiters;
	q->stats.waiters++;
	return w;
}

/* The fetch settled: each waiter gets the catalog as it is now. */
void
waiters_catalog_done(struct queue *q)
{
	struct waiter *w;

	while ((w = TAILQ_FIRST(&q->fetch.waiters)) != NULL)
		waiter_answer(w, ops_installs_list(q, w->after, w->limit, w->visible,
		    w->varg));
}
