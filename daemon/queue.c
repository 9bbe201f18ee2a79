/* queue.c: the purge queue: group commit, coalescing, the scheduling timer, outcomes. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "sched.h"
#include "sender.h"
#include "util.h"

#define INSTALL_HASH 1024
#define PRUNE_BATCH 500
#define PRUNE_EVERY_MS (60 * 1000)
#define PROBE_EVERY_MS 1000      /* storage probe while the store refuses writes */
#define RECOVER_MIN_MS 250       /* at most one recovery attempt this often from clients */

/*
 * The store is the truth; memory is a cache of its unfinished part, changed only after
 * the store committed. Where a failure leaves memory and store apart (the API's answer
 * could not be recorded), the queue is "broken": nothing is sent and writes are refused
 * until a probe write succeeds and memory is rebuilt from the store (queue_rebuild),
 * exactly as at start-up.
 */

struct job;
TAILQ_HEAD(jobs, job);

/* One install: its limit state and its unfinished jobs. Times are monotonic ms. */
struct install {
	char id[37];
	struct class_state cls[NCLASSES];
	struct jobs jobs;
	struct install *hnext;
};

/* An unfinished job (queued or sending). Finished jobs live only in the store. */
struct job {
	int64_t id;
	struct install *install;
	enum purge_type type;
	enum job_state state;
	int attempts;
	int in_flight;       /* the sender holds it: its answer will come */
	int64_t not_before;  /* monotonic ms or SCHED_NEVER: transient-failure backoff */
	long http_status;
	char *message;
	int64_t created_at;  /* wall ms */
	int64_t started_at;  /* wall ms */
	int64_t prev_start[NCLASSES]; /* windows before this attempt, to give back */
	int64_t last_attempt;  /* monotonic ms this attempt started */
	int64_t absorbed_into; /* during a group commit: the "all" job that took it over */
	TAILQ_ENTRY(job) ientry; /* install->jobs */
	TAILQ_ENTRY(job) qentry; /* queue->jobs, in id order */
};

/* An enqueue waiting for this loop turn's group commit. */
struct pending {
	struct proto_request req;
	uid_t uid;
	pid_t pid;
	queue_answer_cb cb;      /* NULL once forgotten */
	void *arg;
	int64_t request_id, job_id;
	int coalesced;
	TAILQ_ENTRY(pending) entry;
};

TAILQ_HEAD(pendings, pending);

TAILQ_HEAD(waiters, waiter);
struct waiter {
	struct queue *q;
	struct waiters *head;    /* the list it is on: q->waiters or a wake batch */
	int64_t request_id;
	int64_t job_id;
	uid_t uid;
	int admin;
	struct event *timer;
	queue_answer_cb cb;
	void *arg;
	TAILQ_ENTRY(waiter) entry;
};

/* What a group commit changed in memory, undone in reverse if the commit fails. */
struct undo {
	int absorbed;            /* 0: j is a new job; 1: j was absorbed (unlinked) */
	struct job *j;
};
struct undo_log {
	struct undo *v;
	size_t n, cap;
};

struct stats {
	uint64_t requests, coalesced, jobs, cancelled, merged;
	uint64_t api_calls, api_2xx, api_400, api_401, api_403, api_404, api_429, api_5xx,
	    api_other, api_transport;
	uint64_t retries, done, failed, commits, storage_errors, rebuilds;
};

struct queue {
	struct event_base *base;
	struct config *cfg;
	struct limits limits;
	struct store *store;
	struct sender *sender;
	struct install *installs[INSTALL_HASH];
	struct jobs jobs;
	struct pendings pending;
	int64_t pending_since;   /* monotonic ms the oldest uncommitted enqueue arrived */
	struct waiters waiters;
	struct event *flush_ev;  /* group commit: queued behind this turn's reads */
	struct event *timer;     /* the one scheduling timer */
	struct event *prune_ev;
	struct event *probe_ev;  /* storage probe while broken */
	struct event *grace_ev;
	struct outage outage;
	struct stats stats;
	int paused;
	int stopping;
	int broken;              /* memory may differ from the store: see above */
	int64_t last_recover;
	int running, rerun;
	int flush_armed;
	int warned_401;
	int64_t started_wall;
	void (*changed_cb)(void *);
	void *changed_arg;
	void (*stopped_cb)(void *);
	void *stopped_arg;
};

static void queue_run(struct queue *);
static void queue_run_once(struct queue *);
static void queue_sent(void *, void *, const struct send_result *);
static int classes_busy(struct install *, enum purge_type);

static int64_t
now_mono(void)
{
	return clock_mono_ms();
}

/*
 * Persisted times are wall clock (0: never); the running daemon measures on the monotonic
 * clock (SCHED_NEVER: never). A wall time from before a reboot becomes a negative
 * monotonic time, which still compares correctly.
 */
static int64_t
to_wall(int64_t mono)
{
	return mono == SCHED_NEVER ? 0 : mono + (clock_wall_ms() - clock_mono_ms());
}

static int64_t
to_mono(int64_t wall)
{
	return wall == 0 ? SCHED_NEVER : wall - (clock_wall_ms() - clock_mono_ms());
}

static unsigned
install_hash(const char *id)
{
	unsigned h = 2166136261u;

	while (*id != '\0')
		h = (h ^ (unsigned char)*id++) * 16777619u;
	return h % INSTALL_HASH;
}

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

static struct install *
install_get(struct queue *q, const char *id, int create)
{
	unsigned h = install_hash(id);
	struct install *in;

	for (in = q->installs[h]; in != NULL; in = in->hnext) {
		if (strcmp(in->id, id) == 0)
			return in;
	}
	if (!create)
		return NULL;
	in = xcalloc(1, sizeof *in);
	memcpy(in->id, id, sizeof in->id);
	install_reset(in);
	TAILQ_INIT(&in->jobs);
	in->hnext = q->installs[h];
	q->installs[h] = in;
	return in;
}

/* Put a job on its install's list and on the queue's list, which stays in id order. */
static void
job_link(struct queue *q, struct job *j)
{
	struct job *t;

	TAILQ_INSERT_TAIL(&j->install->jobs, j, ientry);
	TAILQ_FOREACH_REVERSE(t, &q->jobs, jobs, qentry) {
		if (t->id < j->id)
			break;
	}
	if (t == NULL)
		TAILQ_INSERT_HEAD(&q->jobs, j, qentry);
	else
		TAILQ_INSERT_AFTER(&q->jobs, t, j, qentry);
}

static void
job_unlink(struct queue *q, struct job *j)
{
	TAILQ_REMOVE(&j->install->jobs, j, ientry);
	TAILQ_REMOVE(&q->jobs, j, qentry);
}

static struct job *
job_new(struct queue *q, int64_t id, struct install *in, enum purge_type type)
{
	struct job *j = xcalloc(1, sizeof *j);

	j->id = id;
	j->install = in;
	j->type = type;
	j->state = JOB_QUEUED;
	j->not_before = SCHED_NEVER;
	job_link(q, j);
	return j;
}

