/* ops.c: the queue's operations as JSON answers, the one layer every transport calls. */
#include "compat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "queue-int.h"
#include "util.h"

static json_object *
answer_ok(void)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

json_object *
ops_error(const char *code, const char *fmt, ...)
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
		return ops_error("storage", "the queue database is refusing writes; "
		    "nothing was changed; try again");
	return ops_error("storage", "the queue database failed: %s", store_errmsg(q->store));
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
 * Who asked: "requested_by" (a label) for everyone, "source" (the job URL, commit, ref,
 * actor...) like the reason, to its owner and administrators only.
 */
static void
ops_add_source(json_object *o, const struct store_status *ss, int mine)
{
	json_object *src = NULL;
	struct source s;

	add_str(o, "requested_by", ss->who);
	if (mine && ss->source != NULL && source_from_json(ss->source, &s) == 0) {
		src = source_to_json(&s);
		source_free(&s);
	}
	json_object_object_add(o, "source", src);
}

json_object *
ops_enqueue_answer(const struct queue_placed *pl)
{
	json_object *o = answer_ok();

	json_object_object_add(o, "id", json_object_new_int64(pl->request_id));
	json_object_object_add(o, "job", pl->held ? NULL : json_object_new_int64(pl->job_id));
	json_object_object_add(o, "coalesced", json_object_new_boolean(pl->coalesced));
	/* A replay says what became of the request since. */
	json_object_object_add(o, "state", json_object_new_string(pl->replayed ?
	    job_state_name(pl->state) : "queued"));
	json_object_object_add(o, "replayed", json_object_new_boolean(pl->replayed));
	add_str(o, "install", pl->install[0] != '\0' ? pl->install : NULL);
	add_str(o, "name", pl->name[0] != '\0' ? pl->name : NULL);
	if (pl->held && !job_state_final(pl->state))
		add_str(o, "waiting_for", "the installs catalog (the name is resolved once it "
		    "is read)");
	if (pl->requeued_from != 0)
		json_object_object_add(o, "requeued_from",
		    json_object_new_int64(pl->requeued_from));
	return o;
}

void
ops_enqueue(struct queue *q, const struct proto_request *req, const struct ops_caller *c,
    queue_answer_cb cb, void *arg)
{
	queue_enqueue(q, req, c->requester, c->pid, c->name, cb, arg);
}

void
ops_forget(struct queue *q, void *arg)
{
	queue_enqueue_forget(q, arg);
}

/*
 * One request as "status" shows it. Its reason is its owner's business: shown to the
 * requester that asked for it and to administrators; everyone else sees states and
 * installs.
 */
json_object *
ops_status_object(const struct store_status *ss, int64_t requester, int admin)
{
	json_object *o = answer_ok();
	int mine = admin || ss->uid == requester;

	json_object_object_add(o, "id", json_object_new_int64(ss->id));
	add_str(o, "install", ss->install[0] != '\0' ? ss->install : NULL);
	add_str(o, "name", ss->name[0] != '\0' ? ss->name : NULL);
	add_str(o, "type", purge_type_name(ss->type));
	add_str(o, "state", job_state_name(ss->state));
	json_object_object_add(o, "job", ss->job == 0 ? NULL : json_object_new_int64(ss->job));
	add_str(o, "job_type", purge_type_name(ss->job_type));
	json_object_object_add(o, "attempts", json_object_new_int(ss->attempts));
	json_object_object_add(o, "http_status", ss->http_status == 0 ? NULL :
	    json_object_new_int((int)ss->http_status));
	add_str(o, "message", ss->message);
	add_str(o, "reason", mine ? ss->reason : NULL);
	ops_add_source(o, ss, mine);
	add_time(o, "enqueued_at", ss->enqueued_at);
	add_time(o, "finished_at", ss->finished_at);
	json_object_object_add(o, "requeued_from", ss->requeued_from == 0 ? NULL :
	    json_object_new_int64(ss->requeued_from));
	return o;
}

static int64_t
job_ready_at(struct queue *q, const struct job *j)
{
	int64_t ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
	int64_t now = queue_now();

	return ready > now ? ready : now;
}

