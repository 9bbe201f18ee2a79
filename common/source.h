/* source.h: who asked for a purge and why: the "source" object, its checks and labels. */
#ifndef WPE_SOURCE_H
#define WPE_SOURCE_H

#include <stddef.h>

struct json_object;

/*
 * A request's provenance, as a client says it (every field optional, never trusted).
 * Bump PROTO_VERSION if the fields or their limits change.
 */
enum source_ci { CI_NONE = 0, CI_GITHUB, CI_GITLAB, CI_BITBUCKET, CI_CIRCLECI, CI_JENKINS,
	CI_OTHER };
#define SOURCE_NCI 7

enum source_field { SF_CI = 0, SF_JOB_URL, SF_COMMIT, SF_REF, SF_ACTOR, SF_PIPELINE };
#define SOURCE_NFIELDS 6

/* Bytes each field may hold (UTF-8, no control characters; URL and commit: ASCII). */
#define SOURCE_MAX_JOB_URL 512
#define SOURCE_MAX_COMMIT 64
#define SOURCE_MAX_REF 256
#define SOURCE_MAX_ACTOR 128
#define SOURCE_MAX_PIPELINE 128
#define SOURCE_LABEL_MAX 96   /* bytes of a label ("github:org/repo#123"), NUL included */

struct source {
	char *f[SOURCE_NFIELDS];  /* NULL: absent; f[SF_CI] is one of the ci names */
};

const char *source_field_name(enum source_field);
/* -1, or the field of that name. */
int source_field_parse(const char *name);
size_t source_field_max(enum source_field);
/*
 * Check one field's value: 0, or -1 with *why (a static phrase: "is not http(s)", ...).
 * The same checks for the wire protocol and for values taken from a CI's environment.
 */
int source_check(enum source_field, const char *value, size_t len, const char **why);
/* 1 if no field is set. */
int source_empty(const struct source *);
void source_free(struct source *);   /* the fields; the struct itself stays */
struct source *source_dup(const struct source *);
/* The source as a JSON object (set fields only), and back (0, or -1: not one we wrote). */
struct json_object *source_to_json(const struct source *);
int source_from_json(const char *text, struct source *out);

/*
 * Who asked and where, in a few bytes: "github:org/repo#123" from a job URL, the ci and
 * the pipeline; "github@alice" with an actor only; "" when the source says nothing
 * usable. with_pipeline 0: without "#pipeline" (a requester, as stats count them).
 */
void source_label(const struct source *, int with_pipeline, char *buf, size_t len);

/*
 * The source a CI job's environment describes (GitHub Actions, GitLab CI, Bitbucket
 * Pipelines, CircleCI, Jenkins), read through get (getenv, or a test's table). Values
 * that fail source_check are dropped, too long ones cut (never failing the request);
 * returns 0 and *out empty when no CI is recognised. dropped (may be NULL) gets a mask
 * of the fields dropped, 1 << field.
 */
int source_from_env(const char *(*get)(const char *, void *), void *arg, struct source *out,
    unsigned *dropped);

#endif
