/* queue.c: the queue's model (installs, jobs) and its life: created, started, reloaded, freed. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

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

/* Creating, starting and freeing ---------------------------------------------------- */

static void flush_cb(evutil_socket_t, short, void *);

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
	q->probe_ev = evtimer_new(base, rebuild_probe_cb, q);
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
