/* queue-names.c: install names: resolving them, requests held for a first catalog, and enqueues waiting for a fetch. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

/* Requests held for a first catalog, at most (past it, queue_full). */
int64_t
held_max(const struct queue *q)
{
	return q->limits.max_queued < 10000 ? q->limits.max_queued : 10000;
}

const char *
names_of(struct queue *q, const char *install)
{
	const struct catalog_entry *e = catalog_by_id(&q->cat, install);

	return e != NULL ? e->name : "";
}

static void
unknown(struct queue *q, struct pending *p)
{
	char near[96] = "", when[32];

	if (q->suggest_left >= catalog_len(&q->cat)) {
		q->suggest_left -= catalog_len(&q->cat);
		catalog_suggest_text(&q->cat, p->req.name, near, sizeof near);
	}
	fmt_rfc3339(q->cat.fetched_at, when, sizeof when);
	p->out.error = "unknown_install";
	snprintf(p->out.message, sizeof p->out.message, "no install named \"%s\" among the "
	    "account's %zu installs (read %s%s%.*s)%s%s", p->req.name, catalog_len(&q->cat),
	    when, q->fetch.error[0] != '\0' ? "; reading them again failed: " : "",
	    (int)utf8_prefix(q->fetch.error, 80), q->fetch.error, near[0] != '\0' ? "; " : "",
	    near);
}

enum resolve
names_resolve(struct queue *q, struct pending *p)
{
	const struct catalog_entry *e = catalog_by_name(&q->cat, p->req.name);

	if (e != NULL) {
		memcpy(p->req.install, e->id, sizeof p->req.install);
		return RESOLVED;
	}
	if (q->cat.fetched_at == 0)
		return RESOLVE_HOLD;
	if (!p->resolved_once && !q->stopping) {
		if (!q->fetch.running &&
		    sched_catalog_unknown_allowed(q->fetch.last_unknown, queue_now()))
			catalog_want(q, 1);
		if (catalog_asking(q))
			return RESOLVE_WAIT;
	}
	unknown(q, p);
	return RESOLVE_UNKNOWN;
}

/* Held requests --------------------------------------------------------------------- */

/* Hold p (held_full said it may be): its row now, the list at the commit (held_settle). */
int
held_place(struct queue *q, struct pending *p, int64_t now_wall, struct held **hp)
{
	struct held *h;
	struct store_prov prov;
	int64_t id;

	pending_prov(p, &prov);
	id = store_request_insert(q->store, 0, "", p->req.type, p->req.reason, p->requester,
	    (int64_t)p->pid, 0, now_wall, p->req.name, &prov);
	if (id < 0)
		return -1;
	h = xcalloc(1, sizeof *h);
	h->id = id;
	h->requester = p->requester;
	h->pid = p->pid;
	h->type = p->req.type;
	memcpy(h->name, p->req.name, sizeof h->name);
	memcpy(h->who, p->who, sizeof h->who);
	p->out.request_id = id;
	p->out.job_id = 0;
	p->out.held = 1;
	memcpy(p->out.name, p->req.name, sizeof p->out.name);
	*hp = h;
	return 0;
}

void
held_settle(struct queue *q, struct held *h, int failed)
{
	if (failed) {
		free(h);
		return;
	}
	TAILQ_INSERT_TAIL(&q->held, h, entry);
	q->nheld++;
}

/*
 * A held request finished on its own (expired, cancelled). Held requests are in order of
 * acceptance, so the one expiring is at the head (a clock set back aside).
 */
void
held_drop(struct queue *q, int64_t id)
{
	struct held *h;

	TAILQ_FOREACH(h, &q->held, entry) {
		if (h->id == id) {
			TAILQ_REMOVE(&q->held, h, entry);
			q->nheld--;
			free(h);
			return;
		}
	}
}

void
held_free_all(struct queue *q)
{
	struct held *h;

	while ((h = TAILQ_FIRST(&q->held)) != NULL) {
		TAILQ_REMOVE(&q->held, h, entry);
		free(h);
	}
	q->nheld = 0;
}

static void
held_row(void *arg, int64_t id, const char *name, enum purge_type type, int64_t uid,
    int64_t pid, int64_t enqueued_at, const char *who)
{
	struct queue *q = arg;
	struct held *h = xcalloc(1, sizeof *h);

	(void)enqueued_at;
	h->id = id;
	h->requester = uid;
	h->pid = (pid_t)pid;
	h->type = type;
	snprintf(h->name, sizeof h->name, "%s", name);
	snprintf(h->who, sizeof h->who, "%.*s", (int)utf8_prefix(who, sizeof h->who - 1), who);
	held_settle(q, h, 0);
}

int
held_load(struct queue *q)
{
	held_free_all(q);
	return store_held_load(q->store, held_row, q);
}

/*
 * A catalog arrived: every held request joins or makes a job for its install, by the
 * rules of a new request, or fails as unknown_install, all in one transaction; memory
 * follows once it committed (a failure breaks the queue: the rebuild tries again).
 */
