/* queue-rebuild.c: the queue rebuilt from the store, at start-up and after a storage failure. */
#include "compat.h"

#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

#define PROBE_EVERY_MS 1000      /* storage probe while the store refuses writes */
#define RECOVER_MIN_MS 250       /* at most one recovery attempt this often from clients */

static void
load_job(void *arg, const struct store_job *row)
{
	struct queue *q = arg;
	struct job *j;
	int64_t now = queue_now(), nb;

	if (job_find(q, row->id) != NULL) /* in flight: memory is the newer view */
		return;
	j = job_new(q, row->id, install_get(q, row->install, 1), row->type);
	j->attempts = row->attempts;
	nb = queue_to_mono(row->not_before);
	/* A clock set back across a restart must not strand a job for long. */
	if (nb != SCHED_NEVER && nb > now + q->limits.retry_max * 1000)
		nb = now + q->limits.retry_max * 1000;
	j->not_before = nb;
	j->http_status = row->http_status;
	job_set_message(j, row->message);
	j->created_at = row->created_at;
	j->started_at = row->started_at;
}

/* Is a class of this install covered by a request in flight (whose answer will set it)? */
static int
class_in_flight(const struct install *in, int cls)
{
	const struct job *j;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		if (j->in_flight && (sched_type_classes(j->type) & (1u << cls)))
			return 1;
	}
	return 0;
}

static void
load_limit(void *arg, const char *install, int cls, const struct class_state *cs)
{
	struct queue *q = arg;
	struct install *in = install_get(q, install, 0);
	int64_t now = queue_now(), max_block = now + q->limits.retry_max * 1000;
	int64_t last = queue_to_mono(cs->last_start), blocked = queue_to_mono(cs->blocked_until);

	/*
	 * An install with nothing queued needs its row only while it still says something;
	 * it waits in memory until it does not, then its rows go (queue-lapse.c).
	 */
	if (in == NULL)
		in = install_get(q, install, 1);
	if (class_in_flight(in, cls))
		return;
	in->cls[cls].strikes = cs->strikes;
	in->cls[cls].last_start = last;
	in->cls[cls].blocked_until = blocked;
	/*
	 * Never trust a persisted time in the future more than the rules allow: a window
	 * may start up to one API timeout ahead (an interrupted attempt), no more.
	 */
	if (in->cls[cls].last_start > now + q->cfg->timeout * 1000)
		in->cls[cls].last_start = now + q->cfg->timeout * 1000;
	if (in->cls[cls].blocked_until > max_block)
		in->cls[cls].blocked_until = max_block;
}

static void
load_member(void *arg, int64_t job, int64_t uid, int n)
{
	struct queue *q = arg;
	struct job *j = job_find(q, job);

	if (j != NULL)
		member_add(q, j, uid, n);
}

struct sending_rows {
	struct {
		int64_t id, started_at;
		char install[37];
		enum purge_type type;
	} *v;
	size_t n, cap;
};

static void
note_sending(void *arg, int64_t id, const char *install, enum purge_type type,
    int64_t started_at)
{
	struct sending_rows *r = arg;

	if (r->n == r->cap) {
		r->cap = r->cap == 0 ? 16 : r->cap * 2;
		r->v = xrealloc(r->v, r->cap * sizeof *r->v);
	}
	r->v[r->n].id = id;
	r->v[r->n].started_at = started_at;
	memcpy(r->v[r->n].install, install, 37);
	r->v[r->n++].type = type;
}

/* Forget an install's limits, except for the classes a request in flight will set. */
static void
install_forget(struct hnode *n, void *arg)
{
	struct install *in = container_of(n, struct install, hn);
	int c;

	(void)arg;
	for (c = 0; c < NCLASSES; c++) {
		if (!class_in_flight(in, c)) {
			in->cls[c].last_start = SCHED_NEVER;
			in->cls[c].blocked_until = SCHED_NEVER;
			in->cls[c].strikes = 0;
		}
	}
}

/*
 * Make memory what the store says: at start-up, and after a storage failure left them
 * apart. A job the store says is being sent but that is not in flight here (the daemon
 * died while sending it, or its answer could not be recorded) is queued again (or
 * dropped, if every request it had was cancelled meanwhile), and its install's window
 * starts again, written in the same transaction: the API may have acted on it up to now,
 * or up to the attempt's timeout if that is later (a slow API still holding it). That
 * transaction also writes a probe row, so nothing is rebuilt until the store takes
 * writes. Returns the number of such jobs, or -1.
 */
