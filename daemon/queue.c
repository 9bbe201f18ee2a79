/* queue.c: the queue's model (installs, jobs, requesters) and rebuilding it from the store. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

#define PROBE_EVERY_MS 1000      /* storage probe while the store refuses writes */
#define RECOVER_MIN_MS 250       /* at most one recovery attempt this often from clients */

int64_t
queue_now(void)
{
	return clock_mono_ms();
}

/*
 * Persisted times are wall clock (0: never); the running daemon measures on the monotonic
 * clock (SCHED_NEVER: never). A wall time from before a reboot becomes a negative
 * monotonic time, which still compares correctly.
 */
int64_t
queue_to_wall(int64_t mono)
{
	return mono == SCHED_NEVER ? 0 : mono + (clock_wall_ms() - clock_mono_ms());
}

int64_t
queue_to_mono(int64_t wall)
{
	return wall == 0 ? SCHED_NEVER : wall - (clock_wall_ms() - clock_mono_ms());
}

/* Installs ------------------------------------------------------------------------- */

static void
install_reset(struct install *in)
{
	int c;

	for (c = 0; c < NCLASSES; c++) {
		in->cls[c].last_start = SCHED_NEVER;
		in->cls[c].blocked_until = SCHED_NEVER;
		in->cls[c].strikes = 0;
	}
}

struct install *
install_get(struct queue *q, const char *id, int create)
{
	uint64_t h = htab_hash_str(id);
	struct hnode *n;
	struct install *in;

	for (n = htab_first(&q->installs, h); n != NULL; n = htab_next(n)) {
		in = container_of(n, struct install, hn);
		if (memcmp(in->id, id, sizeof in->id) == 0)
			return in;
	}
	if (!create)
		return NULL;
	in = xcalloc(1, sizeof *in);
	memcpy(in->id, id, sizeof in->id);
	install_reset(in);
	TAILQ_INIT(&in->jobs);
	heap_node_init(&in->ln);
	htab_insert(&q->installs, &in->hn, h);
	lapse_track(q, in);
	return in;
}

/* Jobs ---------------------------------------------------------------------------- */

struct job *
job_find(struct queue *q, int64_t id)
{
	struct hnode *n;
	struct job *j;

	for (n = htab_first(&q->jobs, htab_hash_u64((uint64_t)id)); n != NULL;
	    n = htab_next(n)) {
		j = container_of(n, struct job, hn);
		if (j->id == id)
			return j;
	}
	return NULL;
}

static void
count_state(struct queue *q, enum job_state s, int d)
{
	if (s == JOB_SENDING)
		q->nsending += d;
	else
		q->nqueued += d;
}

/* Make j findable: its install's list, the id table and the id order. */
void
job_link(struct queue *q, struct job *j)
{
	TAILQ_INSERT_TAIL(&j->install->jobs, j, ientry);
	j->install->njobs++;
	lapse_track(q, j->install);
	htab_insert(&q->jobs, &j->hn, htab_hash_u64((uint64_t)j->id));
	order_insert(&q->order, j->id, j);
	count_state(q, j->state, 1);
}

void
job_unlink(struct queue *q, struct job *j)
{
	job_unslot(q, j);
	TAILQ_REMOVE(&j->install->jobs, j, ientry);
	j->install->njobs--;
	lapse_track(q, j->install);
	htab_remove(&q->jobs, &j->hn);
	order_remove(&q->order, j->id);
	count_state(q, j->state, -1);
}

void
job_set_state(struct queue *q, struct job *j, enum job_state s)
{
	count_state(q, j->state, -1);
	j->state = s;
	count_state(q, s, 1);
	expire_undefer(q, j);  /* requests that expired while it was sent expire now */
}

struct job *
job_new(struct queue *q, int64_t id, struct install *in, enum purge_type type)
{
	struct job *j = xcalloc(1, sizeof *j);

	j->id = id;
	j->install = in;
	j->type = type;
	j->state = JOB_QUEUED;
	j->not_before = SCHED_NEVER;
	heap_node_init(&j->tn);
	job_link(q, j);
	return j;
}

