/* evhttp (parsing/routing) + own thin TLS transport (memory-BIO SSL, own fd events).
 * usage: evpair_srv PORT [deferred]
 * build: gcc -O2 -Wall -o evpair_srv evpair_srv.c -levent -lssl -lcrypto
 *
 * Why not bufferevent_pair: evhttp (2.1.12 http.c evhttp_get_request_connection) calls
 * bufferevent_setfd(bev, fd) on the bufferevent from the bevcb and drops the connection
 * if it fails; a pair has no ctrl op, so setfd returns -1 (and the fd is then closed
 * twice: evhttp_connection_free + evhttp_get_request). Instead evhttp gets a
 * bufferevent_filter whose underlying is a never-enabled socket bufferevent: setfd/getfd
 * are forwarded to it, so evhttp is satisfied, but libevent never polls the fd.
 * We feed decrypted bytes into the filter's input and take evhttp's output from the
 * filter's output buffer directly (the filter's output filter never moves anything).
 */
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "resp_body.inc"

static SSL_CTX *ssl_ctx;
static struct event_base *base;
static int deferred;
static unsigned long nreq, nconn_live;

struct conn {
    struct bufferevent *filt, *under;
    int fd;
    SSL *ssl;
    BIO *rbio, *wbio;            /* memory BIOs: network side */
    struct event *rev, *wev, *aux; /* aux: init (after setfd) and deferred flush */
    struct evbuffer *pend;       /* ciphertext not yet accepted by the kernel */
    int inited, in_read, dirty, eof, freed;
};

static int evhttp_alive(struct conn *c)
{
    bufferevent_event_cb ecb = NULL;
    if (c->freed) return 0;
    bufferevent_getcb(c->filt, NULL, NULL, &ecb, NULL);
    return ecb != NULL;   /* bufferevent_free() clears the callbacks at once */
}

/* send whatever ciphertext the SSL object produced: write first, poll only if blocked */
static void send_cipher(struct conn *c)
{
    char *p; long n = BIO_get_mem_data(c->wbio, &p);
    if (n <= 0) return;
    if (evbuffer_get_length(c->pend) == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) { (void)BIO_reset(c->wbio); c->eof = 1; return; }
            w = 0;
        }
        if (w < n) evbuffer_add(c->pend, p + w, n - w);
    } else {
        evbuffer_add(c->pend, p, n);
    }
    (void)BIO_reset(c->wbio);
    if (evbuffer_get_length(c->pend)) event_add(c->wev, NULL);
}

/* take evhttp's answer from the filter's output, encrypt, write, tell evhttp it is sent */
static void flush_out(struct conn *c)
{
    c->dirty = 0;
    if (!evhttp_alive(c) || !c->ssl) return;
    struct evbuffer *out = bufferevent_get_output(c->filt);
    size_t len = evbuffer_get_length(out);
    if (len == 0) return;
    if (!SSL_is_init_finished(c->ssl)) return; /* cannot happen: no request before handshake */
    unsigned char *data = evbuffer_pullup(out, -1);
    int r = SSL_write(c->ssl, data, (int)len);   /* one TLS record for <=16K */
    if (r > 0) evbuffer_drain(out, r);
    send_cipher(c);
    /* evhttp_write_cb -> evhttp_send_done: may free the connection (Connection: close) */
    bufferevent_trigger(c->filt, EV_WRITE, 0);
}

static void aux_cb(evutil_socket_t fd, short what, void *arg);

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct conn *c = arg;
    if (info->n_added == 0 || c->dirty) return;
    c->dirty = 1;
    if (!c->in_read && c->inited) event_active(c->aux, EV_TIMEOUT, 0);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    char buf[16384 + 512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        goto eof;
    }
    BIO_write(c->rbio, buf, (int)n);
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        send_cipher(c);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) return;
            goto eof;
        }
    }
    c->in_read = 1;
    struct evbuffer *in = bufferevent_get_input(c->filt);
    int got = 0, r;
    while ((r = SSL_read(c->ssl, buf, sizeof buf)) > 0) {
        evbuffer_add(in, buf, r);
        got = 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (got && evhttp_alive(c))
        bufferevent_trigger(c->filt, EV_READ, 0);  /* evhttp_read_cb, synchronously */
    c->in_read = 0;
    send_cipher(c);                     /* e.g. TLS 1.3 tickets, alerts */
    if (c->dirty) flush_out(c);         /* immediate answer: one SSL_write + one write() */
    if (e == SSL_ERROR_WANT_READ) return;
eof:
    /* peer closed (FIN or close_notify) or error: tell evhttp like a socket bufferevent would */
    c->eof = 1;
    event_del(c->rev);
    if (evhttp_alive(c))
        bufferevent_trigger_event(c->filt, BEV_EVENT_EOF | BEV_EVENT_READING, 0);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    while (evbuffer_get_length(c->pend)) {
        int w = evbuffer_write(c->pend, fd);
        if (w <= 0) {
            if (w < 0 && errno == EAGAIN) return; /* stay polled */
            evbuffer_drain(c->pend, -1);
            break;
        }
    }
    event_del(c->wev);
}