json_object *
ops_status(struct queue *q, int64_t id, const struct ops_caller *c)
{
	struct store_status ss;
	json_object *o;
	struct job *j;
	int rc;

	rc = store_request_get(q->store, id, &ss);
	if (rc < 0)
		return ops_error("storage", "the queue database failed: %s",
		    store_errmsg(q->store));
	if (rc == 0)
		return ops_error("not_found", "there is no request %lld (it may have been "
		    "pruned after the retention period)", (long long)id);
	/* The install's name as the catalog says now (it may have been renamed). */
	if (ss.install[0] != '\0' && catalog_by_id(&q->cat, ss.install) != NULL)
		snprintf(ss.name, sizeof ss.name, "%s", names_of(q, ss.install));
	o = ops_status_object(&ss, c->requester, c->admin);
	if (!job_state_final(ss.state) && ss.job == 0)
		add_str(o, "waiting_for", "the installs catalog (the name is resolved once it "
		    "is read)");
	/* While it waits, say when it may go out next. */
	if (!job_state_final(ss.state) && (j = job_find(q, ss.job)) != NULL &&
	    j->state == JOB_QUEUED)
		add_time(o, "next_attempt_at", queue_to_wall(job_ready_at(q, j)));
	store_status_free(&ss);
	return o;
}

struct waiter *
ops_wait(struct queue *q, int64_t id, int64_t timeout_ms, const struct ops_caller *c,
    queue_answer_cb cb, void *arg)
{
	struct store_status ss;
	int64_t job;
	int rc;

	rc = store_request_get(q->store, id, &ss);
	if (rc <= 0 || job_state_final(ss.state)) {
		if (rc == 1)
			store_status_free(&ss);
		cb(arg, ops_status(q, id, c));
		return NULL;
	}
	job = ss.job;
	store_status_free(&ss);
	return waiter_new(q, id, job, timeout_ms, c->requester, c->admin, cb, arg);
}

void
ops_wait_cancel(struct queue *q, struct waiter *w)
{
	(void)q;
	waiter_free(w);
}

json_object *
ops_cancel(struct queue *q, int64_t id, const struct ops_caller *c)
{
	struct store_status ss;
	json_object *o;
	int64_t job, owner;
	int rc;

	if (q->broken && queue_try_recover(q) != 0)
		return answer_storage(q);
	rc = store_request_get(q->store, id, &ss);
	if (rc < 0)
		return answer_storage(q);
	if (rc == 0)
		return ops_error("not_found", "there is no request %lld", (long long)id);
	if (!c->admin && ss.uid != c->requester) {
		store_status_free(&ss);
		if (c->name != NULL)
			return ops_error("forbidden", "request %lld belongs to another "
			    "requester; cancelling it needs an admin token", (long long)id);
		return ops_error("forbidden", "request %lld belongs to another user; "
		    "cancelling it needs root or a member of admin_group", (long long)id);
	}
	if (job_state_final(ss.state)) {
		o = ops_error("finished", "request %lld is already %s", (long long)id,
		    job_state_name(ss.state));
		store_status_free(&ss);
		return o;
	}
	job = ss.job;
	owner = ss.uid;
	store_status_free(&ss);
	if (queue_cancel(q, id, owner, job) != 0)
		return answer_storage(q);
	if (c->name != NULL)
		log_info("request %lld cancelled by %s", (long long)id, c->name);
	else
		log_info("request %lld cancelled by uid %ld", (long long)id, (long)c->uid);
	return ops_status(q, id, c);
}

