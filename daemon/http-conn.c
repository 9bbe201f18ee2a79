/* http-conn.c: HTTP connections: counting them all, max_connections, request deadlines. */
#include "compat.h"
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/util.h>

#include "http-int.h"
#include "util.h"

/*
 * evhttp's own timeout (evhttp_set_timeout) is a gap timer that restarts on every byte,
 * so a client trickling a header byte every few seconds would hold its connection
 * forever. Each connection gets a deadline of its own, by phase:
 *
 *   HEAD  from the accept (or the first byte after a keep-alive pause) to the end of the
 *         headers: header_timeout
 *   BODY  from the end of the headers to the end of the body: body_timeout
 *   BUSY  the request is ours (answered now or later, a long-poll): no deadline
 *   IDLE  from the end of an answer to the next request's first byte: idle_timeout
 *
 * libevent 2.1 has no hook for a new request (evhttp_set_newreqcb is 2.2's) and a
 * header callback only on a request it does not show before the body is read, so the
 * phases are followed on the connection's input buffer: its first byte after IDLE starts
 * HEAD; evhttp takes each line out of it with evbuffer_readln, which drains the line and
 * then its CRLF (or LF), so two drains of at most 2 bytes in a row are the empty line
 * that ends the head. A client can fake that only with a header line of 1 or 2 bytes
 * ("a:"), which only moves it to the body deadline earlier: no request takes longer
 * than header_timeout + body_timeout in all.
 * At the deadline the connection is failed as evhttp fails one on its own read timeout
 * (a BEV_EVENT_TIMEOUT on its bufferevent): closed without an answer.
 *
 * The connection is found from its bufferevent (made by http_bevcb) and followed to its
 * end through evhttp's close callback, set once the evhttp_connection exists (just after
 * the accept). Until then a reference on the bufferevent keeps it valid.
 */

static void hconn_answered(struct evhttp_request *, void *);

static uint64_t
hconn_hash(const struct bufferevent *bev)
{
	return htab_hash_u64((uint64_t)(uintptr_t)bev);
}

static struct hconn *
hconn_find(struct http *h, const struct bufferevent *bev)
{
	struct hnode *n;

	for (n = htab_first(&h->conns, hconn_hash(bev)); n != NULL; n = htab_next(n)) {
		struct hconn *hc = (struct hconn *)((char *)n - offsetof(struct hconn, node));

		if (hc->bev == bev)
			return hc;
	}
	return NULL;
}

/* The phase's deadline, from now. */
static void
hconn_deadline(struct hconn *hc)
{
	struct timeval tv = { 0, 0 };
	const struct config *cfg = hc->h->cfg;

	hc->held = 0;
	switch (hc->phase) {
	case HC_HEAD:
		tv.tv_sec = (time_t)cfg->http_header_timeout;
		break;
	case HC_BODY:
		tv.tv_sec = (time_t)cfg->http_body_timeout;
		break;
	case HC_IDLE:
		tv.tv_sec = (time_t)cfg->http_idle_timeout;
		break;
	case HC_BUSY:
		event_del(hc->ev);
		return;
	}
	if (hc->attached)
		event_add(hc->ev, &tv);
}

static void
hconn_arm(struct hconn *hc, enum hconn_phase phase)
{
	hc->phase = phase;
	hc->drains = 0;
	hc->prev_small = 0;
	hconn_deadline(hc);
}

static void
hconn_free(struct hconn *hc)
{
	struct http *h = hc->h;

	htab_remove(&h->conns, &hc->node);
	event_free(hc->ev);
	h->nconns--;
	free(hc);
}

/* evhttp frees the connection: whatever is owed on it is dropped, and it is uncounted. */
static void
hconn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct hconn *hc = arg;

	(void)evcon;
	if (hc->hr != NULL)
		hreq_closed(hc->hr);
	evbuffer_remove_cb_entry(bufferevent_get_input(hc->bev), hc->input_cb);
	hconn_free(hc);
}

/* The client's address for logs: "192.0.2.1", "2001:db8::1" or "unix". */
static void
hconn_addr(const struct hconn *hc, char *buf, size_t len)
{
	const struct sockaddr *sa = evhttp_connection_get_addr(hc->evcon);
	char *addr = NULL;
	ev_uint16_t port = 0;

	if (sa == NULL || sa->sa_family == AF_UNIX) {
		snprintf(buf, len, "unix");
		return;
	}
	evhttp_connection_get_peer(hc->evcon, &addr, &port);
	snprintf(buf, len, "%s", addr != NULL ? addr : "unknown");
}

