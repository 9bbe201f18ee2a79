/* http.c: the HTTP(S) API's listener (docs/http.md): binding, TLS and its reload, set-up, teardown. */
#include "compat.h"
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http-int.h"
#include "util.h"

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
	int want = !h->stopped;

	if (h->listener == NULL || want == h->listening)
		return;
	if (want)
		evconnlistener_enable(h->listener);
	else
		evconnlistener_disable(h->listener);
	h->listening = want;
}

/*
 * Each new connection's bufferevent, on every listener: TLS with the context current
 * now, or plain. Counted (http-conn.c) until evhttp frees it; one over max_connections
 * is refused there, and gets no TLS (nothing is read from it).
 */
static struct bufferevent *
http_bevcb(struct event_base *base, void *arg)
{
	struct http *h = arg;
	struct bufferevent *bev;
	struct htls *tls = NULL;

	if (h->ctx == NULL || h->nconns >= h->max_conns)
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	else
		bev = htls_new(h, base, &tls);     /* http-tls.c */
	if (bev == NULL)
		fatalx("out of memory");
	hconn_new(h, bev)->tls = tls;
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
	htab_init(&h->conns);
	if (cfg->tls_cert != NULL &&
	    (h->ctx = http_tls_ctx(cfg->tls_cert, cfg->tls_key, cause)) == NULL)
		goto fail;
	if (h->ctx != NULL && (h->io = htls_io_start(base, cause)) == NULL)
		goto fail;
	if ((h->eh = evhttp_new(base)) == NULL)
		fatalx("evhttp_new failed");
	evhttp_set_max_headers_size(h->eh, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->eh, HTTP_MAX_BODY);
	/* A gap timer (reads and writes); http-conn.c sets the real deadlines. */
	evhttp_set_timeout(h->eh, (int)cfg->http_idle_timeout);
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
	log_notice("HTTP API on %s (%s, %zu token(s))", cfg->http_listen,
	    h->ctx != NULL ? "HTTPS" : "plain HTTP", ts->n);
	return h;
fail:
	if (h->eh != NULL)
		evhttp_free(h->eh);
	htls_io_stop(h->io);
	htab_free(&h->conns);
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
	/* The TLS thread sends what it holds and ends: evhttp's frees shut the sockets. */
	htls_io_stop(h->io);
	/* Frees every connection: their close callbacks cancel waits and enqueue answers. */
	evhttp_free(h->eh);
	hconn_free_all(h);
	if (h->unix_path != NULL) {
		unlink(h->unix_path);
		free(h->unix_path);
	}
	if (h->ctx != NULL)
		SSL_CTX_free(h->ctx);
	tokens_free(h->tokens);
	free(h);
}
