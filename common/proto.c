/* proto.c: decoding and validating wire-protocol requests; every input is untrusted. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include <json-c/json.h>

#include "proto.h"
#include "util.h"

static const char *type_names[PURGE_NTYPES] = { "object", "page", "cdn", "all" };

static const struct {
	const char *name;
	enum proto_op op;
	const char *fields[6]; /* allowed besides "op" */
} ops[] = {
	{ "enqueue", OP_ENQUEUE, { "install", "type", "reason", "source", "idempotency_key",
	    NULL } },
	{ "status", OP_STATUS, { "id", NULL } },
	{ "wait", OP_WAIT, { "id", "timeout", NULL } },
	{ "list", OP_LIST, { "install", "type", "state", "after", "limit", NULL } },
	{ "stats", OP_STATS, { NULL } },
	{ "cancel", OP_CANCEL, { "id", NULL } },
	{ "pause", OP_PAUSE, { NULL } },
	{ "resume", OP_RESUME, { NULL } },
	{ "ping", OP_PING, { NULL } },
	{ "installs", OP_INSTALLS, { "refresh", "after", "limit", NULL } },
	{ "requeue", OP_REQUEUE, { "id", NULL } },
};

const char *
proto_op_name(enum proto_op op)
{
	size_t i;

	for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		if (ops[i].op == op)
			return ops[i].name;
	}
	return "?";
}

const char *
purge_type_name(enum purge_type t)
{
	return type_names[t];
}

int
purge_type_parse(const char *s, enum purge_type *out)
{
	int i;

	for (i = 0; i < PURGE_NTYPES; i++) {
		if (strcmp(s, type_names[i]) == 0) {
			*out = (enum purge_type)i;
			return 0;
		}
	}
	return -1;
}

static int
fail(const char **code, char **cause, const char *c, const char *fmt, ...)
    printflike(4, 5);

static int
fail(const char **code, char **cause, const char *c, const char *fmt, ...)
{
	va_list ap;

	*code = c;
	va_start(ap, fmt);
	if (vasprintf(cause, fmt, ap) < 0)
		fatalx("out of memory");
	va_end(ap);
	return -1;
}

/*
 * json-c keeps the last of duplicate keys silently. In a valid JSON object every member
 * has exactly one ':' at depth 1 outside strings: count them against the keys kept.
 */
static size_t
members_at(const char *p, size_t len, int at)
{
	size_t i, n = 0;
	int depth = 0, in_str = 0;

	for (i = 0; i < len; i++) {
		if (in_str) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_str = 0;
			continue;
		}
		switch (p[i]) {
		case '"': in_str = 1; break;
		case '{': case '[': depth++; break;
		case '}': case ']': depth--; break;
		case ':': if (depth == at) n++; break;
		default: break;
		}
	}
	return n;
}

static int
get_id(json_object *obj, int64_t *out, const char **code, char **cause)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, "id", &v))
		return fail(code, cause, "missing_field", "field \"%s\" is required", "id");
	if (!json_object_is_type(v, json_type_int))
		return fail(code, cause, "bad_type", "field \"%s\" must be an integer", "id");
	errno = 0;
	*out = json_object_get_int64(v);
	if (errno != 0 || *out <= 0)
		return fail(code, cause, "bad_value", "field \"%s\" must be a positive integer",
		    "id");
	return 0;
}

