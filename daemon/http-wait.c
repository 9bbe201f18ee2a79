/* http-wait.c: HTTP answers sent later: enqueues owed their commit, long-polls, hang-ups. */
#include "compat.h"
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "http-int.h"
#include "util.h"

static void
hreq_free(struct hreq *hr)
{
	if (hr->waiter != NULL)
		ops_wait_cancel(hr->h->q, hr->waiter);
	if (hr->owed)
		ops_forget(hr->h->q, hr);
	if (hr->answer != NULL)
		json_object_put(hr->answer);
	tokens_scope_free(hr->scope);   /* after the waiter that could use it is gone */
	event_free(hr->done_ev);
	if (hr->gone_ev != NULL) {
		event_free(hr->gone_ev);
		close(hr->gone_fd);
	}
	free(hr);
}

/* The client's connection is being freed, with its request: nothing is sent any more. */
void
hreq_closed(struct hreq *hr)
{
	log_debug("HTTP client %s went away before its answer", hr->who);
	hreq_free(hr);
}

/*
 * The peer closed its side while its answer is owed. evhttp reads nothing while a
 * request is handled, so it would not notice before the answer: free the connection now
 * (hreq_closed then drops the wait), so a long-poll costs nothing once its client left.
 * Not before the TLS thread has sent the answers pipelined ahead of it (evhttp's free
 * shuts the socket): looked at again every 10 ms, for idle_timeout at most (a client that
 * half-closed and reads no more within it gets no more, as an idle one).
 */
static void
http_gone(evutil_socket_t fd, short events, void *arg)
{
	struct hreq *hr = arg;
	struct pollfd pfd;
	struct timeval tv = { 0, 10000 };

	(void)events;
	pfd.fd = fd;
	pfd.events = POLLRDHUP;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) != 1 || (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0)
		return;
	if (hr->hc != NULL && hr->hc->tls != NULL && htls_unsent(hr->hc->tls) &&
	    hr->gone_waits++ < hr->h->cfg->http_idle_timeout * 100) {
		event_add(hr->gone_ev, &tv);
		return;
	}
	evhttp_connection_free(hr->evcon);
}

/*
 * Watch for the hang-up on a dup of the socket, edge-triggered (libevent cannot mix
 * edge- and level-triggered events on one descriptor; pipelined data must not spin
 * it): each edge, poll says whether the peer shut its side (RDHUP). Without a spare
 * descriptor there is no watch: the wait's end frees it. Only for a wait that has
 * started: an enqueue's answer is owed only until its group commit (a millisecond or
 * two), and the dup, the close and their two epoll_ctl calls were a third of the
 * syscalls of a kept-alive POST /v1/purges.
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

void
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

void
hreq_abandon(struct hreq *hr)
{
	hr->hc->hr = NULL;
	hr->owed = 0;
	hr->waiting = 0;
	hr->waiter = NULL;
	hreq_free(hr);
}

void
hreq_installs(void *arg, json_object *o)
{
	hreq_waited(arg, o);
}

void
hreq_watch_waiter(struct hreq *hr)
{
	if (hr->gone_ev == NULL)
		hreq_watch(hr);
}

/* Start a long-poll on hr->id; the answer comes through hreq_waited (perhaps at once). */
void
hreq_wait(struct hreq *hr, int64_t ms)
{
	struct waiter *w;

	hr->waiting = 1;
	w = ops_wait(hr->h->q, hr->id, ms, &hr->caller, hreq_waited, hr);
	if (hr->waiting) {
		hr->waiter = w;
		/* A wait may be long: watch for the client hanging up meanwhile. */
		if (hr->gone_ev == NULL)
			hreq_watch(hr);
	}
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
	hr->hc->hr = NULL;
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
		    strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0 ||
		    strcmp(st, "expired") == 0) ? 200 : 202;
		http_send(req, status, o);
	} else
		http_send_ops(req, o);
	hr->waiter = NULL;
	hr->owed = 0;
	hreq_free(hr);
}

struct hreq *
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
	if ((hr->hc = hconn_of(h, req)) == NULL)
		fatalx("HTTP: an answer owed on a connection that is not followed");
	hr->hc->hr = hr;
	return hr;
}