static void aux_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct conn *c = arg;
    if (!c->inited) {
        /* evhttp has called bufferevent_setfd() by now (bevcb gets no fd) */
        c->inited = 1;
        if (!evhttp_alive(c)) return;
        c->fd = bufferevent_getfd(c->filt);
        c->ssl = SSL_new(ssl_ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        BIO_set_mem_eof_return(c->rbio, -1);
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
        c->rev = event_new(base, c->fd, EV_READ | EV_PERSIST, read_cb, c);
        c->wev = event_new(base, c->fd, EV_WRITE | EV_PERSIST, write_cb, c);
        event_add(c->rev, NULL);
        return;
    }
    if (c->dirty) flush_out(c);
}

/* called from the filter's destructor (a deferred finalizer, after evhttp_connection_free
 * did bufferevent_free + shutdown(fd, SHUT_WR)); evhttp did not close fd, we do. */
static void conn_free(void *arg)
{
    struct conn *c = arg;
    c->freed = 1;
    if (c->rev) event_free(c->rev);
    if (c->wev) event_free(c->wev);
    event_free(c->aux);
    if (c->ssl) SSL_free(c->ssl);
    evbuffer_free(c->pend);
    if (c->fd >= 0) close(c->fd);
    free(c);
    nconn_live--;
}

static enum bufferevent_filter_result no_out(struct evbuffer *src, struct evbuffer *dst,
    ev_ssize_t lim, enum bufferevent_flush_mode mode, void *ctx)
{
    (void)src; (void)dst; (void)lim; (void)mode; (void)ctx;
    return BEV_NEED_MORE;   /* we take the filter's output ourselves in flush_out */
}

static struct bufferevent *bevcb(struct event_base *b, void *arg)
{
    (void)arg;
    struct conn *c = calloc(1, sizeof *c);
    c->fd = -1;
    c->pend = evbuffer_new();
    /* fd holder: evhttp's setfd/getfd are forwarded to it; never enabled, never closes */
    c->under = bufferevent_socket_new(b, -1, 0);
    c->filt = bufferevent_filter_new(c->under, NULL, no_out, BEV_OPT_CLOSE_ON_FREE, conn_free, c);
    bufferevent_disable(c->under, EV_READ | EV_WRITE);  /* filter_new enabled it; setfd would epoll_ctl */
    evbuffer_add_cb(bufferevent_get_output(c->filt), out_cb, c);
    c->aux = event_new(b, -1, 0, aux_cb, c);
    event_active(c->aux, EV_TIMEOUT, 0);
    nconn_live++;
    return c->filt;
}

#include "evhttp_handlers.inc"

static void usr1_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what; (void)arg;
    fprintf(stderr, "requests=%lu live_conns=%lu\n", nreq, nconn_live);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8443;
    deferred = argc > 2 && strcmp(argv[2], "deferred") == 0;
    signal(SIGPIPE, SIG_IGN);

    ssl_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_file(ssl_ctx, "cert.pem", SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ssl_ctx, "key.pem", SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }

    base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_bevcb(http, bevcb, NULL);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
    evhttp_set_cb(http, "/v1/purges", purges_cb, NULL);
    evhttp_set_gencb(http, gen_cb, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", port);
    if (!bs) {
        fprintf(stderr, "bind failed\n");
        return 1;
    }
    {
        int one = 1;
        setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct event *usr1 = evsignal_new(base, SIGUSR1, usr1_cb, NULL);
    event_add(usr1, NULL);
    fprintf(stderr, "evpair_srv listening on 127.0.0.1:%d (%s)\n", port, deferred ? "deferred" : "immediate");
    event_base_dispatch(base);
    return 0;
}