/* Free an unlinked job (its memberships end with it). */
void
job_destroy(struct queue *q, struct job *j)
{
	members_clear(q, j);
	free(j->attempt);
	free(j->message);
	free(j);
}

void
job_free(struct queue *q, struct job *j)
{
	job_unlink(q, j);
	job_destroy(q, j);
}

void
job_set_message(struct job *j, const char *msg)
{
	char *m = msg != NULL ? xstrdup(msg) : NULL;

	free(j->message);
	j->message = m;
}

/* The store's view of a job, for writing. */
void
job_row(const struct job *j, struct store_job *row, int64_t finished_at)
{
	memset(row, 0, sizeof *row);
	row->id = j->id;
	row->state = j->state;
	row->attempts = j->attempts;
	row->not_before = queue_to_wall(j->not_before);
	row->http_status = j->http_status;
	row->message = j->message;
	row->started_at = j->started_at;
	row->finished_at = finished_at;
}

/* The install's queued jobs (skip left out), for coalescing decisions. */
size_t
install_queued(struct install *in, const struct job *skip, struct job **jobs,
    enum purge_type *types, size_t max)
{
	struct job *j;
	size_t n = 0;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		if (j != skip && j->state == JOB_QUEUED && j->absorbed_into == 0 && n < max) {
			jobs[n] = j;
			types[n++] = j->type;
		}
	}
	return n;
}

/* Every unfinished job, in id order, in an array the caller frees (for walks that free). */
struct job **
queue_jobs(struct queue *q, size_t *n)
{
	struct job **v = xcalloc(order_len(&q->order) + 1, sizeof(struct job *)), *j;
	size_t pos = 0;

	*n = 0;
	while ((j = order_next(&q->order, &pos)) != NULL)
		v[(*n)++] = j;
	return v;
}

/* Creating, loading and rebuilding --------------------------------------------------- */

static void flush_cb(evutil_socket_t, short, void *);
static void probe_cb(evutil_socket_t, short, void *);

static void
timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	q->timer_at = INT64_MAX;
	queue_run(q);
}

static void
flush_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	queue_flush(arg);
}

static void
durable_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	store_durable_drain(q->store);
	(void)store_durable(q->store);   /* a failed sync is fatal, waited for or not */
	queue_deliver(q, 0);
	queue_launch(q);
}

struct queue *
queue_create(struct event_base *base, struct config *cfg, struct store *store)
{
	struct queue *q = xcalloc(1, sizeof *q);
	const char *chk;

	q->base = base;
	q->cfg = cfg;
	q->limits = cfg->limits;
	q->store = store;
	htab_init(&q->installs);
	htab_init(&q->jobs);
	htab_init(&q->requesters);
	htab_init(&q->waiters_req);
	htab_init(&q->waiters_job);
	order_init(&q->order);
	heap_init(&q->timed);
	TAILQ_INIT(&q->ring);
	TAILQ_INIT(&q->pending);
	TAILQ_INIT(&q->unsynced);
	TAILQ_INIT(&q->resolving);
	TAILQ_INIT(&q->held);
	TAILQ_INIT(&q->fetch.waiters);
	catalog_init(&q->cat);
	catalog_init(&q->staging);
	q->fetch.last_unknown = SCHED_NEVER;
	q->timer_at = INT64_MAX;
	if (store_durable_fd(store) != -1 && ((q->durable_ev = event_new(base,
	    store_durable_fd(store), EV_READ | EV_PERSIST, durable_cb, q)) == NULL ||
	    event_add(q->durable_ev, NULL) != 0))
		fatalx("out of memory creating events");
	q->flush_ev = event_new(base, -1, 0, flush_cb, q);
	q->timer = evtimer_new(base, timer_cb, q);
	q->probe_ev = evtimer_new(base, probe_cb, q);
	if (q->flush_ev == NULL || q->timer == NULL || q->probe_ev == NULL)
		fatalx("out of memory creating events");
	q->sender = sender_create(base, cfg, queue_sent, q);
	expire_init(q);
	lapse_init(q);
	q->started_wall = clock_wall_ms();
	chk = getenv("WPE_PURGED_CHECK");
	q->check = chk != NULL && chk[0] == '1';
	return q;
}

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