static void
job_destroy(struct job *j)
{
	free(j->message);
	free(j);
}

static void
job_free(struct queue *q, struct job *j)
{
	job_unlink(q, j);
	job_destroy(j);
}

static struct job *
job_find(struct queue *q, int64_t id)
{
	struct job *j;

	TAILQ_FOREACH(j, &q->jobs, qentry) {
		if (j->id == id)
			return j;
	}
	return NULL;
}

static void
job_set_message(struct job *j, const char *msg)
{
	char *m = msg != NULL ? xstrdup(msg) : NULL;

	free(j->message);
	j->message = m;
}

/* The store's view of a job, for writing. */
static void
job_row(const struct job *j, struct store_job *row, int64_t finished_at)
{
	memset(row, 0, sizeof *row);
	row->id = j->id;
	row->state = j->state;
	row->attempts = j->attempts;
	row->not_before = to_wall(j->not_before);
	row->http_status = j->http_status;
	row->message = j->message;
	row->started_at = j->started_at;
	row->finished_at = finished_at;
}

static void
load_job(void *arg, const struct store_job *row)
{
	struct queue *q = arg;
	struct job *j;
	int64_t now = now_mono(), nb;

	if (job_find(q, row->id) != NULL) /* in flight: memory is the newer view */
		return;
	j = job_new(q, row->id, install_get(q, row->install, 1), row->type);
	j->attempts = row->attempts;
	nb = to_mono(row->not_before);
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
	struct install *in = install_get(q, install, 1);
	int64_t now = now_mono(), max_block = now + q->limits.retry_max * 1000;

	if (class_in_flight(in, cls))
		return;
	in->cls[cls].strikes = cs->strikes;
	in->cls[cls].last_start = to_mono(cs->last_start);
	in->cls[cls].blocked_until = to_mono(cs->blocked_until);
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
timer_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	queue_run(arg);
}

static void flush_cb(evutil_socket_t, short, void *);
static void prune_cb(evutil_socket_t, short, void *);
static void probe_cb(evutil_socket_t, short, void *);

struct queue *
queue_create(struct event_base *base, struct config *cfg, struct store *store)
{
	struct queue *q = xcalloc(1, sizeof *q);

	q->base = base;
	q->cfg = cfg;
	q->limits = cfg->limits;
	q->store = store;
	TAILQ_INIT(&q->jobs);
	TAILQ_INIT(&q->pending);
	TAILQ_INIT(&q->waiters);
	q->flush_ev = event_new(base, -1, 0, flush_cb, q);
	q->timer = evtimer_new(base, timer_cb, q);
	q->prune_ev = evtimer_new(base, prune_cb, q);
	q->probe_ev = evtimer_new(base, probe_cb, q);
	if (q->flush_ev == NULL || q->timer == NULL || q->prune_ev == NULL ||
	    q->probe_ev == NULL)
		fatalx("out of memory creating events");
	q->sender = sender_create(base, cfg, queue_sent, q);
	q->started_wall = clock_wall_ms();
	return q;
}

/* Rebuilding from the store ------------------------------------------------------- */

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

static void waiters_recheck(struct queue *);

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
static int
queue_rebuild(struct queue *q)
{
	struct sending_rows rows = { NULL, 0, 0 };
	struct install *in;
	struct job *j, *t;
	int64_t now_wall = clock_wall_ms(), acted;
	unsigned mask;
	size_t i;
	int c, n = 0, live;

	q->last_recover = now_mono();
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
	free(rows.v);

	/* The store is consistent now: read everything but what is in flight again. */
	TAILQ_FOREACH_SAFE(j, &q->jobs, qentry, t) {
		if (!j->in_flight)
			job_free(q, j);
	}
	for (i = 0; i < INSTALL_HASH; i++) {
		for (in = q->installs[i]; in != NULL; in = in->hnext) {
			for (c = 0; c < NCLASSES; c++) {
				if (!class_in_flight(in, c)) {
					in->cls[c].last_start = SCHED_NEVER;
					in->cls[c].blocked_until = SCHED_NEVER;
					in->cls[c].strikes = 0;
				}
			}
		}
	}
	if (store_load(q->store, load_job, load_limit, q) != 0) {
		q->broken = 1;   /* partly loaded: keep sending stopped, try again */
		return -1;
	}
	if (q->broken) {
		q->broken = 0;
		q->stats.rebuilds++;
		log_notice("the queue database takes writes again; queue rebuilt from it");
		waiters_recheck(q);
	}
	return n;
fail:
	free(rows.v);
	store_rollback(q->store);
	return -1;
}

/* Memory and store may differ: stop sending and refuse writes until a rebuild. */
static void
queue_break(struct queue *q)
{
	struct timeval tv = { PROBE_EVERY_MS / 1000, (PROBE_EVERY_MS % 1000) * 1000 };

	q->stats.storage_errors++;
	if (!q->broken)
		log_error("the queue database refuses writes: sending stops until it takes "
		    "them again (probing every %d ms)", PROBE_EVERY_MS);
	q->broken = 1;
	if (!evtimer_pending(q->probe_ev, NULL))
		evtimer_add(q->probe_ev, &tv);
}

/* From a client's write while broken: a rebuild, unless one was tried very recently. */
static int
queue_try_recover(struct queue *q)
{
	if (!q->broken)
		return 0;
	if (now_mono() - q->last_recover < RECOVER_MIN_MS)
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
	struct timeval tv = { 1, 0 };
	int n;

	if ((n = queue_rebuild(q)) < 0)
		return -1;
	if (n > 0)
		log_notice("%d job(s) were being sent when the daemon stopped; queued again, "
		    "their installs' windows start now", n);
	evtimer_add(q->prune_ev, &tv);
	queue_run(q);
	return 0;
}

static void
waiter_free(struct waiter *w)
{
	if (w->head != NULL)
		TAILQ_REMOVE(w->head, w, entry);
	if (w->timer != NULL)
		event_free(w->timer);
	free(w);
}

void
queue_free(struct queue *q)
{
	struct pending *p;
	struct job *j;
	struct install *in, *next;
	int i;

	while ((p = TAILQ_FIRST(&q->pending)) != NULL) {
		TAILQ_REMOVE(&q->pending, p, entry);
		proto_request_free(&p->req);
		free(p);
	}
	/* The analyzer cannot follow TAILQ_REMOVE's tqh_last update: a known false positive. */
	while (!TAILQ_EMPTY(&q->waiters))
		waiter_free(TAILQ_FIRST(&q->waiters)); /* NOLINT(clang-analyzer-unix.Malloc) */
	sender_free(q->sender);
	while ((j = TAILQ_FIRST(&q->jobs)) != NULL)
		job_free(q, j);
	for (i = 0; i < INSTALL_HASH; i++) {
		for (in = q->installs[i]; in != NULL; in = next) {
			next = in->hnext;
			free(in);
		}
	}
	event_free(q->flush_ev);
	event_free(q->timer);
	event_free(q->prune_ev);
	event_free(q->probe_ev);
	if (q->grace_ev != NULL)
		event_free(q->grace_ev);
	free(q);
}

