/* source.c: the "source" object: its checks, its JSON form, labels, and CI environments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "source.h"
#include "util.h"

static const char *field_names[SOURCE_NFIELDS] = { "ci", "job_url", "commit", "ref",
	"actor", "pipeline" };
static const size_t field_max[SOURCE_NFIELDS] = { 16, SOURCE_MAX_JOB_URL,
	SOURCE_MAX_COMMIT, SOURCE_MAX_REF, SOURCE_MAX_ACTOR, SOURCE_MAX_PIPELINE };
static const char *ci_names[SOURCE_NCI] = { "", "github", "gitlab", "bitbucket",
	"circleci", "jenkins", "other" };

const char *
source_field_name(enum source_field f)
{
	return field_names[f];
}

int
source_field_parse(const char *name)
{
	int i;

	for (i = 0; i < SOURCE_NFIELDS; i++) {
		if (strcmp(name, field_names[i]) == 0)
			return i;
	}
	return -1;
}

size_t
source_field_max(enum source_field f)
{
	return field_max[f];
}

static int
ci_parse(const char *s)
{
	int i;

	for (i = 1; i < SOURCE_NCI; i++) {
		if (strcmp(s, ci_names[i]) == 0)
			return i;
	}
	return -1;
}

/* Printable ASCII without blanks: URLs and commit ids. */
static int
ascii_graphic(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	}
	return 1;
}

int
source_check(enum source_field f, const char *v, size_t len, const char **why)
{
	size_t skip;

	if (len == 0 || strlen(v) != len)
		return *why = "is empty or holds a NUL byte", -1;
	if (len > field_max[f]) {
#define LONGER(n) "is longer than " #n " bytes"
#define LONGER_THAN(n) LONGER(n)
		static const char *too_long[SOURCE_NFIELDS] = { "is too long",
			LONGER_THAN(SOURCE_MAX_JOB_URL), LONGER_THAN(SOURCE_MAX_COMMIT),
			LONGER_THAN(SOURCE_MAX_REF), LONGER_THAN(SOURCE_MAX_ACTOR),
			LONGER_THAN(SOURCE_MAX_PIPELINE) };

		return *why = too_long[f], -1;
	}
	switch (f) {
	case SF_CI:
		if (ci_parse(v) < 0)
			return *why = "must be github, gitlab, bitbucket, circleci, jenkins or "
			    "other", -1;
		return 0;
	case SF_JOB_URL:
		if (!ascii_graphic(v, len))
			return *why = "must be printable ASCII without blanks", -1;
		skip = strncasecmp(v, "https://", 8) == 0 ? 8 :
		    strncasecmp(v, "http://", 7) == 0 ? 7 : 0;
		if (skip == 0 || len == skip || v[skip] == '/')
			return *why = "must be an http:// or https:// URL with a host", -1;
		/* user:password@host: a secret that would be stored, shown and logged. */
		if (memchr(v + skip, '@', strcspn(v + skip, "/?#")) != NULL)
			return *why = "must not hold credentials (user@host)", -1;
		return 0;
	case SF_COMMIT:
		if (!ascii_graphic(v, len))
			return *why = "must be printable ASCII without blanks", -1;
		return 0;
	default:
		/* Shown in "list", "status" and the log: nothing a terminal would act on. */
		if (!text_plain(v, len))
			return *why = "holds control characters (C0, C1, U+2028, U+2029), bidi "
			    "or invisible format controls, or invalid UTF-8", -1;
		return 0;
	}
}

int
source_empty(const struct source *s)
{
	int i;

	for (i = 0; i < SOURCE_NFIELDS; i++) {
		if (s->f[i] != NULL)
			return 0;
	}
	return 1;
}

void
source_free(struct source *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < SOURCE_NFIELDS; i++) {
		free(s->f[i]);
		s->f[i] = NULL;
	}
}

struct source *
source_dup(const struct source *s)
{
	struct source *d;
	int i;

	if (s == NULL)
		return NULL;
	d = xcalloc(1, sizeof *d);
	for (i = 0; i < SOURCE_NFIELDS; i++)
		d->f[i] = s->f[i] != NULL ? xstrdup(s->f[i]) : NULL;
	return d;
}

json_object *
source_to_json(const struct source *s)
{
	json_object *o = json_object_new_object();
	int i;

	for (i = 0; i < SOURCE_NFIELDS; i++) {
		if (s->f[i] != NULL)
			json_object_object_add(o, field_names[i],
			    json_object_new_string(s->f[i]));
	}
	return o;
}

int
source_from_json(const char *text, struct source *out)
{
	json_object *o = json_tokener_parse(text);
	const char *why;
	int f, rc = -1;

	memset(out, 0, sizeof *out);
	if (o == NULL || !json_object_is_type(o, json_type_object))
		goto done;
	json_object_object_foreach(o, key, val) {
		if ((f = source_field_parse(key)) < 0 || out->f[f] != NULL ||
		    !json_object_is_type(val, json_type_string) ||
		    source_check((enum source_field)f, json_object_get_string(val),
		    (size_t)json_object_get_string_len(val), &why) != 0)
			goto done;
		out->f[f] = xstrdup(json_object_get_string(val));
	}
	rc = 0;
done:
	if (rc != 0)
		source_free(out);
	json_object_put(o);
	return rc;
}