int
queue_rebuild(struct queue *q)
{
	struct sending_rows rows = { NULL, 0, 0 };
	struct job *j, **all;
	int64_t now_wall = clock_wall_ms(), acted, now;
	unsigned mask;
	size_t i, pos, nall;
	int c, n = 0, live;

	q->last_recover = queue_now();
	q->nstarting = 0;   /* their "sending" rows are queued again like any other */
	if (store_begin(q->store) != 0 || store_probe(q->store, now_wall) != 0 ||
	    store_sending(q->store, note_sending, &rows) != 0)
		goto fail;
	for (i = 0; i < rows.n; i++) {
		if ((j = job_find(q, rows.v[i].id)) != NULL && j->in_flight)
			continue;
		if ((live = store_job_live_requests(q->store, rows.v[i].id)) < 0)
			goto fail;
		if (live > 0 ? store_job_requeue(q->store, rows.v[i].id) != 0 :
		    store_job_absorb(q->store, rows.v[i].id, "dropped: its requests were "
		    "cancelled while it was being sent", now_wall) != 0)
			goto fail;
		acted = now_wall;
		if (rows.v[i].started_at > 0 &&
		    rows.v[i].started_at + q->cfg->timeout * 1000 > acted)
			acted = rows.v[i].started_at + q->cfg->timeout * 1000;
		mask = sched_type_classes(rows.v[i].type);
		for (c = 0; c < NCLASSES; c++) {
			if ((mask & (1u << c)) && store_limit_touch(q->store, rows.v[i].install,
			    c, acted) != 0)
				goto fail;
		}
		n++;
	}
	if (store_commit(q->store) != 0)
		goto fail;
	q->store_failing = 0;
	free(rows.v);

	/*
	 * The store is consistent now: read everything but what is in flight again. The
	 * jobs to drop are collected first: freeing them reshapes the id order.
	 */
	all = queue_jobs(q, &nall);
	for (i = 0; i < nall; i++) {
		if (!all[i]->in_flight)
			job_free(q, all[i]);
		else
			members_clear(q, all[i]);
	}
	free(all);
	htab_foreach(&q->installs, install_forget, NULL);
	if (store_load(q->store, load_job, load_limit, load_member, q) != 0) {
		q->broken = 1;   /* partly loaded: keep sending stopped, try again */
		return -1;
	}
	lapse_reload(q);
	now = queue_now();
	pos = 0;
	while ((j = order_next(&q->order, &pos)) != NULL)
		job_sched(q, j, now);
	if (held_load(q) != 0 || expire_reset(q) != 0) {
		q->broken = 1;
		return -1;
	}
	if (q->broken) {
		q->broken = 0;
		q->stats.rebuilds++;
		log_notice("the queue database takes writes again; queue rebuilt from it");
		waiters_recheck(q);
	}
	held_resolve(q);     /* requests by name stored before a catalog was */
	return n;
fail:
	free(rows.v);
	store_rollback(q->store);
	return -1;
}

/* Memory and store may differ: stop sending and refuse writes until a rebuild. */
void
queue_break(struct queue *q)
{
	struct timeval tv = { PROBE_EVERY_MS / 1000, (PROBE_EVERY_MS % 1000) * 1000 };

	q->stats.storage_errors++;
	q->store_failing = 1;
	if (!q->broken)
		log_error("the queue database refuses writes: sending stops until it takes "
		    "them again (probing every %d ms)", PROBE_EVERY_MS);
	q->broken = 1;
	if (!evtimer_pending(q->probe_ev, NULL))
		evtimer_add(q->probe_ev, &tv);
}

/* From a client's write while broken: a rebuild, unless one was tried very recently. */
int
queue_try_recover(struct queue *q)
{
	if (!q->broken)
		return 0;
	if (queue_now() - q->last_recover < RECOVER_MIN_MS)
		return -1;
	if (queue_rebuild(q) < 0)
		return -1;
	queue_run(q);
	return 0;
}

void
rebuild_probe_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;
	struct timeval tv = { PROBE_EVERY_MS / 1000, (PROBE_EVERY_MS % 1000) * 1000 };

	(void)fd;
	(void)events;
	if (!q->broken)
		return;
	if (queue_rebuild(q) < 0)
		evtimer_add(q->probe_ev, &tv);
	else
		queue_run(q);
}
