/* test_sched.c: the pure scheduling decisions, with an injected clock: no test sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sched.h"

#define G SCHED_GUARD_MS

static const struct limits lim = { { 60, 0, 0 }, 5, 900, 1000, 1000, 86400 };

static void
test_classes(void **state)
{
	(void)state;
	assert_int_equal(sched_type_classes(PURGE_OBJECT), 1u << CLASS_OBJECT);
	assert_int_equal(sched_type_classes(PURGE_PAGE), 1u << CLASS_PAGE);
	assert_int_equal(sched_type_classes(PURGE_CDN), 1u << CLASS_CDN);
	assert_int_equal(sched_type_classes(PURGE_ALL), 7u);
}

static void
test_coalesce(void **state)
{
	enum purge_type q1[] = { PURGE_PAGE, PURGE_OBJECT };
	enum purge_type q2[] = { PURGE_PAGE, PURGE_ALL };
	enum purge_type q3[] = { PURGE_CDN };

	(void)state;
	/* Nothing queued: a new job. */
	assert_int_equal(sched_coalesce(PURGE_OBJECT, NULL, 0), -1);
	/* Same type joins. */
	assert_int_equal(sched_coalesce(PURGE_OBJECT, q1, 2), 1);
	assert_int_equal(sched_coalesce(PURGE_PAGE, q1, 2), 0);
	/* A different narrow type does not join. */
	assert_int_equal(sched_coalesce(PURGE_CDN, q1, 2), -1);
	/* A narrow request joins a queued "all". */
	assert_int_equal(sched_coalesce(PURGE_CDN, q2, 2), 1);
	assert_int_equal(sched_coalesce(PURGE_OBJECT, q2, 2), 1);
	/* "all" joins a queued "all"... */
	assert_int_equal(sched_coalesce(PURGE_ALL, q2, 2), 1);
	/* ...and otherwise makes a new job (which absorbs the narrow ones). */
	assert_int_equal(sched_coalesce(PURGE_ALL, q1, 2), -1);
	assert_int_equal(sched_coalesce(PURGE_ALL, q3, 1), -1);
}

static void
test_ready_windows(void **state)
{
	struct class_state cs[NCLASSES] = { { SCHED_NEVER, SCHED_NEVER, 0 },
		{ SCHED_NEVER, SCHED_NEVER, 0 }, { SCHED_NEVER, SCHED_NEVER, 0 } };
	struct limits l = lim;
	int64_t now = 1000000;

	(void)state;
	/* Never purged: ready at once (not_before 0). */
	assert_int_equal(sched_ready_at(cs, &l, PURGE_OBJECT, 0), 0);
	/* Object purged at now: next object or all purge 60 s later, page at once. */
	cs[CLASS_OBJECT].last_start = now;
	assert_int_equal(sched_ready_at(cs, &l, PURGE_OBJECT, 0), now + 60000 + G);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_ALL, 0), now + 60000 + G);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_PAGE, 0), 0);
	/* A page interval applies to page and all. */
	l.interval[CLASS_PAGE] = 10;
	cs[CLASS_PAGE].last_start = now + 55000;
	assert_int_equal(sched_ready_at(cs, &l, PURGE_PAGE, 0), now + 65000 + G);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_ALL, 0), now + 65000 + G);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_OBJECT, 0), now + 60000 + G);
	/* A 429 block and the job's own backoff: the latest wins. */
	cs[CLASS_CDN].blocked_until = now + 90000;
	assert_int_equal(sched_ready_at(cs, &l, PURGE_CDN, 0), now + 90000);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_ALL, 0), now + 90000);
	assert_int_equal(sched_ready_at(cs, &l, PURGE_CDN, now + 120000), now + 120000);
	/* The window of one class: none before a first purge or with interval 0. */
	assert_int_equal(sched_window_end(&cs[CLASS_OBJECT], 60), now + 60000 + G);
	assert_true(sched_window_end(&cs[CLASS_OBJECT], 0) == SCHED_NEVER);
	assert_true(sched_window_end(&(struct class_state){ SCHED_NEVER, SCHED_NEVER, 0 },
	    60) == SCHED_NEVER);
	/*
	 * A purge before a reboot is a negative monotonic time, not "never": its window
	 * still holds on the new boot (regression: 0 and below used to mean never).
	 */
	assert_int_equal(sched_window_end(&(struct class_state){ -25000, SCHED_NEVER, 0 },
	    60), 35000 + G);
	assert_int_equal(sched_window_end(&(struct class_state){ 0, SCHED_NEVER, 0 }, 60),
	    60000 + G);
	/* Interval 0 means no spacing. */
	l.interval[CLASS_OBJECT] = 0;
	assert_int_equal(sched_ready_at(cs, &l, PURGE_OBJECT, 0), 0);
}

