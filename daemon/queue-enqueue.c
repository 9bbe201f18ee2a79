/* queue-enqueue.c: requests in and out: group commit, coalescing, quotas, cancelling. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "queue-int.h"
#include "util.h"

/* What a group commit changed in memory, undone in reverse if the commit fails. */
enum undo_kind { U_NEW, U_ABSORB, U_MEMBER, U_HELD };
struct undo {
	enum undo_kind kind;
	struct job *j;
	struct held *h;
	int64_t uid;
	int64_t rid, at;     /* U_MEMBER, U_HELD: the request and when it was accepted */
};
struct undo_log {
	struct undo *v;
	size_t n, cap;
	size_t held;         /* U_HELD entries */
};

static struct pending *
pending_add(struct queue *q, const struct proto_request *req, int64_t requester,
    pid_t pid, const char *name, queue_answer_cb cb, void *arg)
{
	struct pending *p = xcalloc(1, sizeof *p);

	p->req = *req;
	p->req.reason = req->reason != NULL ? xstrdup(req->reason) : NULL;
	p->req.source = source_dup(req->source);
	p->requester = requester;
	p->pid = pid;
	p->name = name != NULL ? xstrdup(name) : NULL;
	pending_provenance(p);
	p->cb = cb;
	p->arg = arg;
	p->seq = ++q->seq;
	TAILQ_INIT(&p->followers);
	if (TAILQ_EMPTY(&q->pending))
		q->pending_since = queue_now();
	TAILQ_INSERT_TAIL(&q->pending, p, entry);
	if (!q->flush_armed) {
		q->flush_armed = 1;
		event_active(q->flush_ev, 0, 0);
	}
	return p;
}

void
queue_enqueue(struct queue *q, const struct proto_request *req, int64_t requester,
    pid_t pid, const char *name, queue_answer_cb cb, void *arg)
{
	(void)pending_add(q, req, requester, pid, name, cb, arg);
}

/* A new request like req that says it enqueues request from again (ops_requeue). */
void
queue_requeue(struct queue *q, const struct proto_request *req, int64_t from,
    int64_t requester, pid_t pid, const char *name, queue_answer_cb cb, void *arg)
{
	pending_add(q, req, requester, pid, name, cb, arg)->requeued_from = from;
}

/* A placed request that requeues another says which (in the same transaction). */
static int
placed_from(struct queue *q, struct pending *p)
{
	p->out.requeued_from = p->requeued_from;
	if (p->requeued_from == 0)
		return 0;
	return store_request_requeued_from(q->store, p->out.request_id, p->requeued_from);
}

void
queue_enqueue_forget(struct queue *q, void *arg)
{
	struct pending *p;

	TAILQ_FOREACH(p, &q->pending, entry) {
		if (p->arg == arg)
			p->cb = NULL;
	}
	TAILQ_FOREACH(p, &q->unsynced, entry) {
		if (p->arg == arg)
			p->cb = NULL;
	}
	resolving_forget(q, arg);
}

int
queue_progressing(struct queue *q, int64_t max_ms)
{
	int64_t now = queue_now();

	return (TAILQ_EMPTY(&q->pending) || now - q->pending_since <= max_ms) &&
	    (TAILQ_EMPTY(&q->unsynced) || now - q->unsynced_since <= max_ms);
}

void
pending_free(struct pending *p)
{
	proto_request_free(&p->req);
	free(p->name);
	free(p->source_json);
	free(p);
}

static void
answer(struct pending *p, json_object *o)
{
	if (p->cb != NULL)
		p->cb(p->arg, o);
	else
		json_object_put(o);
	pending_free(p);
}

/*
 * Answer the committed enqueues the disk has now (all: make everything durable first,
 * at shutdown). They were committed in order, so their generations ascend.
 */
void
queue_deliver(struct queue *q, int all)
{
	struct pending *p;
	uint64_t done;

	if (TAILQ_EMPTY(&q->unsynced))
		return;
	if (all)
		store_sync(q->store);
	done = store_durable(q->store);
	/* The analyzer cannot follow TAILQ_REMOVE's tqh_last update: a known false positive. */
	while ((p = TAILQ_FIRST(&q->unsynced)) != NULL && p->gen <= done) { /* NOLINT(clang-analyzer-unix.Malloc) */
		struct pending *r;

		TAILQ_REMOVE(&q->unsynced, p, entry);
		/* Behind an earlier enqueue of the same client that waits for the catalog. */
		if (p->cb != NULL && (r = resolving_before(q, p)) != NULL) {
			TAILQ_INSERT_TAIL(&r->followers, p, entry);
			continue;
		}
		answer(p, p->answer);
	}
	if (p != NULL)
		q->unsynced_since = queue_now();
}