/* Answers ----------------------------------------------------------------------- */

static json_object *
answer_ok(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

static json_object *
answer_error(const char *code, const char *fmt, ...) printflike(2, 3);

static json_object *
answer_error(const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
	va_end(ap);
	return proto_error(code, msg);
}

static json_object *
answer_storage(struct queue *q)
{
	if (q->broken)
		return answer_error("storage", "the queue database is refusing writes; "
		    "nothing was changed; try again");
	return answer_error("storage", "the queue database failed: %s",
	    store_errmsg(q->store));
}

static void
add_time(json_object *o, const char *key, int64_t wall)
{
	char buf[32];

	json_object_object_add(o, key, wall == 0 ? NULL :
	    json_object_new_string(fmt_rfc3339(wall, buf, sizeof buf)));
}

static void
add_str(json_object *o, const char *key, const char *s)
{
	json_object_object_add(o, key, s == NULL ? NULL : json_object_new_string(s));
}

/*
 * One request as "status" shows it. Its reason is its owner's business: shown to the
 * uid that asked for it and to administrators; everyone else sees states and installs.
 */
static json_object *
status_object(const struct store_status *ss, uid_t uid, int admin)
{
	json_object *o = answer_ok();
	int mine = admin || ss->uid == (int64_t)uid;

	json_object_object_add(o, "id", json_object_new_int64(ss->id));
	add_str(o, "install", ss->install);
	add_str(o, "type", purge_type_name(ss->type));
	add_str(o, "state", job_state_name(ss->state));
	json_object_object_add(o, "job", json_object_new_int64(ss->job));
	add_str(o, "job_type", purge_type_name(ss->job_type));
	json_object_object_add(o, "attempts", json_object_new_int(ss->attempts));
	json_object_object_add(o, "http_status", ss->http_status == 0 ? NULL :
	    json_object_new_int((int)ss->http_status));
	add_str(o, "message", ss->message);
	add_str(o, "reason", mine ? ss->reason : NULL);
	add_time(o, "enqueued_at", ss->enqueued_at);
	add_time(o, "finished_at", ss->finished_at);
	return o;
}

static int
state_final(enum job_state s)
{
	return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELLED;
}

json_object *
queue_status(struct queue *q, int64_t id, uid_t uid, int admin)
{
	struct store_status ss;
	json_object *o;
	int rc;

	rc = store_request_get(q->store, id, &ss);
	if (rc < 0)
		return answer_error("storage", "the queue database failed: %s",
		    store_errmsg(q->store));
	if (rc == 0)
		return answer_error("not_found", "there is no request %lld (it may have been "
		    "pruned after the retention period)", (long long)id);
	o = status_object(&ss, uid, admin);
	/* While it waits, say when it may go out next. */
	if (!state_final(ss.state)) {
		struct job *j = job_find(q, ss.job);

		if (j != NULL && j->state == JOB_QUEUED) {
			int64_t ready = sched_ready_at(j->install->cls, &q->limits, j->type,
			    j->not_before), now = now_mono();

			add_time(o, "next_attempt_at", to_wall(ready > now ? ready : now));
		}
	}
	store_status_free(&ss);
	return o;
}

/* Waiters ------------------------------------------------------------------------ */

/*
 * Answer one waiter exactly once. It is off every list and freed before the callback
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

/*
 * Answer every finished waiter on request id, or on any request of job if id is 0, or
 * on any request at all if both are 0. The matching waiters are first moved to a batch
 * of their own and taken from its head one at a time, so callbacks that add or cancel
 * waiters cannot leave this loop holding a freed pointer.
 */
static void
waiters_wake(struct queue *q, int64_t request_id, int64_t job_id)
{
	struct waiters batch = TAILQ_HEAD_INITIALIZER(batch);
	struct waiter *w, *t;
	struct store_status ss;
	int rc;

	TAILQ_FOREACH_SAFE(w, &q->waiters, entry, t) {
		if (request_id != 0 ? w->request_id != request_id :
		    job_id != 0 ? w->job_id != job_id : 0)
			continue;
		TAILQ_REMOVE(&q->waiters, w, entry);
		TAILQ_INSERT_TAIL(&batch, w, entry);
		w->head = &batch;
	}
	/* The analyzer cannot follow TAILQ_REMOVE's tqh_last update: a known false positive. */
	while ((w = TAILQ_FIRST(&batch)) != NULL) {
		rc = store_request_get(q->store, w->request_id, /* NOLINT(clang-analyzer-unix.Malloc) */
		    &ss);
		if (rc == 1 && !state_final(ss.state)) {
			/* Still unfinished (e.g. a cancelled sibling): keep waiting. */
			w->job_id = ss.job;
			store_status_free(&ss);
			TAILQ_REMOVE(&batch, w, entry);
			TAILQ_INSERT_TAIL(&q->waiters, w, entry);
			w->head = &q->waiters;
			continue;
		}
		if (rc >= 0) {
			json_object *o = rc == 1 ? status_object(&ss, w->uid, w->admin) :
			    answer_error("not_found", "there is no request %lld",
			    (long long)w->request_id);

			if (rc == 1)
				store_status_free(&ss);
			TAILQ_REMOVE(&batch, w, entry);
			w->head = NULL;
			waiter_answer(w, o);
		} else {
			/* Unreadable now: keep waiting; the next wake or the timeout answers. */
			TAILQ_REMOVE(&batch, w, entry);
			TAILQ_INSERT_TAIL(&q->waiters, w, entry);
			w->head = &q->waiters;
		}
	}
}

/* After a rebuild: every waiter whose request finished meanwhile is answered. */
static void
waiters_recheck(struct queue *q)
{
	waiters_wake(q, 0, 0);
}

/* Waiters on the requests of job from now wait on job to (their requests moved). */
static void
waiters_move(struct queue *q, int64_t from, int64_t to)
{
	struct waiter *w;

	TAILQ_FOREACH(w, &q->waiters, entry) {
		if (w->job_id == from)
			w->job_id = to;
	}
}

static void
waiter_timeout(evutil_socket_t fd, short events, void *arg)
{
	struct waiter *w = arg;
	json_object *o;

	(void)fd;
	(void)events;
	o = answer_error("timeout", "request %lld is not finished yet; it stays queued",
	    (long long)w->request_id);
	json_object_object_add(o, "id", json_object_new_int64(w->request_id));
	waiter_answer(w, o);
}

struct waiter *
queue_wait(struct queue *q, int64_t id, int64_t timeout_ms, uid_t uid, int admin,
    queue_answer_cb cb, void *arg)
{
	struct store_status ss;
	struct waiter *w;
	struct timeval tv;
	int rc;

	rc = store_request_get(q->store, id, &ss);
	if (rc <= 0 || state_final(ss.state)) {
		if (rc == 1)
			store_status_free(&ss);
		cb(arg, queue_status(q, id, uid, admin));
		return NULL;
	}
	w = xcalloc(1, sizeof *w);
	w->q = q;
	w->request_id = id;
	w->job_id = ss.job;
	w->uid = uid;
	w->admin = admin;
	w->cb = cb;
	w->arg = arg;
	store_status_free(&ss);
	if (timeout_ms >= 0) {
		w->timer = evtimer_new(q->base, waiter_timeout, w);
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
		evtimer_add(w->timer, &tv);
	}
	TAILQ_INSERT_TAIL(&q->waiters, w, entry);
	w->head = &q->waiters;
	return w;
}

void
queue_wait_cancel(struct queue *q, struct waiter *w)
{
	(void)q;
	waiter_free(w);
}

/* Enqueue and group commit --------------------------------------------------------- */

void
queue_enqueue(struct queue *q, const struct proto_request *req, uid_t uid, pid_t pid,
    queue_answer_cb cb, void *arg)
{
	struct pending *p = xcalloc(1, sizeof *p);

	p->req = *req;
	p->req.reason = req->reason != NULL ? xstrdup(req->reason) : NULL;
	p->uid = uid;
	p->pid = pid;
	p->cb = cb;
	p->arg = arg;
	if (TAILQ_EMPTY(&q->pending))
		q->pending_since = now_mono();
	TAILQ_INSERT_TAIL(&q->pending, p, entry);
	if (!q->flush_armed) {
		q->flush_armed = 1;
		event_active(q->flush_ev, 0, 0);
	}
}

void
queue_enqueue_forget(struct queue *q, void *arg)
{
	struct pending *p;

	TAILQ_FOREACH(p, &q->pending, entry) {
		if (p->arg == arg)
			p->cb = NULL;
	}
}

int
queue_progressing(struct queue *q, int64_t max_ms)
{
	return TAILQ_EMPTY(&q->pending) || now_mono() - q->pending_since <= max_ms;
}

static void
undo_push(struct undo_log *u, int absorbed, struct job *j)
{
	if (u->n == u->cap) {
		u->cap = u->cap == 0 ? 16 : u->cap * 2;
		u->v = xrealloc(u->v, u->cap * sizeof *u->v);
	}
	u->v[u->n].absorbed = absorbed;
	u->v[u->n++].j = j;
}

/* The install's queued jobs, for coalescing decisions; skip is left out. */
static size_t
queued_jobs(struct install *in, const struct job *skip, struct job **jobs,
    enum purge_type *types, size_t max)
{
	struct job *j;
	size_t n = 0;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		if (j != skip && j->state == JOB_QUEUED && n < max) {
			jobs[n] = j;
			types[n++] = j->type;
		}
	}
	return n;
}