static void
test_classify(void **state)
{
	(void)state;
	assert_int_equal(sched_classify(1, 202), OUTCOME_DONE);
	assert_int_equal(sched_classify(1, 200), OUTCOME_DONE);
	assert_int_equal(sched_classify(1, 429), OUTCOME_RATE_LIMITED);
	assert_int_equal(sched_classify(1, 503), OUTCOME_TRANSIENT);
	assert_int_equal(sched_classify(1, 500), OUTCOME_TRANSIENT);
	assert_int_equal(sched_classify(1, 408), OUTCOME_TRANSIENT);
	assert_int_equal(sched_classify(0, 0), OUTCOME_TRANSIENT);
	assert_int_equal(sched_classify(1, 400), OUTCOME_PERMANENT);
	assert_int_equal(sched_classify(1, 401), OUTCOME_PERMANENT);
	assert_int_equal(sched_classify(1, 403), OUTCOME_PERMANENT);
	assert_int_equal(sched_classify(1, 404), OUTCOME_PERMANENT);
	/* A redirect is never followed and is not the API's answer: retry. */
	assert_int_equal(sched_classify(1, 302), OUTCOME_TRANSIENT);
	assert_int_equal(sched_classify(1, 999), OUTCOME_TRANSIENT);
}

static void
test_attempt_counts(void **state)
{
	(void)state;
	assert_false(sched_attempt_counts(0, 0, 1));   /* refused: API never saw it */
	assert_true(sched_attempt_counts(0, 0, 0));    /* timeout: it may have acted */
	assert_false(sched_attempt_counts(1, 503, 0));
	assert_true(sched_attempt_counts(1, 202, 0));
	/* A 429 is a refusal: the API did not act, the window is not used up. */
	assert_false(sched_attempt_counts(1, 429, 0));
}

static void
test_backoff_transient(void **state)
{
	int a;

	(void)state;
	/* First retry: exactly retry_initial, whatever the dice say. */
	assert_int_equal(sched_backoff_transient(1, &lim, 0), 5000);
	assert_int_equal(sched_backoff_transient(1, &lim, UINT32_MAX), 5000);
	/* Then the cap doubles, jitter spans [retry_initial, cap]. */
	assert_int_equal(sched_backoff_transient(2, &lim, 0), 5000);
	assert_int_equal(sched_backoff_transient(2, &lim, UINT32_MAX), 10000);
	assert_int_equal(sched_backoff_transient(3, &lim, UINT32_MAX), 20000);
	/* The middle of the range for a middling random number. */
	assert_in_range(sched_backoff_transient(3, &lim, UINT32_MAX / 2), 12000, 13000);
	/* Never above retry_max, even after very many attempts (no overflow). */
	for (a = 1; a < 10000; a += 97) {
		assert_in_range(sched_backoff_transient(a, &lim, UINT32_MAX), 5000, 900000);
		assert_in_range(sched_backoff_transient(a, &lim, 12345), 5000, 900000);
	}
	assert_int_equal(sched_backoff_transient(100, &lim, UINT32_MAX), 900000);
}

static void
test_backoff_429(void **state)
{
	struct limits l = lim;

	(void)state;
	/* Object: at least the interval, doubling, capped. */
	assert_int_equal(sched_backoff_429(1, 60, &l), 60000);
	assert_int_equal(sched_backoff_429(2, 60, &l), 120000);
	assert_int_equal(sched_backoff_429(5, 60, &l), 900000);
	assert_int_equal(sched_backoff_429(1000, 60, &l), 900000);
	/* Page with interval 0: from retry_initial. */
	assert_int_equal(sched_backoff_429(1, 0, &l), 5000);
	assert_int_equal(sched_backoff_429(3, 0, &l), 20000);
}

