/* queue-check.c: the queue's invariants, verified after every change when testing. */
#include "compat.h"

#include <stdlib.h>

#include "queue-int.h"
#include "util.h"

/*
 * WPE_PURGED_CHECK=1 (the test suites set it) makes the daemon verify, after every run
 * of the scheduler, that its structures agree; a violation aborts with the invariant's
 * name, so any test that drives the real daemon also tests the model. O(n): tests only.
 */
#define CHECK(cond, what) do { if (!(cond)) fatalx("queue invariant broken: %s", what); } \
	while (0)

struct tally {
	struct queue *q;
	int64_t njobs, installs_jobs, members;
};

static void
check_requester(struct hnode *n, void *arg)
{
	struct requester *r = container_of(n, struct requester, hn);
	struct tally *t = arg;
	struct job *j;
	struct member *m;
	size_t pos = 0, ready = 0;
	int64_t njobs = 0;

	CHECK(heap_check(&r->ready), "a requester's ready heap is a heap");
	while ((j = order_next(&t->q->order, &pos)) != NULL) {
		for (m = j->members; m != NULL; m = m->next) {
			if (m->r != r)
				continue;
			njobs++;
			ready += heap_contains(&m->hn);
		}
	}
	CHECK(njobs == r->njobs, "a requester's job count matches its memberships");
	CHECK(ready == heap_len(&r->ready), "a requester's ready heap holds its ready jobs");
	CHECK(r->in_ring == (heap_len(&r->ready) > 0), "requesters with ready jobs take turns");
	CHECK(njobs > 0 || r->in_ring, "a requester with nothing is forgotten");
}

static void
check_install(struct hnode *n, void *arg)
{
	struct install *in = container_of(n, struct install, hn);
	struct tally *t = arg;
	struct job *j;
	int k = 0;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		CHECK(j->install == in, "a job is on its own install's list");
		k++;
	}
	CHECK(k == in->njobs, "an install counts its jobs");
	t->installs_jobs += k;
}

