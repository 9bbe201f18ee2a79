/* test_source.c: the "source" object: labels, and what each CI's environment gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "source.h"
#include "util.h"

/* A fake environment: NULL-terminated NAME, VALUE pairs. */
static const char *
get(const char *name, void *arg)
{
	const char **kv = arg;

	for (; kv[0] != NULL; kv += 2) {
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	}
	return NULL;
}

static void
expect_env(const char **kv, const char *ci, const char *url, const char *commit,
    const char *ref, const char *actor, const char *pipeline, const char *label)
{
	const char *want[SOURCE_NFIELDS] = { ci, url, commit, ref, actor, pipeline };
	struct source s;
	unsigned dropped = 99;
	char buf[SOURCE_LABEL_MAX];
	int f;

	assert_int_equal(source_from_env(get, kv, &s, &dropped), 0);
	assert_int_equal(dropped, 0);
	for (f = 0; f < SOURCE_NFIELDS; f++) {
		if (want[f] == NULL)
			assert_null(s.f[f]);
		else {
			assert_non_null(s.f[f]);
			assert_string_equal(s.f[f], want[f]);
		}
	}
	source_label(&s, 1, buf, sizeof buf);
	assert_string_equal(buf, label);
	source_free(&s);
}

static void
test_each_ci(void **state)
{
	const char *github[] = { "GITHUB_ACTIONS", "true", "GITHUB_SERVER_URL",
		"https://github.com", "GITHUB_REPOSITORY", "org/repo", "GITHUB_RUN_ID", "123",
		"GITHUB_SHA", "deadbeef", "GITHUB_REF", "refs/heads/main", "GITHUB_ACTOR",
		"alice", NULL };
	const char *ghes[] = { "GITHUB_ACTIONS", "true", "GITHUB_REPOSITORY", "o/r",
		"GITHUB_RUN_ID", "5", NULL };
	const char *gitlab[] = { "GITLAB_CI", "true", "CI_JOB_URL",
		"https://gitlab.com/grp/sub/proj/-/jobs/77", "CI_COMMIT_SHA", "cafe",
		"CI_COMMIT_REF_NAME", "feature/x", "GITLAB_USER_LOGIN", "bob",
		"CI_PIPELINE_ID", "4242", NULL };
	const char *bitbucket[] = { "CI", "true", "BITBUCKET_BUILD_NUMBER", "31",
		"BITBUCKET_REPO_FULL_NAME", "ws/site", "BITBUCKET_COMMIT", "f00d",
		"BITBUCKET_TAG", "v1.2", "BITBUCKET_STEP_TRIGGERER_UUID", "{1234}", NULL };
	const char *circle[] = { "CIRCLECI", "true", "CIRCLE_BUILD_URL",
		"https://circleci.com/gh/org/site/812", "CIRCLE_SHA1", "beef",
		"CIRCLE_BRANCH", "main", "CIRCLE_USERNAME", "carol", "CIRCLE_BUILD_NUM", "812",
		NULL };
	const char *jenkins[] = { "JENKINS_URL", "https://ci.example.com/", "BUILD_URL",
		"https://ci.example.com/job/sites/job/blog/42/", "BUILD_NUMBER", "42",
		"GIT_COMMIT", "abcd", "GIT_BRANCH", "origin/main", "BRANCH_NAME", "main",
		"CHANGE_AUTHOR", "dave", NULL };
	const char *none[] = { "CI", "true", "HOME", "/root", NULL };

	(void)state;
	expect_env(github, "github", "https://github.com/org/repo/actions/runs/123",
	    "deadbeef", "refs/heads/main", "alice", "123", "github:org/repo#123");
	/* No server URL: github.com. */
	expect_env(ghes, "github", "https://github.com/o/r/actions/runs/5", NULL, NULL, NULL,
	    "5", "github:o/r#5");
	expect_env(gitlab, "gitlab", "https://gitlab.com/grp/sub/proj/-/jobs/77", "cafe",
	    "feature/x", "bob", "4242", "gitlab:grp/sub/proj#4242");
	expect_env(bitbucket, "bitbucket", "https://bitbucket.org/ws/site/pipelines/results/31",
	    "f00d", "v1.2", "{1234}", "31", "bitbucket:ws/site#31");
	expect_env(circle, "circleci", "https://circleci.com/gh/org/site/812", "beef", "main",
	    "carol", "812", "circleci:org/site#812");
	expect_env(jenkins, "jenkins", "https://ci.example.com/job/sites/job/blog/42/",
	    "abcd", "main", "dave", "42", "jenkins:sites/blog#42");
	expect_env(none, NULL, NULL, NULL, NULL, NULL, NULL, "");
}

