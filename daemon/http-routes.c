/* http-routes.c: HTTP requests: routing, bearer tokens, rate caps, query parameters. */
#include "compat.h"
#include <sys/socket.h>

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
#include "metrics.h"
#include "proto.h"
#include "util.h"

/* The query's parameters as a JSON object for proto_body_parse; -1 on a repeated one. */
static int
http_query_object(const char *query, const char *const *numeric, json_object **out,
    const char **dup)
{
	struct evkeyvalq params;
	struct evkeyval *kv;
	json_object *o = json_object_new_object();
	int64_t n;
	size_t i;

	*out = o;
	TAILQ_INIT(&params);
	if (query != NULL && evhttp_parse_query_str(query, &params) != 0) {
		evhttp_clear_headers(&params);
		*dup = "";
		return -1;
	}
	TAILQ_FOREACH(kv, &params, next) {
		if (json_object_object_get_ex(o, kv->key, NULL)) {
			*dup = "";
			evhttp_clear_headers(&params);
			return -1;
		}
		for (i = 0; numeric[i] != NULL; i++) {
			if (strcmp(kv->key, numeric[i]) == 0)
				break;
		}
		if (numeric[i] != NULL && parse_int64(kv->value, INT64_MIN, INT64_MAX, &n) == 0)
			json_object_object_add(o, kv->key, json_object_new_int64(n));
		else
			json_object_object_add(o, kv->key, json_object_new_string(kv->value));
	}
	evhttp_clear_headers(&params);
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

/* The client's address without its port (for rate-limited log lines): "unix" for those. */
static const char *
http_host(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct sockaddr *sa = evcon != NULL ? evhttp_connection_get_addr(evcon) : NULL;
	char *addr = NULL;
	ev_uint16_t port = 0;

	if (sa == NULL || sa->sa_family == AF_UNIX)
		return "unix";
	evhttp_connection_get_peer(evcon, &addr, &port);
	return addr != NULL ? addr : "unknown";
}

/* The bearer token of the request, or NULL (401 sent). */
static struct token *
http_auth(struct http *h, struct evhttp_request *req, const char *addr)
{
	const char *a = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	struct token *t = NULL;
	unsigned long n;
	size_t len;

	if (a != NULL && strncasecmp(a, "Bearer ", 7) == 0) {
		a += 7;
		while (*a == ' ')
			a++;
		len = strlen(a);
		while (len > 0 && a[len - 1] == ' ')
			len--;
		t = tokens_find(h->tokens, a, len);
	}
	if (t != NULL)
		return t;
	/* One line a second for an address: a flood of bad tokens does not flood the log. */
	if (http_log_allowed(a == NULL ? "401 none" : "401 bad", http_host(req), &n))
		log_warn("HTTP request with %s token from %s: 401%s", a == NULL ? "no" : "a bad",
		    addr, http_log_more(n));
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
	    "Bearer realm=\"wpe-purged\"");
	http_error(req, 401, "unauthorized", a == NULL ? "this API needs a token: "
	    "Authorization: Bearer TOKEN" : "the token is not valid");
	return NULL;
}