void
queue_check(struct queue *q)
{
	struct tally t = { q, 0, 0, 0 };
	struct job *j;
	struct member *m;
	size_t pos = 0, timed = 0;
	int64_t now = queue_now(), ready, nq = 0, ns = 0;
	int nreq;

	/* Broken: memory may be partly loaded until the rebuild; nothing is sent meanwhile. */
	if (q->broken)
		return;
	CHECK(order_check(&q->order), "the id order is sorted");
	CHECK(heap_check(&q->timed), "the time heap is a heap");
	while ((j = order_next(&q->order, &pos)) != NULL) {
		t.njobs++;
		CHECK(job_find(q, j->id) == j, "every job is found by its id");
		if (j->state == JOB_SENDING) {
			ns++;
			CHECK(j->slot == SLOT_NONE, "a job being sent waits nowhere");
			continue;
		}
		nq++;
		CHECK(j->state == JOB_QUEUED, "unfinished jobs are queued or sending");
		CHECK(j->absorbed_into == 0, "no absorption outlives its group commit");
		nreq = 0;
		for (m = j->members; m != NULL; m = m->next) {
			CHECK(m->j == j, "a membership points at its job");
			CHECK(requester_get(q, m->r->uid, 0) == m->r, "members are known requesters");
			CHECK(m->r->absorbing == 0, "no absorption outlives its group commit");
			CHECK(heap_contains(&m->hn) == (j->slot == SLOT_READY),
			    "a job is in its requesters' ready heaps exactly while ready");
			nreq += m->nreq;
		}
		CHECK(nreq == j->nreq, "a job counts its requests");
		ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
		switch (j->slot) {
		case SLOT_TIMED:
			timed++;
			CHECK(heap_contains(&j->tn) && j->tn.key == ready,
			    "a timed job waits for exactly its ready time");
			break;
		case SLOT_PARKED:
			CHECK(!heap_contains(&j->tn), "a parked job is not timed");
			CHECK(classes_busy(j->install, j->type),
			    "a parked job's install has a purge in flight (or it would be stranded)");
			break;
		case SLOT_READY:
			CHECK(!heap_contains(&j->tn), "a ready job is not timed");
			CHECK(ready <= now && !classes_busy(j->install, j->type),
			    "a ready job may go");
			CHECK(j->members != NULL, "a ready job has someone to take its turn");
			break;
		default:
			CHECK(0, "a queued job waits somewhere");
		}
	}
	CHECK(t.njobs == (int64_t)htab_len(&q->jobs), "the id table holds every job");
	CHECK(nq == q->nqueued && ns == q->nsending, "the queued and sending counts are kept");
	CHECK(timed == heap_len(&q->timed), "the time heap holds only timed jobs");
	htab_foreach(&q->installs, check_install, &t);
	CHECK(t.installs_jobs == t.njobs, "every job is on one install's list");
	/* O(requesters x jobs): small queues only. */
	if ((int64_t)htab_len(&q->requesters) * t.njobs < 1000000)
		htab_foreach(&q->requesters, check_requester, &t);
	{
		const struct waiter *w;
		const struct held *h;
		const struct pending *p;
		int64_t ncw = 0, nh = 0, nrel = 0;

		TAILQ_FOREACH(w, &q->fetch.waiters, entry)
			ncw++;
		CHECK(q->stats.waiters == (int64_t)htab_len(&q->waiters_req) + ncw &&
		    htab_len(&q->waiters_req) == htab_len(&q->waiters_job),
		    "every waiter is found by request and by job, or waits for the catalog");
		CHECK(ncw == 0 || catalog_asking(q), "catalog waiters wait for a fetch under way");
		/* Requests by name held for a first catalog. */
		TAILQ_FOREACH(h, &q->held, entry) {
			nh++;
			CHECK(h->id > 0 && install_name_valid(h->name) && h->type < PURGE_NTYPES,
			    "a held request has an id, a valid name and a type");
		}
		CHECK(nh == (int64_t)q->nheld, "the held count is kept");
		CHECK(q->broken || q->cat.fetched_at == 0 || nh == 0,
		    "no request waits for a catalog once one is loaded");
		/* Enqueues waiting for a fetch, and those it released. */
		TAILQ_FOREACH(p, &q->resolving, entry)
			CHECK(!p->resolved_once && p->req.install[0] == '\0',
			    "a waiting enqueue is a name that has not waited before");
		CHECK(TAILQ_EMPTY(&q->resolving) || catalog_asking(q),
		    "enqueues wait only for a fetch under way");
		TAILQ_FOREACH(p, &q->pending, entry)
			nrel += p->resolved_once;
		CHECK(nrel == q->nreleased, "the released count is kept");
		CHECK(catalog_len(&q->cat) == htab_len(&q->cat.by_id) &&
		    catalog_len(&q->cat) == htab_len(&q->cat.by_name),
		    "every catalog entry is found by id and by name");
	}
	queue_check_lifecycle(q);
	if (!q->paused && !q->stopping && !q->broken) {
		CHECK(TAILQ_EMPTY(&q->ring) ||
		    queue_in_flight(q) >= q->cfg->max_in_flight ||
		    !sched_outage_allows(&q->outage, now, queue_in_flight(q)),
		    "ready jobs wait only for a sending slot or the outage gate");
		CHECK(heap_len(&q->timed) == 0 || q->timer_at <= heap_top(&q->timed)->key,
		    "the timer is armed for the first timed job");
	}
}

struct lapse_tally {
	struct queue *q;
	size_t waiting;
};