/*
 * Place one request: join a queued job or make a new one, in the store and in memory;
 * every memory change is logged in u so that a failed commit can undo it.
 */
static int
place(struct queue *q, struct pending *p, int64_t now_wall, struct undo_log *u)
{
	struct install *in = install_get(q, p->req.install, 1);
	enum purge_type types[PURGE_NTYPES * 2];
	struct job *queued[PURGE_NTYPES * 2], *j, *t;
	char msg[64];
	size_t n;
	int idx;

	n = queued_jobs(in, NULL, queued, types, sizeof queued / sizeof queued[0]);
	idx = sched_coalesce(p->req.type, types, n);
	if (idx >= 0) {
		j = queued[idx];
		p->coalesced = 1;
	} else {
		int64_t nb = SCHED_NEVER, id;
		int attempts = 0;
		size_t i;

		/* A new "all" job inherits the backoff of the jobs it absorbs. */
		if (p->req.type == PURGE_ALL) {
			for (i = 0; i < n; i++) {
				if (queued[i]->not_before > nb)
					nb = queued[i]->not_before;
				if (queued[i]->attempts > attempts)
					attempts = queued[i]->attempts;
			}
		}
		id = store_job_insert(q->store, in->id, p->req.type, to_wall(nb), attempts,
		    now_wall);
		if (id < 0)
			return -1;
		j = job_new(q, id, in, p->req.type);
		j->not_before = nb;
		j->attempts = attempts;
		j->created_at = now_wall;
		undo_push(u, 0, j);
		if (p->req.type == PURGE_ALL) {
			snprintf(msg, sizeof msg, "absorbed into job %lld", (long long)id);
			for (i = 0; i < n; i++) {
				t = queued[i];
				if (store_requests_move(q->store, t->id, id) != 0 ||
				    store_job_absorb(q->store, t->id, msg, now_wall) != 0)
					return -1;
				/* Out of the scheduling lists; freed or put back after commit. */
				job_unlink(q, t);
				t->absorbed_into = id;
				undo_push(u, 1, t);
			}
		}
	}
	p->job_id = j->id;
	p->request_id = store_request_insert(q->store, j->id, in->id, p->req.type,
	    p->req.reason, (int64_t)p->uid, (int64_t)p->pid, p->coalesced, now_wall);
	return p->request_id < 0 ? -1 : 0;
}

static void
flush_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;
	struct pending *p;
	struct pendings batch = TAILQ_HEAD_INITIALIZER(batch);
	struct undo_log u = { NULL, 0, 0 };
	json_object *o;
	int64_t now_wall = clock_wall_ms();
	int failed = 0, n = 0;
	size_t i;
	char err[256] = "";

	(void)fd;
	(void)events;
	q->flush_armed = 0;
	if (TAILQ_EMPTY(&q->pending))
		return;
	/*
	 * Detach this turn's batch: answering wakes clients whose next pipelined enqueue
	 * joins q->pending for the next commit, never this one's answer loop.
	 */
	TAILQ_CONCAT(&batch, &q->pending, entry);
	TAILQ_FOREACH(p, &batch, entry)
		n++;
	if (q->broken && queue_try_recover(q) != 0) {
		failed = 1;
		snprintf(err, sizeof err, "it refuses writes");
	} else {
		if (store_begin(q->store) != 0)
			failed = 1;
		TAILQ_FOREACH(p, &batch, entry) {
			if (failed || place(q, p, now_wall, &u) != 0) {
				failed = 1;
				break;
			}
		}
		if (!failed && store_commit(q->store) != 0)
			failed = 1;
		if (failed) {
			snprintf(err, sizeof err, "%s", store_errmsg(q->store));
			store_rollback(q->store);
			q->stats.storage_errors++;
			log_error("could not commit %d request(s): %s", n, err);
		}
	}
	/* Memory follows the store: undo everything on failure, settle it on success. */
	for (i = u.n; i-- > 0;) {
		struct job *j = u.v[i].j;

		if (failed && !u.v[i].absorbed)
			job_free(q, j);
		else if (failed)
			job_link(q, j);
		else if (u.v[i].absorbed) {
			waiters_move(q, j->id, j->absorbed_into);
			job_destroy(j);
		} else
			q->stats.jobs++;
	}
	free(u.v);
	if (!failed)
		q->stats.commits++;

	while ((p = TAILQ_FIRST(&batch)) != NULL) {
		TAILQ_REMOVE(&batch, p, entry);
		if (failed)
			o = answer_error("storage", "the request was not queued: the queue "
			    "database failed (%s); try again", err);
		else {
			q->stats.requests++;
			if (p->coalesced)
				q->stats.coalesced++;
			log_info("request %lld: %s purge of %s from uid %ld pid %ld, %s job %lld",
			    (long long)p->request_id, purge_type_name(p->req.type), p->req.install,
			    (long)p->uid, (long)p->pid, p->coalesced ? "joined" : "new",
			    (long long)p->job_id);
			o = answer_ok();
			json_object_object_add(o, "id", json_object_new_int64(p->request_id));
			json_object_object_add(o, "job", json_object_new_int64(p->job_id));
			json_object_object_add(o, "coalesced",
			    json_object_new_boolean(p->coalesced));
			json_object_object_add(o, "state", json_object_new_string("queued"));
		}
		if (p->cb != NULL)
			p->cb(p->arg, o);
		else
			json_object_put(o);
		proto_request_free(&p->req);
		free(p);
	}
	queue_run(q);
}

