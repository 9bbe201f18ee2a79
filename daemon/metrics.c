/* metrics.c: the queue's counters, gauges and histograms as Prometheus / OpenMetrics text. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "queue-int.h"
#include "util.h"

/* Upper bounds of the buckets, seconds; the last bucket is +Inf. */
static const double api_bounds[HIST_BUCKETS - 1] = { 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10,
	20, 30, 60 };
static const double done_bounds[HIST_BUCKETS - 1] = { 1, 5, 15, 30, 60, 120, 300, 600,
	1800, 3600, 21600 };

static void
metrics_observe(struct histogram *h, const double *bounds, double v)
{
	int i;

	for (i = 0; i < HIST_BUCKETS - 1 && v > bounds[i]; i++)
		;
	h->n[i]++;
	h->count++;
	h->sum += v;
}

void
metrics_api_call(struct queue_stats *s, double seconds)
{
	metrics_observe(&s->api_seconds, api_bounds, seconds);
}

void
metrics_job_done(struct queue_stats *s, double seconds)
{
	metrics_observe(&s->done_seconds, done_bounds, seconds);
}

/* "# TYPE" and "# HELP" of a family; counters are named with _total in the old format. */
static void
family(FILE *f, int om, const char *name, const char *type, const char *help)
{
	const char *suffix = !om && strcmp(type, "counter") == 0 ? "_total" : "";

	fprintf(f, "# TYPE wpe_purged_%s%s %s\n# HELP wpe_purged_%s%s %s\n", name, suffix, type,
	    name, suffix, help);
}

static void
counter(FILE *f, int om, const char *name, const char *help, uint64_t v)
{
	family(f, om, name, "counter", help);
	fprintf(f, "wpe_purged_%s_total %llu\n", name, (unsigned long long)v);
}

static void
gauge(FILE *f, int om, const char *name, const char *help, double v)
{
	family(f, om, name, "gauge", help);
	fprintf(f, "wpe_purged_%s %.17g\n", name, v);
}

static void
histogram(FILE *f, int om, const char *name, const char *help, const struct histogram *h,
    const double *bounds)
{
	uint64_t cum = 0;
	int i;

	family(f, om, name, "histogram", help);
	for (i = 0; i < HIST_BUCKETS - 1; i++) {
		cum += h->n[i];
		fprintf(f, "wpe_purged_%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
		    (unsigned long long)cum);
	}
	fprintf(f, "wpe_purged_%s_bucket{le=\"+Inf\"} %llu\n", name,
	    (unsigned long long)h->count);
	fprintf(f, "wpe_purged_%s_count %llu\nwpe_purged_%s_sum %.17g\n", name,
	    (unsigned long long)h->count, name, h->sum);
}

/* The age of the oldest queued job (seconds), and seconds until the next purge (-1). */
static void
metrics_queue_times(struct queue *q, double *oldest, double *next)
{
	struct heap_node *hn = heap_top(&q->timed);
	struct job *j;
	int64_t now = queue_now();
	size_t pos = order_seek(&q->order, 0);

	*oldest = 0;
	*next = -1;
	/* Id order is creation order: the first queued job is the oldest (sending ones skipped). */
	while ((j = order_next(&q->order, &pos)) != NULL) {
		if (j->state == JOB_QUEUED) {
			int64_t age = clock_wall_ms() - j->created_at;

			*oldest = j->created_at > 0 && age > 0 ? (double)age / 1000 : 0;
			break;
		}
	}
	if (q->nqueued == 0)
		return;
	if (!TAILQ_EMPTY(&q->ring))
		*next = 0;
	else if (hn != NULL)
		*next = hn->key > now ? (double)(hn->key - now) / 1000 : 0;
}

