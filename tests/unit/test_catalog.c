/* test_catalog.c: install names, "did you mean", GET /installs pages and the fetch's timing decisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "catalog.h"
#include "sched.h"

#define BASE "https://api.wpengineapi.com/v1"
#define ID1 "294deacc-d8b8-4005-82c4-0727ba8ddde0"
#define ID2 "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"

static const struct limits lim = { { 60, 0, 0 }, 5, 900, 1000, 1000, 86400 };

static void
test_name_valid(void **state)
{
	(void)state;
	assert_true(install_name_valid("torquemag"));
	assert_true(install_name_valid("abc"));
	assert_true(install_name_valid("a2345678901234"));      /* 14 */
	assert_false(install_name_valid("a23456789012345"));    /* 15 */
	assert_false(install_name_valid("ab"));
	assert_false(install_name_valid(""));
	assert_false(install_name_valid("9abc"));
	assert_false(install_name_valid("Abc"));
	assert_false(install_name_valid("ab-c"));
	assert_false(install_name_valid("abc "));
	assert_false(install_name_valid("ab\xc3\xa9"));
}

static void
add(struct catalog *c, const char *id, const char *name)
{
	struct catalog_entry e;

	memset(&e, 0, sizeof e);
	snprintf(e.id, sizeof e.id, "%s", id);
	snprintf(e.name, sizeof e.name, "%s", name);
	assert_int_equal(catalog_add(c, &e), 0);
}

static void
test_lookup_and_suggest(void **state)
{
	struct catalog c;
	struct catalog_entry e;
	const char *s[CATALOG_SUGGEST];
	char buf[128];
	char id[37];
	int i;

	(void)state;
	catalog_init(&c);
	add(&c, ID1, "torquemag");
	add(&c, ID2, "torquemagstg");
	for (i = 0; i < 500; i++) {
		snprintf(id, sizeof id, "%08x-0000-4000-8000-%012x", i + 1, i + 1);
		snprintf(e.name, sizeof e.name, "site%05d", i);
		add(&c, id, e.name);
	}
	/* A repeated id or name is refused: the first one stays. */
	memset(&e, 0, sizeof e);
	snprintf(e.id, sizeof e.id, "%s", ID1);
	snprintf(e.name, sizeof e.name, "other");
	assert_int_equal(catalog_add(&c, &e), -1);
	snprintf(e.id, sizeof e.id, "%s", "aaaaaaaa-0000-4000-8000-000000000000");
	snprintf(e.name, sizeof e.name, "torquemag");
	assert_int_equal(catalog_add(&c, &e), -1);

	assert_string_equal(catalog_by_name(&c, "torquemag")->id, ID1);
	assert_string_equal(catalog_by_id(&c, ID2)->name, "torquemagstg");
	assert_null(catalog_by_name(&c, "torquemog"));
	assert_int_equal(catalog_len(&c), 502);

	assert_int_equal(catalog_distance("torquemag", "torquemag"), 0);
	assert_int_equal(catalog_distance("torquemog", "torquemag"), 1);
	assert_int_equal(catalog_distance("", "abc"), 3);
	assert_int_equal(catalog_distance("kitten", "sitting"), 3);

	/* Nearest first; a prefix match ranks after the close ones. */
	assert_int_equal(catalog_suggest(&c, "torquemog", s), 1);
	assert_string_equal(s[0], "torquemag");
	assert_int_equal(catalog_suggest(&c, "torque", s), 2);
	assert_string_equal(s[0], "torquemag");
	assert_string_equal(s[1], "torquemagstg");
	assert_int_equal(catalog_suggest(&c, "site0004", s), 3);   /* at most three */
	assert_int_equal(catalog_suggest(&c, "zzzzzzzz", s), 0);
	catalog_suggest_text(&c, "torque", buf, sizeof buf);
	assert_string_equal(buf, "did you mean torquemag or torquemagstg?");
	catalog_suggest_text(&c, "site0004x", buf, sizeof buf);
	assert_string_equal(buf, "did you mean site00040, site00041 or site00042?");
	catalog_suggest_text(&c, "qqqqq", buf, sizeof buf);
	assert_string_equal(buf, "");
	catalog_clear(&c);
	assert_int_equal(catalog_len(&c), 0);
	catalog_free(&c);
}

