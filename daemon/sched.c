/* sched.c: coalescing, eligibility windows, backoff arithmetic and answer classification. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "sched.h"

unsigned
sched_type_classes(enum purge_type t)
{
	switch (t) {
	case PURGE_OBJECT:
		return 1u << CLASS_OBJECT;
	case PURGE_PAGE:
		return 1u << CLASS_PAGE;
	case PURGE_CDN:
		return 1u << CLASS_CDN;
	case PURGE_ALL:
		break;
	}
	return (1u << NCLASSES) - 1;
}

int
sched_coalesce(enum purge_type t, const enum purge_type *queued, size_t n)
{
	size_t i;

	/* A queued "all" covers anything. */
	for (i = 0; i < n; i++) {
		if (queued[i] == PURGE_ALL)
			return (int)i;
	}
	if (t == PURGE_ALL)
		return -1;
	for (i = 0; i < n; i++) {
		if (queued[i] == t)
			return (int)i;
	}
	return -1;
}

int64_t
sched_window_end(const struct class_state *cs, int64_t interval_s)
{
	if (cs->last_start == SCHED_NEVER || interval_s <= 0)
		return SCHED_NEVER;
	return cs->last_start + interval_s * 1000 + SCHED_GUARD_MS;
}

int64_t
sched_ready_at(const struct class_state cs[NCLASSES], const struct limits *lim,
    enum purge_type t, int64_t not_before)
{
	unsigned mask = sched_type_classes(t);
	int64_t at = not_before, w;
	int c;

	for (c = 0; c < NCLASSES; c++) {
		if (!(mask & (1u << c)))
			continue;
		if ((w = sched_window_end(&cs[c], lim->interval[c])) > at)
			at = w;
		if (cs[c].blocked_until > at)
			at = cs[c].blocked_until;
	}
	return at;
}

enum sched_outcome
sched_classify(int transport_ok, long status)
{
	if (!transport_ok)
		return OUTCOME_TRANSIENT;
	if (status >= 200 && status <= 299)
		return OUTCOME_DONE;
	if (status == 429)
		return OUTCOME_RATE_LIMITED;
	if (status == 408 || (status >= 500 && status <= 599))
		return OUTCOME_TRANSIENT;
	if (status >= 400 && status <= 499)
		return OUTCOME_PERMANENT;
	/* 1xx, 3xx (redirects are never followed), nonsense: not the API's answer. */
	return OUTCOME_TRANSIENT;
}

const char *
sched_outcome_name(enum sched_outcome o)
{
	static const char *names[] = { "done", "rate-limited", "transient", "permanent" };

	return names[o];
}

int
sched_attempt_counts(int transport_ok, long status, int connect_failed)
{
	if (!transport_ok)
		return !connect_failed;
	return !(status == 429 || (status >= 500 && status <= 599));
}

static int64_t
cap_mul(int64_t base_ms, int doublings, int64_t cap_ms)
{
	int64_t v = base_ms;

	while (doublings-- > 0 && v < cap_ms)
		v *= 2;
	return v < cap_ms ? v : cap_ms;
}

int64_t
sched_backoff_transient(int attempt, const struct limits *lim, uint32_t rnd)
{
	int64_t lo = lim->retry_initial * 1000, hi;

	if (attempt < 1)
		attempt = 1;
	hi = cap_mul(lo, attempt - 1, lim->retry_max * 1000);
	if (hi <= lo)
		return hi;
	return lo + (int64_t)((uint64_t)rnd * (uint64_t)(hi - lo) / UINT32_MAX);
}

int64_t
sched_backoff_429(int strikes, int64_t interval_s, const struct limits *lim)
{
	int64_t base = interval_s > lim->retry_initial ? interval_s : lim->retry_initial;

	if (strikes < 1)
		strikes = 1;
	return cap_mul(base * 1000, strikes - 1, lim->retry_max * 1000);
}

