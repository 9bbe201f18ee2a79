/* ops-lifecycle.c: ops that outlive a request or a restart: requeue, and the persisted pause. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "queue-int.h"
#include "util.h"

static json_object *
storage_error(struct queue *q)
{
	if (q->broken)
		return ops_error("storage", "the queue database is refusing writes; "
		    "nothing was changed; try again");
	return ops_error("storage", "the queue database failed: %s; nothing was changed",
	    store_errmsg(q->store));
}

json_object *
ops_pause(struct queue *q, int paused)
{
	json_object *o;
	int64_t since = paused ? (q->paused ? q->paused_since : clock_wall_ms()) : 0;
	char when[32];

	if (q->paused != paused) {
		/* The store first: a pause that is answered holds across any restart. */
		if ((q->broken && queue_try_recover(q) != 0) || store_begin(q->store) != 0 ||
		    store_paused_put(q->store, since) != 0 || store_commit(q->store) != 0) {
			if (!q->broken)
				store_rollback(q->store);
			q->stats.storage_errors++;
			return storage_error(q);
		}
		if (paused)
			log_notice("sending paused (kept across restarts until resumed)");
		else
			log_notice("sending resumed (paused since %s)",
			    fmt_rfc3339(q->paused_since, when, sizeof when));
	}
	q->paused = paused;
	q->paused_since = since;
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "paused", json_object_new_boolean(paused));
	json_object_object_add(o, "paused_since", since == 0 ? NULL :
	    json_object_new_string(fmt_rfc3339(since, when, sizeof when)));
	queue_run(q);
	return o;
}

/*
 * What a requeued request copies from the one it requeues: the one place that knows the
 * per-request fields (a new field of requests is copied here too): type, reason, source
 * (not the idempotency key: that names the old request). The install is the
 * one it resolved to; a request whose name never resolved asks by that name again.
 */
static void
requeue_fields(const struct store_status *old, struct proto_request *req)
{
	memset(req, 0, sizeof *req);
	req->op = OP_ENQUEUE;
	req->type = old->type;
	req->timeout_ms = -1;
	req->state = -1;
	if (old->install[0] != '\0')
		memcpy(req->install, old->install, sizeof req->install);
	else
		snprintf(req->name, sizeof req->name, "%s", old->name);
	req->reason = old->reason != NULL ? xstrdup(old->reason) : NULL;
	/* Who asked, and from which CI job: the provenance of the request it repeats. */
	if (old->source != NULL) {
		req->source = xcalloc(1, sizeof *req->source);
		if (source_from_json(old->source, req->source) != 0 ||
		    source_empty(req->source)) {
			source_free(req->source);
			free(req->source);
			req->source = NULL;
		}
	}
}

json_object *
ops_requeue(struct queue *q, int64_t id, const struct ops_caller *c, queue_answer_cb cb,
    void *arg)
{
	struct store_status ss;
	struct proto_request req;
	json_object *o = NULL;
	int mine, rc;

	rc = store_request_get(q->store, id, &ss);
	if (rc < 0)
		return storage_error(q);
	if (rc == 0)
		return ops_error("not_found", "there is no request %lld (it may have been "
		    "pruned after the retention period)", (long long)id);
	mine = ss.uid == c->requester;
	if (!c->admin && !mine)
		o = c->name != NULL ? ops_error("forbidden", "request %lld belongs to another "
		    "requester; requeueing it needs an admin token", (long long)id) :
		    ops_error("forbidden", "request %lld belongs to another user; requeueing "
		    "it needs root or a member of admin_group", (long long)id);
	else if (ss.state == JOB_DONE)
		o = ops_error("not_requeueable", "request %lld is done: the API accepted its "
		    "purge; enqueue a new request to purge again", (long long)id);
	else if (!job_state_final(ss.state))
		o = ops_error("not_requeueable", "request %lld is still %s; only a failed, "
		    "expired or cancelled request can be requeued (cancel it first)",
		    (long long)id, job_state_name(ss.state));
	else if (ss.install[0] == '\0' && !install_name_valid(ss.name))
		o = ops_error("not_requeueable", "request %lld has neither an install id nor a "
		    "name to requeue", (long long)id);
	if (o != NULL) {
		if (strcmp(json_object_get_string(json_object_object_get(o, "error")),
		    "not_requeueable") == 0)
			json_object_object_add(o, "state",
			    json_object_new_string(job_state_name(ss.state)));
		store_status_free(&ss);
		return o;
	}
	requeue_fields(&ss, &req);
	/* The new request is its owner's, whoever asked: quota, turns, its reason. */
	if (mine)
		queue_requeue(q, &req, id, ss.uid, c->pid, c->name, cb, arg);
	else {
		if (c->name != NULL)
			log_info("request %lld requeued by %s for its owner", (long long)id,
			    c->name);
		else
			log_info("request %lld requeued by uid %ld for its owner", (long long)id,
			    (long)c->uid);
		/*
		 * Named as its owner was: a token's request (a negative requester id) by the
		 * label it was stored with ("token NAME"), never as "uid -123...".
		 */
		queue_requeue(q, &req, id, ss.uid, -1, ss.uid < 0 ? ss.who : NULL, cb, arg);
	}
	proto_request_free(&req);
	store_status_free(&ss);
	return NULL;
}
