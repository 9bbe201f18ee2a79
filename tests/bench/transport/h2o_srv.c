/* Minimal h2o 2.2.5 (evloop) HTTPS server for CPU/request measurement.
 * usage: h2o_srv PORT [deferred]
 *   deferred: answer from ctx.zero_timeout (next loop iteration), like evhttp_srv deferred. */
#define H2O_USE_LIBUV 0
#define H2O_USE_EPOLL 1
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include "h2o.h"
#include "h2o/http1.h"
#include "resp_body.inc"

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;
static int deferred;
static unsigned long nreq;

static void send_202(h2o_req_t *req)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = 202;
    req->res.reason = "Accepted";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, H2O_STRLIT("/v1/purges/123"));
    req->res.content_length = sizeof(RESP_BODY) - 1;
    h2o_iovec_t body = h2o_iovec_init(H2O_STRLIT(RESP_BODY));
    h2o_start_response(req, &generator);
    h2o_send(req, &body, 1, 1);
}

struct pending {
    h2o_timeout_entry_t te; /* must be first */
    h2o_req_t *req;
};

static void deferred_cb(h2o_timeout_entry_t *te)
{
    struct pending *p = (struct pending *)te;
    send_202(p->req);
}

static int purges_handler(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/v1/purges")))
        return -1;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        h2o_send_error_405(req, "Method Not Allowed", "method not allowed", 0);
        return 0;
    }
    /* read the JSON body (h2o buffers it fully into req->entity before calling the handler) */
    char buf[1024];
    if (req->entity.base == NULL || req->entity.len == 0 || req->entity.len >= sizeof(buf)) {
        h2o_send_error_400(req, "Bad Request", "bad body", 0);
        return 0;
    }
    memcpy(buf, req->entity.base, req->entity.len);
    buf[req->entity.len] = 0;
    if (buf[0] != '{') {
        h2o_send_error_400(req, "Bad Request", "bad body", 0);
        return 0;
    }
    nreq++;
    if (!deferred) {
        send_202(req);
    } else {
        /* allocated from the request pool: freed with the request */
        struct pending *p = h2o_mem_alloc_pool(&req->pool, sizeof(*p));
        memset(p, 0, sizeof(*p));
        p->te.cb = deferred_cb;
        p->req = req;
        h2o_timeout_link(ctx.loop, &ctx.zero_timeout, &p->te);
    }
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(&accept_ctx, sock);
}

static int create_listener(int port)
{
    struct sockaddr_in addr;
    int fd, one = 1;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(0x7f000001);
    addr.sin_port = htons(port);
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 || /* same as evhttp_srv */
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, SOMAXCONN) != 0)
        return -1;
    h2o_socket_t *sock = h2o_evloop_socket_create(ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(sock, on_accept);
    return 0;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8444;
    deferred = argc > 2 && strcmp(argv[2], "deferred") == 0;
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&config);
    h2o_hostconf_t *hostconf = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/v1/purges", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = purges_handler;

    h2o_context_init(&ctx, h2o_evloop_create(), &config);

    accept_ctx.ssl_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(accept_ctx.ssl_ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_file(accept_ctx.ssl_ctx, "cert.pem", SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(accept_ctx.ssl_ctx, "key.pem", SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    /* no ALPN registration: HTTP/1.1 only (like evhttp) */
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;

    if (create_listener(port) != 0) {
        fprintf(stderr, "listen failed: %s\n", strerror(errno));
        return 1;
    }
    fprintf(stderr, "h2o_srv %s listening on 127.0.0.1:%d (%s)\n", H2O_VERSION, port, deferred ? "deferred" : "immediate");
    /* h2o_evloop_run returns -1 when epoll_wait fails, e.g. EINTR (a signal, a ptrace attach):
     * the example's "while (run() == 0)" then exits the server; keep looping instead. */
    for (;;)
        h2o_evloop_run(ctx.loop, INT32_MAX);
    return 0;
}