/* Odd values from the environment are dropped or cut, never failing. */
static void
test_untrusted_environment(void **state)
{
	char longref[400], longurl[600];
	const char *kv[] = { "GITLAB_CI", "true", "CI_JOB_URL", longurl, "CI_COMMIT_SHA",
		"has space", "CI_COMMIT_REF_NAME", longref, "GITLAB_USER_LOGIN", "x\x1b[31m",
		"CI_PIPELINE_ID", "\xff\xfe", NULL };
	/* C1 CSI, a bidi override, a line separator: a terminal or log viewer acts on them. */
	const char *kv2[] = { "GITHUB_ACTIONS", "true", "GITHUB_ACTOR", "a\xc2\x9b" "31m",
		"GITHUB_REF", "x\xe2\x80\xae" "evil", "GITHUB_RUN_ID", "1\xe2\x80\xa8" "2",
		"GITHUB_SHA", "beef", NULL };
	struct source s;
	unsigned dropped;

	(void)state;
	memset(longref, 'r', sizeof longref - 3);
	memcpy(longref + sizeof longref - 3, "\xc3\xa9", 3);     /* ends in a 2-byte char */
	snprintf(longurl, sizeof longurl, "https://gitlab.com/%0580d", 0);
	assert_int_equal(source_from_env(get, kv, &s, &dropped), 0);
	assert_string_equal(s.f[SF_CI], "gitlab");
	assert_null(s.f[SF_JOB_URL]);          /* too long: half a URL is no use */
	assert_null(s.f[SF_COMMIT]);
	assert_null(s.f[SF_ACTOR]);
	assert_null(s.f[SF_PIPELINE]);
	assert_non_null(s.f[SF_REF]);
	assert_int_equal(strlen(s.f[SF_REF]), SOURCE_MAX_REF);   /* cut */
	assert_int_equal(dropped, 1u << SF_JOB_URL | 1u << SF_COMMIT | 1u << SF_ACTOR |
	    1u << SF_PIPELINE);
	source_free(&s);
	assert_int_equal(source_from_env(get, kv2, &s, &dropped), 0);
	assert_null(s.f[SF_ACTOR]);
	assert_null(s.f[SF_REF]);
	assert_null(s.f[SF_PIPELINE]);
	assert_string_equal(s.f[SF_COMMIT], "beef");
	assert_int_equal(dropped, 1u << SF_ACTOR | 1u << SF_REF | 1u << SF_PIPELINE);
	source_free(&s);
}

/* Plain text: any script, but nothing a terminal or a log viewer acts on. */
static void
test_plain_text(void **state)
{
	static const char *good[] = { "alice", "J\xc3\xbcrgen", "\xc2\xa0nbsp",
		"\xd7\x93\xd7\x95\xd7\x93", "\xf0\x9f\x9a\x80", ("\xe2\x80\x8b" "zwsp") };
	static const char *bad[] = { "a\x1b[31m", "\xc2\x80", "\xc2\x85", ("\xc2\x9b" "31m"),
		"\xc2\x9f", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xd8\x9c", "\xe2\x80\x8e",
		"\xe2\x80\x8f", "\xe2\x80\xaa", "\xe2\x80\xae", "\xe2\x81\xa6",
		"\xe2\x81\xaf", "\xef\xbb\xbf", "\xff" };
	const char *why;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(source_check(SF_ACTOR, good[i], strlen(good[i]), &why), 0);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(source_check(SF_REF, bad[i], strlen(bad[i]), &why), -1);
}

static void
test_labels(void **state)
{
	struct source s;
	char buf[SOURCE_LABEL_MAX], small[12];
	json_object *o;

	(void)state;
	memset(&s, 0, sizeof s);
	source_label(&s, 1, buf, sizeof buf);
	assert_string_equal(buf, "");
	s.f[SF_COMMIT] = xstrdup("abc");
	source_label(&s, 1, buf, sizeof buf);
	assert_string_equal(buf, "");                 /* a commit alone says nothing of who */
	s.f[SF_ACTOR] = xstrdup("alice");
	source_label(&s, 1, buf, sizeof buf);
	assert_string_equal(buf, "ci@alice");
	s.f[SF_CI] = xstrdup("other");
	s.f[SF_JOB_URL] = xstrdup("https://build.example.com:8443/runs/9?token=x");
	s.f[SF_PIPELINE] = xstrdup("9");
	source_label(&s, 1, buf, sizeof buf);
	assert_string_equal(buf, "other:build.example.com#9");
	source_label(&s, 0, buf, sizeof buf);
	assert_string_equal(buf, "other:build.example.com");
	source_label(&s, 1, small, sizeof small);
	assert_string_equal(small, "other:build");
	/* Through JSON and back, as the store keeps it. */
	o = source_to_json(&s);
	source_free(&s);
	assert_int_equal(source_from_json(json_object_to_json_string(o), &s), 0);
	assert_string_equal(s.f[SF_JOB_URL], "https://build.example.com:8443/runs/9?token=x");
	json_object_put(o);
	source_free(&s);
	assert_int_equal(source_from_json("{\"ci\":\"nope\"}", &s), -1);
	assert_int_equal(source_from_json("[1]", &s), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_ci),
		cmocka_unit_test(test_untrusted_environment),
		cmocka_unit_test(test_labels),
		cmocka_unit_test(test_plain_text),
	};

	return cmocka_run_group_tests_name("source", tests, NULL, NULL);
}
