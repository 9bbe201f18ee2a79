/* test_tokens.c: the tokens file parser, lookup, scopes, rate buckets and new tokens. */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tokens.h"
#include "tmpdir.h"

#define H1 "789828706d9594a3cef807efa75972a5eac018c829c5c1835b9d81ab6d33d91e"
#define H2 "80066e08e5908c04847fb4d32a3ae0534becae9d5d367de83a0681b4a3200b6a"

static void
expect_error(const char *text, const char *fragment)
{
	char *cause = NULL;
	struct tokens *ts = tokens_parse(text, strlen(text), "t", &cause);

	assert_null(ts);
	assert_non_null(cause);
	if (strstr(cause, fragment) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", cause, fragment);
	free(cause);
}

static void
test_parse(void **state)
{
	const char *text = "# comment\n\n  ci " H1 " installs=294deacc-*,abc,shop* types=page,cdn "
	    "rate=5/s # trailing\nboss " H2 " admin\n";
	char *cause = NULL;
	struct tokens *ts = tokens_parse(text, strlen(text), "t", &cause);

	(void)state;
	assert_non_null(ts);
	assert_int_equal(ts->n, 2);
	assert_string_equal(ts->v[0].name, "ci");
	assert_int_equal(ts->v[0].ninstalls, 3);
	assert_int_equal(ts->v[0].rate, 5);
	assert_false(ts->v[0].admin);
	assert_true(tokens_install_allowed(&ts->v[0], "294deacc-d8b8-4005-82c4-0727ba8ddde0",
	    NULL));
	assert_true(tokens_install_allowed(&ts->v[0], "294DEACC-D8B8-4005-82C4-0727BA8DDDE0",
	    ""));
	assert_false(tokens_install_allowed(&ts->v[0], "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
	    NULL));
	/* Patterns on names: an install whose name matches, whatever its id; a name alone. */
	assert_true(tokens_install_allowed(&ts->v[0], "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
	    "shopstaging"));
	assert_true(tokens_install_allowed(&ts->v[0], "", "abc"));
	assert_true(tokens_install_allowed(&ts->v[0], NULL, "shop1"));
	assert_false(tokens_install_allowed(&ts->v[0], "", "blog"));
	assert_false(tokens_install_allowed(&ts->v[0], "", ""));
	/* A copied scope says the same, and outlives the tokens it came from. */
	struct token_scope *sc = tokens_scope(&ts->v[0]);
	assert_null(tokens_scope(&ts->v[1]));
	assert_true(tokens_scope_allows(NULL, "", "anything"));
	assert_true(tokens_type_allowed(&ts->v[0], PURGE_PAGE));
	assert_false(tokens_type_allowed(&ts->v[0], PURGE_ALL));
	assert_true(ts->v[1].admin);
	assert_int_equal(ts->v[1].rate, TOKENS_DEFAULT_RATE);
	assert_true(tokens_install_allowed(&ts->v[1], "anything", NULL));
	assert_true(tokens_type_allowed(&ts->v[1], PURGE_ALL));
	assert_true(ts->v[0].requester < -1);
	assert_int_equal(ts->v[0].requester, tokens_requester("ci"));
	assert_true(ts->v[0].requester != ts->v[1].requester);
	tokens_free(ts);
	assert_true(tokens_scope_allows(sc, NULL, "shopfront"));
	assert_true(tokens_scope_allows(sc, "294deacc-d8b8-4005-82c4-0727ba8ddde0", NULL));
	assert_false(tokens_scope_allows(sc, "3f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", "blog"));
	tokens_scope_free(sc);
}

static void
test_errors(void **state)
{
	(void)state;
	expect_error("ci\n", "t:1: the second field must be");
	expect_error("ci wpq_notahash\n", "not the token itself");
	expect_error("ci " H1 "\nci " H2 "\n", "t:2: a token of this name is already listed");
	expect_error("bad/name " H1 "\n", "token name");
	expect_error("ci " H1 " types=bogus\n", "types=");
	expect_error("ci " H1 " types=\n", "types=");
	expect_error("ci " H1 " installs=\n", "installs=");
	expect_error("ci " H1 " installs=a,\n", "comma");
	expect_error("ci " H1 " rate=0/s\n", "rate=");
	expect_error("ci " H1 " rate=5\n", "rate=");
	expect_error("ci " H1 " rate=10001/s\n", "rate=");
	expect_error("ci " H1 " admin admin\n", "twice");
	expect_error("ci " H1 " what\n", "unknown option");
	expect_error("ci " "789828706d9594a3cef807efa75972a5eac018c829c5c1835b9d81ab6d33d9zz\n",
	    "64 hex digits");
}

static void
test_generate_and_find(void **state)
{
	char *secret, *line, *cause = NULL, *text;
	struct tokens *ts;

	(void)state;
	assert_int_equal(tokens_generate("ci-main", &secret, &line, &cause), 0);
	assert_int_equal(strlen(secret), 4 + 43);
	assert_memory_equal(secret, "wpq_", 4);
	assert_int_equal(strspn(secret + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_"), 43);
	assert_true(asprintf(&text, "other " H1 "\n%s admin\n", line) > 0);
	ts = tokens_parse(text, strlen(text), "t", &cause);
	assert_non_null(ts);
	assert_ptr_equal(tokens_find(ts, secret, strlen(secret)), &ts->v[1]);
	assert_null(tokens_find(ts, secret, strlen(secret) - 1));
	assert_null(tokens_find(ts, "", 0));
	assert_int_equal(tokens_generate("bad name", &secret, &line, &cause), -1);
	free(cause);
	tokens_free(ts);
	free(text);
	free(line);
	free(secret);
}

static void
test_bucket(void **state)
{
	struct token t;
	int i;

	(void)state;
	memset(&t, 0, sizeof t);
	t.rate = 2;                       /* burst 10 */
	for (i = 0; i < 10; i++)
		assert_int_equal(tokens_take(&t, 1000), 0);
	assert_int_equal(tokens_take(&t, 1000), 500);   /* one more in 500 ms */
	assert_int_equal(tokens_take(&t, 1250), 250);
	assert_int_equal(tokens_take(&t, 1500), 0);
	assert_int_equal(tokens_take(&t, 100000), 0);   /* refilled to the burst, no more */
	for (i = 0; i < 9; i++)
		assert_int_equal(tokens_take(&t, 100000), 0);
	assert_true(tokens_take(&t, 100000) > 0);
}

static const char *
write_file(const char *name, const char *text, mode_t mode)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

static void
test_load_checks_the_file(void **state)
{
	char *cause = NULL, link[300];
	struct tokens *ts;
	const char *p;

	(void)state;
	p = write_file("tokens", "ci " H1 "\n", 0600);
	ts = tokens_load(p, &cause);
	assert_non_null(ts);
	tokens_free(ts);
	p = write_file("tokens", "ci " H1 "\n", 0620);
	assert_null(tokens_load(p, &cause));
	assert_non_null(strstr(cause, "writable by group or others"));
	free(cause);
	chmod(p, 0602);
	assert_null(tokens_load(p, &cause));
	free(cause);
	chmod(p, 0644);
	snprintf(link, sizeof link, "%s/link", dir);
	assert_int_equal(symlink(p, link), 0);
	assert_null(tokens_load(link, &cause));
	assert_non_null(strstr(cause, "symbolic link"));
	free(cause);
	assert_null(tokens_load(dir, &cause));
	assert_non_null(strstr(cause, "not a regular file"));
	free(cause);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_generate_and_find),
		cmocka_unit_test(test_bucket),
		cmocka_unit_test(test_load_checks_the_file),
	};

	return cmocka_run_group_tests_name("tokens", tests, setup, teardown);
}