/* Cancel, pause, list, stats ---------------------------------------------------------- */

json_object *
queue_cancel(struct queue *q, int64_t id, uid_t uid, int admin)
{
	struct store_status ss;
	struct job *j;
	struct store_job row;
	int64_t now_wall = clock_wall_ms(), job_id;
	int rc, live, drop;

	if (q->broken && queue_try_recover(q) != 0)
		return answer_storage(q);
	rc = store_request_get(q->store, id, &ss);
	if (rc < 0)
		return answer_storage(q);
	if (rc == 0)
		return answer_error("not_found", "there is no request %lld", (long long)id);
	if (!admin && ss.uid != (int64_t)uid) {
		store_status_free(&ss);
		return answer_error("forbidden", "request %lld belongs to another user; "
		    "cancelling it needs root or a member of admin_group", (long long)id);
	}
	if (state_final(ss.state)) {
		json_object *o = answer_error("finished", "request %lld is already %s",
		    (long long)id, job_state_name(ss.state));

		store_status_free(&ss);
		return o;
	}
	job_id = ss.job;
	store_status_free(&ss);
	j = job_find(q, job_id);
	/* The job goes when nobody needs it any more, unless its HTTP request started. */
	if (store_begin(q->store) != 0 || store_request_cancel(q->store, id, now_wall) < 0 ||
	    (live = store_job_live_requests(q->store, job_id)) < 0)
		goto fail;
	drop = j != NULL && live == 0 && j->state == JOB_QUEUED;
	if (drop) {
		job_row(j, &row, now_wall);
		row.state = JOB_CANCELLED;
		if (store_job_update(q->store, &row) != 0)
			goto fail;
	}
	if (store_commit(q->store) != 0)
		goto fail;
	/* Committed: now memory. */
	q->stats.cancelled++;
	log_info("request %lld cancelled by uid %ld", (long long)id, (long)uid);
	if (drop)
		job_free(q, j);
	waiters_wake(q, id, 0);
	queue_run(q);
	return queue_status(q, id, uid, admin);
fail:
	store_rollback(q->store);
	q->stats.storage_errors++;
	return answer_storage(q);
}

json_object *
queue_pause(struct queue *q, int paused)
{
	json_object *o = answer_ok();

	if (q->paused != paused)
		log_notice("sending %s", paused ? "paused" : "resumed");
	q->paused = paused;
	json_object_object_add(o, "paused", json_object_new_boolean(paused));
	queue_run(q);
	return o;
}

static int
classes_busy(struct install *in, enum purge_type t)
{
	unsigned mask = sched_type_classes(t);
	struct job *j;

	TAILQ_FOREACH(j, &in->jobs, ientry) {
		if (j->state == JOB_SENDING && (sched_type_classes(j->type) & mask) != 0)
			return 1;
	}
	return 0;
}

/* Why a queued job is not going out now: for people reading "list". */
static const char *
job_waiting_for(struct queue *q, struct job *j, int64_t now, int64_t ready)
{
	static const char *cn[NCLASSES] = { "object", "page", "cdn" };
	static char buf[64];
	unsigned mask = sched_type_classes(j->type);
	int c;

	if (j->state == JOB_SENDING)
		return j->in_flight ? "response" : "the queue database (answer not recorded)";
	if (q->broken)
		return "the queue database to take writes again";
	if (q->paused)
		return "resume (sending is paused)";
	if (ready > now) {
		if (ready == j->not_before)
			return "retry backoff";
		for (c = 0; c < NCLASSES; c++) {
			if ((mask & (1u << c)) && ready == j->install->cls[c].blocked_until) {
				snprintf(buf, sizeof buf, "%s rate limit (429)", cn[c]);
				return buf;
			}
		}
		for (c = 0; c < NCLASSES; c++) {
			if ((mask & (1u << c)) && ready ==
			    sched_window_end(&j->install->cls[c], q->limits.interval[c])) {
				snprintf(buf, sizeof buf, "%s window", cn[c]);
				return buf;
			}
		}
		return "its window";
	}
	if (classes_busy(j->install, j->type))
		return "the install's purge in flight";
	if (sched_outage_next(&q->outage) != 0)
		return "the API to recover (outage backoff)";
	return "a free sending slot";
}

static int
list_match(const struct job *j, const struct proto_request *req)
{
	if (j->id <= req->after)
		return 0;
	if (req->has_type && j->type != req->type)
		return 0;
	if (req->state == 0 && j->state != JOB_QUEUED)
		return 0;
	if (req->state == 1 && j->state != JOB_SENDING)
		return 0;
	return 1;
}

static json_object *
list_entry(struct queue *q, struct job *j, int64_t now)
{
	json_object *e = json_object_new_object();
	int64_t ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
	int live = store_job_live_requests(q->store, j->id);

	json_object_object_add(e, "job", json_object_new_int64(j->id));
	add_str(e, "install", j->install->id);
	add_str(e, "type", purge_type_name(j->type));
	add_str(e, "state", job_state_name(j->state));
	json_object_object_add(e, "requests", json_object_new_int(live < 0 ? 0 : live));
	json_object_object_add(e, "attempts", json_object_new_int(j->attempts));
	if (j->state == JOB_QUEUED)
		add_time(e, "next_attempt_at", to_wall(ready > now ? ready : now));
	else
		add_time(e, "started_at", j->started_at);
	add_str(e, "waiting_for", job_waiting_for(q, j, now, ready));
	json_object_object_add(e, "http_status", j->http_status == 0 ? NULL :
	    json_object_new_int((int)j->http_status));
	add_str(e, "message", j->message);
	add_time(e, "created_at", j->created_at);
	return e;
}

