/* Minimal evhttp + bufferevent_openssl HTTPS server for CPU/request measurement.
 * usage: evhttp_srv PORT [deferred]
 *   deferred: answer after one loop iteration (event_active on a zero-timeout event). */
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/keyvalq_struct.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "resp_body.inc"

static SSL_CTX *ssl_ctx;
static struct event_base *base;
static int deferred;
static unsigned long nreq;

static struct bufferevent *bevcb(struct event_base *b, void *arg)
{
    (void)arg;
    SSL *ssl = SSL_new(ssl_ctx);
    return bufferevent_openssl_socket_new(b, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

#include "evhttp_handlers.inc"

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
    /* as wpe-purged does: no Nagle (evhttp writes headers and body apart; the second
     * write would wait for the client's delayed ACK). Accepted sockets inherit it. */
    {
        int one = 1;
        setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fprintf(stderr, "evhttp_srv listening on 127.0.0.1:%d (%s)\n", port, deferred ? "deferred" : "immediate");
    event_base_dispatch(base);
    return 0;
}
