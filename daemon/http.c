/* http.c: the HTTP(S) API (docs/http.md) on libevent's evhttp: tokens, scopes, long-polls. */
#include "compat.h"
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http.h"
#include "metrics.h"
#include "ops.h"
#include "proto.h"
#include "util.h"

#define HTTP_MAX_HEADERS (16 * 1024)
#define HTTP_MAX_BODY (64 * 1024)
#define HTTP_TIMEOUT 10          /* seconds: header and body reads, idle keep-alive */
#define HTTP_STORAGE_RETRY "5"   /* Retry-After for 503 storage */
#define HTTP_FULL_RETRY "30"     /* Retry-After for 503 queue_full */

struct http {
	struct event_base *base;
	const struct config *cfg;
	struct queue *q;
	struct server *srv;
	struct evhttp *eh;
	struct evhttp_bound_socket *bound;
	struct evconnlistener *listener;
	int listening;               /* the listener is enabled */
	int stopped;
	char *unix_path;             /* we bound it: unlink at the end */
	SSL_CTX *ctx;                /* for new connections; each SSL holds a reference */
	struct tokens *tokens;
	int nconns;                  /* TLS connections open (see http_ssl_gone) */
	int64_t max_conns;
};

/*
 * A request answered later: an enqueue waits for its group commit, a long-poll for its
 * request to finish. The queue's callbacks only store the answer and wake done_ev; the
 * reply goes out from there. If the client's connection goes first (http_closed), the
 * waiter is cancelled and the owed enqueue answer forgotten; the request object belongs
 * to the connection and is never touched again.
 */
struct hreq {
	struct http *h;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	struct event *done_ev;
	struct event *gone_ev;       /* the peer hung up while we owe the answer */
	int gone_fd;                 /* its own dup of the socket */
	struct waiter *waiter;
	json_object *answer;         /* stored by a callback, sent by http_done */
	int owed;                    /* an enqueue answer is owed */
	int waiting;                 /* a wait answer is owed */
	int post;                    /* POST /v1/purges (202 / 200 and Location) */
	int64_t wait_ms;             /* POST ?wait=: wait after the enqueue; -1: no */
	int64_t id;
	struct ops_caller caller;
	char who[160];               /* "token NAME (ADDRESS)" */
};

static int http_ssl_index = -1;
/* The one live http: a connection's SSL may be finalized after http_free. */
static struct http *http_live;

/* Answers ----------------------------------------------------------------------------- */

static const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/* Send one JSON answer (taking o) with status; never an HTML page. */
static void
http_send(struct evhttp_request *req, int status, json_object *o)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evbuffer_new();
	const char *s;
	size_t len;

	if (b == NULL)
		fatalx("out of memory");
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	evbuffer_add(b, s, len);
	evbuffer_add(b, "\n", 1);
	json_object_put(o);
	evhttp_remove_header(hdr, "Content-Type");
	evhttp_add_header(hdr, "Content-Type", "application/json");
	evhttp_add_header(hdr, "Cache-Control", "no-store");
	evhttp_send_reply(req, status, http_reason(status), b);
	evbuffer_free(b);
}

static void
http_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
	http_send(req, status, proto_error(code, msg));
}

/* The HTTP status of an ops answer: 200 for success, else by its error code. */
static int
http_status_of(json_object *o, const char **retry)
{
	json_object *v;
	const char *code;

	*retry = NULL;
	if (json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v))
		return 200;
	if (!json_object_object_get_ex(o, "error", &v))
		return 500;
	code = json_object_get_string(v);
	if (strcmp(code, "not_found") == 0)
		return 404;
	if (strcmp(code, "forbidden") == 0)
		return 403;
	if (strcmp(code, "finished") == 0 || strcmp(code, "idempotency_conflict") == 0)
		return 409;
	if (strcmp(code, "storage") == 0) {
		*retry = HTTP_STORAGE_RETRY;
		return 503;
	}
	if (strcmp(code, "queue_full") == 0) {
		*retry = HTTP_FULL_RETRY;
		return 503;
	}
	return 400;
}

