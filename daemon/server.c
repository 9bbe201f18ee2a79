/* server.c: accept clients on the Unix socket, frame lines, answer requests in order. */
#include "compat.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>

#include "proto.h"
#include "server.h"
#include "util.h"

#define CONN_MAX_OUTPUT (4 * 1024 * 1024) /* a client that does not read is dropped */

struct conn {
	struct server *srv;
	struct bufferevent *bev;
	uid_t uid;
	pid_t pid;
	int busy;        /* an answer is owed (enqueue commit, wait): later lines wait */
	int processing;  /* inside conn_process: callbacks must not re-enter it */
	int eof;         /* the client closed its side */
	int closing;     /* close once the output is written */
	void *pending;   /* enqueue handle while busy with one */
	struct waiter *waiter;
	TAILQ_ENTRY(conn) entry;
};

struct server {
	struct event_base *base;
	const struct config *cfg;
	struct queue *q;
	int fd;
	int owns_path;   /* we bound it, so we unlink it */
	char *path;
	struct event *accept_ev;
	struct event *accept_timer; /* EMFILE back-off */
	int nconns;
	TAILQ_HEAD(, conn) conns;
};

static void conn_process(struct conn *);

static void
conn_lost(struct conn *c)
{
	struct server *srv = c->srv;

	if (c->waiter != NULL)
		queue_wait_cancel(srv->q, c->waiter);
	if (c->pending != NULL)
		queue_enqueue_forget(srv->q, c->pending);
	bufferevent_free(c->bev);
	TAILQ_REMOVE(&srv->conns, c, entry);
	srv->nconns--;
	free(c);
}

/* Queue one answer line. Returns -1 if the connection was dropped for not reading. */
static int
conn_send(struct conn *c, json_object *o)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *s;
	size_t len;

	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	evbuffer_add(out, s, len);
	evbuffer_add(out, "\n", 1);
	json_object_put(o);
	if (evbuffer_get_length(out) > CONN_MAX_OUTPUT) {
		log_warn("dropping client uid %ld pid %ld: it does not read its answers",
		    (long)c->uid, (long)c->pid);
		conn_lost(c);
		return -1;
	}
	return 0;
}

/* An owed answer arrives (enqueue committed, wait finished). */
static void
conn_answer(void *arg, json_object *o)
{
	struct conn *c = arg;

	c->pending = NULL;
	c->waiter = NULL;
	c->busy = 0;
	if (conn_send(c, o) != 0)
		return;
	if (!c->processing)
		conn_process(c);
}

static void
conn_handle(struct conn *c, const char *line, size_t len)
{
	struct server *srv = c->srv;
	struct proto_request req;
	const char *code;
	char *cause;
	json_object *o;
	struct waiter *w;

	if (proto_request_parse(line, len, &req, &code, &cause) != 0) {
		o = proto_error(code, cause);
		free(cause);
		log_debug("bad request from uid %ld pid %ld: %s", (long)c->uid, (long)c->pid,
		    code);
		conn_send(c, o);
		return;
	}
	switch (req.op) {
	case OP_ENQUEUE:
		c->busy = 1;
		c->pending = queue_enqueue(srv->q, &req, c->uid, c->pid, conn_answer, c);
		break;
	case OP_WAIT:
		c->busy = 1;
		w = queue_wait(srv->q, req.id, req.timeout_ms, conn_answer, c);
		if (c->busy)
			c->waiter = w;
		break;
	case OP_STATUS:
		conn_send(c, queue_status(srv->q, req.id));
		break;
	case OP_CANCEL:
		conn_send(c, queue_cancel(srv->q, req.id, c->uid));
		break;
	case OP_LIST:
		conn_send(c, queue_list(srv->q));
		break;
	case OP_STATS:
		conn_send(c, queue_stats(srv->q, srv->nconns));
		break;
	case OP_PAUSE:
	case OP_RESUME:
		log_notice("%s from uid %ld pid %ld", req.op == OP_PAUSE ? "pause" : "resume",
		    (long)c->uid, (long)c->pid);
		conn_send(c, queue_pause(srv->q, req.op == OP_PAUSE));
		break;
	case OP_PING:
		o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(1));
		json_object_object_add(o, "version", json_object_new_string(WPE_VERSION));
		json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
		conn_send(c, o);
		break;
	}
	proto_request_free(&req);
}

/* Handle every complete line, in order, until one leaves an answer owed. */
static void
conn_process(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_ptr eol;
	size_t eol_len, avail, len;
	char *line;

	c->processing = 1;
	while (!c->busy && !c->closing) {
		avail = evbuffer_get_length(in);
		eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			if (avail > PROTO_MAX_LINE)
				goto too_long;
			if (!c->eof || avail == 0)
				break;
			len = avail; /* a last line without a newline */
			eol_len = 0;
		} else if ((size_t)eol.pos > PROTO_MAX_LINE)
			goto too_long;
		else
			len = (size_t)eol.pos;
		line = xmalloc(len + 1);
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len > 0) {
			struct server *srv = c->srv;
			int before = srv->nconns;

			conn_handle(c, line, len);
			free(line);
			if (srv->nconns != before) /* dropped while answering */
				return;
		} else
			free(line);
	}
	c->processing = 0;
	if (c->eof && !c->busy && !c->closing) {
		c->closing = 1;
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_lost(c);
	}
	return;
