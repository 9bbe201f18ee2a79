/* test_sender.c: what the sender keeps of an API answer: a bounded, printable message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sender.h"
#include "utf8.h"

/* Code points that must never reach status or the log, as UTF-8. */
static const char *bad[] = {
	"\xc2\x80", "\xc2\x85", "\xc2\x9b", "\xc2\x9f",         /* C1 controls, 8-bit CSI */
	"\xe2\x80\xa8", "\xe2\x80\xa9",                         /* line, paragraph separator */
	"\xe2\x80\xaa", "\xe2\x80\xab", "\xe2\x80\xac", "\xe2\x80\xad", "\xe2\x80\xae",
	"\xe2\x81\xa6", "\xe2\x81\xa7", "\xe2\x81\xa8", "\xe2\x81\xa9", /* bidi embeddings */
	"\xe2\x80\x8e", "\xe2\x80\x8f", "\xd8\x9c",             /* LRM, RLM, ALM */
	"\xef\xbb\xbf",                                         /* BOM */
	"\x1b", "\x7f", "\n", "\r", "\t",
};

static void
assert_clean(const char *s)
{
	size_t i;

	assert_non_null(s);
	if (!utf8_strict(s))
		fail_msg("not UTF-8: %s", s);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (strstr(s, bad[i]) != NULL)
			fail_msg("\"%s\" holds a forbidden character (#%zu)", s, i);
	}
}

static void
test_controls_and_bidi(void **state)
{
	char *m;

	(void)state;
	/* C0/C1 controls and separators become spaces; invisible format characters go. */
	m = sender_sanitize("Not\xc2\x85" "Found \xc2\x9b" "31m\xe2\x80\xa8x\xe2\x80\xa9y \x1b[2J",
	    512);
	assert_clean(m);
	assert_string_equal(m, "Not Found  31m x y  [2J");
	free(m);
	m = sender_sanitize("\xef\xbb\xbf" "a\xe2\x80\xae" "b\xe2\x80\xac" "c\xe2\x81\xa6"
	    "d\xe2\x81\xa9" "e\xe2\x80\x8e\xe2\x80\x8f" "f\xd8\x9cg", 512);
	assert_clean(m);
	assert_string_equal(m, "abcdefg");
	free(m);
	/* Everything else passes unchanged. */
	m = sender_sanitize("Bad Credentials: caf\xc3\xa9 \xe2\x82\xac 5 \xf0\x9f\x98\x80", 512);
	assert_string_equal(m, "Bad Credentials: caf\xc3\xa9 \xe2\x82\xac 5 \xf0\x9f\x98\x80");
	free(m);
}

static void
test_invalid_utf8(void **state)
{
	static const char *in[] = {
		"a\xff" "b", "a\xc3" "b", "a\xc0\xaf" "b", "a\xed\xa0\x80" "b", "a\xf4\x90\x80\x80" "b",
		"a\x80\x80" "b", "a\xe2\x82" "b", "a\xf0\x9f\x98" "b", "\xe2\x82", "\xc2",
	};
	size_t i;
	char *m;

	(void)state;
	for (i = 0; i < sizeof in / sizeof in[0]; i++) {
		m = sender_sanitize(in[i], 512);
		assert_clean(m);
		free(m);
	}
	m = sender_sanitize("a\xff" "b", 512);
	assert_string_equal(m, "a\xef\xbf\xbd" "b"); /* U+FFFD */
	free(m);
}

static void
test_bounded_on_boundaries(void **state)
{
	char in[64], *m;
	size_t max;

	(void)state;
	snprintf(in, sizeof in, "ab\xe2\x82\xac" "cd\xf0\x9f\x98\x80" "e");
	for (max = 0; max < 16; max++) {
		m = sender_sanitize(in, max);
		assert_true(strlen(m) <= max);
		assert_clean(m);
		assert_int_equal(strncmp(m, in, strlen(m)), 0);
		free(m);
	}
	m = sender_sanitize(in, 4);
	assert_string_equal(m, "ab");
	free(m);
	m = sender_sanitize(in, 5);
	assert_string_equal(m, "ab\xe2\x82\xac");
	free(m);
	/* Replacements count against the bound too. */
	m = sender_sanitize("\xff\xff\xff", 7);
	assert_string_equal(m, "\xef\xbf\xbd\xef\xbf\xbd");
	free(m);
}

/* The whole path from an API body, with raw and \u-escaped characters. */
static void
test_parse_message(void **state)
{
	static const char *bodies[] = {
		"{\"message\":\"Not\xc2\x85" "Found \xe2\x80\xae" "evil\xe2\x80\xa8!\"}",
		"{\"message\":\"Not\\u0085Found \\u202eevil\\u2028! \\u009b2J \\ufeff\\u200f\"}",
		"{\"message\":\"lone \\ud800 surrogate \\udfff and \\u0000 nul\"}",
	};
	size_t i;
	char *m;

	(void)state;
	for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		m = sender_parse_message(bodies[i], strlen(bodies[i]));
		assert_clean(m);
		free(m);
	}
	m = sender_parse_message(bodies[0], strlen(bodies[0]));
	assert_string_equal(m, "Not Found evil !");
	free(m);
	assert_null(sender_parse_message("{\"message\":\"a\xff\"}", 16));
	assert_null(sender_parse_message("<html>", 6));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_controls_and_bidi),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_bounded_on_boundaries),
		cmocka_unit_test(test_parse_message),
	};

	return cmocka_run_group_tests_name("sender", tests, NULL, NULL);
}