static void
undo_push(struct undo_log *u, enum undo_kind kind, struct job *j, int64_t uid)
{
	if (u->n == u->cap) {
		u->cap = u->cap == 0 ? 16 : u->cap * 2;
		u->v = xrealloc(u->v, u->cap * sizeof *u->v);
	}
	u->v[u->n].kind = kind;
	u->v[u->n].j = j;
	u->v[u->n].h = NULL;
	u->v[u->n].rid = u->v[u->n].at = 0;
	u->v[u->n++].uid = uid;
}

struct undo_log *
undo_new(void)
{
	return xcalloc(1, sizeof(struct undo_log));
}

void
undo_free(struct undo_log *u)
{
	free(u->v);
	free(u);
}

/*
 * Requests by name of uid held for the first catalog: on the list, and placed earlier in
 * this group commit (u); *all: every held one. Nothing to count once a catalog was read.
 */
static int64_t
held_by(const struct queue *q, int64_t uid, const struct undo_log *u, int64_t *all)
{
	const struct held *h;
	int64_t mine = 0;
	size_t i;

	*all = (int64_t)q->nheld;
	if (q->nheld > 0) {
		TAILQ_FOREACH(h, &q->held, entry)
			mine += h->requester == uid;
	}
	for (i = 0; u->held > 0 && i < u->n; i++) {
		if (u->v[i].kind == U_HELD) {
			(*all)++;
			mine += u->v[i].h->requester == uid;
		}
	}
	return mine;
}

/*
 * Would one more job (or held request) for p's requester go over its quota? Its jobs and
 * its requests held for the first catalog count; jobs being absorbed in this group
 * commit (and those this request would absorb, mine) no longer do.
 */
static int
user_full(struct queue *q, struct pending *p, int64_t mine, const struct undo_log *u)
{
	struct requester *r = requester_get(q, p->requester, 0);
	int64_t all, held = (r != NULL ? r->njobs - r->absorbing - mine : 0) +
	    held_by(q, p->requester, u, &all);

	if (held < q->limits.max_queued_per_user)
		return 0;
	p->out.error = "queue_full";
	if (p->name != NULL)
		snprintf(p->out.message, sizeof p->out.message, "%.64s has %lld unfinished "
		    "purges queued, the most max_queued_per_user allows; try again when some "
		    "are done", p->name, (long long)held);
	else
		snprintf(p->out.message, sizeof p->out.message, "uid %ld has %lld unfinished "
		    "purges queued, the most max_queued_per_user allows; try again when some "
		    "are done", (long)p->requester, (long long)held);
	return 1;
}

/*
 * May p be held for the first catalog? Held requests count against the caps as jobs do:
 * at most held_max in all, and with the requester's jobs at most max_queued_per_user (or
 * one user's names would take every held slot while the API is down at start).
 */
static int
held_full(struct queue *q, struct pending *p, const struct undo_log *u)
{
	int64_t all;

	(void)held_by(q, p->requester, u, &all);
	if (all < held_max(q))
		return user_full(q, p, 0, u);
	p->out.error = "queue_full";
	snprintf(p->out.message, sizeof p->out.message, "%lld requests by install name "
	    "already wait for the installs catalog to be read; try again later, or use the "
	    "install's id", (long long)all);
	return 1;
}

/* Mark t as taken over by job into (memory follows at the commit, see settle). */
static void
absorb_mark(struct job *t, int64_t into, int d)
{
	struct member *m;

	t->absorbed_into = d > 0 ? into : 0;
	for (m = t->members; m != NULL; m = m->next)
		m->r->absorbing += d;
}

/*
 * Place one request: join a queued job or make a new one, in the store and in memory;
 * every memory change is logged in u so that a failed commit can undo it. 0 placed,
 * 1 refused (the queue or the requester is full: p->out says why), -1 storage error.
 */