static int
job_id_cmp(const void *a, const void *b)
{
	const struct job *x = *(struct job *const *)a, *y = *(struct job *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Unfinished jobs in id order, filtered (install, type, state), a page at a time: at
 * most req->limit after job req->after; "total" counts every match and "next" is the
 * cursor for the following page (null on the last), so nothing is cut off silently.
 */
json_object *
queue_list(struct queue *q, const struct proto_request *req)
{
	json_object *o = answer_ok(), *arr = json_object_new_array();
	struct job *j, **v = NULL;
	struct install *in;
	int64_t now = now_mono(), last = 0;
	size_t n = 0, cap = 0, i;
	int64_t total = 0, shown = 0;

	if (req->has_install) {
		/* One install's few jobs: sorted here, its list is not kept in id order. */
		if ((in = install_get(q, req->install, 0)) != NULL) {
			TAILQ_FOREACH(j, &in->jobs, ientry) {
				if (n == cap) {
					cap = cap == 0 ? 8 : cap * 2;
					v = xrealloc(v, cap * sizeof(struct job *));
				}
				v[n++] = j;
			}
			if (v != NULL)
				qsort(v, n, sizeof(struct job *), job_id_cmp);
		}
		for (i = 0; i < n; i++) {
			if (!list_match(v[i], req))
				continue;
			total++;
			if (shown < req->limit) {
				json_object_array_add(arr, list_entry(q, v[i], now));
				last = v[i]->id;
				shown++;
			}
		}
		free(v);
	} else {
		TAILQ_FOREACH(j, &q->jobs, qentry) {
			if (!list_match(j, req))
				continue;
			total++;
			if (shown < req->limit) {
				json_object_array_add(arr, list_entry(q, j, now));
				last = j->id;
				shown++;
			}
		}
	}
	json_object_object_add(o, "jobs", arr);
	json_object_object_add(o, "total", json_object_new_int64(total));
	json_object_object_add(o, "next", total > shown ? json_object_new_int64(last) : NULL);
	json_object_object_add(o, "paused", json_object_new_boolean(q->paused));
	json_object_object_add(o, "storage_failing", json_object_new_boolean(q->broken));
	return o;
}

json_object *
queue_stats(struct queue *q, int connections)
{
	json_object *o = answer_ok(), *api = json_object_new_object();
	struct stats *s = &q->stats;
	struct job *j;
	int queued = 0, sending = 0, waiters = 0;
	struct waiter *w;

	TAILQ_FOREACH(j, &q->jobs, qentry) {
		if (j->state == JOB_SENDING)
			sending++;
		else
			queued++;
	}
	TAILQ_FOREACH(w, &q->waiters, entry)
		waiters++;
#define ADD(obj, k, v) json_object_object_add(obj, k, json_object_new_int64((int64_t)(v)))
	ADD(o, "requests", s->requests);
	ADD(o, "coalesced", s->coalesced);
	ADD(o, "jobs", s->jobs);
	ADD(o, "merged", s->merged);
	ADD(o, "done", s->done);
	ADD(o, "failed", s->failed);
	ADD(o, "cancelled", s->cancelled);
	ADD(o, "retries", s->retries);
	ADD(o, "rate_limited", s->api_429);
	ADD(o, "api_calls", s->api_calls);
	ADD(api, "2xx", s->api_2xx);
	ADD(api, "400", s->api_400);
	ADD(api, "401", s->api_401);
	ADD(api, "403", s->api_403);
	ADD(api, "404", s->api_404);
	ADD(api, "429", s->api_429);
	ADD(api, "5xx", s->api_5xx);
	ADD(api, "other", s->api_other);
	ADD(api, "no_answer", s->api_transport);
	json_object_object_add(o, "api", api);
	ADD(o, "commits", s->commits);
	ADD(o, "storage_errors", s->storage_errors);
	ADD(o, "rebuilds", s->rebuilds);
	ADD(o, "queued_jobs", queued);
	ADD(o, "sending_jobs", sending);
	ADD(o, "waiters", waiters);
	ADD(o, "connections", connections);
	ADD(o, "uptime", (clock_wall_ms() - q->started_wall) / 1000);
#undef ADD
	json_object_object_add(o, "paused", json_object_new_boolean(q->paused));
	json_object_object_add(o, "storage_failing", json_object_new_boolean(q->broken));
	json_object_object_add(o, "outage", json_object_new_boolean(
	    sched_outage_next(&q->outage) != 0));
	add_str(o, "version", WPE_VERSION);
	json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
	return o;
}

void
queue_summary(struct queue *q, char *buf, size_t len)
{
	struct job *j;
	int queued = 0, sending = 0;
	int64_t next = INT64_MAX, now = now_mono(), r;

	TAILQ_FOREACH(j, &q->jobs, qentry) {
		if (j->state == JOB_SENDING) {
			sending++;
			continue;
		}
		queued++;
		r = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
		if (r < next)
			next = r;
	}
	if (q->broken)
		snprintf(buf, len, "queue database refusing writes; queued %d, sending %d",
		    queued, sending);
	else if (q->paused)
		snprintf(buf, len, "paused; queued %d, sending %d", queued, sending);
	else if (queued > 0 && next > now) {
		char at[32];

		/* A time, not a countdown: the line is sent when it changes, not every second. */
		fmt_rfc3339(to_wall(next), at, sizeof at);
		snprintf(buf, len, "queued %d, sending %d, next purge at %.8s UTC", queued, sending,
		    at + 11);
	}
	else
		snprintf(buf, len, "queued %d, sending %d", queued, sending);
}

void
queue_reload(struct queue *q, const struct limits *lim)
{
	q->limits = *lim;
	queue_run(q);
}

/* Sending --------------------------------------------------------------------------- */

/* Write the limit state cls of the classes in mask (inside the caller's transaction). */
static int
persist_classes(struct queue *q, const struct install *in, const struct class_state *cls,
    unsigned mask)
{
	struct class_state w;
	int c;

	for (c = 0; c < NCLASSES; c++) {
		if (!(mask & (1u << c)))
			continue;
		w = cls[c];
		w.last_start = to_wall(w.last_start);
		w.blocked_until = to_wall(w.blocked_until);
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
		if ((mask & (1u << c)) && ncls[c].last_start == j->last_attempt)
			ncls[c].last_start = j->prev_start[c];
	}
	job_row(j, &row, 0);
	row.state = JOB_QUEUED;
	row.not_before = to_wall(now + q->limits.retry_initial * 1000);
	if (store_begin(q->store) != 0 || persist_classes(q, j->install, ncls, mask) != 0 ||
	    store_job_update(q->store, &row) != 0 || store_commit(q->store) != 0) {
		store_rollback(q->store);
		queue_break(q);
		return;
	}
	memcpy(j->install->cls, ncls, sizeof ncls);
	j->state = JOB_QUEUED;
	j->not_before = now + q->limits.retry_initial * 1000;
}

/* Commit "sending" and the window it opens, then (only then) hand it to the sender. */
static void
job_start(struct queue *q, struct job *j, int64_t now)
{
	struct class_state ncls[NCLASSES];
	struct store_job row;
	unsigned mask = sched_type_classes(j->type);
	int64_t started = clock_wall_ms();
	char *cause = NULL;
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
	    store_job_update(q->store, &row) != 0 || store_commit(q->store) != 0) {
		store_rollback(q->store);
		q->stats.storage_errors++;
		/* Nothing changed anywhere; try again a little later. */
		j->not_before = now + q->limits.retry_initial * 1000;
		log_error("job %lld: could not record the start of sending: %s; retrying later",
		    (long long)j->id, store_errmsg(q->store));
		return;
	}
	for (c = 0; c < NCLASSES; c++) {
		j->prev_start[c] = j->install->cls[c].last_start;
		j->install->cls[c] = ncls[c];
	}
	j->state = JOB_SENDING;
	j->attempts++;
	j->last_attempt = now;
	j->started_at = started;
	if (sender_start(q->sender, j, j->install->id, j->type, &cause) != 0) {
		job_unstart(q, j, now, cause);
		free(cause);
		return;
	}
	j->in_flight = 1;
	q->stats.api_calls++;
	if (j->attempts > 1)
		q->stats.retries++;
	log_info("job %lld: sending %s purge of %s (attempt %d)", (long long)j->id,
	    purge_type_name(j->type), j->install->id, j->attempts);
}

/* Start every job that may go now and arm the one timer for the earliest that may not. */
static void
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
	/* Every change ends here: tell whoever shows the summary. */
	if (q->changed_cb != NULL)
		q->changed_cb(q->changed_arg);
}