too_long:
	c->processing = 0;
	if (conn_send(c, proto_error("line_too_long",
	    "request line longer than 65536 bytes; closing the connection")) != 0)
		return;
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_process(arg);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (c->closing)
		conn_lost(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		if (!c->processing)
			conn_process(c);
		return;
	}
	if (what & BEV_EVENT_ERROR)
		conn_lost(c);
}

static void
accept_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct server *srv = arg;

	(void)fd;
	(void)events;
	event_add(srv->accept_ev, NULL);
}

static void
accept_cb(evutil_socket_t lfd, short events, void *arg)
{
	struct server *srv = arg;
	struct timeval tv = { 1, 0 };
	struct ucred cred;
	socklen_t credlen = sizeof cred;
	struct conn *c;
	int fd;

	(void)events;
	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: pause accepting for a second, do not spin. */
				log_warn("accept: %s; pausing new connections for 1 s",
				    strerror(errno));
				event_del(srv->accept_ev);
				evtimer_add(srv->accept_timer, &tv);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		c = xcalloc(1, sizeof *c);
		c->srv = srv;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) == 0) {
			c->uid = cred.uid;
			c->pid = cred.pid;
		} else {
			c->uid = (uid_t)-1;
			c->pid = -1;
		}
		c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL) {
			close(fd);
			free(c);
			continue;
		}
		bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
		/* Stop reading at a line's worth: an over-long line is seen, not buffered. */
		bufferevent_setwatermark(c->bev, EV_READ, 0, PROTO_MAX_LINE + 2);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		TAILQ_INSERT_TAIL(&srv->conns, c, entry);
		srv->nconns++;
		log_debug("client connected: uid %ld pid %ld", (long)c->uid, (long)c->pid);
	}
}

/* Is something already answering on path? */
static int
socket_live(const char *path)
{
	struct sockaddr_un sun;
	int fd, rc;

	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return 0;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	close(fd);
	return rc == 0;
}

static int
server_bind(struct server *srv, char **cause)
{
	struct sockaddr_un sun;
	struct stat sb;
	mode_t old;
	int fd;

	if (strlen(srv->path) >= sizeof sun.sun_path) {
		xasprintf(cause, "socket path %s is too long", srv->path);
		return -1;
	}
	if (lstat(srv->path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			xasprintf(cause, "%s exists and is not a socket; refusing to replace it",
			    srv->path);
			return -1;
		}
		if (socket_live(srv->path)) {
			xasprintf(cause, "another wpe-purged is already listening on %s",
			    srv->path);
			return -1;
		}
		unlink(srv->path); /* stale, from a daemon that died */
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		xasprintf(cause, "socket: %s", strerror(errno));
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", srv->path);
	/* Create it private, then open it up to exactly socket_mode. */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		umask(old);
		xasprintf(cause, "bind %s: %s", srv->path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(srv->path, srv->cfg->socket_mode) == -1 || listen(fd, 128) == -1) {
		xasprintf(cause, "%s: %s", srv->path, strerror(errno));
		unlink(srv->path);
		close(fd);
		return -1;
	}
	srv->owns_path = 1;
	srv->fd = fd;
	return 0;
}

struct server *
server_create(struct event_base *base, const struct config *cfg, struct queue *q,
    char **cause)
{
	struct server *srv = xcalloc(1, sizeof *srv);
	int n;

	srv->base = base;
	srv->cfg = cfg;
	srv->q = q;
	srv->fd = -1;
	srv->path = xstrdup(cfg->socket);
	TAILQ_INIT(&srv->conns);

	n = sd_listen_fds(1);
	if (n > 1) {
		xasprintf(cause, "systemd passed %d sockets; expected one", n);
		goto fail;
	}
	if (n == 1) {
		if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) <= 0) {
			xasprintf(cause, "the socket systemd passed is not a listening Unix "
			    "stream socket");
			goto fail;
		}
		srv->fd = SD_LISTEN_FDS_START;
		evutil_make_socket_nonblocking(srv->fd);
		evutil_make_socket_closeonexec(srv->fd);
		log_info("using the socket passed by systemd");
	} else if (server_bind(srv, cause) != 0)
		goto fail;

	srv->accept_ev = event_new(base, srv->fd, EV_READ | EV_PERSIST, accept_cb, srv);
	srv->accept_timer = evtimer_new(base, accept_timer_cb, srv);
	event_add(srv->accept_ev, NULL);
	return srv;
fail:
	free(srv->path);
	free(srv);
	return NULL;
}

void
server_stop(struct server *srv)
{
	struct conn *c, *t;

	if (srv->accept_ev != NULL) {
		event_free(srv->accept_ev);
		srv->accept_ev = NULL;
	}
	evtimer_del(srv->accept_timer);
	if (srv->fd != -1) {
		close(srv->fd);
		srv->fd = -1;
		if (srv->owns_path)
			unlink(srv->path);
	}
	TAILQ_FOREACH_SAFE(c, &srv->conns, entry, t) {
		c->closing = 1;
		bufferevent_disable(c->bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_lost(c);
	}
}

int
server_connections(const struct server *srv)
{
	return srv->nconns;
}

void
server_free(struct server *srv)
{
	if (srv == NULL)
		return;
	server_stop(srv);
	while (!TAILQ_EMPTY(&srv->conns))
		conn_lost(TAILQ_FIRST(&srv->conns));
	if (srv->accept_timer != NULL)
		event_free(srv->accept_timer);
	free(srv->path);
	free(srv);
}