static void
check_lapse(struct hnode *n, void *arg)
{
	struct install *in = container_of(n, struct install, hn);
	struct lapse_tally *t = arg;

	CHECK(heap_contains(&in->ln) == (in->njobs == 0),
	    "an install waits for its limits to lapse exactly while it has no job");
	if (heap_contains(&in->ln)) {
		t->waiting++;
		CHECK(in->ln.key == sched_limits_lapse(in->cls, &t->q->limits),
		    "an install without jobs waits for exactly its limits' lapse");
	}
}

/*
 * Requests that expire, installs whose limits lapse, the pause: every unfinished request
 * is live once, on its job (as many as the job counts) or held; both timers are armed for
 * exactly the first of their heaps.
 */
struct below_tally {
	struct queue *q;
	int64_t first_id, first_at;
};

static int
check_below(void *arg, int64_t id, int64_t job, int64_t uid, int64_t accepted, int queued)
{
	struct below_tally *t = arg;
	struct job *j = job_find(t->q, job);

	(void)id;
	(void)uid;
	(void)accepted;
	(void)queued;
	CHECK(j != NULL && j->expire_deferred != 0 && (j->state == JOB_SENDING ||
	    j->expire_deferred == EXPIRE_PENDING),
	    "an unfinished request passed by expiry waits for its job's answer");
	return 0;
}

static int
check_first(void *arg, int64_t id, int64_t job, int64_t uid, int64_t accepted, int queued)
{
	struct below_tally *t = arg;

	(void)job;
	(void)uid;
	if (!queued)
		return 0;
	t->first_id = id;
	t->first_at = accepted;
	return 1;
}

/*
 * Requests that expire, installs whose limits lapse, the pause: every unfinished request
 * is read by expiry in id order (those passed wait for their job's answer); both timers
 * are armed for exactly the first of their work.
 */
void
queue_check_lifecycle(struct queue *q)
{
	struct lapse_tally lt = { q, 0 };
	struct below_tally bt = { q, 0, 0 };
	struct heap_node *top;
	size_t i;
	int64_t at;

	for (i = 0; i < q->nundeferred; i++) {
		const struct job *j = job_find(q, q->undeferred[i]);

		CHECK(j == NULL || j->expire_deferred == EXPIRE_PENDING,
		    "a job whose deferred requests expire is marked so");
	}
	/* Reads of the database: test runs (WPE_PURGED_CHECK) only, on small queues. */
	if (!q->broken) {
		if (store_live_below(q->store, q->expire_scan, check_below, &bt) != 0 ||
		    store_live_scan(q->store, q->expire_scan, 1000000, check_first, &bt) != 0)
			CHECK(0, "the unfinished requests can be read");
	}
	if (!q->broken && !q->stopping && q->limits.max_age > 0 && bt.first_id != 0) {
		at = sched_expires_at(bt.first_at, q->limits.max_age);
		if (at < q->expire_retry)
			at = q->expire_retry;
		/* (or for one accepted later by id but earlier by a clock set back) */
		CHECK(q->expire_at != 0 && (q->expire_at <= at || bt.first_at < q->expire_first),
		    "the expiry timer is armed for the oldest request");
	}
	if (!q->broken && !q->stopping && q->limits.max_age > 0 && q->nundeferred > 0)
		CHECK(q->expire_at != 0, "deferred expiries are due");
	if (q->broken || q->stopping || q->limits.max_age == 0)
		CHECK(q->expire_at == 0 || q->expire_at == -1, "no expiry while it cannot run");
	CHECK(heap_check(&q->lapse), "the lapse heap is a heap");
	htab_foreach(&q->installs, check_lapse, &lt);
	CHECK(lt.waiting == heap_len(&q->lapse), "the lapse heap holds only job-less installs");
	if (!q->broken && !q->stopping) {
		top = heap_top(&q->lapse);
		at = top == NULL ? INT64_MAX : top->key > q->lapse_retry ? top->key :
		    q->lapse_retry;
		CHECK(q->lapse_at == at, "the lapse timer is armed for the first install");
	}
	CHECK(q->paused == (q->paused_since != 0), "a pause knows since when");
}