int
enqueue_place(struct queue *q, struct pending *p, int64_t now_wall, struct undo_log *u)
{
	struct install *in;
	enum purge_type types[PURGE_NTYPES * 2];
	struct job *queued[PURGE_NTYPES * 2], *j, *t;
	struct held *h;
	struct store_prov prov;
	int64_t uid = p->requester;
	char msg[64];
	size_t n = 0, i;
	int idx = -1, rc;

	/* A key seen before: answered again (or refused), nothing placed. */
	if ((rc = idem_check(q, p)) != 0)
		return rc;
	if (p->req.install[0] == '\0') {
		/* A name: resolved at once, held for a first catalog, or waiting for a fetch. */
		switch (names_resolve(q, p)) {
		case RESOLVE_UNKNOWN:
			return 1;
		case RESOLVE_WAIT:
			p->out.resolving = 1;
			return 2;
		case RESOLVE_HOLD:
			if (held_full(q, p, u))
				return 1;
			if ((rc = held_place(q, p, now_wall, &h)) != 0)
				return rc;
			if (placed_from(q, p) != 0) {
				free(h);
				return -1;
			}
			undo_push(u, U_HELD, NULL, 0);
			u->held++;
			u->v[u->n - 1].h = h;
			u->v[u->n - 1].rid = h->id;
			u->v[u->n - 1].at = now_wall;
			return 0;
		case RESOLVED:
		default:
			break;
		}
	}
	in = install_get(q, p->req.install, 0);
	memcpy(p->out.install, p->req.install, sizeof p->out.install);
	snprintf(p->out.name, sizeof p->out.name, "%s", p->req.name[0] != '\0' ?
	    p->req.name : names_of(q, p->req.install));
	if (in != NULL) {
		n = install_queued(in, NULL, queued, types, sizeof queued / sizeof queued[0]);
		idx = sched_coalesce(p->req.type, types, n);
	}
	if (idx >= 0) {
		j = queued[idx];
		/* A held request was accepted long ago: it is not refused now. */
		if (p->held_id == 0 && member_find(j, uid) == NULL && user_full(q, p, 0, u))
			return 1;
		p->out.coalesced = 1;
	} else {
		int64_t nb = SCHED_NEVER, id, mine = 0;
		int attempts = 0, absorbs = p->req.type == PURGE_ALL ? (int)n : 0;

		if (p->held_id == 0 && absorbs == 0 &&
		    (int64_t)htab_len(&q->jobs) >= q->limits.max_queued) {
			p->out.error = "queue_full";
			snprintf(p->out.message, sizeof p->out.message, "the queue holds %zu "
			    "unfinished purges, the most max_queued allows; try again when some "
			    "are done", htab_len(&q->jobs));
			return 1;
		}
		for (i = 0; i < (size_t)absorbs; i++)
			mine += member_find(queued[i], uid) != NULL;
		if (p->held_id == 0 && user_full(q, p, mine, u))
			return 1;
		if (in == NULL)
			in = install_get(q, p->req.install, 1);
		/* A new "all" job inherits the backoff of the jobs it absorbs. */
		for (i = 0; i < (size_t)absorbs; i++) {
			if (queued[i]->not_before > nb)
				nb = queued[i]->not_before;
			if (queued[i]->attempts > attempts)
				attempts = queued[i]->attempts;
		}
		id = store_job_insert(q->store, in->id, p->req.type, queue_to_wall(nb), attempts,
		    now_wall, p->who);
		if (id < 0)
			return -1;
		j = job_new(q, id, in, p->req.type);
		j->not_before = nb;
		j->attempts = attempts;
		j->created_at = now_wall;
		undo_push(u, U_NEW, j, 0);
		snprintf(msg, sizeof msg, "absorbed into job %lld", (long long)id);
		for (i = 0; i < (size_t)absorbs; i++) {
			t = queued[i];
			if (store_requests_move(q->store, t->id, id) != 0 ||
			    store_job_absorb(q->store, t->id, msg, now_wall) != 0)
				return -1;
			/* Out of coalescing; it goes (or stays, if the commit fails) in settle. */
			absorb_mark(t, id, 1);
			undo_push(u, U_ABSORB, t, 0);
		}
	}
	p->out.job_id = j->id;
	if (p->held_id != 0) {
		p->out.request_id = p->held_id;
		if (store_held_resolve(q->store, p->held_id, j->id, in->id, p->out.coalesced) != 0)
			return -1;
	} else {
		pending_prov(p, &prov);
		p->out.request_id = store_request_insert(q->store, j->id, in->id, p->req.type,
		    p->req.reason, uid, (int64_t)p->pid, p->out.coalesced, now_wall,
		    p->out.name, &prov);
	}
	if (p->out.request_id < 0 || placed_from(q, p) != 0)
		return -1;
	member_add(q, j, uid, 1);
	undo_push(u, U_MEMBER, j, uid);
	u->v[u->n - 1].rid = p->out.request_id;
	u->v[u->n - 1].at = now_wall;
	return 0;
}

