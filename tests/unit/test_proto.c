/* test_proto.c: decoding and validation of wire-protocol requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"
#include "util.h"
#include "utf8.h"

#define UUID "294deacc-d8b8-4005-82c4-0727ba8ddde0"

static int
parse(const char *line, struct proto_request *req, const char **code)
{
	char *cause = NULL;
	int rc = proto_request_parse(line, strlen(line), req, code, &cause);

	if (rc == 0)
		assert_null(cause);
	else {
		assert_non_null(cause);
		assert_true(strlen(cause) > 0);
		free(cause);
	}
	return rc;
}

static void
expect_error(const char *line, const char *want)
{
	struct proto_request req;
	const char *code = NULL;

	assert_int_equal(parse(line, &req, &code), -1);
	assert_string_equal(code, want);
}

static void
test_enqueue(void **state)
{
	struct proto_request req;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"type\":\"object\","
	    "\"reason\":\"deploy 42\"}", &req, &code), 0);
	assert_int_equal(req.op, OP_ENQUEUE);
	assert_string_equal(req.install, UUID);
	assert_int_equal(req.type, PURGE_OBJECT);
	assert_string_equal(req.reason, "deploy 42");
	proto_request_free(&req);

	/* Type defaults to all; install is folded to lower case. */
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":"
	    "\"294DEACC-D8B8-4005-82C4-0727BA8DDDE0\"}", &req, &code), 0);
	assert_int_equal(req.type, PURGE_ALL);
	assert_string_equal(req.install, UUID);
	assert_null(req.reason);
	proto_request_free(&req);

	/* A name instead of a UUID: kept as a name, the install left empty. */
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"torquemag\"}", &req,
	    &code), 0);
	assert_string_equal(req.install, "");
	assert_string_equal(req.name, "torquemag");
	proto_request_free(&req);
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"a2345678901234\"}", &req,
	    &code), 0);
	assert_string_equal(req.name, "a2345678901234");
	assert_int_equal(parse("{\"op\":\"list\",\"install\":\"abc\"}", &req, &code), 0);
	assert_true(req.has_install);
	assert_string_equal(req.name, "abc");
	assert_int_equal(parse("{\"op\":\"installs\",\"refresh\":true}", &req, &code), 0);
	assert_int_equal(req.op, OP_INSTALLS);
	assert_true(req.refresh);
}

static void
test_other_ops(void **state)
{
	struct proto_request req;
	const char *code;

	(void)state;
	assert_int_equal(parse("{\"op\":\"status\",\"id\":7}", &req, &code), 0);
	assert_int_equal(req.op, OP_STATUS);
	assert_int_equal(req.id, 7);
	assert_int_equal(parse("{\"op\":\"wait\",\"id\":9,\"timeout\":1.5}", &req, &code), 0);
	assert_int_equal(req.timeout_ms, 1500);
	assert_int_equal(parse("{\"op\":\"wait\",\"id\":9}", &req, &code), 0);
	assert_int_equal(req.timeout_ms, -1);
	assert_int_equal(parse("  {\"op\":\"ping\"}  ", &req, &code), 0);
	assert_int_equal(req.op, OP_PING);
	assert_int_equal(parse("{\"op\":\"list\"}", &req, &code), 0);
	assert_int_equal(parse("{\"op\":\"stats\"}", &req, &code), 0);
	assert_int_equal(parse("{\"op\":\"pause\"}", &req, &code), 0);
	assert_int_equal(parse("{\"op\":\"resume\"}", &req, &code), 0);
	assert_int_equal(parse("{\"op\":\"cancel\",\"id\":3}", &req, &code), 0);
	assert_int_equal(req.op, OP_CANCEL);
}

