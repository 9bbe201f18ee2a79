/* queue-outcome.c: what the API's answer to one job means, recorded, then applied. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "queue-int.h"
#include "util.h"

static void
count_status(struct queue_stats *s, const struct send_result *r)
{
	metrics_api_call(s, r->seconds);
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

/*
 * The sender's answer for one job. Everything is decided into local copies and written
 * in one transaction; memory follows only once it committed. A job that goes back to the
 * queue is coalesced with the install's queued jobs by the rules of a new request: its
 * retry starts after every one of them was accepted, so one purge covers them all.
 */
void
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
	int64_t now = queue_now(), now_wall = clock_wall_ms(), finished = 0, nb = j->not_before;
	int64_t delay;
	char msg[SENDER_MAX_MESSAGE + 64], merge_msg[64];
	char *nmsg;
	size_t n = 0, i;
	uint64_t gen;
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
		if (!(mask & (1u << c)) || ncls[c].last_start != j->attempt->started)
			continue;
		if (sched_attempt_counts(r->transport_ok, r->status, r->connect_failed))
			ncls[c].last_start = now;
		else
			ncls[c].last_start = j->attempt->prev_start[c];
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
	row.not_before = queue_to_wall(nb);
	row.http_status = r->transport_ok ? r->status : 0;
	row.message = nmsg;
	if (!final) {
		n = install_queued(in, j, queued, types, sizeof queued / sizeof queued[0]);
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
			krow.not_before = queue_to_wall(nb);
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
		row.not_before = queue_to_wall(nb);
		row.attempts = attempts;
	}
	if (store_job_update(q->store, &row) != 0)
		goto fail;
	if (final && store_requests_finish(q->store, j->id, nstate, now_wall) != 0)
		goto fail;
	if (nstate == JOB_DONE && catalog_by_id(&q->cat, in->id) != NULL &&
	    store_catalog_purged(q->store, in->id, now_wall) != 0)
		goto fail;
	/*
	 * The outcome is not waited for on disk: it is synced with the next sync. A power
	 * cut before that leaves "sending" with the window of the start, which was synced:
	 * the purge goes out again after the window, never early, never lost.
	 */
	if (persist_classes(q, in, ncls, mask) != 0 ||
	    store_commit_async(q->store, &gen) != 0)
		goto fail;

	/* Committed: now memory. */
	q->store_failing = 0;
	memcpy(in->cls, ncls, sizeof ncls);
	if (nstate == JOB_DONE && catalog_by_id(&q->cat, in->id) != NULL)
		catalog_by_id(&q->cat, in->id)->last_purge = now_wall;
	j->http_status = r->transport_ok ? r->status : 0;
	job_set_message(j, nmsg);
	log_msg(out == OUTCOME_DONE ? LOG_INFO : LOG_WARNING,
	    "job %lld: %s purge of %s%s%s%s: %s (%s) after %.2fs%s", (long long)j->id,
	    purge_type_name(j->type), in->id, names_of(q, in->id)[0] != '\0' ? " (" : "",
	    names_of(q, in->id), names_of(q, in->id)[0] != '\0' ? ")" : "",
	    sched_outcome_name(out), msg, r->seconds,
	    nstate == JOB_CANCELLED ? ", dropped: no request needs it any more" :
	    final ? "" : into != NULL ? ", will retry as part of a queued job" :
	    ", will retry");
	if (into != NULL) {
		into->not_before = queue_to_mono(krow.not_before);
		into->attempts = krow.attempts;
		into->http_status = krow.http_status;
		job_set_message(into, msg);
		q->stats.merged++;
		members_move(q, j, into);
		waiters_move(q, j->id, into->id);
		job_free(q, j);
	} else if (final) {
		int64_t id = j->id;

		if (nstate == JOB_DONE) {
			q->stats.done++;
			if (j->created_at > 0 && now_wall >= j->created_at)
				metrics_job_done(&q->stats,
				    (double)(now_wall - j->created_at) / 1000);
		}
		else if (nstate == JOB_FAILED)
			q->stats.failed++;
		job_free(q, j);
		waiters_wake(q, 0, id);
		prune_arm(q, now_wall);
	} else {
		job_set_state(q, j, JOB_QUEUED);
		j->not_before = nb;
		j->attempts = attempts;
		if (j->type == PURGE_ALL) {
			for (i = 0; i < n; i++) {
				q->stats.merged++;
				members_move(q, queued[i], j);
				waiters_move(q, queued[i]->id, j->id);
				job_free(q, queued[i]);
			}
		}
	}
	if (into != NULL || !final)
		prune_arm(q, now_wall);   /* a merged or absorbed job finished */
	/* Its install's windows and purges in flight changed: its jobs move. */
	install_resched(q, in, now);
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
	queue_check_stopped(q);
	queue_run(q);
}