/* The plain Levenshtein distance, to check the one that gives up early. */
static int
ref_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	int d[20][20];

	for (i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			int x = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1 < x)
				x = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < x)
				x = d[i][j - 1] + 1;
			d[i][j] = x;
		}
	}
	return d[la][lb];
}

static void
rand_name(char *s, unsigned *seed)
{
	int len = 3 + (int)(rand_r(seed) % 8), i;

	/* A small alphabet: many names close to each other. */
	s[0] = (char)('a' + rand_r(seed) % 3);
	for (i = 1; i < len; i++)
		s[i] = "abc12"[rand_r(seed) % 5];
	s[len] = '\0';
}

/* Review: suggestions (early-exit distance) are those of the plain distance. */
static void
test_suggest_reference(void **state)
{
	struct catalog c;
	struct catalog_entry e;
	const char *s[CATALOG_SUGGEST], *best[CATALOG_SUGGEST];
	char names[400][16], q[16];
	unsigned seed = 12;
	int i, k, d, max, bd[CATALOG_SUGGEST];
	size_t n, nb, j, m;

	(void)state;
	catalog_init(&c);
	for (i = 0; i < 400; i++) {
		rand_name(names[i], &seed);
		memset(&e, 0, sizeof e);
		snprintf(e.id, sizeof e.id, "%08x-0000-4000-8000-%012x", i + 1, i + 1);
		memcpy(e.name, names[i], strlen(names[i]) + 1);
		(void)catalog_add(&c, &e);      /* a repeated name is refused: fine */
	}
	for (k = 0; k < 2000; k++) {
		rand_name(q, &seed);
		assert_int_equal(catalog_distance(q, names[k % 400]), ref_distance(q,
		    names[k % 400]));
		max = (int)strlen(q) / 3 < 2 ? 2 : (int)strlen(q) / 3;
		nb = 0;
		for (j = 0; j < catalog_len(&c); j++) {
			const char *cand = catalog_at(&c, j)->name;

			d = ref_distance(q, cand);
			if (d > max && strncmp(cand, q, strlen(q)) != 0)
				continue;
			if (d > max)
				d = max + 1;
			for (m = nb; m > 0 && (bd[m - 1] > d || (bd[m - 1] == d &&
			    strcmp(best[m - 1], cand) > 0)); m--) {
				if (m < CATALOG_SUGGEST) {
					bd[m] = bd[m - 1];
					best[m] = best[m - 1];
				}
			}
			if (m < CATALOG_SUGGEST) {
				bd[m] = d;
				best[m] = cand;
				if (nb < CATALOG_SUGGEST)
					nb++;
			}
		}
		n = catalog_suggest(&c, q, s);
		assert_int_equal(n, nb);
		for (j = 0; j < n; j++)
			assert_string_equal(s[j], best[j]);
	}
	catalog_free(&c);
}