void
held_resolve(struct queue *q)
{
	struct pending **v;
	struct undo_log *u;
	struct held *h;
	int64_t now_wall = clock_wall_ms();
	size_t n = 0, i;
	char msg[256];
	int failed = 0;

	if (TAILQ_EMPTY(&q->held) || q->cat.fetched_at == 0 || q->broken)
		return;
	q->suggest_left = CATALOG_SUGGEST_BUDGET;
	v = xcalloc(q->nheld, sizeof(struct pending *));
	TAILQ_FOREACH(h, &q->held, entry) {
		struct pending *p = xcalloc(1, sizeof *p);

		p->req.op = OP_ENQUEUE;
		p->req.type = h->type;
		memcpy(p->req.name, h->name, sizeof p->req.name);
		p->held_id = h->id;
		p->requester = h->requester;
		p->pid = h->pid;
		p->resolved_once = 1;
		pending_provenance(p);
		/* The job it may make is who asked for it's, not "uid N" (its source is stored). */
		if (h->who[0] != '\0')
			memcpy(p->who, h->who, sizeof p->who);
		TAILQ_INIT(&p->followers);
		v[n++] = p;
	}
	u = undo_new();
	if (store_begin(q->store) != 0)
		failed = 1;
	for (i = 0; i < n && !failed; i++) {
		if (catalog_by_name(&q->cat, v[i]->req.name) != NULL) {
			if (enqueue_place(q, v[i], now_wall, u) != 0)
				failed = 1;
			continue;
		}
		unknown(q, v[i]);
		snprintf(msg, sizeof msg, "unknown_install: %.*s",
		    (int)utf8_prefix(v[i]->out.message, 230), v[i]->out.message);
		if (store_held_fail(q->store, v[i]->held_id, msg, now_wall) != 0)
			failed = 1;
	}
	if (!failed && store_commit(q->store) != 0)
		failed = 1;
	if (failed) {
		log_error("could not resolve %zu request(s) by install name: %s", n,
		    store_errmsg(q->store));
		store_rollback(q->store);
	}
	enqueue_settle(q, u, failed);
	undo_free(u);
	if (failed)
		queue_break(q);
	else {
		held_free_all(q);
		for (i = 0; i < n; i++) {
			if (v[i]->out.error != NULL) {
				q->stats.failed++;
				q->stats.unknown_installs++;
				log_warn("request %lld: %s", (long long)v[i]->held_id,
				    v[i]->out.message);
			} else
				log_info("request %lld: %s is %s; %s job %lld",
				    (long long)v[i]->held_id, v[i]->req.name, v[i]->req.install,
				    v[i]->out.coalesced ? "joined" : "new",
				    (long long)v[i]->out.job_id);
			waiters_wake(q, v[i]->held_id, 0);
		}
		prune_arm(q, now_wall);
	}
	for (i = 0; i < n; i++)
		pending_free(v[i]);
	free(v);
	queue_run(q);
}

/* Enqueues waiting for a fetch ------------------------------------------------------- */

/* Back into q->pending, in arrival order, for the next group commit. */
static void
release_one(struct queue *q, struct pending *p)
{
	struct pending *t;

	p->resolved_once = 1;
	memset(&p->out, 0, sizeof p->out);
	q->nreleased++;
	if (TAILQ_EMPTY(&q->pending))
		q->pending_since = queue_now();
	TAILQ_FOREACH(t, &q->pending, entry) {
		if (t->seq > p->seq)
			break;
	}
	if (t != NULL)
		TAILQ_INSERT_BEFORE(t, p, entry);
	else
		TAILQ_INSERT_TAIL(&q->pending, p, entry);
	if (!q->flush_armed) {
		q->flush_armed = 1;
		event_active(q->flush_ev, 0, 0);
	}
}

void
resolving_add(struct queue *q, struct pending *p)
{
	if (!catalog_asking(q))
		release_one(q, p);
	else
		TAILQ_INSERT_TAIL(&q->resolving, p, entry);
}

void
resolving_release(struct queue *q)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(&q->resolving)) != NULL) {
		TAILQ_REMOVE(&q->resolving, p, entry);
		release_one(q, p);
	}
}

/* The latest earlier enqueue of p's client still waiting to be answered for a name. */
struct pending *
resolving_before(struct queue *q, const struct pending *p)
{
	struct pending *r, *best = NULL;

	TAILQ_FOREACH(r, &q->resolving, entry) {
		if (r->arg == p->arg && r->cb != NULL && r->seq < p->seq &&
		    (best == NULL || r->seq > best->seq))
			best = r;
	}
	if (q->nreleased > 0) {
		TAILQ_FOREACH(r, &q->pending, entry) {
			if (r->resolved_once && r->arg == p->arg && r->cb != NULL &&
			    r->seq < p->seq && (best == NULL || r->seq > best->seq))
				best = r;
		}
	}
	return best;
}

static void
followers_forget(struct pending *r, void *arg)
{
	struct pending *f;

	TAILQ_FOREACH(f, &r->followers, entry) {
		if (f->arg == arg)
			f->cb = NULL;
	}
}

void
resolving_forget(struct queue *q, void *arg)
{
	struct pending *r;

	TAILQ_FOREACH(r, &q->resolving, entry) {
		if (r->arg == arg)
			r->cb = NULL;
		followers_forget(r, arg);
	}
	TAILQ_FOREACH(r, &q->pending, entry)
		followers_forget(r, arg);
}

static void
followers_free(struct pending *r)
{
	struct pending *f;

	while ((f = TAILQ_FIRST(&r->followers)) != NULL) {
		TAILQ_REMOVE(&r->followers, f, entry);
		json_object_put(f->answer);
		pending_free(f);
	}
}

void
resolving_free_all(struct queue *q)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(&q->resolving)) != NULL) {
		TAILQ_REMOVE(&q->resolving, p, entry);
		followers_free(p);
		pending_free(p);
	}
	TAILQ_FOREACH(p, &q->pending, entry)
		followers_free(p);
}