/* Fail the connection as evhttp's own read timeout does: it is freed at once. */
static void
hconn_drop(struct hconn *hc)
{
	bufferevent_trigger_event(hc->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
}

/* Over max_connections: a 503 written straight to a plain socket, then closed. */
static void
hconn_refuse(struct hconn *hc)
{
	static const char body[] = "{\"ok\":false,\"error\":\"too_many_connections\","
	    "\"message\":\"the server is at max_connections; try again\"}\n";
	char answer[512], addr[64];
	unsigned long n;
	int len;
	evutil_socket_t fd = bufferevent_getfd(hc->bev);

	if (hc->h->ctx == NULL && fd != -1) {
		len = snprintf(answer, sizeof answer, "HTTP/1.1 503 Service Unavailable\r\n"
		    "Content-Type: application/json\r\nCache-Control: no-store\r\n"
		    "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
		    sizeof body - 1, body);
		(void)send(fd, answer, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	hconn_addr(hc, addr, sizeof addr);
	if (http_log_allowed("max", addr, &n))
		log_warn("HTTP: a connection from %s refused: %d open, the most max_connections "
		    "allows%s", addr, hc->h->nconns - 1, http_log_more(n));
	hconn_drop(hc);
}

static int hconn_attach(struct hconn *, int may_refuse);

static void
hconn_timer(evutil_socket_t fd, short events, void *arg)
{
	struct hconn *hc = arg;
	char addr[64];
	unsigned long n;

	(void)fd;
	(void)events;
	if (!hc->attached) {
		(void)hconn_attach(hc, 1);
		return;
	}
	if (hc->phase == HC_BUSY)
		return;
	/*
	 * Answers still on their way to the client (in the TLS thread, evhttp was told they
	 * were written): the deadline starts once the kernel has them all, as on a plain
	 * socket, whose answer is written only then. Nothing is read meanwhile.
	 */
	if (hc->tls != NULL && htls_unsent(hc->tls)) {
		struct timeval tv = { 0, 100000 };

		hc->held = 1;
		event_add(hc->ev, &tv);
		return;
	}
	if (hc->held) {
		hconn_deadline(hc);
		return;
	}
	hconn_addr(hc, addr, sizeof addr);
	if (hc->phase != HC_IDLE && http_log_allowed("slow", addr, &n))
		log_info("HTTP client %s: %s not complete within %llds: connection closed%s",
		    addr, hc->phase == HC_HEAD ? "request headers" : "request body",
		    (long long)(hc->phase == HC_HEAD ? hc->h->cfg->http_header_timeout :
		    hc->h->cfg->http_body_timeout), http_log_more(n));
	hconn_drop(hc);
}

/* The connection's input: a first byte starts a request, the empty line ends its head. */
static void
hconn_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hconn *hc = arg;

	(void)buf;
	if (hc->phase == HC_IDLE && info->n_added > 0)
		hconn_arm(hc, HC_HEAD);
	else if (hc->phase == HC_HEAD && info->n_deleted > 0) {
		/* evhttp drains a line, then its CRLF: two short drains are the empty line. */
		int small = info->n_deleted <= 2;

		if (small && hc->prev_small && hc->drains > 0)
			hconn_arm(hc, HC_BODY);
		else {
			hc->prev_small = small;
			hc->drains++;
		}
	}
}

/*
 * The evhttp_connection now exists (evhttp passes it as its bufferevent's callback
 * argument): follow it to its end, or find it already gone. -1: it is gone (freed).
 */
static int
hconn_attach(struct hconn *hc, int may_refuse)
{
	bufferevent_event_cb eventcb = NULL;
	void *cbarg = NULL;

	hc->attached = 1;
	bufferevent_getcb(hc->bev, NULL, NULL, &eventcb, &cbarg);
	if (eventcb == NULL || cbarg == NULL) {
		/* Freed by evhttp already (a failed accept, a client gone at once). */
		evbuffer_remove_cb_entry(bufferevent_get_input(hc->bev), hc->input_cb);
		event_del(hc->ev);
		bufferevent_decref(hc->bev);
		hconn_free(hc);
		return -1;
	}
	hc->evcon = cbarg;
	if (evhttp_connection_get_bufferevent(hc->evcon) != hc->bev)
		fatalx("HTTP: evhttp's connection is not where libevent 2.1 keeps it");
	evhttp_connection_set_closecb(hc->evcon, hconn_closed, hc);
	bufferevent_decref(hc->bev);       /* the connection holds it now */
	if (hc->refused && may_refuse) {
		hconn_refuse(hc);
		return -1;
	}
	if (hc->phase != HC_BUSY)
		hconn_arm(hc, hc->phase);
	return 0;
}

/* A new connection's bufferevent (http_bevcb): counted and timed from now. */
struct hconn *
hconn_new(struct http *h, struct bufferevent *bev)
{
	struct hconn *hc = xcalloc(1, sizeof *hc);

	hc->h = h;
	hc->bev = bev;
	hc->phase = HC_HEAD;
	hc->refused = h->nconns >= h->max_conns;
	h->nconns++;
	bufferevent_incref(bev);           /* until hconn_attach */
	if ((hc->ev = event_new(h->base, -1, 0, hconn_timer, hc)) == NULL ||
	    event_priority_set(hc->ev, 0) != 0 ||
	    (hc->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), hconn_input,
	    hc)) == NULL)
		fatalx("out of memory");
	htab_insert(&h->conns, &hc->node, hconn_hash(bev));
	/* evhttp makes the connection when this returns; attach right after. */
	event_active(hc->ev, 0, 0);
	return hc;
}