static void
http_method_not_allowed(struct evhttp_request *req, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
	http_error(req, 405, "method_not_allowed", "this method is not allowed here");
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

static void
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

static void
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

static void
http_jobs(struct http *h, struct evhttp_request *req, const struct token *t,
    const char *query)
{
	static const char *const numeric[] = { "after", "limit", NULL };
	struct proto_request pr;
	struct http_sees sees;
	json_object *q, *o;
	const char *code, *dup, *s;
	char *cause;
	size_t len;
	int rc;

	if (http_query_object(query, numeric, &q, &dup) != 0) {
		json_object_put(q);
		http_error(req, 400, "duplicate_field", "a query parameter appears more than "
		    "once, or the query is malformed");
		return;
	}
	s = json_object_to_json_string_length(q, JSON_C_TO_STRING_PLAIN, &len);
	rc = proto_body_parse(s, len, OP_LIST, &pr, &code, &cause);
	json_object_put(q);
	if (rc != 0) {
		http_error(req, 400, code, cause);
		free(cause);
		return;
	}
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
static void
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
static void
http_installs(struct http *h, struct evhttp_request *req, const struct token *t,
    const struct ops_caller *c, const char *who, const char *query)
{
	static const char *const numeric[] = { "limit", NULL };
	struct proto_request pr;
	struct hreq *hr;
	json_object *q, *v;
	const char *code, *dup, *s;
	char *cause;
	size_t len;
	int rc;

	if (http_query_object(query, numeric, &q, &dup) != 0) {
		json_object_put(q);
		http_error(req, 400, "duplicate_field", "a query parameter appears more than "
		    "once, or the query is malformed");
		return;
	}
	/* refresh=1|true|0|false, as a JSON boolean for the decoder */
	if (json_object_object_get_ex(q, "refresh", &v)) {
		s = json_object_get_string(v);
		if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
			json_object_object_add(q, "refresh", json_object_new_boolean(1));
		else if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
			json_object_object_add(q, "refresh", json_object_new_boolean(0));
	}
	s = json_object_to_json_string_length(q, JSON_C_TO_STRING_PLAIN, &len);
	rc = proto_body_parse(s, len, OP_INSTALLS, &pr, &code, &cause);
	json_object_put(q);
	if (rc != 0) {
		http_error(req, 400, code, cause);
		free(cause);
		return;
	}
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

/* The client's address for logs: "192.0.2.1", "[2001:db8::1]" or "unix". */
static void
http_peer(struct evhttp_request *req, char *buf, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct sockaddr *sa = evcon != NULL ? evhttp_connection_get_addr(evcon) : NULL;
	char *addr = NULL;
	ev_uint16_t port = 0;

	if (sa == NULL || sa->sa_family == AF_UNIX) {
		snprintf(buf, len, "unix");
		return;
	}
	evhttp_connection_get_peer(evcon, &addr, &port);
	if (addr == NULL)
		snprintf(buf, len, "unknown");
	else if (strchr(addr, ':') != NULL)
		snprintf(buf, len, "[%s]:%u", addr, (unsigned)port);
	else
		snprintf(buf, len, "%s:%u", addr, (unsigned)port);
}

static void
http_healthz(struct http *h, struct evhttp_request *req)
{
	json_object *st;

	/* Unhealthy while the store refuses writes: broken, or its last write failed. */
	if (!ops_healthy(h->q)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
		    HTTP_STORAGE_RETRY);
		http_error(req, 503, "storage", "the queue database is refusing writes");
		return;
	}
	st = json_object_new_object();
	json_object_object_add(st, "ok", json_object_new_boolean(1));
	http_send(req, 200, st);
}

/* GET /metrics: OpenMetrics when the scraper asks for it, else Prometheus text 0.0.4. */
static void
http_metrics(struct http *h, struct evhttp_request *req)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Accept");
	int om = accept != NULL && strstr(accept, "application/openmetrics-text") != NULL;
	struct evbuffer *b = evbuffer_new();
	size_t len;
	char *text;

	if (b == NULL)
		fatalx("out of memory");
	text = metrics_render(h->q, server_connections(h->srv) + h->nconns, om, &len);
	evbuffer_add(b, text, len);
	free(text);
	evhttp_remove_header(hdr, "Content-Type");
	evhttp_add_header(hdr, "Content-Type", om ?
	    "application/openmetrics-text; version=1.0.0; charset=utf-8" :
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_add_header(hdr, "Cache-Control", "no-store");
	http_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/*
 * Request smuggling: evhttp 2.1 takes the first of several Content-Length headers and
 * reads "Transfer-Encoding: gzip, chunked" as no chunking. A proxy in front may frame
 * such a request otherwise, so what follows the body could be read as another request:
 * refuse it (400) and close the connection, unread. 1 when answered.
 */
static int
http_framing_bad(struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	int cl = 0, te = 0, chunked = 0;
	const char *msg;

	TAILQ_FOREACH(kv, in, next) {
		if (strcasecmp(kv->key, "Content-Length") == 0)
			cl++;
		else if (strcasecmp(kv->key, "Transfer-Encoding") == 0) {
			te++;
			chunked = strcasecmp(kv->value, "chunked") == 0;
		}
	}
	if (cl > 1)
		msg = "more than one Content-Length header";
	else if (te > 1 || (te == 1 && !chunked))
		msg = "the only Transfer-Encoding taken is one \"chunked\"";
	else if (te == 1 && cl == 1)
		msg = "both Content-Length and Transfer-Encoding";
	else
		return 0;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	http_error(req, 400, "bad_request", msg);
	return 1;
}

/* Every request: route, authenticate, rate-cap, answer (now or later). */
void
http_request(struct evhttp_request *req, void *arg)
{
	struct http *h = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
	struct ops_caller c;
	struct token *t;
	char addr[80], who[160], retry[24];
	int64_t id, ms;
	int get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;

	hconn_request(h, req);
	if (http_framing_bad(req))
		return;
	if (path == NULL || *path == '\0')
		path = "/";
	if (strcmp(path, "/healthz") == 0) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else
			http_healthz(h, req);
		return;
	}
	if (strcmp(path, "/metrics") == 0 && !h->cfg->metrics_auth) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else
			http_metrics(h, req);
		return;
	}
	if (strncmp(path, "/v1/", 4) != 0 && strcmp(path, "/metrics") != 0) {
		http_error(req, 404, "not_found", "no such endpoint (see docs/http.md)");
		return;
	}
	http_peer(req, addr, sizeof addr);
	if ((t = http_auth(h, req, addr)) == NULL)
		return;
	snprintf(who, sizeof who, "token %s (%s)", t->name, addr);
	if ((ms = tokens_take(t, clock_mono_ms())) > 0) {
		log_info("HTTP %s: over its rate (%lld/s): 429", who, (long long)t->rate);
		snprintf(retry, sizeof retry, "%lld", (long long)((ms + 999) / 1000));
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", retry);
		http_error(req, 429, "rate_limited", "this token is over its request rate; "
		    "retry after the Retry-After seconds");
		return;
	}
	memset(&c, 0, sizeof c);
	c.uid = (uid_t)-1;
	c.admin = t->admin;
	c.requester = t->requester;
	c.name = who;
	log_debug("HTTP %s %s from %s", m == EVHTTP_REQ_POST ? "POST" : m == EVHTTP_REQ_DELETE ?
	    "DELETE" : get ? "GET" : "other", path, who);

	if (strcmp(path, "/metrics") == 0) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else if (!t->admin)
			http_error(req, 403, "forbidden", "/metrics needs an admin token (or "
			    "metrics_auth = no)");
		else
			http_metrics(h, req);
		return;
	}
	if (strcmp(path, "/v1/purges") == 0) {
		if (m != EVHTTP_REQ_POST)
			http_method_not_allowed(req, "POST");
		else
			http_purges_post(h, req, t, &c, who, query);
		return;
	}
	if (strncmp(path, "/v1/purges/", 11) == 0) {
		const char *p = path + 11, *slash = strchr(p, '/');
		char num[24];

		if (slash != NULL && strcmp(slash, "/requeue") == 0 &&
		    (size_t)(slash - p) < sizeof num) {
			memcpy(num, p, (size_t)(slash - p));
			num[slash - p] = '\0';
			if (*p < '1' || *p > '9' || parse_int64(num, 1, INT64_MAX, &id) != 0)
				http_error(req, 404, "not_found", "no such request");
			else if (m != EVHTTP_REQ_POST)
				http_method_not_allowed(req, "POST");
			else
				http_requeue(h, req, t, &c, who, id);
			return;
		}
		if (*p < '1' || *p > '9' || parse_int64(p, 1, INT64_MAX, &id) != 0) {
			http_error(req, 404, "not_found", "no such request");
			return;
		}
		http_purge_id(h, req, t, &c, who, id, query);
		return;
	}
	if (strcmp(path, "/v1/jobs") == 0) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else
			http_jobs(h, req, t, query);
		return;
	}
	if (strcmp(path, "/v1/installs") == 0) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else
			http_installs(h, req, t, &c, who, query);
		return;
	}
	if (strcmp(path, "/v1/stats") == 0) {
		if (!get)
			http_method_not_allowed(req, "GET");
		else
			http_send_ops(req, ops_stats(h->q, server_connections(h->srv) +
			    h->nconns));
		return;
	}
	if (strcmp(path, "/v1/pause") == 0 || strcmp(path, "/v1/resume") == 0) {
		int pause = strcmp(path, "/v1/pause") == 0;

		if (m != EVHTTP_REQ_POST) {
			http_method_not_allowed(req, "POST");
			return;
		}
		if (!t->admin) {
			http_error(req, 403, "forbidden", "pause and resume need an admin token");
			return;
		}
		log_notice("%s from %s", pause ? "pause" : "resume", who);
		http_send_ops(req, ops_pause(h->q, pause));
		return;
	}
	http_error(req, 404, "not_found", "no such endpoint (see docs/http.md)");
}