/* Why a queued job is not going out now: for people reading "list". */
static const char *
job_waiting_for(struct queue *q, const struct job *j, int64_t now, int64_t ready,
    char *buf, size_t len)
{
	static const char *cn[NCLASSES] = { "object", "page", "cdn" };
	unsigned mask = sched_type_classes(j->type);
	size_t i;
	int c;


	if (j->state == JOB_SENDING) {
		for (i = 0; i < q->nstarting && !j->in_flight; i++) {
			if (q->starting[i].id == j->id)
				return "its start to reach the disk";
		}
		return j->in_flight ? "response" : "the queue database (answer not recorded)";
	}
	if (q->broken)
		return "the queue database to take writes again";
	if (q->paused)
		return "resume (sending is paused)";
	if (ready > now) {
		if (ready == j->not_before)
			return "retry backoff";
		for (c = 0; c < NCLASSES; c++) {
			if ((mask & (1u << c)) && ready == j->install->cls[c].blocked_until) {
				snprintf(buf, len, "%s rate limit (429)", cn[c]);
				return buf;
			}
		}
		for (c = 0; c < NCLASSES; c++) {
			if ((mask & (1u << c)) && ready ==
			    sched_window_end(&j->install->cls[c], q->limits.interval[c])) {
				snprintf(buf, len, "%s window", cn[c]);
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
list_entry(struct queue *q, const struct job *j, int64_t now)
{
	json_object *e = json_object_new_object();
	int64_t ready = sched_ready_at(j->install->cls, &q->limits, j->type, j->not_before);
	char buf[64], who[SOURCE_LABEL_MAX];

	json_object_object_add(e, "job", json_object_new_int64(j->id));
	add_str(e, "install", j->install->id);
	add_str(e, "name", catalog_by_id(&q->cat, j->install->id) != NULL ?
	    names_of(q, j->install->id) : NULL);
	add_str(e, "type", purge_type_name(j->type));
	add_str(e, "state", job_state_name(j->state));
	json_object_object_add(e, "requests", json_object_new_int(j->nreq));
	json_object_object_add(e, "attempts", json_object_new_int(j->attempts));
	if (j->state == JOB_QUEUED)
		add_time(e, "next_attempt_at", queue_to_wall(ready > now ? ready : now));
	else
		add_time(e, "started_at", j->started_at);
	add_str(e, "waiting_for", job_waiting_for(q, j, now, ready, buf, sizeof buf));
	/* Who asked for it first (a key lookup in the store: a page is at most 1000). */
	if (store_job_who(q->store, j->id, who, sizeof who) == 0)
		add_str(e, "requested_by", who[0] != '\0' ? who : NULL);
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
 * The page starts with a binary search; the first unfiltered page stops after itself
 * (the count is kept), a filter by install reads that install's few jobs, and any other
 * page walks the rest of the queue, pointers only, to count it.
 */
json_object *
ops_list(struct queue *q, const struct proto_request *req)
{
	return ops_list_visible(q, req, NULL, NULL);
}

/*
 * A failing store is probed again (at most once a second) when asked: an instance that
 * healed must say so even if nothing writes to it meanwhile, or a load balancer that
 * trusts this answer would never send it the write that shows it.
 */
int
ops_healthy(struct queue *q)
{
	int64_t now = queue_now();

	if (q->broken)
		(void)queue_try_recover(q);
	else if (q->store_failing && now - q->last_recover >= 1000) {
		q->last_recover = now;
		if (store_begin(q->store) == 0 && store_probe(q->store, clock_wall_ms()) == 0 &&
		    store_commit(q->store) == 0)
			q->store_failing = 0;
		else
			store_rollback(q->store);
	}
	return !q->broken && !q->store_failing;
}

json_object *
ops_list_visible(struct queue *q, const struct proto_request *oreq,
    int (*visible)(const void *, const char *), const void *arg)
{
	json_object *o, *arr;
	struct job *j, *v[PURGE_NTYPES * 4 + 64], **jobs = v;
	struct install *in;
	struct proto_request named, *req = &named;
	int64_t now = queue_now(), last = 0, total = 0, shown = 0;
	size_t n = 0, i, pos;
	char near[96];

	named = *oreq;
	if (req->has_install && req->install[0] == '\0') {
		/* A name: its install's jobs; no fetch for a list (it only reads). */
		if (catalog_by_name(&q->cat, req->name) == NULL) {
			catalog_suggest_text(&q->cat, req->name, near, sizeof near);
			return ops_error("unknown_install", "no install named \"%s\" in the "
			    "installs catalog%s%s", req->name, near[0] != '\0' ? "; " : "", near);
		}
		memcpy(named.install, catalog_by_name(&q->cat, req->name)->id,
		    sizeof named.install);
	}
	o = answer_ok();
	arr = json_object_new_array();
	if (req->has_install) {
		if ((in = install_get(q, req->install, 0)) != NULL) {
			if ((size_t)in->njobs > sizeof v / sizeof v[0])
				jobs = xcalloc((size_t)in->njobs, sizeof(struct job *));
			TAILQ_FOREACH(j, &in->jobs, ientry)
				jobs[n++] = j;
			qsort(jobs, n, sizeof(struct job *), job_id_cmp);
		}
		for (i = 0; i < n; i++) {
			if (!list_match(jobs[i], req) ||
			    (visible != NULL && !visible(arg, jobs[i]->install->id)))
				continue;
			total++;
			if (shown < req->limit) {
				json_object_array_add(arr, list_entry(q, jobs[i], now));
				last = jobs[i]->id;
				shown++;
			}
		}
		if (jobs != v)
			free(jobs);
	} else {
		/* From the start without filters, the count is kept: stop after the page. */
		int counted = !req->has_type && req->state == -1 && req->after <= 0 &&
		    visible == NULL;

		pos = order_seek(&q->order, req->after);
		while ((j = order_next(&q->order, &pos)) != NULL) {
			if (!list_match(j, req) || (visible != NULL && !visible(arg, j->install->id)))
				continue;
			if (shown == req->limit && counted)
				break;
			total++;
			if (shown < req->limit) {
				json_object_array_add(arr, list_entry(q, j, now));
				last = j->id;
				shown++;
			}
		}
		if (counted)
			total = (int64_t)order_len(&q->order);
	}
	json_object_object_add(o, "jobs", arr);
	json_object_object_add(o, "total", json_object_new_int64(total));
	json_object_object_add(o, "next", total > shown ? json_object_new_int64(last) : NULL);
	json_object_object_add(o, "paused", json_object_new_boolean(q->paused));
	json_object_object_add(o, "storage_failing", json_object_new_boolean(q->broken));
	return o;
}

json_object *
ops_stats(struct queue *q, int connections)
{
	json_object *o = answer_ok(), *api = json_object_new_object();
	struct queue_stats *s = &q->stats;

#define ADD(obj, k, v) json_object_object_add(obj, k, json_object_new_int64((int64_t)(v)))
	ADD(o, "requests", s->requests);
	ADD(o, "coalesced", s->coalesced);
	ADD(o, "jobs", s->jobs);
	ADD(o, "merged", s->merged);
	ADD(o, "done", s->done);
	ADD(o, "failed", s->failed);
	ADD(o, "cancelled", s->cancelled);
	ADD(o, "expired", s->expired);
	ADD(o, "requeued", s->requeued);
	ADD(o, "limits_forgotten", s->limits_forgotten);
	ADD(o, "retries", s->retries);
	ADD(o, "rejected_full", s->rejected_full);
	ADD(o, "replayed", s->replayed);
	ADD(o, "idempotency_conflicts", s->idempotency_conflicts);
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
	ADD(o, "queued_jobs", q->nqueued);
	ADD(o, "sending_jobs", q->nsending);
	ADD(o, "requesters", htab_len(&q->requesters));
	ADD(o, "waiters", s->waiters);
	ADD(o, "connections", connections);
	ADD(o, "uptime", (clock_wall_ms() - q->started_wall) / 1000);
	ADD(o, "unknown_installs", s->unknown_installs);
	ADD(o, "held_requests", q->nheld);
	json_object_object_add(o, "catalog", ops_catalog_stats(q));
	json_object_object_add(o, "top_requesters", top_json(q));
#undef ADD
	json_object_object_add(o, "paused", json_object_new_boolean(q->paused));
	add_time(o, "paused_since", q->paused ? q->paused_since : 0);
	json_object_object_add(o, "max_age", json_object_new_int64(q->limits.max_age));
	json_object_object_add(o, "storage_failing", json_object_new_boolean(q->broken));
	json_object_object_add(o, "outage", json_object_new_boolean(
	    sched_outage_next(&q->outage) != 0));
	add_str(o, "version", WPE_VERSION);
	json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
	return o;
}

void
ops_summary(struct queue *q, char *buf, size_t len)
{
	struct heap_node *hn = heap_top(&q->timed);
	long long queued = (long long)q->nqueued, sending = (long long)q->nsending;
	int64_t now = queue_now();
	int ready = !TAILQ_EMPTY(&q->ring);

	if (q->broken)
		snprintf(buf, len, "queue database refusing writes; queued %lld, sending %lld",
		    queued, sending);
	else if (q->paused) {
		char since[32];

		/* Also right after a start: a pause persisted across the restart shows. */
		fmt_rfc3339(q->paused_since, since, sizeof since);
		snprintf(buf, len, "paused since %.10s %.8s UTC; queued %lld, sending %lld",
		    since, since + 11, queued, sending);
	}
	else if (queued > 0 && !ready && hn != NULL && hn->key > now) {
		char at[32];

		/* A time, not a countdown: the line is sent when it changes, not every second. */
		fmt_rfc3339(queue_to_wall(hn->key), at, sizeof at);
		snprintf(buf, len, "queued %lld, sending %lld, next purge at %.8s UTC", queued,
		    sending, at + 11);
	} else
		snprintf(buf, len, "queued %lld, sending %lld", queued, sending);
}
