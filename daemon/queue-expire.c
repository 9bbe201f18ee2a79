/* queue-expire.c: requests that cannot wait forever: unfinished requests by age, expired after max_age. */
#include "compat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "queue-int.h"
#include "util.h"

#define EXPIRE_BATCH 1000          /* requests expired in one transaction */
#define EXPIRE_RETRY_MS 5000       /* after a failed write */

/*
 * Every unfinished request is here once, from the commit that accepted it to the one that
 * finished it: in q->live by id (cancel), on its job's list (a job that finishes takes its
 * requests along; one absorbed or merged hands them over) and in q->ages by acceptance
 * time. Deadlines are acceptance plus max_age, so their order is the order of acceptance
 * whatever max_age is: SIGHUP only moves the one timer, armed for the oldest request.
 * Acceptance times are wall-clock (they survive restarts); a clock set back delays
 * nothing but the requests accepted before it was.
 */

static void expire_cb(evutil_socket_t, short, void *);

void
live_init(struct queue *q)
{
	htab_init(&q->live);
	heap_init(&q->ages);
	if ((q->expire_ev = evtimer_new(q->base, expire_cb, q)) == NULL)
		fatalx("out of memory creating a timer");
}

struct live *
live_find(struct queue *q, int64_t id)
{
	struct hnode *n;
	struct live *l;

	for (n = htab_first(&q->live, htab_hash_u64((uint64_t)id)); n != NULL;
	    n = htab_next(n)) {
		l = container_of(n, struct live, hn);
		if (l->id == id)
			return l;
	}
	return NULL;
}

/* Request id (accepted at accepted, wall ms) is now on job j (NULL: held for a name). */
void
live_attach(struct queue *q, int64_t id, struct job *j, int64_t requester,
    int64_t accepted)
{
	struct live *l = live_find(q, id);

	if (l == NULL) {
		l = xcalloc(1, sizeof *l);
		l->id = id;
		l->requester = requester;
		heap_node_init(&l->an);
		htab_insert(&q->live, &l->hn, htab_hash_u64((uint64_t)id));
		heap_set(&q->ages, &l->an, accepted, (uint64_t)id);
	} else if (l->j != NULL)
		TAILQ_REMOVE(&l->j->live, l, jentry);
	l->j = j;
	if (j != NULL)
		TAILQ_INSERT_TAIL(&j->live, l, jentry);
}

static void
live_free(struct queue *q, struct live *l)
{
	htab_remove(&q->live, &l->hn);
	if (heap_contains(&l->an))
		heap_remove(&q->ages, &l->an);
	if (l->j != NULL)
		TAILQ_REMOVE(&l->j->live, l, jentry);
	free(l);
}

/* Request id finished on its own (cancelled): a held one leaves the held list too. */
void
live_del(struct queue *q, int64_t id)
{
	struct live *l = live_find(q, id);

	if (l == NULL)
		return;
	if (l->j == NULL)
		held_drop(q, id);
	live_free(q, l);
}

/* The requests of from now belong to to (absorbed or merged: see members_move). */
void
live_move(struct queue *q, struct job *from, struct job *to)
{
	struct live *l;

	TAILQ_FOREACH(l, &from->live, jentry)
		l->j = to;
	TAILQ_CONCAT(&to->live, &from->live, jentry);
	live_undefer(q, to);
}

/*
 * Job j is not being sent (any more): its requests whose max_age passed while it was
 * (expire_run left them out of the heap for its answer to settle) go back into the heap,
 * with their acceptance time, so they expire now, with the reason that answer gave.
 */
void
live_undefer(struct queue *q, struct job *j)
{
	struct live *l;

	if (j->state == JOB_SENDING)
		return;
	TAILQ_FOREACH(l, &j->live, jentry) {
		if (!heap_contains(&l->an))
			heap_set(&q->ages, &l->an, l->an.key, l->an.seq);
	}
}

/* A job went (finished, or forgotten for a rebuild): its requests are not live here. */
void
live_clear(struct queue *q, struct job *j)
{
	struct live *l;

	while ((l = TAILQ_FIRST(&j->live)) != NULL) {
		TAILQ_REMOVE(&j->live, l, jentry);
		l->j = NULL;
		live_free(q, l);
	}
}

static void
live_free_one(struct hnode *n, void *arg)
{
	live_free(arg, container_of(n, struct live, hn));
}

void
live_free_all(struct queue *q)
{
	htab_foreach(&q->live, live_free_one, q);
}

static void
load_live(void *arg, int64_t id, int64_t job, int64_t uid, int64_t enqueued_at)
{
	struct queue *q = arg;
	struct job *j = job != 0 ? job_find(q, job) : NULL;

	if (job != 0 && j == NULL) {
		log_warn("database: request %lld is unfinished but job %lld is not; it cannot "
		    "expire", (long long)id, (long long)job);
		return;
	}
	live_attach(q, id, j, uid, enqueued_at);
}

/* After the jobs and the held requests were loaded: their requests. */
int
live_load(struct queue *q)
{
	live_free_all(q);
	return store_live_load(q->store, load_live, q);
}

/* Arm the one timer for the oldest request's expiry (or a retry), if it moved. */
void
expire_arm(struct queue *q)
{
	struct heap_node *top = heap_top(&q->ages);
	struct timeval tv;
	int64_t at = 0, now, o;

	if (top != NULL && q->limits.max_age > 0 && !q->broken && !q->stopping) {
		at = sched_expires_at(top->key, q->limits.max_age);
		if (at < q->expire_retry)
			at = q->expire_retry;
	}
	if (at == q->expire_at)
		return;
	q->expire_at = at;
	if (at == 0) {
		evtimer_del(q->expire_ev);
		return;
	}
	now = clock_wall_ms();
	o = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(o / 1000);
	tv.tv_usec = (suseconds_t)((o % 1000) * 1000);
	evtimer_add(q->expire_ev, &tv);
}

