/* http-routes.c: HTTP requests: routing, bearer tokens, rate caps, health and metrics. */
#include "compat.h"
#include <sys/socket.h>

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

void
http_method_not_allowed(struct evhttp_request *req, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
	http_error(req, 405, "method_not_allowed", "this method is not allowed here");
}

/* The client's address and port for logs: "192.0.2.1:4711", "[2001:db8::1]:4711", "unix". */
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
	char who[160], retry[24];
	int64_t id, ms;
	int get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
	struct hconn *hc = hconn_request(h, req);
	const char *addr = hc->peer;

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
	if (hc->peer[0] == '\0')
		http_peer(req, hc->peer, sizeof hc->peer);
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
