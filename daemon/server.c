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
	gid_t gid;
	pid_t pid;
	int admin;       /* root or a member of admin_group */
	int busy;        /* an answer is owed (enqueue commit, wait): later lines wait */
	int processing;  /* inside conn_process: callbacks must not re-enter it */
	int eof;         /* the client closed its side */
	int closing;     /* close once the output is written */
	int kill;        /* drop now: freed by the outermost callback, never mid-request */
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

/* An idle connection times out; one that waits for an answer (wait) does not. */
static void
conn_idle_timer(struct conn *c)
{
	struct timeval tv = { c->srv->cfg->idle_timeout, 0 };

	if (c->busy)
		bufferevent_set_timeouts(c->bev, NULL, NULL);
	else
		bufferevent_set_timeouts(c->bev, &tv, NULL);
}

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

/*
 * Queue one answer line. Returns -1 if the connection is to be dropped for not reading
 * its answers; it is not freed here (callers still hold it), only marked.
 */
static int
conn_send(struct conn *c, json_object *o)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *s;
	size_t len;

	if (c->kill) {
		json_object_put(o);
		return -1;
	}
	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	evbuffer_add(out, s, len);
	evbuffer_add(out, "\n", 1);
	json_object_put(o);
	if (evbuffer_get_length(out) > CONN_MAX_OUTPUT) {
		log_warn("dropping client uid %ld pid %ld: it does not read its answers",
		    (long)c->uid, (long)c->pid);
		evbuffer_drain(out, evbuffer_get_length(out));
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		c->closing = c->kill = 1;
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
	conn_send(c, o);
	if (c->processing) /* conn_process, up the stack, carries on or drops it */
		return;
	if (c->kill)
		conn_lost(c);
	else
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
	log_debug("%s from uid %ld pid %ld", proto_op_name(req.op), (long)c->uid, (long)c->pid);
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
		conn_send(c, queue_cancel(srv->q, req.id, c->uid, c->admin));
		break;
	case OP_LIST:
		conn_send(c, queue_list(srv->q));
		break;
	case OP_STATS:
		conn_send(c, queue_stats(srv->q, srv->nconns));
		break;
	case OP_PAUSE:
	case OP_RESUME:
		if (!c->admin) {
			conn_send(c, proto_error("forbidden", "pause and resume need root or a "
			    "member of admin_group"));
			break;
		}
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
		if (len > 0)
			conn_handle(c, line, len);
		free(line);
	}
	c->processing = 0;
	if (c->kill) {
		conn_lost(c);
		return;
	}
	conn_idle_timer(c);
	if (c->eof && !c->busy && !c->closing) {
		c->closing = 1;
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_lost(c);
	}
	return;
too_long:
	c->processing = 0;
	if (conn_send(c, proto_error("line_too_long",
	    "request line longer than 65536 bytes; closing the connection")) != 0) {
		conn_lost(c);
		return;
	}
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
	if (what & BEV_EVENT_TIMEOUT) {
		log_debug("closing idle client uid %ld pid %ld", (long)c->uid, (long)c->pid);
		conn_lost(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		if (!c->processing)
			conn_process(c);
		return;
	}
	if (what & BEV_EVENT_ERROR)
		conn_lost(c);
}

/* The peer's supplementary groups (Linux SO_PEERGROUPS); *n = 0 if unavailable. */
static gid_t *
peer_groups(int fd, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = xmalloc(len);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) != 0) {
		if (errno != ERANGE || len == 0 || len > 65536 * sizeof(gid_t)) {
			*n = 0;
			return g;
		}
		g = xrealloc(g, len);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) != 0)
			len = 0;
	}
	*n = len / sizeof(gid_t);
	return g;
}

static int
in_groups(gid_t want, gid_t gid, const gid_t *groups, size_t n)
{
	size_t i;

	if (gid == want)
		return 1;
	for (i = 0; i < n; i++) {
		if (groups[i] == want)
			return 1;
	}
	return 0;
}

/* May this peer use the socket at all? Is it an administrator? */
static void
conn_authorize(const struct config *cfg, struct conn *c, int fd, int *allowed)
{
	size_t i, n;
	gid_t *groups = peer_groups(fd, &n);

	c->admin = c->uid == 0 || c->uid == geteuid() || (cfg->admin_gid != (gid_t)-1 &&
	    in_groups(cfg->admin_gid, c->gid, groups, n));
	*allowed = c->admin || (cfg->nallow_uids == 0 && cfg->nallow_gids == 0);
	for (i = 0; !*allowed && i < cfg->nallow_uids; i++)
		*allowed = cfg->allow_uids[i] == c->uid;
	for (i = 0; !*allowed && i < cfg->nallow_gids; i++)
		*allowed = in_groups(cfg->allow_gids[i], c->gid, groups, n);
	free(groups);
}

static int
conns_of_uid(const struct server *srv, uid_t uid)
{
	const struct conn *c;
	int n = 0;

	TAILQ_FOREACH(c, &srv->conns, entry) {
		if (c->uid == uid)
			n++;
	}
	return n;
}

/* Refuse a peer with one error answer, then close once it is written. */
static void
conn_refuse(struct conn *c, const char *code, const char *msg)
{
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
	conn_send(c, proto_error(code, msg));
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
	socklen_t credlen;
	struct conn *c;
	int fd, allowed, nuid;

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
		credlen = sizeof cred;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) == 0) {
			c->uid = cred.uid;
			c->gid = cred.gid;
			c->pid = cred.pid;
		} else {
			c->uid = (uid_t)-1;
			c->gid = (gid_t)-1;
			c->pid = -1;
		}
		conn_authorize(srv->cfg, c, fd, &allowed);
		nuid = conns_of_uid(srv, c->uid);
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
		if (!allowed) {
			log_warn("refused client uid %ld pid %ld: not in allow_users or "
			    "allow_groups", (long)c->uid, (long)c->pid);
			conn_refuse(c, "forbidden", "this user may not use wpe-purged (see "
			    "allow_users and allow_groups)");
			continue;
		}
		if (nuid >= srv->cfg->max_conns_per_user) {
			log_warn("refused client uid %ld pid %ld: it already has %d connections",
			    (long)c->uid, (long)c->pid, nuid);
			conn_refuse(c, "too_many_connections", "too many connections from this "
			    "user (max_connections_per_user)");
			continue;
		}
		conn_idle_timer(c);
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
	{
		char *dir = xstrdup(srv->path), *slash = strrchr(dir, '/');

		if (slash != NULL)
			*(slash == dir ? slash + 1 : slash) = '\0';
		if (stat(slash != NULL ? dir : ".", &sb) != 0) {
			xasprintf(cause, "socket directory %s: %s", dir, strerror(errno));
			free(dir);
			return -1;
		}
		if (sb.st_mode & S_IWOTH) {
			xasprintf(cause, "socket directory %s is writable by anyone; use a "
			    "directory only the service can write (such as /run/wpe-purged)", dir);
			free(dir);
			return -1;
		}
		free(dir);
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
	if (chmod(srv->path, srv->cfg->socket_mode) == -1 || listen(fd, SOMAXCONN) == -1) {
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
	/* The analyzer cannot follow TAILQ_REMOVE's tqh_last update: a known false positive. */
	while (!TAILQ_EMPTY(&srv->conns))
		conn_lost(TAILQ_FIRST(&srv->conns)); /* NOLINT(clang-analyzer-unix.Malloc) */
	if (srv->accept_timer != NULL)
		event_free(srv->accept_timer);
	free(srv->path);
	free(srv);
}