/* What was in the way of j's requests (NULL: a held request), for their owners. */
static void
expire_reason(struct queue *q, const struct job *j, char *buf, size_t len)
{
	struct expiry_facts f = { 0 };
	int64_t o = sched_outage_since(&q->outage);

	f.max_age_s = q->limits.max_age;
	f.paused_since = q->paused ? q->paused_since : 0;
	f.outage_since = o == SCHED_NEVER ? 0 : queue_to_wall(o);
	f.held = j == NULL;
	f.catalog_error = q->fetch.error;
	if (j != NULL) {
		f.attempts = j->attempts;
		f.http_status = j->http_status;
		f.message = j->message;
	}
	sched_expiry_reason(&f, buf, len);
}

/* Group the batch by job (a job's requests expire together; the job may go with them). */
static int
by_job(const void *a, const void *b)
{
	const struct live *x = *(const struct live *const *)a;
	const struct live *y = *(const struct live *const *)b;
	uintptr_t jx = (uintptr_t)x->j, jy = (uintptr_t)y->j;

	if (jx != jy)
		return jx < jy ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Expire the requests whose max_age passed, a batch at a time, in one transaction: each
 * becomes "expired" with the reason, and a queued job none of whose requests is left
 * goes too. Requests of a job being sent wait for its answer: a purge the API accepted
 * is done, not expired (and "not sent" would be false); any other answer expires them.
 * Memory follows only once the transaction committed; if it fails, the batch goes back
 * into the heap untouched and is tried again later.
 */
static void
expire_run(struct queue *q)
{
	struct live *v[EXPIRE_BATCH], *l;
	struct heap_node *hn;
	struct store_job row;
	struct job *j;
	char reason[512];
	int64_t now = clock_wall_ms(), id;
	uint64_t gen;
	size_t n = 0, i, k;
	int drop;

	if (q->broken || q->stopping || q->limits.max_age == 0)
		return;
	while (n < EXPIRE_BATCH && (hn = heap_top(&q->ages)) != NULL &&
	    sched_expired(hn->key, q->limits.max_age, now)) {
		heap_pop(&q->ages);
		l = container_of(hn, struct live, an);
		/*
		 * Its purge is out: the API may be acting on it right now. The answer settles
		 * it (done: the request is done), or puts it back (live_undefer) to expire then.
		 */
		if (l->j != NULL && l->j->state == JOB_SENDING)
			continue;
		v[n++] = l;
	}
	if (n == 0)
		return;
	qsort(v, n, sizeof(struct live *), by_job);
	if (store_begin(q->store) != 0)
		goto fail;
	for (i = 0; i < n; i = k) {
		j = v[i]->j;
		for (k = i; k < n && v[k]->j == j; k++)
			;
		expire_reason(q, j, reason, sizeof reason);
		for (; i < k; i++) {
			if (store_request_expire(q->store, v[i]->id, reason, now) < 0)
				goto fail;
		}
	}
	/* The jobs to drop: queued ones whose every request is in this batch. */
	for (i = 0; i < n; i = k) {
		j = v[i]->j;
		for (k = i; k < n && v[k]->j == j; k++)
			;
		if (j == NULL || j->state != JOB_QUEUED || j->nreq != (int)(k - i))
			continue;
		job_row(j, &row, now);
		row.state = JOB_EXPIRED;
		row.message = "dropped: every request on it expired (max_age)";
		if (store_job_update(q->store, &row) != 0)
			goto fail;
	}
	if (store_commit_async(q->store, &gen) != 0)
		goto fail;

	/* Committed: now memory (the reasons are those written: nothing they say moved). */
	q->expire_retry = 0;
	for (i = 0; i < n; i = k) {
		j = v[i]->j;
		for (k = i; k < n && v[k]->j == j; k++)
			;
		drop = j != NULL && j->state == JOB_QUEUED && j->nreq == (int)(k - i);
		expire_reason(q, j, reason, sizeof reason);
		if (j != NULL)
			log_warn("job %lld: %zu request(s) expired (request %lld%s): %s%s",
			    (long long)j->id, k - i, (long long)v[i]->id, k - i > 1 ? " ..." : "",
			    reason, drop ? "; the job is dropped" : "");
		for (; i < k; i++) {
			l = v[i];
			id = l->id;
			if (j != NULL)
				member_sub(q, j, l->requester);
			else {
				log_warn("request %lld: expired: %s", (long long)id, reason);
				held_drop(q, id);
			}
			live_free(q, l);
			waiters_wake(q, id, 0);
		}
		if (drop)
			job_free(q, j);
	}
	q->store_failing = 0;
	q->stats.expired += n;
	prune_arm(q, now);
	return;
fail:
	log_error("could not expire %zu request(s): %s", n, store_errmsg(q->store));
	store_rollback(q->store);
	q->stats.storage_errors++;
	q->store_failing = 1;
	for (i = 0; i < n; i++)
		heap_set(&q->ages, &v[i]->an, v[i]->an.key, v[i]->an.seq);
	q->expire_retry = now + EXPIRE_RETRY_MS;
}

static void
expire_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	q->expire_at = 0;
	expire_run(q);
	queue_run(q);       /* jobs went; the timer is armed for the next oldest */
}

void
expire_free(struct queue *q)
{
	live_free_all(q);
	htab_free(&q->live);
	heap_free(&q->ages);
	if (q->expire_ev != NULL)
		event_free(q->expire_ev);
}