static void
test_errors(void **state)
{
	char *big;

	(void)state;
	expect_error("", "bad_json");
	expect_error("not json", "bad_json");
	expect_error("[1,2]", "bad_json");
	expect_error("{\"op\":\"ping\"} {\"op\":\"ping\"}", "bad_json");
	expect_error("{\"op\":\"ping\"", "bad_json");
	expect_error("{}", "missing_field");
	expect_error("{\"op\":5}", "bad_type");
	expect_error("{\"op\":\"explode\"}", "unknown_op");
	expect_error("{\"op\":\"ping\",\"extra\":1}", "unknown_field");
	expect_error("{\"op\":\"enqueue\"}", "missing_field");
	expect_error("{\"op\":\"enqueue\",\"install\":42}", "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"Torquemag\"}", "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"tq\"}", "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"a23456789012345\"}", "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"9torque\"}", "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"torque-mag\"}", "bad_install");
	expect_error("{\"op\":\"list\",\"install\":\"x\"}", "bad_install");
	expect_error("{\"op\":\"installs\",\"refresh\":1}", "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"../../etc/passwd\"}", "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"294deacc-d8b8-4005-82c4-0727ba8ddde0/x\"}",
	    "bad_install");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"type\":\"everything\"}",
	    "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"type\":[]}", "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"a\\u0000b\"}",
	    "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"a\\nb\"}",
	    "bad_value");
	/* C1 controls (an 8-bit CSI), line separators and bidi overrides: refused too. */
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"a\\u009b31mb\"}",
	    "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"a\\u2028b\"}",
	    "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"a\\u202eb\"}",
	    "bad_value");
	expect_error("{\"op\":\"status\"}", "missing_field");
	expect_error("{\"op\":\"status\",\"id\":\"7\"}", "bad_type");
	expect_error("{\"op\":\"status\",\"id\":0}", "bad_value");
	expect_error("{\"op\":\"status\",\"id\":-3}", "bad_value");
	expect_error("{\"op\":\"status\",\"id\":1.5}", "bad_type");
	expect_error("{\"op\":\"wait\",\"id\":1,\"timeout\":-1}", "bad_value");
	expect_error("{\"op\":\"wait\",\"id\":1,\"timeout\":1e300}", "bad_value");
	expect_error("{\"op\":\"wait\",\"id\":1,\"timeout\":\"5\"}", "bad_type");
	/* Duplicate keys, however spelled; colons inside strings do not count. */
	expect_error("{\"op\":\"status\",\"id\":1,\"id\":2}", "duplicate_field");
	expect_error("{\"op\":\"ping\",\"\\u006fp\":\"ping\"}", "duplicate_field");
	{
		struct proto_request r;
		const char *c;

		assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"" UUID "\","
		    "\"reason\":\"a:b:\\\":{[c\"}", &r, &c), 0);
		assert_string_equal(r.reason, "a:b:\":{[c");
		proto_request_free(&r);
	}
	/* Invalid UTF-8 and deep nesting. */
	expect_error("{\"op\":\"ping\",\"x\":\"\xff\xfe\"}", "bad_json");
	expect_error("{\"op\":\"ping\",\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}", "bad_json");

	/* An over-long reason. */
	big = malloc(PROTO_MAX_REASON + 200);
	strcpy(big, "{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"");
	memset(big + strlen(big), 'x', PROTO_MAX_REASON + 1);
	big[strlen("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"reason\":\"") +
	    PROTO_MAX_REASON + 1] = '\0';
	strcat(big, "\"}");
	expect_error(big, "bad_value");
	free(big);
}

static void
test_nul_byte(void **state)
{
	struct proto_request req;
	const char *code;
	char *cause = NULL;
	const char line[] = "{\"op\":\"ping\"}\0garbage";

	(void)state;
	assert_int_equal(proto_request_parse(line, sizeof line - 1, &req, &code, &cause), -1);
	assert_string_equal(code, "bad_json");
	free(cause);
}

