/* queue-expire.c: requests that cannot wait forever: unfinished requests expire after max_age. */
#include "compat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

#define EXPIRE_BATCH 1000          /* requests expired in one transaction */
#define EXPIRE_ROWS 4096           /* rows read in one turn (finished ones included) */
#define EXPIRE_RETRY_MS 5000       /* after a failed write */

/*
 * Nothing is kept per request (100,000 queued requests must stay small): request ids
 * follow acceptance, so the requests are read from the database in id order from
 * q->expire_scan on, and the one timer is armed for the first unfinished one's deadline.
 * Every request below expire_scan is finished, or expired while its job was being sent:
 * a purge the API may be acting on is settled by its answer (accepted: done); any other
 * answer puts the job on q->undeferred and they expire then. A request that finishes
 * otherwise changes nothing here: at worst the timer fires early and reads on. Order is
 * acceptance order whatever max_age is (SIGHUP moves the one timer); a clock set back
 * delays a request accepted after it at most until the older ones' deadline.
 */

static void expire_cb(evutil_socket_t, short, void *);

void
expire_init(struct queue *q)
{
	if ((q->expire_ev = evtimer_new(q->base, expire_cb, q)) == NULL)
		fatalx("out of memory creating a timer");
}

/* Request id, accepted at accepted (wall ms), is unfinished now (its commit went through). */
void
expire_note(struct queue *q, int64_t id, int64_t accepted)
{
	/* None from expire_scan on was unfinished: nothing before id needs reading. */
	if (q->expire_first == 0 && !q->expire_more && id > q->expire_scan)
		q->expire_scan = id;
	if (q->expire_first == 0 || accepted < q->expire_first)
		q->expire_first = accepted;
}

/* Job j is not being sent (any more): requests that expired while it was, expire now. */
void
expire_undefer(struct queue *q, struct job *j)
{
	if (j->expire_deferred != EXPIRE_DEFERRED || j->state == JOB_SENDING)
		return;
	if (q->nundeferred == q->capundeferred) {
		q->capundeferred = q->capundeferred ? q->capundeferred * 2 : 8;
		q->undeferred = xrealloc(q->undeferred, q->capundeferred *
		    sizeof *q->undeferred);
	}
	q->undeferred[q->nundeferred++] = j->id;
	j->expire_deferred = EXPIRE_PENDING;
}

/* The requests of from now belong to to (absorbed or merged: see members_move). */
void
expire_move(struct queue *q, struct job *from, struct job *to)
{
	if (from->expire_deferred == 0)
		return;
	if (to->expire_deferred == 0)
		to->expire_deferred = EXPIRE_DEFERRED;
	expire_undefer(q, to);
}

/* After a (re)load of the queue: read from the oldest unfinished request again. */
int
expire_reset(struct queue *q)
{
	int64_t id, at;
	size_t i;
	struct job *j;

	if (store_live_first(q->store, &id, &at) != 0)
		return -1;
	/* Every deferred request is read again (its job still sent: deferred again). */
	for (i = 0; i < q->nundeferred; i++) {
		if ((j = job_find(q, q->undeferred[i])) != NULL)
			j->expire_deferred = 0;
	}
	q->nundeferred = 0;
	q->expire_more = 0;
	q->expire_scan = id;
	q->expire_first = at;
	q->expire_at = -1;     /* re-armed by the next expire_arm */
	return 0;
}