static void
probe_cb(evutil_socket_t fd, short events, void *arg)
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

int
queue_start(struct queue *q)
{
	char when[32];
	int n;

	if (store_catalog_load(q->store, &q->cat) != 0 ||
	    (q->paused_since = store_paused_get(q->store)) < 0)
		return -1;
	q->paused = q->paused_since > 0;     /* before anything could be sent */
	if ((n = queue_rebuild(q)) < 0)
		return -1;
	if (q->paused) {
		log_notice("sending is paused since %s (pause is kept across restarts); "
		    "requests are accepted; wpe-purgectl resume sends them",
		    fmt_rfc3339(q->paused_since, when, sizeof when));
	}
	if (q->cat.fetched_at != 0)
		log_info("installs catalog: %zu installs, read %lld s ago", catalog_len(&q->cat),
		    (long long)((clock_wall_ms() - q->cat.fetched_at) / 1000));
	catalog_start(q);
	if (n > 0)
		log_notice("%d job(s) were being sent when the daemon stopped; queued again, "
		    "their installs' windows start now", n);
	prune_start(q);
	queue_run(q);
	return 0;
}

static void
install_free(struct hnode *n, void *arg)
{
	struct install *in = container_of(n, struct install, hn);

	htab_remove(arg, n);
	free(in);
}

void
queue_free(struct queue *q)
{
	struct pending *p;
	struct job **v;
	size_t n, i;

	resolving_free_all(q);
	held_free_all(q);
	while ((p = TAILQ_FIRST(&q->pending)) != NULL) {
		TAILQ_REMOVE(&q->pending, p, entry);
		proto_request_free(&p->req);
		free(p->name);
		free(p);
	}
	while ((p = TAILQ_FIRST(&q->unsynced)) != NULL) {
		TAILQ_REMOVE(&q->unsynced, p, entry);
		json_object_put(p->answer);
		proto_request_free(&p->req);
		free(p->name);
		free(p);
	}
	if (q->durable_ev != NULL)
		event_free(q->durable_ev);
	waiters_free_all(q);
	sender_free(q->sender);
	catalog_free_all(q);
	top_free(q);
	v = queue_jobs(q, &n);
	for (i = 0; i < n; i++)
		job_free(q, v[i]);
	free(v);
	expire_free(q);
	lapse_free(q);
	htab_foreach(&q->installs, install_free, &q->installs);
	htab_free(&q->installs);
	htab_free(&q->jobs);
	htab_free(&q->requesters);   /* empty: requesters go with their last job */
	htab_free(&q->waiters_req);
	htab_free(&q->waiters_job);
	order_free(&q->order);
	heap_free(&q->timed);
	event_free(q->flush_ev);
	event_free(q->timer);
	event_free(q->probe_ev);
	if (q->prune_ev != NULL)
		event_free(q->prune_ev);
	if (q->grace_ev != NULL)
		event_free(q->grace_ev);
	free(q->starting);
	free(q);
}

void
queue_reload(struct queue *q, const struct limits *lim)
{
	struct job *j;
	size_t pos = 0;
	int64_t now = queue_now();

	q->limits = *lim;
	/* New intervals move every ready time: the one walk of all jobs, on SIGHUP only. */
	while ((j = order_next(&q->order, &pos)) != NULL)
		job_sched(q, j, now);
	lapse_reload(q);    /* and the times installs' limits lapse */
	/* A new max_age: read from the oldest unfinished request again (one indexed query). */
	if (!q->broken && expire_reset(q) != 0)
		log_error("could not read the unfinished requests: max_age applies from the "
		    "next expiry");
	queue_run(q);       /* a new max_age moves the expiry timer */
}

void
queue_set_changed_cb(struct queue *q, void (*cb)(void *), void *arg)
{
	q->changed_cb = cb;
	q->changed_arg = arg;
}
