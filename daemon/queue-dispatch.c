/* queue-dispatch.c: when each job may go, fair turns between requesters, starting jobs. */
#include "compat.h"

#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

/* Is a class of t on this install being sent? (An install has a handful of jobs.) */
int
classes_busy(const struct install *in, enum purge_type t)
{
	unsigned mask = sched_type_classes(t);
	const struct job *j;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		if (j->state == JOB_SENDING && (sched_type_classes(j->type) & mask) != 0)
			return 1;
	}
	return 0;
}

/* Take j out of whatever structure it waits in. */
void
job_unslot(struct queue *q, struct job *j)
{
	struct member *m;

	if (j->slot == SLOT_TIMED)
		heap_remove(&q->timed, &j->tn);
	else if (j->slot == SLOT_READY) {
		for (m = j->members; m != NULL; m = m->next)
			member_unready(q, m);
	}
	j->slot = SLOT_NONE;
}

/*
 * Put a queued job where it waits now: by time, behind its install's purge in flight, or
 * among its requesters' ready jobs. A job that stays where it is keeps its place (a
 * ready one its requesters' turns). O(log n) per requester of the job.
 */
void
job_sched(struct queue *q, struct job *j, int64_t now)
{
	struct member *m;
	enum job_slot to;
	int64_t ready;

	if (j->state != JOB_QUEUED) {
		job_unslot(q, j);
		return;
	}
	ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
	if (ready > now)
		to = SLOT_TIMED;
	else if (classes_busy(j->install, j->type))
		to = SLOT_PARKED;
	else
		to = SLOT_READY;
	if (to == SLOT_TIMED) {
		if (j->slot != SLOT_TIMED)
			job_unslot(q, j);
		heap_set(&q->timed, &j->tn, ready, (uint64_t)j->id);
		j->slot = SLOT_TIMED;
		return;
	}
	if (to == j->slot)
		return;
	job_unslot(q, j);
	if (to == SLOT_PARKED) {
		j->slot = SLOT_PARKED;
		return;
	}
	if (j->members == NULL)
		member_add(q, j, -1, 0);  /* nobody known: it still gets turns */
	j->slot = SLOT_READY;
	for (m = j->members; m != NULL; m = m->next)
		member_ready(q, m);
}

/* The install's limit state or its purges in flight changed: place its jobs again. */
void
install_resched(struct queue *q, struct install *in, int64_t now)
{
	struct job *j;

	TAILQ_FOREACH(j, &in->jobs, ientry)
		job_sched(q, j, now);
}

/* Write the limit state cls of the classes in mask (inside the caller's transaction). */
int
persist_classes(struct queue *q, const struct install *in, const struct class_state *cls,
    unsigned mask)
{
	struct class_state w;
	int c;

	for (c = 0; c < NCLASSES; c++) {
		if (!(mask & (1u << c)))
			continue;
		w = cls[c];
		w.last_start = queue_to_wall(w.last_start);
		w.blocked_until = queue_to_wall(w.blocked_until);
		if (store_limit_put(q->store, in->id, c, &w) != 0)
			return -1;
	}
	return 0;
}

/*
 * The request could not even be handed to libcurl, so the API never saw it: queue the
 * job again and give the window back. If even that cannot be written, the store says
 * "sending" for a job nobody sends: the rebuild after the break queues it.
 */
static void
job_unstart(struct queue *q, struct job *j, int64_t now, const char *cause)
{
	struct class_state ncls[NCLASSES];
	struct store_job row;
	unsigned mask = sched_type_classes(j->type);
	int c;

	log_error("job %lld: could not start sending: %s", (long long)j->id, cause);
	memcpy(ncls, j->install->cls, sizeof ncls);
	for (c = 0; c < NCLASSES; c++) {
		if ((mask & (1u << c)) && ncls[c].last_start == j->attempt->started)
			ncls[c].last_start = j->attempt->prev_start[c];
	}
	job_row(j, &row, 0);
	row.state = JOB_QUEUED;
	row.not_before = queue_to_wall(now + q->limits.retry_initial * 1000);
	if (store_begin(q->store) != 0 || persist_classes(q, j->install, ncls, mask) != 0 ||
	    store_job_update(q->store, &row) != 0 || store_commit(q->store) != 0) {
		store_rollback(q->store);
		queue_break(q);
		return;
	}
	memcpy(j->install->cls, ncls, sizeof ncls);
	job_set_state(q, j, JOB_QUEUED);
	j->not_before = now + q->limits.retry_initial * 1000;
	install_resched(q, j->install, now);
}