struct hconn *
hconn_of(struct http *h, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	return evcon == NULL ? NULL : hconn_find(h, evhttp_connection_get_bufferevent(evcon));
}

/* A request is complete and ours now: no deadline until its answer is written. */
/*
 * Will evhttp keep the connection once this request is answered? What libevent 2.1's
 * evhttp_send_done decides from the request: HTTP/1.0 only with "Connection:
 * keep-alive", never with "Connection: close". No for what it treats apart: a request
 * in absolute form to a host that is not ours (a proxy request, always closed: its
 * answer carries no Connection header) and CONNECT. An answer's own "Connection: close"
 * is found by the transport in its head.
 */
static int
hconn_keeps(struct evhttp_request *req)
{
	const char *c = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Connection");

	if ((req->flags & EVHTTP_PROXY_REQUEST) || req->type == EVHTTP_REQ_CONNECT)
		return 0;
	if (c != NULL && evutil_ascii_strcasecmp(c, "close") == 0)
		return 0;
	if (req->major < 1 || (req->major == 1 && req->minor < 1))
		return c != NULL && evutil_ascii_strcasecmp(c, "keep-alive") == 0;
	return 1;
}

struct hconn *
hconn_request(struct http *h, struct evhttp_request *req)
{
	struct hconn *hc = hconn_of(h, req);

	/* Attached before any byte is read (a first-priority event after the accept). */
	if (hc == NULL)
		fatalx("HTTP: a request on a connection that is not followed");
	if (!hc->attached) {
		event_del(hc->ev);
		/* Its connection is alive (this request is on it): it cannot be gone. */
		if (hconn_attach(hc, 0) != 0)
			fatalx("HTTP: a request on a connection already freed");
	}
	hconn_arm(hc, HC_BUSY);
	evhttp_request_set_on_complete_cb(req, hconn_answered, hc);
	if (hc->tls != NULL)
		htls_expect(hc->tls, hconn_keeps(req));
	return hc;
}

/* Its answer is written: the connection waits for the next request (keep-alive). */
static void
hconn_answered(struct evhttp_request *req, void *arg)
{
	struct hconn *hc = arg;

	(void)req;
	/* Pipelined bytes already read start the next request's head now. */
	hconn_arm(hc, evbuffer_get_length(bufferevent_get_input(hc->bev)) > 0 ? HC_HEAD :
	    HC_IDLE);
}

/* http_free: connections evhttp_free did not report (freed before they were attached). */
static void
hconn_sweep(struct hnode *n, void *arg)
{
	struct hconn *hc = (struct hconn *)((char *)n - offsetof(struct hconn, node));

	(void)arg;
	if (!hc->attached) {
		evbuffer_remove_cb_entry(bufferevent_get_input(hc->bev), hc->input_cb);
		bufferevent_decref(hc->bev);
	}
	hconn_free(hc);
}

void
hconn_free_all(struct http *h)
{
	htab_foreach(&h->conns, hconn_sweep, NULL);
	htab_free(&h->conns);
}