/* An optional integer field within [min, max]; *out keeps its default if absent. */
static int
get_int(json_object *obj, const char *key, int64_t min, int64_t max, int64_t *out,
    const char **code, char **cause)
{
	json_object *v;
	int64_t n;

	if (!json_object_object_get_ex(obj, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return fail(code, cause, "bad_type", "field \"%s\" must be an integer", key);
	n = json_object_get_int64(v);
	if (n < min || n > max)
		return fail(code, cause, "bad_value", "%s must be between %lld and %lld", key,
		    (long long)min, (long long)max);
	*out = n;
	return 0;
}

static int
get_string(json_object *obj, const char *key, int required, const char **out,
    size_t *len, const char **code, char **cause)
{
	json_object *v;

	*out = NULL;
	if (!json_object_object_get_ex(obj, key, &v)) {
		if (required)
			return fail(code, cause, "missing_field", "field \"%s\" is required", key);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return fail(code, cause, "bad_type", "field \"%s\" must be a string", key);
	*out = json_object_get_string(v);
	*len = (size_t)json_object_get_string_len(v);
	if (strlen(*out) != *len || !text_valid(*out, *len))
		return fail(code, cause, "bad_value",
		    "field \"%s\" holds control characters or invalid UTF-8", key);
	return 0;
}

int
proto_idem_key_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > PROTO_MAX_IDEM_KEY)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	}
	return 1;
}

/*
 * The optional "source" object: known string fields only, each checked (source.h). The
 * other fields are scalars, checked before: the members at depth 2 are source's alone.
 */
static int
get_source(json_object *obj, const char *line, size_t len, struct proto_request *req,
    const char **code, char **cause)
{
	json_object *v;
	const char *why;
	int f;

	if (!json_object_object_get_ex(obj, "source", &v))
		return 0;
	if (!json_object_is_type(v, json_type_object))
		return fail(code, cause, "bad_type", "field \"%s\" must be an object", "source");
	if (members_at(line, len, 2) != (size_t)json_object_object_length(v))
		return fail(code, cause, "duplicate_field", "a field of \"source\" appears more "
		    "than once");
	req->source = xcalloc(1, sizeof *req->source);
	json_object_object_foreach(v, key, val) {
		if ((f = source_field_parse(key)) < 0)
			return fail(code, cause, "unknown_field", "unknown field \"source.%.*s\"",
			    (int)utf8_prefix(key, 64), key);
		if (!json_object_is_type(val, json_type_string))
			return fail(code, cause, "bad_type", "field \"source.%s\" must be a "
			    "string", key);
		if (source_check((enum source_field)f, json_object_get_string(val),
		    (size_t)json_object_get_string_len(val), &why) != 0)
			return fail(code, cause, "bad_value", "source.%s %s", key, why);
		req->source->f[f] = xstrdup(json_object_get_string(val));
	}
	if (source_empty(req->source)) {
		free(req->source);
		req->source = NULL;
	}
	return 0;
}

static __thread json_tokener *tokener;

/* An install as a client names it: a UUID (lower-cased) or an install name. */
static int
get_install(const char *s, size_t slen, struct proto_request *req, const char **code,
    char **cause)
{
	size_t j;

	if (slen == 36 && uuid_valid(s)) {
		for (j = 0; j < 36; j++)
			req->install[j] = (char)tolower((unsigned char)s[j]);
		req->install[36] = '\0';
		return 0;
	}
	if (slen <= INSTALL_NAME_MAX && install_name_valid(s)) {
		memcpy(req->name, s, slen + 1);
		return 0;
	}
	return fail(code, cause, "bad_install", "install must be a WP Engine install id (a "
	    "UUID) or name (3 to 14 lower-case letters and digits, starting with a letter), "
	    "not \"%.*s\"", (int)utf8_prefix(s, 64), s);
}

/*
 * One request object. With body_op >= 0 the op is given (an HTTP body or query decoded
 * as that op) and an "op" field is an unknown field; otherwise "op" names it.
 */