/* Append at most max bytes of s (whole UTF-8 characters) to buf. */
static void
append(char *buf, size_t len, const char *s, size_t max)
{
	size_t have = strlen(buf), room;

	if (have + 1 >= len)
		return;
	room = len - have - 1;
	if (max > room)
		max = room;
	max = utf8_prefix(s, max);
	memcpy(buf + have, s, max);
	buf[have + max] = '\0';
}

/* The path segment i of url (after its host), as a pointer and a length; 0: none. */
static size_t
segment(const char *url, int i, const char **at)
{
	const char *p = strstr(url, "://"), *e;

	if (p == NULL || (p = strchr(p + 3, '/')) == NULL)
		return 0;
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0' || *p == '?' || *p == '#')
			return 0;
		e = p + strcspn(p, "/?#");
		if (i-- == 0) {
			*at = p;
			return (size_t)(e - p);
		}
		p = e;
	}
}

static int
seg_is(const char *url, int i, const char *word)
{
	const char *at;
	size_t n = segment(url, i, &at);

	return n > 0 && n == strlen(word) && strncmp(at, word, n) == 0;
}

/* Append segments [from, to) of url joined by '/', or, for jenkins, those after "job". */
static void
append_segments(char *buf, size_t len, const char *url, int from, int to, int jenkins)
{
	const char *at;
	size_t n;
	int i, any = 0;

	for (i = from; i < to && (n = segment(url, i, &at)) > 0; i++) {
		if (jenkins && !seg_is(url, i - 1, "job"))
			continue;
		if (jenkins && n == 3 && strncmp(at, "job", 3) == 0)
			continue;
		if (any++)
			append(buf, len, "/", 1);
		append(buf, len, at, n);
	}
}

/* What the job URL says of the project ("org/repo"), or its host. */
static void
project(const struct source *s, int ci, char *buf, size_t len)
{
	const char *url = s->f[SF_JOB_URL], *host;
	int first = 0, n = 2;

	buf[0] = '\0';
	if (url == NULL)
		return;
	switch (ci) {
	case CI_GITHUB:
	case CI_BITBUCKET:
		break;
	case CI_GITLAB:
		/* group/subgroup/project/-/jobs/N */
		for (n = 0; n < 16 && segment(url, n, &host) > 0 && !seg_is(url, n, "-"); n++)
			;
		break;
	case CI_CIRCLECI:
		/* circleci.com/gh/ORG/REPO/N, app.circleci.com/pipelines/github/ORG/REPO/... */
		if (seg_is(url, first, "pipelines"))
			first++;
		if (seg_is(url, first, "gh") || seg_is(url, first, "bb") ||
		    seg_is(url, first, "github") || seg_is(url, first, "bitbucket") ||
		    seg_is(url, first, "gl") || seg_is(url, first, "gitlab"))
			first++;
		break;
	case CI_JENKINS:
		/* jenkins.example/job/FOLDER/job/NAME/42/ */
		append_segments(buf, len, url, 1, 32, 1);
		return;
	default:
		host = strstr(url, "://") + 3;
		append(buf, len, host, strcspn(host, "/?#:"));
		return;
	}
	append_segments(buf, len, url, first, first + n, 0);
	/* A URL without the path expected: its host says at least where. */
	if (buf[0] == '\0') {
		host = strstr(url, "://") + 3;
		append(buf, len, host, strcspn(host, "/?#:"));
	}
}

void
source_label(const struct source *s, int with_pipeline, char *buf, size_t len)
{
	char where[SOURCE_LABEL_MAX];
	int ci;

	buf[0] = '\0';
	if (s == NULL || len == 0 || source_empty(s))
		return;
	ci = s->f[SF_CI] != NULL ? ci_parse(s->f[SF_CI]) : CI_NONE;
	project(s, ci, where, sizeof where);
	append(buf, len, ci > 0 ? ci_names[ci] : "ci", 16);
	if (where[0] != '\0') {
		append(buf, len, ":", 1);
		append(buf, len, where, sizeof where);
	} else if (s->f[SF_ACTOR] != NULL) {
		append(buf, len, "@", 1);
		append(buf, len, s->f[SF_ACTOR], 48);
	}
	if (with_pipeline && s->f[SF_PIPELINE] != NULL) {
		append(buf, len, "#", 1);
		append(buf, len, s->f[SF_PIPELINE], 40);
	}
	if (strcmp(buf, "ci") == 0)
		buf[0] = '\0';    /* a commit or ref alone says nothing of who */
}

/* CI environments ----------------------------------------------------------------- */

struct env {
	const char *(*get)(const char *, void *);
	void *arg;
	struct source *out;
	unsigned dropped;
};

