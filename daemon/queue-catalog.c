/* queue-catalog.c: reading the installs catalog from the API, page by page, one fetch at a time. */
#include "compat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

#define FIRST_QUERY "limit=100&offset=0"
#define MAX_RESTARTS 3          /* the list changed while it was read: read it again */

static void page_request(struct queue *);

/*
 * Why the fetch failed, for the log, stats, installs and unknown_install answers: cut
 * to f->error on a character boundary (the API's message is UTF-8; a cut through a
 * character made every one of those answers invalid JSON text).
 */
static void error_set(struct catfetch *f, const char *fmt, ...) printflike(2, 3);

static void
error_set(struct catfetch *f, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
	va_end(ap);
	snprintf(f->error, sizeof f->error, "%.*s", (int)utf8_prefix(buf,
	    sizeof f->error - 1), buf);
}

static void
timer_in(struct queue *q, int64_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(q->fetch.timer, &tv);
}

/*
 * The fetch settled (it succeeded, or a page failed once): whoever waits for it is
 * answered now, even if the fetch goes on retrying in the background.
 */
static void
fetch_settled(struct queue *q)
{
	resolving_release(q);
	waiters_catalog_done(q);
}

static void
fetch_restart(struct queue *q)
{
	struct catfetch *f = &q->fetch;

	catalog_clear(&q->staging);
	f->offset = 0;
	snprintf(f->query, sizeof f->query, "%s", FIRST_QUERY);
	f->pages = 0;
	f->skipped = 0;
	f->first_count = -1;
	f->count_changed = 0;
	free(f->seen);
	f->seen = NULL;
	f->nseen = 0;
}