static void
test_next_check(void **state)
{
	char q[257], *cause = NULL;

	(void)state;
	assert_int_equal(catalog_next_check(BASE, BASE "/installs?limit=100&offset=100", q,
	    sizeof q, &cause), 0);
	assert_string_equal(q, "limit=100&offset=100");
	/* The scheme may differ (a TLS proxy); the host and path may not. */
	assert_int_equal(catalog_next_check(BASE, "http://API.wpengineapi.com/v1/installs?"
	    "offset=5", q, sizeof q, &cause), 0);
	assert_int_equal(catalog_next_check("http://127.0.0.1:8080/v1",
	    "http://127.0.0.1:8080/v1/installs?limit=100&offset=100", q, sizeof q, &cause), 0);
	static const char *bad[] = {
		"https://evil.example.com/v1/installs?offset=100",
		"https://api.wpengineapi.com.evil.com/v1/installs?offset=100",
		"https://user:pw@api.wpengineapi.com/v1/installs?offset=100",
		"https://evil.com@api.wpengineapi.com/v1/installs?offset=100",
		"https://api.wpengineapi.com:8443/v1/installs?offset=100",
		"https://api.wpengineapi.com/v1/sites?offset=100",
		"https://api.wpengineapi.com/v2/installs?offset=100",
		"https://api.wpengineapi.com/v1/installs/294deacc?offset=100",
		"https://api.wpengineapi.com/v1/installs",
		"https://api.wpengineapi.com/v1/installs?offset=100#x",
		"https://api.wpengineapi.com/v1/installs?offset=1 00",
		"https://api.wpengineapi.com/v1/installs?offset=1\r\nHost: x",
		"/v1/installs?offset=100",
		"ftp://api.wpengineapi.com/v1/installs?offset=100",
		"",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cause = NULL;
		assert_int_equal(catalog_next_check(BASE, bad[i], q, sizeof q, &cause), -1);
		assert_non_null(cause);
		free(cause);
	}
	cause = NULL;
	assert_int_equal(catalog_next_check("http://127.0.0.1:8080/v1",
	    "http://127.0.0.2:8080/v1/installs?offset=100", q, sizeof q, &cause), -1);
	free(cause);
	assert_int_equal(catalog_query_offset("limit=100&offset=200"), 200);
	assert_int_equal(catalog_query_offset("offset=7"), 7);
	assert_int_equal(catalog_query_offset("limit=100"), -1);
	assert_int_equal(catalog_query_offset("offset=x"), -1);
	assert_int_equal(catalog_query_offset("offset=99999999999999999999999"), -1);
}

static int
page(const char *body, int64_t offset, struct catalog_page *pg)
{
	char *cause = NULL;
	int rc = catalog_page_parse(body, strlen(body), BASE, offset, pg, &cause);

	if (rc != 0) {
		assert_non_null(cause);
		free(cause);
	}
	return rc;
}

static void
test_page_parse(void **state)
{
	struct catalog_page pg;
	char big[8192];
	size_t i, o;

	(void)state;
	assert_int_equal(page("{\"previous\":null,\"next\":\"" BASE "/installs?limit=100&"
	    "offset=100\",\"count\":101,\"results\":[{\"id\":\"294DEACC-D8B8-4005-82C4-"
	    "0727BA8DDDE0\",\"name\":\"torquemag\",\"environment\":\"production\","
	    "\"primary_domain\":\"torquemag.io\",\"account\":{\"id\":\"" ID2 "\"},"
	    "\"site\":{\"id\":\"x\",\"name\":\"y\"}},"
	    "{\"id\":\"" ID2 "\",\"name\":\"Bad\"},{\"name\":\"noid\"},7,null,"
	    "{\"id\":\"" ID2 "\",\"name\":\"fine\",\"environment\":\"prod\\nuction\","
	    "\"primary_domain\":\"<script>\",\"account\":\"x\"}]}", 0, &pg), 0);
	assert_int_equal(pg.n, 2);
	assert_int_equal(pg.skipped, 4);
	assert_true(pg.has_next);
	assert_string_equal(pg.next_query, "limit=100&offset=100");
	assert_int_equal(pg.count, 101);
	assert_string_equal(pg.items[0].id, ID1);      /* lower-cased */
	assert_string_equal(pg.items[0].environment, "production");
	assert_string_equal(pg.items[0].domain, "torquemag.io");
	assert_string_equal(pg.items[0].account, ID2);
	assert_string_equal(pg.items[1].environment, "");   /* not plainly a name: left out */
	assert_null(pg.items[1].domain);
	assert_string_equal(pg.items[1].account, "");
	catalog_page_free(&pg);

	/* The last page: next null, or absent; count optional. */
	assert_int_equal(page("{\"next\":null,\"results\":[]}", 0, &pg), 0);
	assert_false(pg.has_next);
	assert_int_equal(pg.count, -1);
	catalog_page_free(&pg);
	assert_int_equal(page("{\"results\":[]}", 0, &pg), 0);
	catalog_page_free(&pg);

	/* Refused whole. */
	assert_int_equal(page("", 0, &pg), -1);
	assert_int_equal(page("<html>502</html>", 0, &pg), -1);
	assert_int_equal(page("[]", 0, &pg), -1);
	assert_int_equal(page("{\"results\":\"nope\"}", 0, &pg), -1);
	assert_int_equal(page("{\"next\":7,\"results\":[]}", 0, &pg), -1);
	assert_int_equal(page("{\"next\":\"https://evil.com/v1/installs?offset=100\","
	    "\"results\":[{\"id\":\"" ID1 "\",\"name\":\"abc\"}]}", 0, &pg), -1);
	/* An empty page with a next one, and a next that does not move forward. */
	assert_int_equal(page("{\"next\":\"" BASE "/installs?offset=100\",\"results\":[]}", 0,
	    &pg), -1);
	assert_int_equal(page("{\"next\":\"" BASE "/installs?offset=100\",\"results\":[{\"id\":"
	    "\"" ID1 "\",\"name\":\"abc\"}]}", 100, &pg), -1);
	/* Deeper than any install object, or more installs than asked for. */
	assert_int_equal(page("{\"results\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}", 0, &pg),
	    -1);
	o = (size_t)snprintf(big, sizeof big, "{\"results\":[");
	for (i = 0; i <= CATALOG_PAGE_LIMIT; i++)
		o += (size_t)snprintf(big + o, sizeof big - o, "%s1", i > 0 ? "," : "");
	snprintf(big + o, sizeof big - o, "]}");
	assert_int_equal(page(big, 0, &pg), -1);
}