static const char *
env(struct env *e, const char *name)
{
	const char *v = e->get(name, e->arg);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* Take value for field f: text cut to its limit; what does not pass is dropped. */
static void
take(struct env *e, enum source_field f, const char *v)
{
	const char *why;
	size_t len;
	char *cut;

	if (v == NULL || e->out->f[f] != NULL)
		return;
	len = strlen(v);
	if (len > field_max[f]) {
		if (f == SF_JOB_URL || f == SF_COMMIT) {
			e->dropped |= 1u << f;   /* half a URL or commit is no use */
			return;
		}
		len = utf8_prefix(v, field_max[f]);
	}
	cut = xcalloc(1, len + 1);
	memcpy(cut, v, len);
	if (source_check(f, cut, len, &why) != 0) {
		free(cut);
		e->dropped |= 1u << f;
		return;
	}
	e->out->f[f] = cut;
}

/* A URL made of parts (each checked by take() once joined). */
static void
take_url(struct env *e, const char *a, const char *b, const char *c, const char *d)
{
	char *url;

	if (a == NULL || b == NULL || d == NULL)
		return;
	xasprintf(&url, "%s/%s%s%s", a, b, c, d);
	take(e, SF_JOB_URL, url);
	free(url);
}

int
source_from_env(const char *(*get)(const char *, void *), void *arg, struct source *out,
    unsigned *dropped)
{
	struct env e = { get, arg, out, 0 };
	const char *v;
	int ci = CI_NONE;

	memset(out, 0, sizeof *out);
	if ((v = env(&e, "GITHUB_ACTIONS")) != NULL && strcmp(v, "true") == 0) {
		ci = CI_GITHUB;
		v = env(&e, "GITHUB_SERVER_URL");
		take_url(&e, v != NULL ? v : "https://github.com", env(&e, "GITHUB_REPOSITORY"),
		    "/actions/runs/", env(&e, "GITHUB_RUN_ID"));
		take(&e, SF_COMMIT, env(&e, "GITHUB_SHA"));
		take(&e, SF_REF, env(&e, "GITHUB_REF"));
		take(&e, SF_ACTOR, env(&e, "GITHUB_ACTOR"));
		take(&e, SF_PIPELINE, env(&e, "GITHUB_RUN_ID"));
	} else if ((v = env(&e, "GITLAB_CI")) != NULL && strcmp(v, "true") == 0) {
		ci = CI_GITLAB;
		take(&e, SF_JOB_URL, env(&e, "CI_JOB_URL"));
		take(&e, SF_COMMIT, env(&e, "CI_COMMIT_SHA"));
		take(&e, SF_REF, env(&e, "CI_COMMIT_REF_NAME"));
		take(&e, SF_ACTOR, env(&e, "GITLAB_USER_LOGIN"));
		take(&e, SF_PIPELINE, env(&e, "CI_PIPELINE_ID"));
	} else if (env(&e, "BITBUCKET_BUILD_NUMBER") != NULL) {
		ci = CI_BITBUCKET;
		take_url(&e, "https://bitbucket.org", env(&e, "BITBUCKET_REPO_FULL_NAME"),
		    "/pipelines/results/", env(&e, "BITBUCKET_BUILD_NUMBER"));
		take(&e, SF_COMMIT, env(&e, "BITBUCKET_COMMIT"));
		take(&e, SF_REF, env(&e, "BITBUCKET_BRANCH"));
		take(&e, SF_REF, env(&e, "BITBUCKET_TAG"));
		take(&e, SF_ACTOR, env(&e, "BITBUCKET_STEP_TRIGGERER_UUID"));
		take(&e, SF_PIPELINE, env(&e, "BITBUCKET_BUILD_NUMBER"));
	} else if ((v = env(&e, "CIRCLECI")) != NULL && strcmp(v, "true") == 0) {
		ci = CI_CIRCLECI;
		take(&e, SF_JOB_URL, env(&e, "CIRCLE_BUILD_URL"));
		take(&e, SF_COMMIT, env(&e, "CIRCLE_SHA1"));
		take(&e, SF_REF, env(&e, "CIRCLE_BRANCH"));
		take(&e, SF_REF, env(&e, "CIRCLE_TAG"));
		take(&e, SF_ACTOR, env(&e, "CIRCLE_USERNAME"));
		take(&e, SF_PIPELINE, env(&e, "CIRCLE_BUILD_NUM"));
	} else if (env(&e, "JENKINS_URL") != NULL && env(&e, "BUILD_NUMBER") != NULL) {
		ci = CI_JENKINS;
		take(&e, SF_JOB_URL, env(&e, "BUILD_URL"));
		take(&e, SF_COMMIT, env(&e, "GIT_COMMIT"));
		take(&e, SF_REF, env(&e, "BRANCH_NAME"));
		take(&e, SF_REF, env(&e, "TAG_NAME"));
		take(&e, SF_REF, env(&e, "GIT_BRANCH"));
		take(&e, SF_ACTOR, env(&e, "BUILD_USER_ID"));
		take(&e, SF_ACTOR, env(&e, "CHANGE_AUTHOR"));
		take(&e, SF_PIPELINE, env(&e, "BUILD_NUMBER"));
	}
	if (ci != CI_NONE)
		out->f[SF_CI] = xstrdup(ci_names[ci]);
	if (dropped != NULL)
		*dropped = e.dropped;
	return 0;
}