char *
metrics_render(struct queue *q, int connections, int om, size_t *len)
{
	static const char *classes[] = { "2xx", "4xx", "429", "5xx", "other", "no_answer" };
	const struct queue_stats *s = &q->stats;
	uint64_t api[6];
	char *buf = NULL;
	double oldest, next;
	FILE *f;
	int i;

	if ((f = open_memstream(&buf, len)) == NULL)
		fatal("open_memstream");
	family(f, om, "requests", "counter", "Purge requests accepted, by type.");
	for (i = 0; i < PURGE_NTYPES; i++)
		fprintf(f, "wpe_purged_requests_total{type=\"%s\"} %llu\n",
		    purge_type_name((enum purge_type)i), (unsigned long long)s->requests_type[i]);
	counter(f, om, "coalesced", "Requests that joined a queued job.", s->coalesced);
	api[0] = s->api_2xx;
	api[1] = s->api_400 + s->api_401 + s->api_403 + s->api_404;
	api[2] = s->api_429;
	api[3] = s->api_5xx;
	api[4] = s->api_other;
	api[5] = s->api_transport;
	family(f, om, "api_calls", "counter", "Purge calls to the WP Engine API, by answer.");
	for (i = 0; i < 6; i++)
		fprintf(f, "wpe_purged_api_calls_total{class=\"%s\"} %llu\n", classes[i],
		    (unsigned long long)api[i]);
	counter(f, om, "rate_limited", "API answers 429 (rate limited).", s->api_429);
	counter(f, om, "retries", "API calls that were retries.", s->retries);
	family(f, om, "jobs_finished", "counter", "Jobs finished, by outcome.");
	fprintf(f, "wpe_purged_jobs_finished_total{outcome=\"done\"} %llu\n"
	    "wpe_purged_jobs_finished_total{outcome=\"failed\"} %llu\n",
	    (unsigned long long)s->done, (unsigned long long)s->failed);
	counter(f, om, "requests_cancelled", "Requests cancelled by clients.", s->cancelled);
	counter(f, om, "requests_expired", "Requests that ran past max_age unsent.", s->expired);
	counter(f, om, "requests_requeued", "Requests made by a requeue.", s->requeued);
	counter(f, om, "rejected_full", "Enqueues refused with queue_full.", s->rejected_full);
	counter(f, om, "storage_errors", "Failed database transactions.", s->storage_errors);
	gauge(f, om, "queued_jobs", "Jobs waiting to be sent.", (double)q->nqueued);
	gauge(f, om, "sending_jobs", "Jobs whose API call is under way.", (double)q->nsending);
	gauge(f, om, "waiters", "Clients waiting for a request to finish.", (double)s->waiters);
	gauge(f, om, "connections", "Open client connections.", connections);
	gauge(f, om, "requesters", "Requesters with unfinished requests.",
	    (double)htab_len(&q->requesters));
	metrics_queue_times(q, &oldest, &next);
	gauge(f, om, "oldest_queued_job_age_seconds", "Age of the oldest queued job.", oldest);
	gauge(f, om, "next_purge_seconds", "Seconds until the next purge may start (-1: none "
	    "queued).", next);
	gauge(f, om, "paused", "1 while sending is paused.", q->paused);
	gauge(f, om, "outage", "1 while the API is treated as down (probing).",
	    sched_outage_next(&q->outage) != 0);
	gauge(f, om, "storage_failing", "1 while the database refuses writes.", q->broken);
	gauge(f, om, "held_requests", "Requests by a name waiting for the first installs "
	    "catalog.", (double)q->nheld);
	counter(f, om, "unknown_installs", "Enqueues refused: a name the catalog does not "
	    "have.", s->unknown_installs);
	gauge(f, om, "catalog_installs", "Installs in the catalog.",
	    (double)catalog_len(&q->cat));
	gauge(f, om, "catalog_age_seconds", "Age of the installs catalog (-1: never read).",
	    q->cat.fetched_at == 0 ? -1 : (double)(clock_wall_ms() - q->cat.fetched_at) / 1000);
	gauge(f, om, "catalog_refreshing", "1 while the installs catalog is being read.",
	    q->fetch.running);
	counter(f, om, "catalog_fetches", "Reads of the installs catalog started.",
	    s->catalog_fetches);
	counter(f, om, "catalog_api_calls", "GET /installs calls to the API.", s->catalog_calls);
	counter(f, om, "catalog_failed_pages", "Catalog pages that failed or were refused.",
	    s->catalog_failed);
	histogram(f, om, "api_call_duration_seconds", "Duration of API purge calls.",
	    &s->api_seconds, api_bounds);
	histogram(f, om, "job_latency_seconds", "From a job's first request to the API "
	    "accepting its purge.", &s->done_seconds, done_bounds);
	if (om)
		fprintf(f, "# EOF\n");
	if (fclose(f) != 0)
		fatal("open_memstream");
	return buf;
}