void
queue_set_changed_cb(struct queue *q, void (*cb)(void *), void *arg)
{
	q->changed_cb = cb;
	q->changed_arg = arg;
}

static void
queue_run_once(struct queue *q)
{
	struct job *j;
	int64_t now = now_mono(), next = INT64_MAX, ready, o;
	struct timeval tv;

	evtimer_del(q->timer);
	if (q->paused || q->stopping || q->broken)
		return;
	/* job_start never frees or moves a job: a plain walk is safe. */
	TAILQ_FOREACH(j, &q->jobs, qentry) {
		if (j->state != JOB_QUEUED)
			continue;
		ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
		if (ready > now) {
			if (ready < next)
				next = ready;
			continue;
		}
		if (sender_in_flight(q->sender) >= q->cfg->max_in_flight)
			break; /* a completion runs us again */
		if (classes_busy(j->install, j->type))
			continue;
		if (!sched_outage_allows(&q->outage, now, sender_in_flight(q->sender))) {
			o = sched_outage_next(&q->outage);
			if (o > now && o < next)
				next = o;
			break;
		}
		job_start(q, j, now);
		if (q->broken)
			return;
		if (j->state == JOB_QUEUED && j->not_before < next)
			next = j->not_before;
	}
	if (next != INT64_MAX) {
		o = next - now;
		if (o < 0)
			o = 0;
		tv.tv_sec = o / 1000;
		tv.tv_usec = (o % 1000) * 1000;
		evtimer_add(q->timer, &tv);
	}
}

static void
count_status(struct stats *s, const struct send_result *r)
{
	if (!r->transport_ok)
		s->api_transport++;
	else if (r->status >= 200 && r->status <= 299)
		s->api_2xx++;
	else if (r->status == 400)
		s->api_400++;
	else if (r->status == 401)
		s->api_401++;
	else if (r->status == 403)
		s->api_403++;
	else if (r->status == 404)
		s->api_404++;
	else if (r->status == 429)
		s->api_429++;
	else if (r->status >= 500 && r->status <= 599)
		s->api_5xx++;
	else
		s->api_other++;
}

static void
check_stopped(struct queue *q)
{
	void (*cb)(void *) = q->stopped_cb;

	if (q->stopping && cb != NULL && sender_in_flight(q->sender) == 0) {
		q->stopped_cb = NULL;
		cb(q->stopped_arg);
	}
}

/*
 * The sender's answer for one job. Everything is decided into local copies and written
 * in one transaction; memory follows only once it committed. A job that goes back to the
 * queue is coalesced with the install's queued jobs by the rules of a new request: its
 * retry starts after every one of them was accepted, so one purge covers them all.
 */