/*
 * Memory follows the store: undo everything in reverse on failure (absorbed jobs never
 * moved, so nothing else changes: not their order, not anyone's turn). On success,
 * schedule the new jobs (not those a later "all" of the same batch absorbed), then let
 * the absorbed ones go, their requesters and waiters moving to the job taking over.
 */
void
enqueue_settle(struct queue *q, struct undo_log *u, int failed)
{
	int64_t now = queue_now(), into;
	struct job *j;
	size_t i;

	for (i = 0; i < u->n; i++) {
		if (u->v[i].kind == U_HELD)
			held_settle(q, u->v[i].h, failed);
	}
	if (failed) {
		for (i = u->n; i-- > 0;) {
			j = u->v[i].j;
			if (u->v[i].kind == U_HELD)
				continue;
			if (u->v[i].kind == U_MEMBER)
				member_sub(q, j, u->v[i].uid);
			else if (u->v[i].kind == U_ABSORB)
				absorb_mark(j, 0, -1);
			else
				job_free(q, j);
		}
		return;
	}
	/* The requests are unfinished now: the expiry timer covers them. */
	for (i = 0; i < u->n; i++) {
		if (u->v[i].kind == U_MEMBER || u->v[i].kind == U_HELD)
			expire_note(q, u->v[i].rid, u->v[i].at);
	}
	for (i = 0; i < u->n; i++) {
		if (u->v[i].kind != U_NEW)
			continue;
		q->stats.jobs++;
		if (u->v[i].j->absorbed_into == 0)
			job_sched(q, u->v[i].j, now);
	}
	for (i = 0; i < u->n; i++) {
		if (u->v[i].kind != U_ABSORB)
			continue;
		j = u->v[i].j;
		into = j->absorbed_into;
		absorb_mark(j, 0, -1);
		members_move(q, j, job_find(q, into));
		waiters_move(q, j->id, into);
		job_free(q, j);
		prune_arm(q, clock_wall_ms());
	}
}