/* Hand a job whose "sending" is durable to the sender. */
static void
job_launch(struct queue *q, struct job *j, int64_t now)
{
	char *cause = NULL;

	if (sender_start(q->sender, j, j->install->id, j->type, &cause) != 0) {
		job_unstart(q, j, now, cause);
		free(cause);
		return;
	}
	j->in_flight = 1;
	q->stats.api_calls++;
	if (j->attempts > 1)
		q->stats.retries++;
	log_info("job %lld: sending %s purge of %s%s%s%s (attempt %d)", (long long)j->id,
	    purge_type_name(j->type), j->install->id,
	    names_of(q, j->install->id)[0] != '\0' ? " (" : "", names_of(q, j->install->id),
	    names_of(q, j->install->id)[0] != '\0' ? ")" : "", j->attempts);
}

/*
 * Commit "sending" and the window it opens, then, once that is on disk, hand it to the
 * sender: the API never sees a purge whose start a power cut could forget. The sync runs
 * on the store's worker thread; meanwhile the loop goes on (queue_launch).
 */
static void
job_start(struct queue *q, struct job *j, int64_t now)
{
	struct class_state ncls[NCLASSES];
	struct store_job row;
	unsigned mask = sched_type_classes(j->type);
	int64_t started = clock_wall_ms();
	uint64_t gen = 0;
	int c;

	memcpy(ncls, j->install->cls, sizeof ncls);
	for (c = 0; c < NCLASSES; c++) {
		if (mask & (1u << c))
			ncls[c].last_start = now;
	}
	job_row(j, &row, 0);
	row.state = JOB_SENDING;
	row.attempts = j->attempts + 1;
	row.started_at = started;
	if (store_begin(q->store) != 0 || persist_classes(q, j->install, ncls, mask) != 0 ||
	    store_job_update(q->store, &row) != 0 ||
	    store_commit_async(q->store, &gen) != 0) {
		store_rollback(q->store);
		q->stats.storage_errors++;
		q->store_failing = 1;
		/* Nothing was written: it stays queued and is tried again a little later. */
		j->not_before = now + q->limits.retry_initial * 1000;
		job_sched(q, j, now);
		log_error("job %lld: could not record the start of sending: %s; retrying later",
		    (long long)j->id, store_errmsg(q->store));
		return;
	}
	q->store_failing = 0;
	job_unslot(q, j);
	if (j->attempt == NULL)
		j->attempt = xcalloc(1, sizeof *j->attempt);
	for (c = 0; c < NCLASSES; c++) {
		j->attempt->prev_start[c] = j->install->cls[c].last_start;
		j->install->cls[c] = ncls[c];
	}
	job_set_state(q, j, JOB_SENDING);
	j->attempts++;
	j->attempt->started = now;
	j->started_at = started;
	install_resched(q, j->install, now);
	if (gen == 0 || store_durable(q->store) >= gen) {
		job_launch(q, j, now);
		return;
	}
	if (q->nstarting == q->capstarting) {
		q->capstarting = q->capstarting == 0 ? 16 : q->capstarting * 2;
		q->starting = xrealloc(q->starting, q->capstarting * sizeof *q->starting);
	}
	q->starting[q->nstarting].id = j->id;
	q->starting[q->nstarting++].gen = gen;
}

/*
 * The store synced: launch the jobs whose start it holds now (in the order they were
 * started; generations ascend). A job that is no longer waiting for it (a rebuild) is
 * left to the store: "sending" and not in flight, it is queued again.
 */
void
queue_launch(struct queue *q)
{
	uint64_t done;
	size_t i, k;
	struct job *j;

	if (q->nstarting == 0)
		return;
	done = store_durable(q->store);
	for (i = 0; i < q->nstarting && q->starting[i].gen <= done; i++) {
		j = job_find(q, q->starting[i].id);
		/* At shutdown too: "sending" was shown, so it goes and gets the grace. */
		if (j != NULL && j->state == JOB_SENDING && !j->in_flight && !q->broken)
			job_launch(q, j, queue_now());
	}
	for (k = 0; i < q->nstarting; i++, k++)
		q->starting[k] = q->starting[i];
	q->nstarting = k;
	queue_check_stopped(q);
}

/* Purges at the API or about to be: what max_in_flight and the outage gate count. */
int
queue_in_flight(struct queue *q)
{
	return sender_in_flight(q->sender) + (int)q->nstarting;
}

static void
timer_arm(struct queue *q, int64_t at, int64_t now)
{
	struct timeval tv;
	int64_t o;

	if (at == q->timer_at)
		return;
	q->timer_at = at;
	if (at == INT64_MAX) {
		evtimer_del(q->timer);
		return;
	}
	o = at > now ? at - now : 0;
	tv.tv_sec = o / 1000;
	tv.tv_usec = (o % 1000) * 1000;
	evtimer_add(q->timer, &tv);
}