/* Arm the one timer for the oldest request's expiry (or a retry, or at once), if it moved. */
void
expire_arm(struct queue *q)
{
	struct timeval tv;
	int64_t at = 0, now, o;

	if (q->limits.max_age > 0 && !q->broken && !q->stopping) {
		if (q->expire_more || q->nundeferred > 0)
			at = 1;       /* at once */
		else if (q->expire_first != 0)
			at = sched_expires_at(q->expire_first, q->limits.max_age);
		if (at != 0 && at < q->expire_retry)
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

/* One request to expire. */
struct exp {
	int64_t id;
	int64_t uid;
	struct job *j;               /* NULL: held for a name */
};

/* Group the batch by job (a job's requests expire together; the job may go with them). */
static int
by_job(const void *a, const void *b)
{
	const struct exp *x = a, *y = b;
	uintptr_t jx = (uintptr_t)x->j, jy = (uintptr_t)y->j;

	if (jx != jy)
		return jx < jy ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* What one turn reads: the batch, and where reading stopped. */
struct scan {
	struct queue *q;
	struct exp *v;
	size_t n;
	int64_t now;
	int64_t next;                /* the first id not passed */
	int64_t first;               /* acceptance of the first unfinished one not passed, 0 */
	int rows;                    /* rows seen */
	int more;                    /* stopped early: read on at once */
};

static int
scan_row(void *arg, int64_t id, int64_t job, int64_t uid, int64_t accepted, int queued)
{
	struct scan *sc = arg;
	struct queue *q = sc->q;
	struct job *j = NULL;

	sc->rows++;
	if (queued) {
		if (!sched_expired(accepted, q->limits.max_age, sc->now)) {
			sc->first = accepted;
			return 1;
		}
		if (job != 0 && (j = job_find(q, job)) == NULL) {
			log_warn("database: request %lld is unfinished but job %lld is not; it "
			    "cannot expire", (long long)id, (long long)job);
		} else if (j != NULL && j->state == JOB_SENDING) {
			/* Its purge is out: the answer settles it (expire_undefer). */
			if (j->expire_deferred == 0)
				j->expire_deferred = EXPIRE_DEFERRED;
		} else if (sc->n == EXPIRE_BATCH) {
			sc->more = 1;
			return 1;
		} else {
			sc->v[sc->n].id = id;
			sc->v[sc->n].uid = uid;
			sc->v[sc->n++].j = j;
		}
	}
	sc->next = id + 1;
	return 0;
}

/* A job's deferred requests (below expire_scan), after its answer: all of them expired. */
static int
deferred_row(void *arg, int64_t id, int64_t job, int64_t uid, int64_t accepted, int queued)
{
	struct scan *sc = arg;

	(void)job;
	(void)accepted;
	(void)queued;
	if (sc->n == EXPIRE_BATCH) {
		sc->more = 1;
		return 1;
	}
	sc->v[sc->n].id = id;
	sc->v[sc->n].uid = uid;
	sc->v[sc->n++].j = job_find(sc->q, job);
	return 0;
}

/*
 * Expire the requests whose max_age passed, a batch at a time, in one transaction: each
 * becomes "expired" with the reason, and a queued job none of whose requests is left
 * goes too. Requests of a job being sent wait for its answer: a purge the API accepted
 * is done, not expired (and "not sent" would be false); any other answer expires them.
 * Memory follows only once the transaction committed; if it fails, nothing moved (the
 * same rows are read again later).
 */
static void
expire_run(struct queue *q)
{
	static struct exp v[EXPIRE_BATCH];
	struct scan sc;
	struct store_job row;
	struct job *j;
	char reason[512];
	int64_t id;
	uint64_t gen;
	size_t i, k, ndone = 0;
	int drop;

	if (q->broken || q->stopping || q->limits.max_age == 0)
		return;
	memset(&sc, 0, sizeof sc);
	sc.q = q;
	sc.v = v;
	sc.now = clock_wall_ms();
	sc.next = q->expire_scan;
	/* First the jobs whose answer came: their deferred requests (all expired). */
	while (ndone < q->nundeferred && !sc.more) {
		j = job_find(q, q->undeferred[ndone]);
		if (j != NULL && j->state == JOB_SENDING) {
			j->expire_deferred = EXPIRE_DEFERRED;    /* sent again meanwhile */
			j = NULL;
		}
		if (j != NULL && store_job_expired(q->store, j->id, q->expire_scan,
		    (int)(EXPIRE_BATCH - sc.n) + 1, deferred_row, &sc) != 0)
			goto fail;
		if (!sc.more)
			ndone++;
	}
	if (!sc.more) {
		sc.first = 0;
		if (store_live_scan(q->store, q->expire_scan, EXPIRE_ROWS, scan_row, &sc) != 0)
			goto fail;
		if (sc.rows == EXPIRE_ROWS && sc.first == 0)
			sc.more = 1;     /* read on next turn */
	}
	if (sc.n == 0)
		goto moved;
	qsort(v, sc.n, sizeof v[0], by_job);
	if (store_begin(q->store) != 0)
		goto fail;
	for (i = 0; i < sc.n; i = k) {
		j = v[i].j;
		for (k = i; k < sc.n && v[k].j == j; k++)
			;
		expire_reason(q, j, reason, sizeof reason);
		for (; i < k; i++) {
			if (store_request_expire(q->store, v[i].id, reason, sc.now) < 0)
				goto fail;
		}
	}
	/* The jobs to drop: queued ones whose every request is in this batch. */
	for (i = 0; i < sc.n; i = k) {
		j = v[i].j;
		for (k = i; k < sc.n && v[k].j == j; k++)
			;
		if (j == NULL || j->state != JOB_QUEUED || j->nreq != (int)(k - i))
			continue;
		job_row(j, &row, sc.now);
		row.state = JOB_EXPIRED;
		row.message = "dropped: every request on it expired (max_age)";
		if (store_job_update(q->store, &row) != 0)
			goto fail;
	}
	if (store_commit_async(q->store, &gen) != 0)
		goto fail;

	/* Committed: now memory (the reasons are those written: nothing they say moved). */
	q->store_failing = 0;
	for (i = 0; i < sc.n; i = k) {
		j = v[i].j;
		for (k = i; k < sc.n && v[k].j == j; k++)
			;
		drop = j != NULL && j->state == JOB_QUEUED && j->nreq == (int)(k - i);
		expire_reason(q, j, reason, sizeof reason);
		if (j != NULL)
			log_warn("job %lld: %zu request(s) expired (request %lld%s): %s%s",
			    (long long)j->id, k - i, (long long)v[i].id, k - i > 1 ? " ..." : "",
			    reason, drop ? "; the job is dropped" : "");
		for (; i < k; i++) {
			id = v[i].id;
			if (j != NULL)
				member_sub(q, j, v[i].uid);
			else {
				log_warn("request %lld: expired: %s", (long long)id, reason);
				held_drop(q, id);
			}
			waiters_wake(q, id, 0);
		}
		if (drop)
			job_free(q, j);
	}
	q->stats.expired += sc.n;
	prune_arm(q, sc.now);
moved:
	/* What was read is behind us (the batch committed, or there was none). */
	q->expire_retry = 0;
	for (i = 0; i < ndone; i++) {
		if ((j = job_find(q, q->undeferred[i])) != NULL &&
		    j->expire_deferred == EXPIRE_PENDING)
			j->expire_deferred = 0;
	}
	if (ndone > 0) {
		memmove(q->undeferred, q->undeferred + ndone,
		    (q->nundeferred - ndone) * sizeof *q->undeferred);
		q->nundeferred -= ndone;
	}
	if (sc.next > q->expire_scan)
		q->expire_scan = sc.next;
	if (!sc.more)
		q->expire_first = sc.first;
	q->expire_more = sc.more;
	return;
fail:
	log_error("could not expire %zu request(s): %s", sc.n, store_errmsg(q->store));
	store_rollback(q->store);
	q->stats.storage_errors++;
	q->store_failing = 1;
	q->expire_retry = sc.now + EXPIRE_RETRY_MS;
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
	free(q->undeferred);
	q->undeferred = NULL;
	q->nundeferred = q->capundeferred = 0;
	if (q->expire_ev != NULL)
		event_free(q->expire_ev);
}