int64_t
sched_delay_429(const char *retry_after, int strikes, int64_t interval_s,
    const struct limits *lim, int64_t now_wall_ms)
{
	int64_t d, lo = lim->retry_initial * 1000, hi = lim->retry_max * 1000;

	if (retry_after == NULL || sched_retry_after(retry_after, now_wall_ms, hi, &d) != 0)
		return sched_backoff_429(strikes, interval_s, lim);
	if (d < lo)
		d = lo;
	return d < hi ? d : hi;
}

int
sched_retry_after(const char *value, int64_t now_wall_ms, int64_t cap_ms, int64_t *delay_ms)
{
	char buf[64];
	size_t len;
	const char *p;
	int64_t v = 0;
	time_t when;

	while (*value == ' ' || *value == '\t')
		value++;
	len = strlen(value);
	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' ||
	    value[len - 1] == '\r' || value[len - 1] == '\n'))
		len--;
	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, value, len);
	buf[len] = '\0';

	if (isdigit((unsigned char)buf[0])) {
		for (p = buf; *p != '\0'; p++) {
			if (!isdigit((unsigned char)*p))
				return -1;
			if (v < cap_ms) /* saturate: absurd values are capped, not overflowed */
				v = v * 10 + (*p - '0');
		}
		v = v > cap_ms / 1000 ? cap_ms : v * 1000;
	} else {
		/* An HTTP-date (IMF-fixdate, RFC 850 or asctime): curl's parser knows all. */
		if ((when = curl_getdate(buf, NULL)) == -1)
			return -1;
		/* Saturate before multiplying: a date far in the future is just "the cap". */
		if (when <= 0 || (int64_t)when <= now_wall_ms / 1000 - 1)
			v = 0;
		else if ((int64_t)when > (now_wall_ms + cap_ms) / 1000 + 1)
			v = cap_ms;
		else
			v = (int64_t)when * 1000 - now_wall_ms;
		if (v < 0)
			v = 0;
	}
	*delay_ms = v < cap_ms ? v : cap_ms;
	return 0;
}

void
sched_outage_failure(struct outage *o, const struct limits *lim, int64_t now, uint32_t rnd)
{
	if (o->failures++ == 0)
		o->since = now;
	if (o->failures >= OUTAGE_THRESHOLD)
		o->until = now + sched_backoff_transient(o->failures - OUTAGE_THRESHOLD + 1, lim,
		    rnd);
}

void
sched_outage_answer(struct outage *o)
{
	o->failures = 0;
	o->until = 0;
	o->since = SCHED_NEVER;
}

int64_t
sched_outage_since(const struct outage *o)
{
	return o->failures < OUTAGE_THRESHOLD ? SCHED_NEVER : o->since;
}

int
sched_outage_allows(const struct outage *o, int64_t now, int in_flight)
{
	if (o->failures < OUTAGE_THRESHOLD)
		return 1;
	return in_flight == 0 && now >= o->until;
}

int64_t
sched_outage_next(const struct outage *o)
{
	return o->failures < OUTAGE_THRESHOLD ? 0 : o->until;
}

int64_t
sched_catalog_due(int64_t fetched_wall, int64_t refresh_s, int64_t now_wall)
{
	int64_t at;

	if (fetched_wall <= 0)
		return 0;
	/* A fetch time in the future (the clock was set back): a whole period from now. */
	if (fetched_wall > now_wall)
		return refresh_s * 1000;
	at = fetched_wall + refresh_s * 1000;
	return at > now_wall ? at - now_wall : 0;
}

int
sched_catalog_unknown_allowed(int64_t last, int64_t now)
{
	return last == SCHED_NEVER || now - last >= SCHED_CATALOG_UNKNOWN_MS || now < last;
}

int64_t
sched_catalog_retry(struct catalog_backoff *b, enum sched_outcome out,
    const char *retry_after, const struct limits *lim, int64_t now_wall, uint32_t rnd)
{
	switch (out) {
	case OUTCOME_RATE_LIMITED:
		b->strikes++;
		return sched_delay_429(retry_after, b->strikes, 0, lim, now_wall);
	case OUTCOME_TRANSIENT:
		b->failures++;
		return sched_backoff_transient(b->failures, lim, rnd);
	case OUTCOME_DONE:
	case OUTCOME_PERMANENT:
	default:
		break;
	}
	return -1;
}