void
queue_flush(struct queue *q)
{
	struct pending *p;
	struct pendings batch = TAILQ_HEAD_INITIALIZER(batch);
	struct undo_log u = { NULL, 0, 0, 0 };
	json_object *o;
	int64_t now_wall = clock_wall_ms();
	int failed = 0, n = 0;
	char err[256] = "", what[128], via[SOURCE_LABEL_MAX + SOURCE_MAX_JOB_URL + 16];
	uint64_t gen = 0;

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
	q->suggest_left = CATALOG_SUGGEST_BUDGET;
	if (q->broken && queue_try_recover(q) != 0) {
		failed = 1;
		snprintf(err, sizeof err, "it refuses writes");
	} else {
		if (store_begin(q->store) != 0)
			failed = 1;
		TAILQ_FOREACH(p, &batch, entry) {
			if (failed || enqueue_place(q, p, now_wall, &u) < 0) {
				failed = 1;
				break;
			}
		}
		/*
		 * A lone request with nothing else waiting for the disk is synced inline: no
		 * batch could use the time, and the hand-off would only add latency. Otherwise
		 * the worker syncs while this loop takes the next batch.
		 */
		if (!failed && (n == 1 && TAILQ_EMPTY(&q->unsynced) ?
		    store_commit(q->store) : store_commit_async(q->store, &gen)) != 0)
			failed = 1;
		if (failed) {
			snprintf(err, sizeof err, "%s", store_errmsg(q->store));
			store_rollback(q->store);
			q->stats.storage_errors++;
			q->store_failing = 1;
			log_error("could not commit %d request(s): %s", n, err);
		}
	}
	enqueue_settle(q, &u, failed);
	free(u.v);
	if (!failed) {
		q->stats.commits++;
		q->store_failing = 0;
	}

	while ((p = TAILQ_FIRST(&batch)) != NULL) {
		TAILQ_REMOVE(&batch, p, entry);
		if (p->resolved_once)
			q->nreleased--;
		if (!failed && p->out.resolving) {
			/* Its name asked for a catalog fetch: it is answered once that ends. */
			resolving_add(q, p);
			continue;
		}
		if (failed)
			o = ops_error("storage", "the request was not queued: the queue database "
			    "failed (%s); try again", err);
		else if (p->out.replayed) {
			q->stats.replayed++;
			log_info("request %lld: answered again to %s (the same idempotency key)",
			    (long long)p->out.request_id, p->requester_label);
			o = ops_enqueue_answer(&p->out);
		} else if (p->out.error != NULL) {
			if (strcmp(p->out.error, "queue_full") == 0)
				q->stats.rejected_full++;
			else if (strcmp(p->out.error, "idempotency_conflict") == 0)
				q->stats.idempotency_conflicts++;
			else
				q->stats.unknown_installs++;
			o = ops_error(p->out.error, "%s", p->out.message);
		} else {
			q->stats.requests++;
			q->stats.requests_type[p->req.type]++;
			if (p->out.coalesced)
				q->stats.coalesced++;
			top_add(q, p->requester_label);
			pending_via(p, via, sizeof via);
			if (p->out.held)
				snprintf(what, sizeof what, "%s (held until the installs catalog "
				    "is read)", p->req.name);
			else if (p->out.name[0] != '\0')
				snprintf(what, sizeof what, "%s (%s)", p->out.install, p->out.name);
			else
				snprintf(what, sizeof what, "%s", p->out.install);
			if (p->name != NULL)
				log_info("request %lld: %s purge of %s from %s%s, %s job %lld",
				    (long long)p->out.request_id, purge_type_name(p->req.type),
				    what, p->name, via, p->out.coalesced ? "joined" : "new",
				    (long long)p->out.job_id);
			else
				log_info("request %lld: %s purge of %s from uid %ld pid %ld%s, %s "
				    "job %lld", (long long)p->out.request_id,
				    purge_type_name(p->req.type), what,
				    (long)p->requester, (long)p->pid, via,
				    p->out.coalesced ? "joined" : "new", (long long)p->out.job_id);
			if (p->requeued_from != 0) {
				q->stats.requeued++;
				log_info("request %lld requeues request %lld",
				    (long long)p->out.request_id, (long long)p->requeued_from);
			}
			o = ops_enqueue_answer(&p->out);
		}
		/*
		 * Every answer goes out once the disk has this batch (queue_deliver), errors
		 * too: answers leave in the order the requests came, behind earlier batches.
		 */
		p->answer = o;
		p->gen = failed ? 0 : gen;
		if (TAILQ_EMPTY(&q->unsynced))
			q->unsynced_since = queue_now();
		TAILQ_INSERT_TAIL(&q->unsynced, p, entry);
		/* The answers that waited behind it go right after it. */
		TAILQ_CONCAT(&q->unsynced, &p->followers, entry);
	}
	queue_run(q);     /* a job it starts syncs the store: the answers may go at once */
	queue_deliver(q, 0);
}

/*
 * Cancel request id (unfinished, of requester uid, on job job_id): the job goes when
 * nobody needs it any more, unless its HTTP request started. 0, or -1 (nothing changed).
 */
int
queue_cancel(struct queue *q, int64_t id, int64_t uid, int64_t job_id)
{
	struct job *j = job_find(q, job_id);
	struct store_job row;
	int64_t now_wall = clock_wall_ms();
	int live = 0, drop;

	/* Job 0: a request by name held for the catalog; it has no job to look at. */
	if (store_begin(q->store) != 0 || store_request_cancel(q->store, id, now_wall) < 0 ||
	    (job_id != 0 && (live = store_job_live_requests(q->store, job_id)) < 0))
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
	q->store_failing = 0;
	q->stats.cancelled++;
	if (j != NULL)
		member_sub(q, j, uid);
	if (drop)
		job_free(q, j);
	/* A request by name still held for the catalog must not be resolved and sent. */
	if (job_id == 0)
		held_drop(q, id);
	prune_arm(q, now_wall);
	waiters_wake(q, id, 0);
	queue_run(q);
	return 0;
fail:
	store_rollback(q->store);
	q->stats.storage_errors++;
	q->store_failing = 1;
	return -1;
}
