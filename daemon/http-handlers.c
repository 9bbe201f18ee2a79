/* http-handlers.c: HTTP endpoints on the queue (purges, jobs, installs): scopes, query parameters. */
#include "compat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "http-int.h"
#include "proto.h"
#include "util.h"

/* Is key one of names (NULL-terminated; NULL: none)? */
static int
http_param_in(const char *const *names, const char *key)
{
	for (; names != NULL && *names != NULL; names++) {
		if (strcmp(key, *names) == 0)
			return 1;
	}
	return 0;
}

/*
 * The query's parameters as a JSON object for proto_body_parse: the numeric ones that
 * are integers as numbers, the boolean ones that are 1, true, 0 or false as booleans,
 * everything else as strings. -1 on a repeated parameter or a malformed query.
 */
static int
http_query_object(const char *query, const char *const *numeric,
    const char *const *boolean, json_object **out)
{
	struct evkeyvalq params;
	struct evkeyval *kv;
	json_object *o = json_object_new_object(), *v;
	int64_t n;

	*out = o;
	TAILQ_INIT(&params);
	if (query != NULL && evhttp_parse_query_str(query, &params) != 0) {
		evhttp_clear_headers(&params);
		return -1;
	}
	TAILQ_FOREACH(kv, &params, next) {
		if (json_object_object_get_ex(o, kv->key, NULL)) {
			evhttp_clear_headers(&params);
			return -1;
		}
		if (http_param_in(numeric, kv->key) &&
		    parse_int64(kv->value, INT64_MIN, INT64_MAX, &n) == 0)
			v = json_object_new_int64(n);
		else if (http_param_in(boolean, kv->key) &&
		    (strcmp(kv->value, "1") == 0 || strcmp(kv->value, "true") == 0))
			v = json_object_new_boolean(1);
		else if (http_param_in(boolean, kv->key) &&
		    (strcmp(kv->value, "0") == 0 || strcmp(kv->value, "false") == 0))
			v = json_object_new_boolean(0);
		else
			v = json_object_new_string(kv->value);
		json_object_object_add(o, kv->key, v);
	}
	evhttp_clear_headers(&params);
	return 0;
}

/*
 * The query string decoded as op's request, with the checks and error codes of a body
 * (numeric and boolean: as for http_query_object). 0 with pr filled (proto_request_free
 * it), or -1 with the error sent.
 */
static int
http_query_parse(struct evhttp_request *req, const char *query, enum proto_op op,
    const char *const *numeric, const char *const *boolean, struct proto_request *pr)
{
	json_object *q;
	const char *code, *s;
	char *cause;
	size_t len;
	int rc;

	if (http_query_object(query, numeric, boolean, &q) != 0) {
		json_object_put(q);
		http_error(req, 400, "duplicate_field", "a query parameter appears more than "
		    "once, or the query is malformed");
		return -1;
	}
	s = json_object_to_json_string_length(q, JSON_C_TO_STRING_PLAIN, &len);
	rc = proto_body_parse(s, len, op, pr, &code, &cause);
	json_object_put(q);
	if (rc != 0) {
		http_error(req, 400, code, cause);
		free(cause);
		return -1;
	}
	return 0;
}

/* ?wait=SECONDS: -1 absent, else milliseconds; -2 with an error sent. */
static int64_t
http_wait_param(struct evhttp_request *req, const char *query)
{
	struct evkeyvalq params;
	const char *v;
	char *end;
	double d;
	int64_t ms = -1;
	int n = 0;
	struct evkeyval *kv;

	if (query == NULL)
		return -1;
	TAILQ_INIT(&params);
	if (evhttp_parse_query_str(query, &params) != 0) {
		evhttp_clear_headers(&params);
		http_error(req, 400, "bad_value", "the query string is malformed");
		return -2;
	}
	TAILQ_FOREACH(kv, &params, next) {
		if (strcmp(kv->key, "wait") != 0) {
			evhttp_clear_headers(&params);
			http_error(req, 400, "unknown_field", "the only query parameter here is "
			    "wait");
			return -2;
		}
		n++;
	}
	if (n > 1) {
		evhttp_clear_headers(&params);
		http_error(req, 400, "duplicate_field", "wait appears more than once");
		return -2;
	}
	if ((v = evhttp_find_header(&params, "wait")) != NULL) {
		errno = 0;
		d = strtod(v, &end);
		if (*v == '\0' || *end != '\0' || errno != 0 || !isfinite(d) || d < 0 ||
		    d > PROTO_MAX_WAIT) {
			evhttp_clear_headers(&params);
			http_error(req, 400, "bad_value", "wait must be a number of seconds from "
			    "0 to 604800");
			return -2;
		}
		ms = (int64_t)(d * 1000);
	}
	evhttp_clear_headers(&params);
	return ms;
}