static void
test_retry_after(void **state)
{
	int64_t d, now = 1784000000000LL; /* some wall clock, ms */

	(void)state;
	assert_int_equal(sched_retry_after("120", now, 900000, &d), 0);
	assert_int_equal(d, 120000);
	assert_int_equal(sched_retry_after(" 0 ", now, 900000, &d), 0);
	assert_int_equal(d, 0);
	/* Absurd values are capped, never overflowed. */
	assert_int_equal(sched_retry_after("99999999999999999999999999", now, 900000, &d), 0);
	assert_int_equal(d, 900000);
	/* HTTP-date: IMF-fixdate, 90 s after now. */
	assert_int_equal(sched_retry_after("Tue, 14 Jul 2026 05:34:50 GMT",
	    1784007200000LL, 900000, &d), 0);
	assert_int_equal(d, 90000);
	/* RFC 850 and asctime forms. */
	assert_int_equal(sched_retry_after("Tuesday, 14-Jul-26 05:34:50 GMT",
	    1784007200000LL, 900000, &d), 0);
	assert_int_equal(d, 90000);
	assert_int_equal(sched_retry_after("Tue Jul 14 05:34:50 2026",
	    1784007200000LL, 900000, &d), 0);
	assert_int_equal(d, 90000);
	/* A date in the past: go now. */
	assert_int_equal(sched_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now, 900000, &d), 0);
	assert_int_equal(d, 0);
	/* Garbage is refused. */
	assert_int_equal(sched_retry_after("", now, 900000, &d), -1);
	assert_int_equal(sched_retry_after("-5", now, 900000, &d), -1);
	assert_int_equal(sched_retry_after("12abc", now, 900000, &d), -1);
	assert_int_equal(sched_retry_after("soon", now, 900000, &d), -1);
	assert_int_equal(sched_retry_after("1.5", now, 900000, &d), -1);
	/*
	 * Dates at the extremes saturate before any multiplication (regression: year
	 * 2147483647 overflowed int64 ms, a UBSan abort and a crash loop).
	 */
	assert_int_equal(sched_retry_after("Mon, 01 Jan 2147483647 00:00:00 GMT", now, 900000,
	    &d) == 0 ? (d == 900000) : 1, 1);
	assert_int_equal(sched_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now, 900000, &d), 0);
	assert_int_equal(d, 900000);
	assert_int_equal(sched_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now, 900000, &d), 0);
	assert_int_equal(d, 0);
	assert_int_equal(sched_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", INT64_MAX / 2, 900000,
	    &d), 0);
	assert_int_equal(d, 0);
}

static void
test_delay_429(void **state)
{
	struct limits l = { { 60, 0, 0 }, 2, 300, 1000, 1000, 86400 };
	int64_t now = 1784000000000LL;

	(void)state;
	/* The API's Retry-After is the time, even when shorter than the interval... */
	assert_int_equal(sched_delay_429("7", 1, 60, &l, now), 7000);
	/* ...but never below retry_initial (Retry-After: 0 made 12,648 calls in 5 s)... */
	assert_int_equal(sched_delay_429("0", 1, 0, &l, now), 2000);
	assert_int_equal(sched_delay_429("Thu, 01 Jan 1970 00:00:00 GMT", 1, 0, &l, now), 2000);
	/* ...nor above retry_max. */
	assert_int_equal(sched_delay_429("86400", 1, 60, &l, now), 300000);
	assert_int_equal(sched_delay_429("Mon, 01 Jan 2147483647 00:00:00 GMT", 1, 60, &l, now),
	    300000);
	/* Without a usable one: the interval-based backoff. */
	assert_int_equal(sched_delay_429(NULL, 1, 60, &l, now), 60000);
	assert_int_equal(sched_delay_429("soon", 2, 60, &l, now), 120000);
	assert_int_equal(sched_delay_429(NULL, 1, 0, &l, now), 2000);
}

static void
test_outage(void **state)
{
	struct outage o = { 0, 0, 0 };
	int64_t now = 5000000;

	(void)state;
	/* Below the threshold everything may go. */
	sched_outage_failure(&o, &lim, now, 0);
	sched_outage_failure(&o, &lim, now, 0);
	assert_true(sched_outage_allows(&o, now, 3));
	assert_int_equal(sched_outage_next(&o), 0);
	/* At the threshold: one probe at a time, after the backoff. */
	sched_outage_failure(&o, &lim, now, 0);
	assert_int_equal(sched_outage_next(&o), now + 5000);
	assert_false(sched_outage_allows(&o, now, 0));
	assert_false(sched_outage_allows(&o, now + 5000, 1));
	assert_true(sched_outage_allows(&o, now + 5000, 0));
	/* Longer each time, capped. */
	sched_outage_failure(&o, &lim, now, UINT32_MAX);
	assert_int_equal(sched_outage_next(&o), now + 10000);
	/* Any answer from the API ends it. */
	sched_outage_answer(&o);
	assert_true(sched_outage_allows(&o, now, 3));
}