static void
test_sched_catalog(void **state)
{
	struct catalog_backoff b = { 0, 0 };
	int64_t now = 1800000000000LL, d;

	(void)state;
	/* Due: never fetched, older than the period, or a fetch time in the future. */
	assert_int_equal(sched_catalog_due(0, 3600, now), 0);
	assert_int_equal(sched_catalog_due(now - 3600 * 1000, 3600, now), 0);
	assert_int_equal(sched_catalog_due(now - 1000, 3600, now), 3599 * 1000);
	assert_int_equal(sched_catalog_due(now + 5000, 3600, now), 3600 * 1000);

	/* An unknown name may start a fetch once a minute. */
	assert_true(sched_catalog_unknown_allowed(SCHED_NEVER, 5));
	assert_false(sched_catalog_unknown_allowed(1000, 1000 + SCHED_CATALOG_UNKNOWN_MS - 1));
	assert_true(sched_catalog_unknown_allowed(1000, 1000 + SCHED_CATALOG_UNKNOWN_MS));

	/* 5xx: exponential from retry_initial, with jitter, capped at retry_max. */
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_TRANSIENT, NULL, &lim, now, 0), 5000);
	d = sched_catalog_retry(&b, OUTCOME_TRANSIENT, NULL, &lim, now, UINT32_MAX);
	assert_int_equal(d, 10000);
	for (int i = 0; i < 20; i++)
		d = sched_catalog_retry(&b, OUTCOME_TRANSIENT, NULL, &lim, now, UINT32_MAX);
	assert_int_equal(d, 900000);
	/* 429: Retry-After within [retry_initial, retry_max], else doubling. */
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_RATE_LIMITED, "30", &lim, now, 0), 30000);
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_RATE_LIMITED, "0", &lim, now, 0), 5000);
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_RATE_LIMITED, "99999999", &lim, now, 0),
	    900000);
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_RATE_LIMITED, NULL, &lim, now, 0),
	    40000);     /* fourth strike: 5 s doubled three times */
	/* An answer resets both; a permanent answer gives the fetch up. */
	sched_catalog_answered(&b);
	assert_int_equal(b.failures + b.strikes, 0);
	assert_int_equal(sched_catalog_retry(&b, OUTCOME_PERMANENT, NULL, &lim, now, 0), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_lookup_and_suggest),
		cmocka_unit_test(test_suggest_reference),
		cmocka_unit_test(test_next_check),
		cmocka_unit_test(test_page_parse),
		cmocka_unit_test(test_sched_catalog),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
