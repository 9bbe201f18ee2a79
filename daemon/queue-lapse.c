/* queue-lapse.c: installs whose limit state says nothing any more leave the limits table and memory, exactly timed. */
#include "compat.h"

#include <stdlib.h>

#include "queue-int.h"
#include "util.h"

#define LAPSE_BATCH 500            /* installs forgotten in one transaction */
#define LAPSE_RETRY_MS (60 * 1000) /* after a failed write */

/*
 * An install without jobs waits in q->lapse, keyed by when its windows, 429 blocks and
 * strikes are all over (sched_limits_lapse); one timer is armed for the first. Then its
 * rows leave the limits table and the install leaves memory: neither grows with every
 * install ever purged. A new job takes it out of the heap; its last job going puts it
 * back with the state that job's answer left. No scan: O(log n) per install that moves.
 */

static void lapse_cb(evutil_socket_t, short, void *);

void
lapse_init(struct queue *q)
{
	heap_init(&q->lapse);
	q->lapse_at = INT64_MAX;
	if ((q->lapse_ev = evtimer_new(q->base, lapse_cb, q)) == NULL)
		fatalx("out of memory creating a timer");
}

/* The install's jobs or limit state changed: it waits exactly while it has no job. */
void
lapse_track(struct queue *q, struct install *in)
{
	if (in->njobs > 0) {
		if (heap_contains(&in->ln))
			heap_remove(&q->lapse, &in->ln);
		return;
	}
	heap_set(&q->lapse, &in->ln, sched_limits_lapse(in->cls, &q->limits), 0);
}

static void
track_one(struct hnode *n, void *arg)
{
	lapse_track(arg, container_of(n, struct install, hn));
}

/* New intervals (SIGHUP) or a rebuilt limit state: every install's time moves. */
void
lapse_reload(struct queue *q)
{
	htab_foreach(&q->installs, track_one, q);
}

void
lapse_arm(struct queue *q)
{
	struct heap_node *top = heap_top(&q->lapse);
	struct timeval tv;
	int64_t at = INT64_MAX, now, o;

	if (top != NULL && !q->broken && !q->stopping)
		at = top->key > q->lapse_retry ? top->key : q->lapse_retry;
	if (at == q->lapse_at)
		return;
	q->lapse_at = at;
	if (at == INT64_MAX) {
		evtimer_del(q->lapse_ev);
		return;
	}
	now = queue_now();
	o = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(o / 1000);
	tv.tv_usec = (suseconds_t)((o % 1000) * 1000);
	evtimer_add(q->lapse_ev, &tv);
}

static void
lapse_run(struct queue *q)
{
	struct install *v[LAPSE_BATCH];
	struct heap_node *hn;
	int64_t now = queue_now();
	uint64_t gen;
	size_t n = 0, i;

	if (q->broken || q->stopping)
		return;
	while (n < LAPSE_BATCH && (hn = heap_top(&q->lapse)) != NULL && hn->key <= now) {
		heap_pop(&q->lapse);
		v[n++] = container_of(hn, struct install, ln);
	}
	if (n == 0)
		return;
	if (store_begin(q->store) != 0)
		goto fail;
	for (i = 0; i < n; i++) {
		if (store_limits_forget(q->store, v[i]->id) != 0)
			goto fail;
	}
	/* Forgetting need not wait for the disk: synced with the next sync. */
	if (store_commit_async(q->store, &gen) != 0)
		goto fail;
	q->lapse_retry = 0;
	for (i = 0; i < n; i++) {
		htab_remove(&q->installs, &v[i]->hn);
		free(v[i]);
	}
	q->stats.limits_forgotten += n;
	log_debug("forgot the lapsed limits of %zu install(s) without jobs", n);
	return;
fail:
	store_rollback(q->store);
	q->stats.storage_errors++;
	for (i = 0; i < n; i++)
		heap_set(&q->lapse, &v[i]->ln, v[i]->ln.key, 0);
	q->lapse_retry = now + LAPSE_RETRY_MS;
}

static void
lapse_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	q->lapse_at = INT64_MAX;
	lapse_run(q);
	queue_run(q);
}

void
lapse_free(struct queue *q)
{
	heap_free(&q->lapse);
	if (q->lapse_ev != NULL)
		event_free(q->lapse_ev);
}