/* Error texts echo a bounded prefix of the input: it must end on a character boundary. */
static void
test_error_text_is_utf8(void **state)
{
	static const char *chars[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
	static const char *around[][2] = { /* what goes before and after the echoed text */
		{ "{\"op\":\"", "\"}" },
		{ "{\"op\":\"ping\",\"", "\":1}" },
		{ "{\"op\":\"enqueue\",\"install\":\"", "\"}" },
		{ "{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"type\":\"", "\"}" },
	};
	struct proto_request req;
	const char *code;
	char pad[80], line[256], *cause;
	size_t c, f, n;

	(void)state;
	for (c = 0; c < sizeof chars / sizeof chars[0]; c++) {
		for (n = 24; n < 70; n++) {
			memset(pad, 'a', n);
			pad[n] = '\0';
			for (f = 0; f < sizeof around / sizeof around[0]; f++) {
				snprintf(line, sizeof line, "%s%s%s%s", around[f][0], pad, chars[c],
				    around[f][1]);
				cause = NULL;
				assert_int_equal(proto_request_parse(line, strlen(line), &req, &code,
				    &cause), -1);
				if (!utf8_strict(cause))
					fail_msg("%s: error text is not UTF-8: %s", line, cause);
				free(cause);
			}
		}
	}
}

static void
test_utf8_prefix(void **state)
{
	(void)state;
	assert_int_equal(utf8_prefix("", 10), 0);
	assert_int_equal(utf8_prefix("abc", 10), 3);
	assert_int_equal(utf8_prefix("abc", 3), 3);
	assert_int_equal(utf8_prefix("abc", 2), 2);
	assert_int_equal(utf8_prefix("abc", 0), 0);
	/* "aa€b": the euro sign is bytes 2-4 */
	assert_int_equal(utf8_prefix("aa\xe2\x82\xac" "b", 2), 2);
	assert_int_equal(utf8_prefix("aa\xe2\x82\xac" "b", 3), 2);
	assert_int_equal(utf8_prefix("aa\xe2\x82\xac" "b", 4), 2);
	assert_int_equal(utf8_prefix("aa\xe2\x82\xac" "b", 5), 5);
	assert_int_equal(utf8_prefix("aa\xe2\x82\xac" "b", 6), 6);
	assert_int_equal(utf8_prefix("\xf0\x9f\x98\x80", 3), 0);
	assert_int_equal(utf8_prefix("\xf0\x9f\x98\x80", 4), 4);
	assert_int_equal(utf8_prefix("\xc3\xa9\xc3\xa9", 3), 2);
	/* Not UTF-8: a run of continuation bytes is cut where it is, never walked back far */
	assert_int_equal(utf8_prefix("\x80\x80\x80\x80\x80\x80", 5), 2);
}

/* The "source" object and the idempotency key of an enqueue (protocol 4). */
static void
test_source_and_key(void **state)
{
	struct proto_request req;
	const char *code;
	char line[2048], big[600];

	(void)state;
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{"
	    "\"ci\":\"gitlab\",\"job_url\":\"https://gitlab.com/g/p/-/jobs/9\",\"commit\":"
	    "\"abc\",\"ref\":\"main\",\"actor\":\"b\\u00f6b\",\"pipeline\":\"77\"},"
	    "\"idempotency_key\":\"deploy-1:x\"}", &req, &code), 0);
	assert_non_null(req.source);
	assert_string_equal(req.source->f[SF_CI], "gitlab");
	assert_string_equal(req.source->f[SF_ACTOR], "b\xc3\xb6" "b");
	assert_string_equal(req.source->f[SF_PIPELINE], "77");
	assert_string_equal(req.idem_key, "deploy-1:x");
	proto_request_free(&req);
	assert_null(req.source);

	/* Absent, or empty: no source, no key. */
	assert_int_equal(parse("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{}}",
	    &req, &code), 0);
	assert_null(req.source);
	assert_string_equal(req.idem_key, "");
	proto_request_free(&req);

	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":[]}", "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":null}", "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"ci\":1}}",
	    "bad_type");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"x\":\"1\"}}",
	    "unknown_field");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"ci\":"
	    "\"github\",\"ci\":\"gitlab\"}}", "duplicate_field");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"ci\":"
	    "\"travis\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"job_url\":"
	    "\"javascript:alert(1)\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"job_url\":"
	    "\"https://\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"job_url\":"
	    "\"https://u:p@h/x\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"ref\":"
	    "\"a\\nb\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"actor\":"
	    "\"\"}}", "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":{\"commit\":"
	    "\"\\u00e9\"}}", "bad_value");
	/* Limits: at the limit accepted, one byte more refused. */
	memset(big, 'a', sizeof big);
	snprintf(line, sizeof line, "{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":"
	    "{\"job_url\":\"https://h/%.*s\"}}", SOURCE_MAX_JOB_URL - 10, big);
	assert_int_equal(parse(line, &req, &code), 0);
	proto_request_free(&req);
	snprintf(line, sizeof line, "{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"source\":"
	    "{\"job_url\":\"https://h/%.*s\"}}", SOURCE_MAX_JOB_URL - 9, big);
	expect_error(line, "bad_value");
	snprintf(line, sizeof line, "{\"op\":\"enqueue\",\"install\":\"" UUID "\","
	    "\"idempotency_key\":\"%.*s\"}", PROTO_MAX_IDEM_KEY, big);
	assert_int_equal(parse(line, &req, &code), 0);
	proto_request_free(&req);
	snprintf(line, sizeof line, "{\"op\":\"enqueue\",\"install\":\"" UUID "\","
	    "\"idempotency_key\":\"%.*s\"}", PROTO_MAX_IDEM_KEY + 1, big);
	expect_error(line, "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"idempotency_key\":\"\"}",
	    "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"idempotency_key\":\"a b\"}",
	    "bad_value");
	expect_error("{\"op\":\"enqueue\",\"install\":\"" UUID "\",\"idempotency_key\":7}",
	    "bad_type");
	/* Only enqueue takes them. */
	expect_error("{\"op\":\"status\",\"id\":1,\"idempotency_key\":\"k\"}", "unknown_field");
	expect_error("{\"op\":\"list\",\"source\":{}}", "unknown_field");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enqueue),
		cmocka_unit_test(test_other_ops),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_error_text_is_utf8),
		cmocka_unit_test(test_utf8_prefix),
		cmocka_unit_test(test_source_and_key),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