static int
proto_parse(const char *line, size_t len, struct proto_request *req, int body_op,
    const char **code, char **cause)
{
	json_tokener *tok;
	json_object *obj = NULL, *v;
	enum json_tokener_error jerr;
	const char *opname, *s = NULL;
	size_t i, j, slen = 0;
	int rc = -1;

	memset(req, 0, sizeof *req);
	req->timeout_ms = -1;
	req->state = -1;
	req->limit = PROTO_LIST_DEFAULT;
	*cause = NULL;

	if (len > PROTO_MAX_LINE)
		return fail(code, cause, "line_too_long", "request longer than %d bytes", PROTO_MAX_LINE);
	if (memchr(line, '\0', len) != NULL)
		return fail(code, cause, "bad_json", "request holds a NUL byte");

	/* One tokener per thread, reset for each request: three allocations fewer each. */
	if ((tok = tokener) == NULL) {
		if ((tok = tokener = json_tokener_new_ex(PROTO_MAX_DEPTH)) == NULL)
			fatalx("out of memory");
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	}
	json_tokener_reset(tok);
	obj = json_tokener_parse_ex(tok, line, (int)len);
	jerr = json_tokener_get_error(tok);
	if (obj == NULL || jerr != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len) {
		if (jerr == json_tokener_continue)
			jerr = json_tokener_error_parse_eof;
		fail(code, cause, "bad_json", "request is not one JSON object: %s",
		    obj != NULL && jerr == json_tokener_success ? "trailing data" :
		    json_tokener_error_desc(jerr));
		goto out;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		fail(code, cause, "bad_json", "request must be a JSON object");
		goto out;
	}
	if (members_at(line, len, 1) != (size_t)json_object_object_length(obj)) {
		fail(code, cause, "duplicate_field", "a field appears more than once");
		goto out;
	}
	if (body_op >= 0) {
		for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
			if ((int)ops[i].op == body_op)
				break;
		}
		if (i == sizeof ops / sizeof ops[0])
			fatalx("proto_parse: no op %d", body_op);
	} else {
		if (!json_object_object_get_ex(obj, "op", &v)) {
			fail(code, cause, "missing_field", "field \"%s\" is required", "op");
			goto out;
		}
		if (!json_object_is_type(v, json_type_string)) {
			fail(code, cause, "bad_type", "field \"%s\" must be a string", "op");
			goto out;
		}
		opname = json_object_get_string(v);
		for (i = 0; i < sizeof ops / sizeof ops[0]; i++) {
			if (strcmp(opname, ops[i].name) == 0)
				break;
		}
		if (i == sizeof ops / sizeof ops[0]) {
			fail(code, cause, "unknown_op", "unknown op \"%.*s\"",
			    (int)utf8_prefix(opname, 64), opname);
			goto out;
		}
	}
	req->op = ops[i].op;

	json_object_object_foreach(obj, key, val) {
		(void)val;
		if (body_op < 0 && strcmp(key, "op") == 0)
			continue;
		for (j = 0; ops[i].fields[j] != NULL; j++) {
			if (strcmp(key, ops[i].fields[j]) == 0)
				break;
		}
		if (ops[i].fields[j] == NULL) {
			fail(code, cause, "unknown_field", "unknown field \"%.*s\"",
			    (int)utf8_prefix(key, 64), key);
			goto out;
		}
	}

	switch (req->op) {
	case OP_LIST:
		if (get_string(obj, "install", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (get_install(s, slen, req, code, cause) != 0)
				goto out;
			req->has_install = 1;
		}
		if (get_string(obj, "type", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (purge_type_parse(s, &req->type) != 0) {
				fail(code, cause, "bad_type", "type must be object, page, cdn or "
				    "all, not \"%.*s\"", (int)utf8_prefix(s, 32), s);
				goto out;
			}
			req->has_type = 1;
		}
		if (get_string(obj, "state", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (strcmp(s, "queued") == 0)
				req->state = 0;
			else if (strcmp(s, "sending") == 0)
				req->state = 1;
			else {
				fail(code, cause, "bad_value", "state must be queued or sending "
				    "(only unfinished jobs are listed), not \"%.*s\"",
				    (int)utf8_prefix(s, 32), s);
				goto out;
			}
		}
		if (get_int(obj, "after", 0, INT64_MAX, &req->after, code, cause) != 0 ||
		    get_int(obj, "limit", 1, PROTO_LIST_MAX, &req->limit, code, cause) != 0)
			goto out;
		break;
	case OP_ENQUEUE:
		if (get_string(obj, "install", 1, &s, &slen, code, cause) != 0)
			goto out;
		if (s == NULL)
			s = ""; /* not reached: the field is required */
		if (get_install(s, slen, req, code, cause) != 0)
			goto out;
		if (get_string(obj, "type", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s == NULL)
			req->type = PURGE_ALL;
		else if (purge_type_parse(s, &req->type) != 0) {
			fail(code, cause, "bad_type",
			    "type must be object, page, cdn or all, not \"%.*s\"",
			    (int)utf8_prefix(s, 32), s);
			goto out;
		}
		if (get_string(obj, "reason", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (slen > PROTO_MAX_REASON) {
				fail(code, cause, "bad_value", "reason is longer than %d bytes",
				    PROTO_MAX_REASON);
				goto out;
			}
			/* Shown in status and the log: nothing that acts on a terminal. */
			if (!text_plain(s, slen)) {
				fail(code, cause, "bad_value", "reason holds control, line-separator "
				    "or bidirectional-formatting characters");
				goto out;
			}
			req->reason = xstrdup(s);
		}
		if (get_string(obj, "idempotency_key", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (!proto_idem_key_valid(s, slen)) {
				fail(code, cause, "bad_value", "idempotency_key must be 1 to %d "
				    "printable ASCII characters without blanks",
				    PROTO_MAX_IDEM_KEY);
				goto out;
			}
			memcpy(req->idem_key, s, slen + 1);
		}
		if (get_source(obj, line, len, req, code, cause) != 0)
			goto out;
		break;
	case OP_STATUS:
	case OP_CANCEL:
	case OP_REQUEUE:
		if (get_id(obj, &req->id, code, cause) != 0)
			goto out;
		break;
	case OP_WAIT:
		if (get_id(obj, &req->id, code, cause) != 0)
			goto out;
		if (json_object_object_get_ex(obj, "timeout", &v)) {
			double d;

			if (!json_object_is_type(v, json_type_int) &&
			    !json_object_is_type(v, json_type_double)) {
				fail(code, cause, "bad_type", "field \"%s\" must be a number",
				    "timeout");
				goto out;
			}
			d = json_object_get_double(v);
			if (!isfinite(d) || d < 0 || d > PROTO_MAX_WAIT) {
				fail(code, cause, "bad_value",
				    "timeout must be between 0 and %d seconds", PROTO_MAX_WAIT);
				goto out;
			}
			req->timeout_ms = (int64_t)(d * 1000);
		}
		break;
	case OP_INSTALLS:
		if (json_object_object_get_ex(obj, "refresh", &v)) {
			if (!json_object_is_type(v, json_type_boolean)) {
				fail(code, cause, "bad_type", "field \"%s\" must be true or false",
				    "refresh");
				goto out;
			}
			req->refresh = json_object_get_boolean(v);
		}
		req->limit = PROTO_INSTALLS_DEFAULT;
		if (get_int(obj, "limit", 1, PROTO_INSTALLS_MAX, &req->limit, code, cause) != 0)
			goto out;
		if (get_string(obj, "after", 0, &s, &slen, code, cause) != 0)
			goto out;
		if (s != NULL) {
			if (slen > INSTALL_NAME_MAX || !install_name_valid(s)) {
				fail(code, cause, "bad_value", "\"after\" must be an install name");
				goto out;
			}
			memcpy(req->after_name, s, slen + 1);
		}
		break;
	default:
		break;
	}
	rc = 0;
out:
	if (rc != 0)
		proto_request_free(req);
	json_object_put(obj);
	return rc;
}

int
proto_request_parse(const char *line, size_t len, struct proto_request *req,
    const char **code, char **cause)
{
	return proto_parse(line, len, req, -1, code, cause);
}

int
proto_body_parse(const char *body, size_t len, enum proto_op op, struct proto_request *req,
    const char **code, char **cause)
{
	return proto_parse(body, len, req, (int)op, code, cause);
}

void
proto_request_free(struct proto_request *req)
{
	free(req->reason);
	req->reason = NULL;
	source_free(req->source);
	free(req->source);
	req->source = NULL;
}

json_object *
proto_error(const char *code, const char *message)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(code));
	json_object_object_add(o, "message", json_object_new_string(message));
	return o;
}