/*
 * Move the jobs whose time came to where they wait now, then give free sending slots
 * to the requesters with ready jobs in turn, one job each per turn; arm the one timer
 * for the earliest time anything changes. O(log n) per job that moves, nothing for the
 * rest.
 */
static void
queue_run_once(struct queue *q)
{
	struct heap_node *hn;
	struct requester *r;
	struct job *j;
	int64_t now = queue_now(), next = INT64_MAX, o;

	if (q->paused || q->stopping || q->broken) {
		timer_arm(q, INT64_MAX, now);
		return;
	}
	while ((hn = heap_top(&q->timed)) != NULL && hn->key <= now)
		job_sched(q, container_of(hn, struct job, tn), now);
	while ((r = TAILQ_FIRST(&q->ring)) != NULL &&
	    queue_in_flight(q) < q->cfg->max_in_flight) {
		if (!sched_outage_allows(&q->outage, now, queue_in_flight(q))) {
			o = sched_outage_next(&q->outage);
			if (o > now)
				next = o;
			break;
		}
		/* Its turn is used: to the back of the ring. */
		TAILQ_REMOVE(&q->ring, r, ring);
		TAILQ_INSERT_TAIL(&q->ring, r, ring);
		j = container_of(heap_top(&r->ready), struct member, hn)->j;
		if (classes_busy(j->install, j->type)) {
			job_unslot(q, j);   /* cannot happen: its install would have parked it */
			j->slot = SLOT_PARKED;
			continue;
		}
		job_start(q, j, now);
		if (q->broken) {
			timer_arm(q, INT64_MAX, now);
			return;
		}
	}
	if ((hn = heap_top(&q->timed)) != NULL && hn->key < next)
		next = hn->key;
	timer_arm(q, next, now);
}

/* Start every job that may go now and arm the one timer for the earliest that may not. */
void
queue_run(struct queue *q)
{
	if (q->running) {
		q->rerun = 1;
		return;
	}
	q->running = 1;
	do {
		q->rerun = 0;
		queue_run_once(q);
	} while (q->rerun);
	q->running = 0;
	expire_arm(q);
	lapse_arm(q);
	if (q->check)
		queue_check(q);
	/* Every change ends here: tell whoever shows the summary. */
	if (q->changed_cb != NULL)
		q->changed_cb(q->changed_arg);
}

/* Shutdown ------------------------------------------------------------------------- */

void
queue_check_stopped(struct queue *q)
{
	void (*cb)(void *) = q->stopped_cb;

	if (q->stopping && cb != NULL && queue_in_flight(q) == 0) {
		q->stopped_cb = NULL;
		cb(q->stopped_arg);
	}
}

static void
requeue_aborted(void *arg, void *job)
{
	struct job *j = job;

	(void)arg;
	/*
	 * The attempt may still reach the API: leave the store saying "sending", so that the
	 * next start treats it as interrupted (queued again, window starting then).
	 */
	j->in_flight = 0;
	log_notice("job %lld: aborted at shutdown; it is sent again after the restart",
	    (long long)j->id);
}

static void
grace_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	log_warn("%d purge(s) still in flight at the end of the shutdown grace period",
	    sender_in_flight(q->sender));
	sender_abort_all(q->sender, requeue_aborted, q);
	q->nstarting = 0;   /* never launched: "sending" in the store, queued again */
	queue_check_stopped(q);
}

void
queue_shutdown(struct queue *q, int64_t grace_ms, void (*done)(void *), void *arg)
{
	struct timeval tv = { grace_ms / 1000, (grace_ms % 1000) * 1000 };

	catalog_stop(q);     /* enqueues waiting for it go into this last commit */
	q->stopping = 1;
	q->stopped_cb = done;
	q->stopped_arg = arg;
	timer_arm(q, INT64_MAX, 0);
	if (q->prune_ev != NULL)
		evtimer_del(q->prune_ev);
	/* Commit what this turn accepted before anything else, and answer it. */
	if (!TAILQ_EMPTY(&q->pending))
		queue_flush(q);
	queue_deliver(q, 1);
	if (queue_in_flight(q) > 0) {
		log_notice("waiting up to %lld ms for %d purge(s) in flight", (long long)grace_ms,
		    queue_in_flight(q));
		q->grace_ev = evtimer_new(q->base, grace_cb, q);
		evtimer_add(q->grace_ev, &tv);
	}
	queue_check_stopped(q);
}