/*
 * May the token act on the install a request names (a UUID, or a name in "name")? Its
 * patterns match the id or the name the catalog gives it; a name the catalog does not
 * know yet can match name patterns only.
 */
static int
http_install_allowed(struct http *h, const struct token *t, const char *install,
    const char *name)
{
	char id[37] = "", nm[INSTALL_NAME_MAX + 1] = "";

	if (t->installs == NULL)
		return 1;
	if (ops_install_resolve(h->q, install[0] != '\0' ? install : name, id, nm) == 0)
		snprintf(nm, sizeof nm, "%s", name);
	return tokens_install_allowed(t, id, nm);
}

/* Is this status object's install outside the token's scope? Then it does not exist. */
static int
http_hidden(struct http *h, const struct token *t, json_object *o)
{
	const char *in = http_answer_install(o), *name = NULL;
	json_object *v;

	if (!http_answer_ok(o) || t->installs == NULL)
		return 0;
	if (json_object_object_get_ex(o, "name", &v) && json_object_is_type(v, json_type_string))
		name = json_object_get_string(v);
	return !http_install_allowed(h, t, in != NULL ? in : "", name != NULL ? name : "");
}

static void
http_not_found(struct evhttp_request *req, int64_t id)
{
	char msg[96];

	snprintf(msg, sizeof msg, "there is no request %lld", (long long)id);
	http_error(req, 404, "not_found", msg);
}

void
http_purges_post(struct http *h, struct evhttp_request *req, const struct token *t,
    const struct ops_caller *c, const char *who, const char *query)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	struct proto_request pr;
	struct hreq *hr;
	const char *code, *key;
	char *cause, *buf;
	size_t len = evbuffer_get_length(body);
	int64_t wait_ms;

	if (evhttp_find_header(in, "Content-Length") == NULL &&
	    evhttp_find_header(in, "Transfer-Encoding") == NULL) {
		http_error(req, 411, "length_required", "a body with Content-Length is "
		    "required");
		return;
	}
	if ((wait_ms = http_wait_param(req, query)) == -2)
		return;
	buf = xmalloc(len + 1);
	evbuffer_copyout(body, buf, len);
	buf[len] = '\0';
	if (proto_body_parse(buf, len, OP_ENQUEUE, &pr, &code, &cause) != 0) {
		free(buf);
		http_error(req, 400, code, cause);
		free(cause);
		return;
	}
	free(buf);
	/* The header is the HTTP way to give a key; a body's idempotency_key must agree. */
	if ((key = evhttp_find_header(in, "Idempotency-Key")) != NULL) {
		if (!proto_idem_key_valid(key, strlen(key)) || (pr.idem_key[0] != '\0' &&
		    strcmp(pr.idem_key, key) != 0)) {
			proto_request_free(&pr);
			http_error(req, 400, "bad_value", "the Idempotency-Key header must be 1 to "
			    "128 printable ASCII characters without blanks, and the body's "
			    "idempotency_key, if any, the same");
			return;
		}
		memcpy(pr.idem_key, key, strlen(key) + 1);
	}
	if (!http_install_allowed(h, t, pr.install, pr.name) ||
	    !tokens_type_allowed(t, pr.type)) {
		log_warn("HTTP %s: %s purge of %s refused: outside the token's scope", who,
		    purge_type_name(pr.type), pr.install[0] != '\0' ? pr.install : pr.name);
		proto_request_free(&pr);
		http_error(req, 403, "forbidden", "this token may not purge that install or "
		    "type");
		return;
	}
	hr = hreq_new(h, req, c, who);
	hr->post = 1;
	hr->wait_ms = wait_ms;
	hr->owed = 1;
	ops_enqueue(h->q, &pr, &hr->caller, hreq_enqueued, hr);
	proto_request_free(&pr);
}