void
sched_catalog_answered(struct catalog_backoff *b)
{
	b->failures = 0;
	b->strikes = 0;
}

/* Requests that cannot wait forever ------------------------------------------------- */

int64_t
sched_expires_at(int64_t accepted, int64_t max_age_s)
{
	return max_age_s <= 0 ? 0 : accepted + max_age_s * 1000;
}

int
sched_expired(int64_t accepted, int64_t max_age_s, int64_t now)
{
	return max_age_s > 0 && now >= sched_expires_at(accepted, max_age_s);
}

void
sched_fmt_duration(int64_t s, char *buf, size_t len)
{
	if (s > 0 && s % 86400 == 0)
		snprintf(buf, len, "%lldd", (long long)(s / 86400));
	else if (s > 0 && s % 3600 == 0)
		snprintf(buf, len, "%lldh", (long long)(s / 3600));
	else if (s > 0 && s % 60 == 0)
		snprintf(buf, len, "%lldm", (long long)(s / 60));
	else if (s > 0)
		snprintf(buf, len, "%llds", (long long)s);
	else
		snprintf(buf, len, "0");
}

/*
 * The first thing that explains the wait wins: a pause stops all sending whatever the
 * API does (a database refusing writes does too, but then nothing expires either); an outage explains every job's wait; otherwise the job's
 * own last answer, or that it never got to go.
 */
void
sched_expiry_reason(const struct expiry_facts *f, char *buf, size_t len)
{
	char age[32], when[32];
	const char *msg = f->message != NULL && f->message[0] != '\0' ? f->message : NULL;

	sched_fmt_duration(f->max_age_s, age, sizeof age);
	if (f->paused_since != 0)
		snprintf(buf, len, "not sent within max_age (%s): sending paused since %s", age,
		    fmt_rfc3339(f->paused_since, when, sizeof when));
	else if (f->held)
		snprintf(buf, len, "not sent within max_age (%s): its install name could not be "
		    "resolved, the installs catalog was never read%s%.200s", age,
		    f->catalog_error != NULL && f->catalog_error[0] != '\0' ? ": " : "",
		    f->catalog_error != NULL ? f->catalog_error : "");
	else if (f->outage_since != 0)
		snprintf(buf, len, "not sent within max_age (%s): API unavailable since %s%s%.200s%s",
		    age, fmt_rfc3339(f->outage_since, when, sizeof when),
		    msg != NULL ? " (" : "", msg != NULL ? msg : "", msg != NULL ? ")" : "");
	else if (f->http_status != 0)
		snprintf(buf, len, "not sent within max_age (%s): the API's last answer was HTTP "
		    "%ld%s%.200s (%d attempt%s)", age, f->http_status, msg != NULL ? ": " : "",
		    msg != NULL ? msg : "", f->attempts, f->attempts == 1 ? "" : "s");
	else if (msg != NULL)
		snprintf(buf, len, "not sent within max_age (%s): %.200s (%d attempt%s)", age, msg,
		    f->attempts, f->attempts == 1 ? "" : "s");
	else
		snprintf(buf, len, "not sent within max_age (%s): never attempted (it waited for "
		    "its install's window or a sending slot)", age);
}

int64_t
sched_limits_lapse(const struct class_state cs[NCLASSES], const struct limits *lim)
{
	int64_t lapse = SCHED_NEVER, t;
	int c;

	for (c = 0; c < NCLASSES; c++) {
		if ((t = sched_window_end(&cs[c], lim->interval[c])) > lapse)
			lapse = t;
		if (cs[c].blocked_until > lapse)
			lapse = cs[c].blocked_until;
		if (cs[c].strikes > 0) {
			t = cs[c].blocked_until != SCHED_NEVER ? cs[c].blocked_until :
			    cs[c].last_start;
			if (t != SCHED_NEVER && t + lim->retry_max * 1000 > lapse)
				lapse = t + lim->retry_max * 1000;
		}
	}
	return lapse;
}