static void
queue_sent(void *arg, void *job, const struct send_result *r)
{
	struct queue *q = arg;
	struct job *j = job, *queued[PURGE_NTYPES * 2], *into = NULL;
	struct install *in = j->install;
	struct class_state ncls[NCLASSES];
	struct store_job row, krow;
	enum purge_type types[PURGE_NTYPES * 2];
	enum sched_outcome out = sched_classify(r->transport_ok, r->status);
	enum job_state nstate;
	unsigned mask = sched_type_classes(j->type);
	int64_t now = now_mono(), now_wall = clock_wall_ms(), finished = 0, nb = j->not_before;
	int64_t delay;
	char msg[SENDER_MAX_MESSAGE + 64], merge_msg[64];
	char *nmsg;
	size_t n = 0, i;
	int c, final = 0, live, idx = -1, attempts = j->attempts;

	j->in_flight = 0;
	count_status(&q->stats, r);
	if (!r->transport_ok)
		snprintf(msg, sizeof msg, "no answer from the API: %s", r->error);
	else if (r->message != NULL)
		snprintf(msg, sizeof msg, "%s", r->message);
	else
		snprintf(msg, sizeof msg, "HTTP %ld", r->status);
	nmsg = msg;

	/*
	 * The API acted on the purge somewhere between our start and its answer, so the next
	 * window opens an interval after the answer: safe whatever the network delays were.
	 * An attempt the API never acted on gives the window back.
	 */
	memcpy(ncls, in->cls, sizeof ncls);
	for (c = 0; c < NCLASSES; c++) {
		if (!(mask & (1u << c)) || ncls[c].last_start != j->last_attempt)
			continue;
		if (sched_attempt_counts(r->transport_ok, r->status, r->connect_failed))
			ncls[c].last_start = now;
		else
			ncls[c].last_start = j->prev_start[c];
	}
	switch (out) {
	case OUTCOME_DONE:
		nstate = JOB_DONE;
		nmsg = r->message;
		for (c = 0; c < NCLASSES; c++) {
			if (mask & (1u << c))
				ncls[c].strikes = 0;
		}
		sched_outage_answer(&q->outage);
		final = 1;
		break;
	case OUTCOME_RATE_LIMITED:
		/* Not acted on: the API says when (or the interval-based backoff does). */
		nstate = JOB_QUEUED;
		for (c = 0; c < NCLASSES; c++) {
			if (!(mask & (1u << c)))
				continue;
			ncls[c].strikes++;
			delay = sched_delay_429(r->retry_after, ncls[c].strikes,
			    q->limits.interval[c], &q->limits, now_wall);
			if (now + delay > ncls[c].blocked_until)
				ncls[c].blocked_until = now + delay;
		}
		sched_outage_answer(&q->outage);
		break;
	case OUTCOME_TRANSIENT:
		nstate = JOB_QUEUED;
		nb = now + sched_backoff_transient(j->attempts, &q->limits, arc4random());
		sched_outage_failure(&q->outage, &q->limits, now, arc4random());
		break;
	case OUTCOME_PERMANENT:
	default:
		nstate = JOB_FAILED;
		sched_outage_answer(&q->outage);
		final = 1;
		if (r->status == 401 && !q->warned_401) {
			q->warned_401 = 1;
			log_error("THE API REJECTS OUR CREDENTIALS (HTTP 401: %s): every purge will "
			    "fail until the credentials file is fixed", msg);
		}
		break;
	}

	if (store_begin(q->store) != 0)
		goto fail;
	if (!final) {
		/* Nobody needs it any more (its requests were cancelled while it was sent). */
		if ((live = store_job_live_requests(q->store, j->id)) < 0)
			goto fail;
		if (live == 0) {
			nstate = JOB_CANCELLED;
			final = 1;
		}
	}
	if (final)
		finished = now_wall;
	job_row(j, &row, finished);
	row.state = nstate;
	row.not_before = to_wall(nb);
	row.http_status = r->transport_ok ? r->status : 0;
	row.message = nmsg;
	if (!final) {
		n = queued_jobs(in, j, queued, types, sizeof queued / sizeof queued[0]);
		idx = sched_coalesce(j->type, types, n);
	}
	if (idx >= 0) {
		/* A queued job covers this one: its requests move there, it ends here. */
		into = queued[idx];
		snprintf(merge_msg, sizeof merge_msg, "merged into job %lld", (long long)into->id);
		row.state = JOB_CANCELLED;
		row.finished_at = now_wall;
		row.message = merge_msg;
		job_row(into, &krow, 0);
		if (nb > into->not_before)
			krow.not_before = to_wall(nb);
		if (attempts > krow.attempts)
			krow.attempts = attempts;
		krow.http_status = r->transport_ok ? r->status : 0;
		krow.message = msg;
		if (store_requests_move(q->store, j->id, into->id) != 0 ||
		    store_job_update(q->store, &krow) != 0)
			goto fail;
	} else if (!final && j->type == PURGE_ALL) {
		/* This "all" covers the queued narrower jobs: it takes them over. */
		snprintf(merge_msg, sizeof merge_msg, "absorbed into job %lld", (long long)j->id);
		for (i = 0; i < n; i++) {
			if (store_requests_move(q->store, queued[i]->id, j->id) != 0 ||
			    store_job_absorb(q->store, queued[i]->id, merge_msg, now_wall) != 0)
				goto fail;
			if (queued[i]->not_before > nb)
				nb = queued[i]->not_before;
			if (queued[i]->attempts > attempts)
				attempts = queued[i]->attempts;
		}
		row.not_before = to_wall(nb);
		row.attempts = attempts;
	}
	if (store_job_update(q->store, &row) != 0)
		goto fail;
	if (final && store_requests_finish(q->store, j->id, nstate, now_wall) != 0)
		goto fail;
	if (persist_classes(q, in, ncls, mask) != 0 || store_commit(q->store) != 0)
		goto fail;

	/* Committed: now memory. */
	memcpy(in->cls, ncls, sizeof ncls);
	j->http_status = r->transport_ok ? r->status : 0;
	job_set_message(j, nmsg);
	log_msg(out == OUTCOME_DONE ? LOG_INFO : LOG_WARNING,
	    "job %lld: %s purge of %s: %s (%s) after %.2fs%s", (long long)j->id,
	    purge_type_name(j->type), in->id, sched_outcome_name(out), msg, r->seconds,
	    nstate == JOB_CANCELLED ? ", dropped: no request needs it any more" :
	    final ? "" : into != NULL ? ", will retry as part of a queued job" :
	    ", will retry");
	if (into != NULL) {
		into->not_before = to_mono(krow.not_before);
		into->attempts = krow.attempts;
		into->http_status = krow.http_status;
		job_set_message(into, msg);
		q->stats.merged++;
		waiters_move(q, j->id, into->id);
		job_free(q, j);
	} else if (final) {
		int64_t id = j->id;

		if (nstate == JOB_DONE)
			q->stats.done++;
		else if (nstate == JOB_FAILED)
			q->stats.failed++;
		job_free(q, j);
		waiters_wake(q, 0, id);
	} else {
		j->state = JOB_QUEUED;
		j->not_before = nb;
		j->attempts = attempts;
		if (j->type == PURGE_ALL) {
			for (i = 0; i < n; i++) {
				q->stats.merged++;
				waiters_move(q, queued[i]->id, j->id);
				job_free(q, queued[i]);
			}
		}
	}
	goto out;
fail:
	/*
	 * The outcome is not on disk: the store still says "sending". The job stays so in
	 * memory, blocking its install's classes, and nothing is sent until the store takes
	 * writes again and the rebuild queues it (with a fresh window: purges are idempotent,
	 * the API may have acted).
	 */
	log_error("job %lld: could not record the API's answer (%s): %s", (long long)j->id,
	    msg, store_errmsg(q->store));
	store_rollback(q->store);
	queue_break(q);
out:
	check_stopped(q);
	queue_run(q);
}

/* Shutdown and pruning ----------------------------------------------------------------- */

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
	check_stopped(q);
}

void
queue_shutdown(struct queue *q, int64_t grace_ms, void (*done)(void *), void *arg)
{
	struct timeval tv = { grace_ms / 1000, (grace_ms % 1000) * 1000 };

	q->stopping = 1;
	q->stopped_cb = done;
	q->stopped_arg = arg;
	evtimer_del(q->timer);
	evtimer_del(q->prune_ev);
	/* Commit what this turn accepted before anything else. */
	if (!TAILQ_EMPTY(&q->pending))
		flush_cb(-1, 0, q);
	if (sender_in_flight(q->sender) > 0) {
		log_notice("waiting up to %lld ms for %d purge(s) in flight", (long long)grace_ms,
		    sender_in_flight(q->sender));
		q->grace_ev = evtimer_new(q->base, grace_cb, q);
		evtimer_add(q->grace_ev, &tv);
	}
	check_stopped(q);
}

static void
prune_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;
	struct timeval tv = { PRUNE_EVERY_MS / 1000, 0 };
	int n = 0;

	(void)fd;
	(void)events;
	if (store_begin(q->store) == 0) {
		n = store_prune(q->store, clock_wall_ms() - q->cfg->retention * 1000,
		    PRUNE_BATCH);
		if (n < 0 || store_commit(q->store) != 0) {
			store_rollback(q->store);
			n = 0;
		}
	}
	if (n > 0)
		log_debug("pruned %d finished row(s) older than the retention period", n);
	/* A full batch means more is waiting: come back soon, but yield to the loop. */
	if (n >= PRUNE_BATCH)
		tv.tv_sec = 1;
	evtimer_add(q->prune_ev, &tv);
}