static void
http_send_ops(struct evhttp_request *req, json_object *o)
{
	const char *retry;
	int status = http_status_of(o, &retry);

	if (retry != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", retry);
	http_send(req, status, o);
}

static const char *
http_answer_install(json_object *o)
{
	json_object *v;

	if (json_object_object_get_ex(o, "install", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static int
http_answer_ok(json_object *o)
{
	json_object *v;

	return json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

static const char *
http_answer_state(json_object *o)
{
	json_object *v;

	if (json_object_object_get_ex(o, "state", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "";
}

/* Asynchronous answers ------------------------------------------------------------------ */

static void
hreq_free(struct hreq *hr)
{
	if (hr->waiter != NULL)
		ops_wait_cancel(hr->h->q, hr->waiter);
	if (hr->owed)
		ops_forget(hr->h->q, hr);
	if (hr->answer != NULL)
		json_object_put(hr->answer);
	event_free(hr->done_ev);
	if (hr->gone_ev != NULL) {
		event_free(hr->gone_ev);
		close(hr->gone_fd);
	}
	free(hr);
}

/* The client's connection is being freed, with its request: nothing is sent any more. */
static void
http_closed(struct evhttp_connection *evcon, void *arg)
{
	struct hreq *hr = arg;

	(void)evcon;
	log_debug("HTTP client %s went away before its answer", hr->who);
	hreq_free(hr);
}

/*
 * The peer closed its side while its answer is owed. evhttp reads nothing while a
 * request is handled, so it would not notice before the answer: free the connection now
 * (http_closed then drops the wait), so a long-poll costs nothing once its client left.
 */
static void
http_gone(evutil_socket_t fd, short events, void *arg)
{
	struct hreq *hr = arg;
	struct pollfd pfd;

	(void)events;
	pfd.fd = fd;
	pfd.events = POLLRDHUP;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0)
		evhttp_connection_free(hr->evcon);
}

/*
 * Watch for the hang-up on a dup of the socket, edge-triggered (libevent cannot mix
 * edge- and level-triggered events on one descriptor; pipelined data must not spin
 * it): each edge, poll says whether the peer shut its side (RDHUP). Without a spare
 * descriptor there is no watch: the wait's end frees it.
 */
static void
hreq_watch(struct hreq *hr)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(hr->evcon);
	int fd = bev != NULL ? bufferevent_getfd(bev) : -1;

	if (fd == -1)
		return;
	if ((hr->gone_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1)
		return;
	hr->gone_ev = event_new(hr->h->base, hr->gone_fd, EV_READ | EV_ET | EV_PERSIST,
	    http_gone, hr);
	if (hr->gone_ev == NULL || event_add(hr->gone_ev, NULL) != 0) {
		if (hr->gone_ev != NULL)
			event_free(hr->gone_ev);
		hr->gone_ev = NULL;
		close(hr->gone_fd);
	}
}

static void
hreq_answer(void *arg, json_object *o)
{
	struct hreq *hr = arg;

	if (hr->answer != NULL)
		json_object_put(hr->answer);
	hr->answer = o;
	event_active(hr->done_ev, 0, 0);
}

static void
hreq_enqueued(void *arg, json_object *o)
{
	struct hreq *hr = arg;

	hr->owed = 0;
	hreq_answer(hr, o);
}

static void
hreq_waited(void *arg, json_object *o)
{
	struct hreq *hr = arg;

	hr->waiting = 0;
	hr->waiter = NULL;
	hreq_answer(hr, o);
}

/* Start a long-poll on hr->id; the answer comes through hreq_waited (perhaps at once). */
static void
hreq_wait(struct hreq *hr, int64_t ms)
{
	struct waiter *w;

	hr->waiting = 1;
	w = ops_wait(hr->h->q, hr->id, ms, &hr->caller, hreq_waited, hr);
	if (hr->waiting)
		hr->waiter = w;
}

/* Reply with hr's answer, or carry on (an enqueue that is to be waited for). */
static void
http_done(evutil_socket_t fd, short events, void *arg)
{
	struct hreq *hr = arg;
	struct evhttp_request *req = hr->req;
	json_object *o = hr->answer;
	char loc[64];
	int status;

	(void)fd;
	(void)events;
	if (o == NULL || hr->owed || hr->waiting)
		return;
	hr->answer = NULL;
	if (hr->post && http_answer_ok(o) && hr->id == 0) {
		json_object *v;

		if (json_object_object_get_ex(o, "id", &v))
			hr->id = json_object_get_int64(v);
		if (hr->wait_ms >= 0) {
			json_object_put(o);
			hreq_wait(hr, hr->wait_ms);
			return;
		}
	}
	if (hr->post && hr->id > 0) {
		snprintf(loc, sizeof loc, "/v1/purges/%lld", (long long)hr->id);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Location", loc);
	}
	evhttp_connection_set_closecb(hr->evcon, NULL, NULL);
	if (hr->id > 0 && !http_answer_ok(o)) {
		json_object *v;

		/* A wait that ran out: 202 and the request's status as it is now. */
		if (json_object_object_get_ex(o, "error", &v) &&
		    strcmp(json_object_get_string(v), "timeout") == 0) {
			json_object_put(o);
			o = ops_status(hr->h->q, hr->id, &hr->caller);
			if (!hr->post && http_answer_ok(o)) {
				http_send(req, 202, o);
				hreq_free(hr);
				return;
			}
		}
	}
	if (hr->post && http_answer_ok(o)) {
		const char *st = http_answer_state(o);

		status = hr->wait_ms >= 0 && (strcmp(st, "done") == 0 ||
		    strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) ? 200 : 202;
		http_send(req, status, o);
	} else
		http_send_ops(req, o);
	hr->waiter = NULL;
	hr->owed = 0;
	hreq_free(hr);
}

static struct hreq *
hreq_new(struct http *h, struct evhttp_request *req, const struct ops_caller *c,
    const char *who)
{
	struct hreq *hr = xcalloc(1, sizeof *hr);

	hr->h = h;
	hr->req = req;
	hr->evcon = evhttp_request_get_connection(req);
	hr->caller = *c;
	snprintf(hr->who, sizeof hr->who, "%s", who);
	hr->caller.name = hr->who;
	hr->wait_ms = -1;
	if ((hr->done_ev = event_new(h->base, -1, 0, http_done, hr)) == NULL)
		fatalx("out of memory");
	evhttp_connection_set_closecb(hr->evcon, http_closed, hr);
	hreq_watch(hr);
	return hr;
}

/* Requests ----------------------------------------------------------------------------- */

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

/* The bearer token of the request, or NULL (401 sent). */
static struct token *
http_auth(struct http *h, struct evhttp_request *req, const char *addr)
{
	const char *a = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	struct token *t = NULL;
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
	log_warn("HTTP request with %s token from %s: 401", a == NULL ? "no" : "a bad", addr);
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

/* Is this status object's install outside the token's scope? Then it does not exist. */
static int
http_hidden(const struct token *t, json_object *o)
{
	const char *in = http_answer_install(o);

	return http_answer_ok(o) && in != NULL && !tokens_install_allowed(t, in);
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
	const char *code, *idem;
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
	/* The Idempotency-Key header (wpe-purgectl --url sends it): the body's field's. */
	if ((idem = evhttp_find_header(in, "Idempotency-Key")) != NULL) {
		if (!proto_idem_key_valid(idem, strlen(idem)) || (pr.idem_key[0] != '\0' &&
		    strcmp(pr.idem_key, idem) != 0)) {
			proto_request_free(&pr);
			http_error(req, 400, "bad_value", "the Idempotency-Key header must be 1 to "
			    "128 printable ASCII characters without blanks, and the body's "
			    "idempotency_key, if any, the same");
			return;
		}
		memcpy(pr.idem_key, idem, strlen(idem) + 1);
	}
	if (!tokens_install_allowed(t, pr.install) || !tokens_type_allowed(t, pr.type)) {
		log_warn("HTTP %s: %s purge of %s refused: outside the token's scope", who,
		    purge_type_name(pr.type), pr.install);
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
	if (http_hidden(t, o)) {
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

static int
http_token_sees(const void *arg, const char *install)
{
	return tokens_install_allowed(arg, install);
}

static void
http_jobs(struct http *h, struct evhttp_request *req, const struct token *t,
    const char *query)
{
	static const char *const numeric[] = { "after", "limit", NULL };
	struct proto_request pr;
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
	if (pr.has_install && !tokens_install_allowed(t, pr.install)) {
		proto_request_free(&pr);
		http_error(req, 403, "forbidden", "this token may not see that install");
		return;
	}
	/*
	 * A token limited to some installs sees only theirs: filtered before the page is
	 * cut, so "total" and "next" say nothing about the others.
	 */
	o = t->installs != NULL && !pr.has_install ?
	    ops_list_visible(h->q, &pr, http_token_sees, t) :
	    ops_list(h->q, &pr);
	proto_request_free(&pr);
	http_send_ops(req, o);
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
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* Every request: route, authenticate, rate-cap, answer (now or later). */
static void
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
		const char *p = path + 11;

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

/* TLS --------------------------------------------------------------------------------- */

static void
http_tls_error(const char *what, const char *path, char **cause)
{
	char buf[256];
	unsigned long e = ERR_get_error();

	ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	xasprintf(cause, "%s %s: %s", what, path, e != 0 ? buf : "unusable");
}

/* A server context for cert and key: TLS 1.2 and 1.3, the system's cipher policy. */
static SSL_CTX *
http_tls_ctx(const char *cert, const char *key, char **cause)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		http_tls_error("TLS context for", cert, cause);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		http_tls_error("tls_cert", cert, cause);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		http_tls_error("tls_key", key, cause);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		http_tls_error("tls_key does not match tls_cert", cert, cause);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static void
http_listen_update(struct http *h)
{
	int want = !h->stopped && h->nconns < h->max_conns;

	if (h->listener == NULL || want == h->listening)
		return;
	if (want)
		evconnlistener_enable(h->listener);
	else {
		evconnlistener_disable(h->listener);
		if (!h->stopped)
			log_warn("HTTP: %d connections, the most max_connections allows: not "
			    "accepting more until one closes", h->nconns);
	}
	h->listening = want;
}

/* An SSL (so a TLS connection) is freed: one connection fewer. */
static void
http_ssl_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct http *h = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (h == NULL || h != http_live)
		return;
	h->nconns--;
	http_listen_update(h);
}

/* Each new connection's bufferevent: TLS with the context current now. */
static struct bufferevent *
http_bevcb(struct event_base *base, void *arg)
{
	struct http *h = arg;
	struct bufferevent *bev;
	SSL *ssl;

	if (h->ctx == NULL)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if ((ssl = SSL_new(h->ctx)) == NULL)
		fatalx("SSL_new failed");
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		fatalx("out of memory");
	/* Counted from here until the SSL is freed with its connection. */
	SSL_set_ex_data(ssl, http_ssl_index, h);
	h->nconns++;
	http_listen_update(h);
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* Setting up ---------------------------------------------------------------------------- */

static int
http_bind_unix(struct http *h, const char *path, char **cause)
{
	struct sockaddr_un sun;
	struct stat sb;
	mode_t old;
	int fd;

	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			xasprintf(cause, "[http] listen: %s exists and is not a socket", path);
			return -1;
		}
		unlink(path);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		xasprintf(cause, "socket: %s", strerror(errno));
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	old = umask(0117);   /* 0660: the proxy's group */
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1 || listen(fd, SOMAXCONN) == -1) {
		umask(old);
		xasprintf(cause, "[http] listen %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if ((h->bound = evhttp_accept_socket_with_handle(h->eh, fd)) == NULL) {
		xasprintf(cause, "[http] listen %s: cannot accept", path);
		close(fd);
		unlink(path);
		return -1;
	}
	h->unix_path = xstrdup(path);
	return 0;
}

struct http *
http_create(struct event_base *base, const struct config *cfg, struct queue *q,
    struct server *srv, struct tokens *ts, char **cause)
{
	struct http *h = xcalloc(1, sizeof *h);
	const struct listen_addr *la = &cfg->http_addr;

	h->base = base;
	h->cfg = cfg;
	h->q = q;
	h->srv = srv;
	h->tokens = ts;
	h->max_conns = cfg->http_max_conns;
	if (http_ssl_index == -1 &&
	    (http_ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, http_ssl_gone)) < 0)
		fatalx("SSL_get_ex_new_index failed");
	if (cfg->tls_cert != NULL &&
	    (h->ctx = http_tls_ctx(cfg->tls_cert, cfg->tls_key, cause)) == NULL)
		goto fail;
	if ((h->eh = evhttp_new(base)) == NULL)
		fatalx("evhttp_new failed");
	evhttp_set_max_headers_size(h->eh, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->eh, HTTP_MAX_BODY);
	evhttp_set_timeout(h->eh, HTTP_TIMEOUT);
	/* Every method evhttp knows reaches us, so a 405 is ours (JSON), not its page. */
	evhttp_set_allowed_methods(h->eh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(h->eh, "application/json");
	evhttp_set_gencb(h->eh, http_request, h);
	evhttp_set_bevcb(h->eh, http_bevcb, h);
	if (la->kind == LISTEN_UNIX) {
		if (http_bind_unix(h, la->path, cause) != 0)
			goto fail;
	} else if ((h->bound = evhttp_bind_socket_with_handle(h->eh, la->host,
	    (ev_uint16_t)la->port)) == NULL) {
		xasprintf(cause, "[http] listen %s: cannot bind (%s)", cfg->http_listen,
		    strerror(errno));
		goto fail;
	}
	h->listener = evhttp_bound_socket_get_listener(h->bound);
	if (la->kind != LISTEN_UNIX) {
		int one = 1;

		/*
		 * No Nagle: evhttp writes an answer's headers and body apart, and the second
		 * write would wait for the client's delayed ACK (40 ms a request on a
		 * keep-alive connection). Accepted sockets inherit it from the listener.
		 */
		(void)setsockopt(evhttp_bound_socket_get_fd(h->bound), IPPROTO_TCP, TCP_NODELAY,
		    &one, sizeof one);
	}
	h->listening = 1;
	http_live = h;
	log_notice("HTTP API on %s (%s, %zu token(s))", cfg->http_listen,
	    h->ctx != NULL ? "HTTPS" : "plain HTTP", ts->n);
	return h;
fail:
	if (h->eh != NULL)
		evhttp_free(h->eh);
	if (h->ctx != NULL)
		SSL_CTX_free(h->ctx);
	tokens_free(ts);
	free(h);
	return NULL;
}

void
http_reload(struct http *h, const struct config *nc)
{
	struct tokens *ts;
	SSL_CTX *ctx;
	char *cause = NULL;

	if ((ts = tokens_load(nc->tokens_file, &cause)) == NULL) {
		log_error("reload: keeping the %zu token(s) in use: %s", h->tokens->n, cause);
		free(cause);
		cause = NULL;
	} else {
		tokens_carry(ts, h->tokens);
		tokens_free(h->tokens);
		h->tokens = ts;
		log_notice("reload: %zu token(s) from %s", ts->n, nc->tokens_file);
	}
	if (h->ctx == NULL)
		return;
	if (nc->tls_cert == NULL) {
		log_error("reload: tls_cert and tls_key are gone from the configuration; "
		    "keeping the certificate in use (restart to change the listener)");
		return;
	}
	if ((ctx = http_tls_ctx(nc->tls_cert, nc->tls_key, &cause)) == NULL) {
		log_error("reload: keeping the certificate in use: %s", cause);
		free(cause);
		return;
	}
	/* New connections get the new one; open ones keep theirs (SSL holds a reference). */
	SSL_CTX_free(h->ctx);
	h->ctx = ctx;
	log_notice("reload: certificate and key from %s and %s", nc->tls_cert, nc->tls_key);
}

void
http_stop(struct http *h)
{
	h->stopped = 1;
	http_listen_update(h);
}

int
http_connections(const struct http *h)
{
	return h->nconns;
}

void
http_free(struct http *h)
{
	if (h == NULL)
		return;
	h->stopped = 1;
	h->listener = NULL;
	http_live = NULL;
	/* Frees every connection: their close callbacks cancel waits and enqueue answers. */
	evhttp_free(h->eh);
	if (h->unix_path != NULL) {
		unlink(h->unix_path);
		free(h->unix_path);
	}
	if (h->ctx != NULL)
		SSL_CTX_free(h->ctx);
	tokens_free(h->tokens);
	free(h);
}