static uint64_t
query_hash(const char *s)
{
	uint64_t h = 1469598104150210011ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/*
 * Has this paging asked for query already (a loop that no offset shows: cursors)? If
 * not, it is remembered. Pages are at most CATALOG_MAX_PAGES: a scan is cheap enough.
 */
static int
query_seen(struct catfetch *f, const char *query)
{
	uint64_t h = query_hash(query);
	int i;

	if (f->seen == NULL)
		f->seen = xcalloc(CATALOG_MAX_PAGES + 2, sizeof *f->seen);
	for (i = 0; i < f->nseen; i++) {
		if (f->seen[i] == h)
			return 1;
	}
	if (f->nseen < CATALOG_MAX_PAGES + 2)
		f->seen[f->nseen++] = h;
	return 0;
}

static void
fetch_begin(struct queue *q)
{
	struct catfetch *f = &q->fetch;

	if (f->running || q->stopping)
		return;
	evtimer_del(f->timer);
	f->running = 1;
	f->restarts = 0;
	memset(&f->backoff, 0, sizeof f->backoff);
	f->started = queue_now();
	fetch_restart(q);
	q->stats.catalog_fetches++;
	log_info("installs catalog: reading it from the API");
	page_request(q);
}

/* The fetch is over: the next one is due a refresh period from now. */
static void
fetch_end(struct queue *q)
{
	q->fetch.running = 0;
	q->fetch.in_flight = 0;
	catalog_clear(&q->staging);
	evtimer_del(q->fetch.timer);
	timer_in(q, q->cfg->catalog_refresh * 1000);
	fetch_settled(q);
}

/* A page failed: retried after a backoff (the old catalog stays), or given up. */
static void
page_failed(struct queue *q, enum sched_outcome out, const char *retry_after)
{
	struct catfetch *f = &q->fetch;
	int64_t delay;

	q->stats.catalog_failed++;
	delay = sched_catalog_retry(&f->backoff, out, retry_after, &q->limits, clock_wall_ms(),
	    arc4random());
	if (delay < 0) {
		log_error("installs catalog: page %d: %s; the catalog read %s stays, next try "
		    "in %llds", f->pages + 1, f->error, q->cat.fetched_at != 0 ? "before" :
		    "(none)", (long long)q->cfg->catalog_refresh);
		fetch_end(q);
		return;
	}
	log_warn("installs catalog: page %d: %s; retrying in %.1fs", f->pages + 1, f->error,
	    (double)delay / 1000);
	timer_in(q, delay);
	fetch_settled(q);
}

/* Every page read: the new catalog replaces the old in one transaction, then memory. */
static void
fetch_commit(struct queue *q)
{
	struct catfetch *f = &q->fetch;
	struct catalog_entry *e, *old;
	size_t i;

	if (f->count_changed && f->restarts < MAX_RESTARTS) {
		f->restarts++;
		log_notice("installs catalog: the list changed while it was read; reading it "
		    "again");
		fetch_restart(q);
		page_request(q);
		return;
	}
	q->staging.fetched_at = clock_wall_ms();
	if (q->staging.fetched_at <= q->cat.fetched_at)
		q->staging.fetched_at = q->cat.fetched_at + 1;
	for (i = 0; i < catalog_len(&q->staging); i++) {
		e = catalog_at(&q->staging, i);
		if ((old = catalog_by_id(&q->cat, e->id)) != NULL)
			e->last_purge = old->last_purge;
	}
	if (store_begin(q->store) != 0 || store_catalog_replace(q->store, &q->staging) != 0 ||
	    store_commit(q->store) != 0) {
		error_set(f, "the queue database failed: %s",
		    store_errmsg(q->store));
		store_rollback(q->store);
		q->stats.storage_errors++;
		fetch_restart(q);
		page_failed(q, OUTCOME_TRANSIENT, NULL);
		return;
	}
	log_notice("installs catalog: %zu installs in %d page(s)%s read in %.2fs",
	    catalog_len(&q->staging), f->pages, f->skipped > 0 ? " (entries that are not "
	    "valid installs skipped)" : "", (double)(queue_now() - f->started) / 1000);
	if (f->skipped > 0)
		log_warn("installs catalog: %d entries were not valid installs (or repeated "
		    "ones) and were skipped", f->skipped);
	catalog_move(&q->cat, &q->staging);
	f->error[0] = '\0';
	held_resolve(q);
	fetch_end(q);
}

static void
page_cb(void *arg, const struct send_result *r, const char *body, size_t len)
{
	struct queue *q = arg;
	struct catfetch *f = &q->fetch;
	struct catalog_page pg;
	enum sched_outcome out = sched_classify(r->transport_ok, r->status);
	char *cause = NULL;
	size_t i;
	int over = 0;

	f->in_flight = 0;
	if (!f->running)
		return;
	if (out != OUTCOME_DONE) {
		if (!r->transport_ok)
			error_set(f, "no answer from the API: %s", r->error);
		else
			error_set(f, "HTTP %ld%s%s", r->status,
			    r->message != NULL ? ": " : "", r->message != NULL ? r->message : "");
		page_failed(q, out, r->retry_after);
		return;
	}
	if (catalog_page_parse(body != NULL ? body : "", body != NULL ? len : 0,
	    q->cfg->base_url, f->offset, &pg, &cause) != 0) {
		error_set(f, "a broken answer: %s", cause);
		free(cause);
		page_failed(q, OUTCOME_TRANSIENT, NULL);
		return;
	}
	sched_catalog_answered(&f->backoff);
	q->stats.catalog_pages++;
	if (++f->pages == 1)
		f->first_count = pg.count;
	else if (pg.count != f->first_count)
		f->count_changed = 1;
	f->skipped += pg.skipped;
	for (i = 0; i < pg.n; i++) {
		/* CATALOG_MAX_INSTALLS is allowed; one more is not. */
		if (catalog_len(&q->staging) >= CATALOG_MAX_INSTALLS) {
			over = 1;
			break;
		}
		if (catalog_add(&q->staging, &pg.items[i]) != 0)
			f->skipped++;
	}
	if (over || (pg.has_next && f->pages >= CATALOG_MAX_PAGES)) {
		catalog_page_free(&pg);
		error_set(f, "the API lists more than %d installs or %d pages; refused as "
		    "absurd", CATALOG_MAX_INSTALLS, CATALOG_MAX_PAGES);
		/* Given up (fetch_end clears what was read); the log names this page. */
		f->pages--;
		page_failed(q, OUTCOME_PERMANENT, NULL);
		return;
	}
	if (!pg.has_next) {
		catalog_page_free(&pg);
		fetch_commit(q);
		return;
	}
	/* Page f->pages - 1 was FIRST_QUERY's or a next's: the next must be new to us. */
	if (f->pages == 1)
		(void)query_seen(f, FIRST_QUERY);
	if (query_seen(f, pg.next_query)) {
		catalog_page_free(&pg);
		error_set(f, "a broken answer: \"next\" leads back to a page already read");
		f->pages--;
		page_failed(q, OUTCOME_TRANSIENT, NULL);
		fetch_restart(q);        /* the next try starts over */
		return;
	}
	snprintf(f->query, sizeof f->query, "%s", pg.next_query);
	f->offset = catalog_query_offset(f->query);
	catalog_page_free(&pg);
	page_request(q);
}

static void
page_request(struct queue *q)
{
	struct catfetch *f = &q->fetch;
	char *url, *cause = NULL;

	xasprintf(&url, "%s/installs?%s", q->cfg->base_url, f->query);
	if (sender_get(q->sender, url, CATALOG_MAX_BODY, page_cb, q, &cause) != 0) {
		free(url);
		error_set(f, "%s", cause);
		free(cause);
		page_failed(q, OUTCOME_TRANSIENT, NULL);
		return;
	}
	free(url);
	f->in_flight = 1;
	q->stats.catalog_calls++;
}

static void
fetch_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;

	(void)fd;
	(void)events;
	if (q->stopping)
		return;
	if (q->fetch.running) {
		if (!q->fetch.in_flight)
			page_request(q);
	} else
		fetch_begin(q);
}

/* At start: the stored catalog, and a fetch now if it is older than the period. */
void
catalog_start(struct queue *q)
{
	int64_t due;

	if (q->fetch.timer == NULL && (q->fetch.timer = evtimer_new(q->base, fetch_timer_cb,
	    q)) == NULL)
		fatalx("out of memory creating a timer");
	due = sched_catalog_due(q->cat.fetched_at, q->cfg->catalog_refresh, clock_wall_ms());
	if (due == 0)
		fetch_begin(q);
	else
		timer_in(q, due);
}

void
catalog_want(struct queue *q, int unknown_name)
{
	if (q->fetch.running || q->fetch.timer == NULL)
		return;
	if (unknown_name)
		q->fetch.last_unknown = queue_now();
	fetch_begin(q);
}

/* Shutdown: the fetch is dropped and whoever waits for it is answered. */
void
catalog_stop(struct queue *q)
{
	if (q->fetch.running) {
		sender_get_cancel(q->sender, q);
		snprintf(q->fetch.error, sizeof q->fetch.error, "the daemon is stopping");
	}
	q->fetch.running = 0;
	q->fetch.in_flight = 0;
	if (q->fetch.timer != NULL)
		evtimer_del(q->fetch.timer);
	fetch_settled(q);
}

void
catalog_free_all(struct queue *q)
{
	if (q->fetch.timer != NULL)
		event_free(q->fetch.timer);
	catalog_free(&q->cat);
	catalog_free(&q->staging);
	free(q->fetch.seen);
	q->fetch.seen = NULL;
}
