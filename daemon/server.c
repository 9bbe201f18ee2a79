/* server.c: the Unix socket: bind it or take it from systemd, authorize and accept clients. */
#include "compat.h"
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>

#include "proto.h"
#include "server-int.h"
#include "server.h"
#include "util.h"

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

/*
 * The admitted connections of uid, and the longest-idle one among them that owes nothing
 * and has nothing to write (NULL if every one is busy).
 */
static int
conns_of_uid(const struct server *srv, uid_t uid, struct conn **idlest)
{
	struct conn *c;
	int64_t now = clock_mono_ms();
	int n = 0;

	*idlest = NULL;
	TAILQ_FOREACH(c, &srv->conns, entry) {
		if (c->uid != uid || !c->counted)
			continue;
		n++;
		if (conn_idle(c, now) &&
		    (*idlest == NULL || c->last_active < (*idlest)->last_active))
			*idlest = c;
	}
	return n;
}

/* Refuse a peer with one error answer, then close once it is written. */
static void
conn_refuse(struct conn *c, const char *code, const char *msg)
{
	conn_send(c, proto_error(code, msg));
	conn_close_soon(c);
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
	struct conn *c, *idlest;
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
		c->fd = fd;
		c->in = evbuffer_new();
		c->out = evbuffer_new();
		c->rd_ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
		c->wr_ev = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
		c->resume_ev = event_new(srv->base, -1, 0, conn_resume_cb, c);
		if (c->in == NULL || c->out == NULL || c->rd_ev == NULL || c->wr_ev == NULL ||
		    c->resume_ev == NULL) {
			if (c->in != NULL)
				evbuffer_free(c->in);
			if (c->out != NULL)
				evbuffer_free(c->out);
			if (c->rd_ev != NULL)
				event_free(c->rd_ev);
			if (c->wr_ev != NULL)
				event_free(c->wr_ev);
			if (c->resume_ev != NULL)
				event_free(c->resume_ev);
			close(fd);
			free(c);
			continue;
		}
		c->last_active = clock_mono_ms();
		TAILQ_INSERT_TAIL(&srv->conns, c, entry);
		srv->nconns++;
		if (!allowed) {
			log_warn("refused client uid %ld pid %ld: not in allow_users or "
			    "allow_groups", (long)c->uid, (long)c->pid);
			conn_refuse(c, "forbidden", "this user may not use wpe-purged (see "
			    "allow_users and allow_groups)");
			continue;
		}
		/*
		 * At the cap, the user's longest-idle connection makes room; connections that
		 * wait for an answer are never taken. Only if every one is busy is the new
		 * one refused.
		 */
		nuid = conns_of_uid(srv, c->uid, &idlest);
		if (nuid >= srv->max_per_user && idlest != NULL) {
			log_info("client uid %ld has %d connections (the most allowed): closing "
			    "its longest-idle one (pid %ld)", (long)c->uid, nuid,
			    (long)idlest->pid);
			conn_lost(idlest);
			nuid--;
		}
		if (nuid >= srv->max_per_user) {
			log_warn("refused client uid %ld pid %ld: it already has %d connections, "
			    "all busy", (long)c->uid, (long)c->pid, nuid);
			conn_refuse(c, "too_many_connections", "too many connections from this "
			    "user, all waiting for answers (max_connections_per_user)");
			continue;
		}
		c->counted = 1;
		conn_io(c);
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
	srv->max_per_user = cfg->max_conns_per_user;
	if (srv->max_per_user <= 0) {
		/* Automatic: half the descriptors the daemon may open, at least 64. */
		struct rlimit rl;

		srv->max_per_user = 64;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur / 2 > 64)
			srv->max_per_user = (int64_t)(rl.rlim_cur / 2);
		log_info("max_connections_per_user: %lld (half the descriptor limit)",
		    (long long)srv->max_per_user);
	}

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
	TAILQ_FOREACH_SAFE(c, &srv->conns, entry, t)
		conn_close_soon(c);
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