void
http_purge_id(struct http *h, struct evhttp_request *req, const struct token *t,
    const struct ops_caller *c, const char *who, int64_t id, const char *query)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	json_object *o;
	struct hreq *hr;
	int64_t wait_ms = -1;

	if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD && m != EVHTTP_REQ_DELETE) {
		http_method_not_allowed(req, "GET, DELETE");
		return;
	}
	if (m != EVHTTP_REQ_DELETE && (wait_ms = http_wait_param(req, query)) == -2)
		return;
	if (m == EVHTTP_REQ_DELETE && query != NULL && *query != '\0') {
		http_error(req, 400, "unknown_field", "DELETE takes no query parameters");
		return;
	}
	o = ops_status(h->q, id, c);
	if (http_hidden(h, t, o)) {
		json_object_put(o);
		http_not_found(req, id);
		return;
	}
	if (m == EVHTTP_REQ_DELETE) {
		if (!http_answer_ok(o)) {
			http_send_ops(req, o);
			return;
		}
		json_object_put(o);
		http_send_ops(req, ops_cancel(h->q, id, c));
		return;
	}
	if (wait_ms < 0 || !http_answer_ok(o)) {
		http_send_ops(req, o);
		return;
	}
	json_object_put(o);
	hr = hreq_new(h, req, c, who);
	hr->id = id;
	hreq_wait(hr, wait_ms);
}

struct http_sees {
	struct http *h;
	const struct token *t;
};

static int
http_token_sees(const void *arg, const char *install)
{
	const struct http_sees *s = arg;

	return http_install_allowed(s->h, s->t, install, "");
}

void
http_jobs(struct http *h, struct evhttp_request *req, const struct token *t,
    const char *query)
{
	static const char *const numeric[] = { "after", "limit", NULL };
	struct proto_request pr;
	struct http_sees sees;
	json_object *o;

	if (http_query_parse(req, query, OP_LIST, numeric, NULL, &pr) != 0)
		return;
	if (pr.has_install && !http_install_allowed(h, t, pr.install, pr.name)) {
		proto_request_free(&pr);
		http_error(req, 403, "forbidden", "this token may not see that install");
		return;
	}
	/*
	 * A token limited to some installs sees only theirs: filtered before the page is
	 * cut, so "total" and "next" say nothing about the others.
	 */
	sees.h = h;
	sees.t = t;
	o = t->installs != NULL && !pr.has_install ?
	    ops_list_visible(h->q, &pr, http_token_sees, &sees) :
	    ops_list(h->q, &pr);
	proto_request_free(&pr);
	http_send_ops(req, o);
}

/*
 * POST /v1/purges/ID/requeue: a failed, expired or cancelled request again, as a new one
 * (answered like POST /v1/purges). The request must be one the token may see, of a type
 * it may purge; ownership (the token that made it, or an admin) is the queue's check.
 */
void
http_requeue(struct http *h, struct evhttp_request *req, const struct token *t,
    const struct ops_caller *c, const char *who, int64_t id)
{
	json_object *o, *v;
	enum purge_type type;
	struct hreq *hr;

	o = ops_status(h->q, id, c);
	if (http_hidden(h, t, o)) {
		json_object_put(o);
		http_not_found(req, id);
		return;
	}
	if (!http_answer_ok(o)) {
		http_send_ops(req, o);
		return;
	}
	if (json_object_object_get_ex(o, "type", &v) &&
	    purge_type_parse(json_object_get_string(v), &type) == 0 &&
	    !tokens_type_allowed(t, type)) {
		json_object_put(o);
		http_error(req, 403, "forbidden", "this token may not purge that type");
		return;
	}
	json_object_put(o);
	hr = hreq_new(h, req, c, who);
	hr->post = 1;
	hr->owed = 1;
	if ((o = ops_requeue(h->q, id, &hr->caller, hreq_enqueued, hr)) != NULL) {
		hreq_abandon(hr);
		http_send_ops(req, o);
	}
}

static int
http_scope_sees(const void *scope, const char *id, const char *name)
{
	return tokens_scope_allows(scope, id, name);
}

/*
 * GET /v1/installs[?refresh=1&after=NAME&limit=N]: the catalog as the token's scope
 * shows it. With refresh the answer waits for the catalog read, like the socket's.
 */
void
http_installs(struct http *h, struct evhttp_request *req, const struct token *t,
    const struct ops_caller *c, const char *who, const char *query)
{
	static const char *const numeric[] = { "limit", NULL };
	/* refresh=1|true|0|false, as a JSON boolean for the decoder */
	static const char *const boolean[] = { "refresh", NULL };
	struct proto_request pr;
	struct hreq *hr;

	if (http_query_parse(req, query, OP_INSTALLS, numeric, boolean, &pr) != 0)
		return;
	hr = hreq_new(h, req, c, who);
	hr->scope = tokens_scope(t);
	hr->waiting = 1;
	hr->waiter = ops_installs(h->q, &pr, &hr->caller, hreq_installs, hr,
	    hr->scope != NULL ? http_scope_sees : NULL, hr->scope);
	if (hr->waiting)
		hreq_watch_waiter(hr);
	else
		hr->waiter = NULL;
	proto_request_free(&pr);
}
