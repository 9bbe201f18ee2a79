/* http-int.h: what the HTTP API's files (http*.c) share: the server, owed answers, helpers. */
#ifndef WPE_HTTP_INT_H
#define WPE_HTTP_INT_H

#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>
#include <openssl/ssl.h>

#include "htab.h"
#include "http.h"
#include "ops.h"

#define HTTP_MAX_HEADERS (16 * 1024)
#define HTTP_MAX_BODY (64 * 1024)
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
	struct htls_io *io;          /* HTTPS: the TLS thread (http-tls.c) */
	struct tokens *tokens;
	int nconns;                  /* connections open, on every listener (struct hconn) */
	int64_t max_conns;
	struct htab conns;           /* struct hconn by bufferevent */
};

enum hconn_phase { HC_HEAD, HC_BODY, HC_BUSY, HC_IDLE };

/* A client connection (http-conn.c): counted, and timed by phase. */
struct hconn {
	struct hnode node;
	struct http *h;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;   /* once attached */
	struct event *ev;                  /* attach, then the phase's deadline */
	struct evbuffer_cb_entry *input_cb;
	struct hreq *hr;                   /* the answer owed on it, if any */
	struct htls *tls;                  /* HTTPS: its transport (http-tls.c) */
	int held;                          /* the deadline waits for answers to go out */
	enum hconn_phase phase;
	int drains;                        /* drains of the input in HEAD */
	int prev_small;                    /* the last one was a line end */
	int attached;
	int refused;                       /* over max_connections */
	char peer[80];                     /* for logs (http_peer), made at its first request */
};

/*
 * A request answered later: an enqueue waits for its group commit, a long-poll for its
 * request to finish. The queue's callbacks only store the answer and wake done_ev; the
 * reply goes out from there. If the client's connection goes first (hreq_closed), the
 * waiter is cancelled and the owed enqueue answer forgotten; the request object belongs
 * to the connection and is never touched again.
 */
struct hreq {
	struct http *h;
	struct hconn *hc;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	struct event *done_ev;
	struct event *gone_ev;       /* the peer hung up while we owe the answer */
	int gone_fd;                 /* its own dup of the socket */
	int gone_waits;              /* hang-up seen: waits for the TLS thread's sends */
	struct waiter *waiter;
	json_object *answer;         /* stored by a callback, sent by http_done */
	int owed;                    /* an enqueue answer is owed */
	int waiting;                 /* a wait answer is owed */
	int post;                    /* POST /v1/purges (202 / 200 and Location) */
	int64_t wait_ms;             /* POST ?wait=: wait after the enqueue; -1: no */
	int64_t id;
	struct ops_caller caller;
	char who[160];               /* "token NAME (ADDRESS)" */
	struct token_scope *scope;   /* GET /v1/installs: what the token sees (NULL: all) */
};

/* http-conn.c: connections. */
struct hconn *hconn_new(struct http *, struct bufferevent *);
struct hconn *hconn_of(struct http *, struct evhttp_request *);
struct hconn *hconn_request(struct http *, struct evhttp_request *);
void hconn_free_all(struct http *);

/* http-tls.c: an HTTPS connection's bufferevent for evhttp (TLS with h->ctx on h->io). */
struct bufferevent *htls_new(struct http *, struct event_base *, struct htls **);
/* Are answers handed over not all in the kernel yet (not after an error)? */
int htls_unsent(const struct htls *);
/* The request being handled: will evhttp keep the connection after its answer? */
void htls_expect(struct htls *, int keeps);
/* The TLS thread, its mail woken on the loop's base. */
struct htls_io *htls_io_start(struct event_base *, char **cause);
/* Joined once evhttp is freed; what it still holds is ended on the loop. NULL: nothing. */
void htls_io_stop(struct htls_io *);

/* http-answer.c: JSON answers, never an HTML page. */
/* evhttp_send_reply, the answer in one TLS record. */
void http_reply(struct evhttp_request *, int status, const char *reason,
    struct evbuffer *b);
void http_send(struct evhttp_request *, int status, json_object *o);
void http_error(struct evhttp_request *, int status, const char *code, const char *msg);
/* An ops answer with the status its error code calls for (Retry-After on 503). */
void http_send_ops(struct evhttp_request *, json_object *o);
const char *http_answer_install(json_object *o);
int http_answer_ok(json_object *o);
const char *http_answer_state(json_object *o);
/*
 * May a line of this kind about this address be logged now? At most one a second each;
 * *suppressed: how many were not since the last one (for http_log_more).
 */
int http_log_allowed(const char *kind, const char *addr, unsigned long *suppressed);
/* " (N more like it suppressed)" or "". */
const char *http_log_more(unsigned long suppressed);

/* http-wait.c: answers sent later (enqueues owed a commit, long-polls). */
struct hreq *hreq_new(struct http *, struct evhttp_request *, const struct ops_caller *,
    const char *who);
void hreq_enqueued(void *arg, json_object *o);
/* The answer of a wait other than a request's (installs?refresh); it may come at once. */
void hreq_installs(void *arg, json_object *o);
/* Nothing is owed after all (an answer sent at once instead): free hr. */
void hreq_abandon(struct hreq *hr);
/* A waiter was set on hr: watch for the client hanging up meanwhile. */
void hreq_watch_waiter(struct hreq *hr);
/* Start a long-poll on hr->id; the answer comes through hreq_waited (perhaps at once). */
void hreq_wait(struct hreq *, int64_t ms);
/* The connection is being freed: nothing is sent any more. */
void hreq_closed(struct hreq *);

/* http-routes.c: every request: route, authenticate, rate-cap, answer (now or later). */
void http_request(struct evhttp_request *, void *arg);
/* 405 with the Allow header. */
void http_method_not_allowed(struct evhttp_request *, const char *allow);

/*
 * http-handlers.c: the endpoints on the queue, for a request http_request authenticated:
 * t its token, c the caller made of it, who "token NAME (ADDRESS)" for logs.
 */
/* POST /v1/purges[?wait=SECONDS]: enqueue (answered once its commit is durable). */
void http_purges_post(struct http *, struct evhttp_request *, const struct token *t,
    const struct ops_caller *c, const char *who, const char *query);
/* GET|HEAD /v1/purges/ID[?wait=SECONDS]: status or long-poll; DELETE: cancel. */
void http_purge_id(struct http *, struct evhttp_request *, const struct token *t,
    const struct ops_caller *c, const char *who, int64_t id, const char *query);
/* GET /v1/jobs: unfinished jobs, only the installs the token may see. */
void http_jobs(struct http *, struct evhttp_request *, const struct token *t,
    const char *query);
/* POST /v1/purges/ID/requeue. */
void http_requeue(struct http *, struct evhttp_request *, const struct token *t,
    const struct ops_caller *c, const char *who, int64_t id);
/* GET /v1/installs. */
void http_installs(struct http *, struct evhttp_request *, const struct token *t,
    const struct ops_caller *c, const char *who, const char *query);

#endif