/* max_age: the decision and the words, with the clock given. */
static void
test_expiry(void **state)
{
	int64_t acc = 1784000000000LL;
	struct expiry_facts f = { 0 };
	char buf[512], d[16];

	(void)state;
	assert_int_equal(sched_expires_at(acc, 0), 0);
	assert_int_equal(sched_expires_at(acc, 86400), acc + 86400000LL);
	assert_false(sched_expired(acc, 0, acc + 365LL * 86400000));  /* 0: never */
	assert_false(sched_expired(acc, 2, acc + 1999));
	assert_true(sched_expired(acc, 2, acc + 2000));
	/* A shorter max_age on SIGHUP expires what is already older at once. */
	assert_false(sched_expired(acc, 3600, acc + 600000));
	assert_true(sched_expired(acc, 60, acc + 600000));
	/* A clock set back: not expired before its time. */
	assert_false(sched_expired(acc, 2, acc - 5000));

	sched_fmt_duration(86400, d, sizeof d);
	assert_string_equal(d, "1d");
	sched_fmt_duration(7200, d, sizeof d);
	assert_string_equal(d, "2h");
	sched_fmt_duration(90, d, sizeof d);
	assert_string_equal(d, "90s");
	sched_fmt_duration(0, d, sizeof d);
	assert_string_equal(d, "0");

	f.max_age_s = 2;
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_non_null(strstr(buf, "not sent within max_age (2s): never attempted"));
	f.attempts = 3;
	f.message = "no answer from the API: Couldn't connect to server";
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_non_null(strstr(buf, "Couldn't connect to server (3 attempts)"));
	f.http_status = 503;
	f.message = "Service Unavailable";
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_non_null(strstr(buf, "last answer was HTTP 503: Service Unavailable"));
	f.outage_since = acc;
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_non_null(strstr(buf, "API unavailable since 2026-07-14T03:33:20.000Z "
	    "(Service Unavailable)"));
	f.held = 1;
	f.catalog_error = "HTTP 503";
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_non_null(strstr(buf, "the installs catalog was never read: HTTP 503"));
	/* A pause explains everything else. */
	f.paused_since = acc + 1000;
	sched_expiry_reason(&f, buf, sizeof buf);
	assert_string_equal(buf, "not sent within max_age (2s): sending paused since "
	    "2026-07-14T03:33:21.000Z");
	/* Bounded, whatever the message. */
	memset(&f, 0, sizeof f);
	f.max_age_s = 60;
	f.http_status = 400;
	f.message = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	sched_expiry_reason(&f, buf, 64);
	assert_int_equal(strlen(buf), 63);
}

/* The outage remembers since when the API looks down. */
static void
test_outage_since(void **state)
{
	struct outage o = { 0, 0, 0 };
	int i;

	(void)state;
	sched_outage_answer(&o);
	assert_int_equal(sched_outage_since(&o), SCHED_NEVER);
	for (i = 0; i < OUTAGE_THRESHOLD; i++) {
		assert_int_equal(sched_outage_since(&o), SCHED_NEVER);
		sched_outage_failure(&o, &lim, 1000 + i * 500, 0);
	}
	assert_int_equal(sched_outage_since(&o), 1000);
	sched_outage_failure(&o, &lim, 9000, 0);
	assert_int_equal(sched_outage_since(&o), 1000);
	sched_outage_answer(&o);
	assert_int_equal(sched_outage_since(&o), SCHED_NEVER);
}

/* When an install's limit rows stop saying anything. */
static void
test_limits_lapse(void **state)
{
	struct class_state cs[NCLASSES];
	int c;

	(void)state;
	for (c = 0; c < NCLASSES; c++)
		cs[c] = (struct class_state){ SCHED_NEVER, SCHED_NEVER, 0 };
	assert_int_equal(sched_limits_lapse(cs, &lim), SCHED_NEVER);
	cs[CLASS_OBJECT].last_start = 10000;
	assert_int_equal(sched_limits_lapse(cs, &lim), 10000 + 60000 + G);
	/* No interval for pages: a page purge leaves nothing in force. */
	cs[CLASS_OBJECT].last_start = SCHED_NEVER;
	cs[CLASS_PAGE].last_start = 10000;
	assert_int_equal(sched_limits_lapse(cs, &lim), SCHED_NEVER);
	/* A 429 block, and its strikes kept retry_max longer. */
	cs[CLASS_CDN].blocked_until = 50000;
	assert_int_equal(sched_limits_lapse(cs, &lim), 50000);
	cs[CLASS_CDN].strikes = 2;
	assert_int_equal(sched_limits_lapse(cs, &lim), 50000 + 900000);
	/* The latest of all wins. */
	cs[CLASS_OBJECT].last_start = 2000000;
	assert_int_equal(sched_limits_lapse(cs, &lim), 2000000 + 60000 + G);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),
		cmocka_unit_test(test_coalesce),
		cmocka_unit_test(test_ready_windows),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_attempt_counts),
		cmocka_unit_test(test_backoff_transient),
		cmocka_unit_test(test_backoff_429),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_delay_429),
		cmocka_unit_test(test_outage),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_outage_since),
		cmocka_unit_test(test_limits_lapse),
	};

	return cmocka_run_group_tests_name("sched", tests, NULL, NULL);
}
