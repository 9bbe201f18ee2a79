/* server.c: accept clients on the Unix socket, frame lines, answer requests in order. */
#include "compat.h"
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>

#include "ops.h"
#include "proto.h"
#include "server.h"
#include "util.h"

#define CONN_MAX_OUTPUT (4 * 1024 * 1024) /* one answer this big: the client is dropped */
#define CONN_OUTPUT_HIGH (256 * 1024)     /* stop taking its requests above this... */
#define CONN_OUTPUT_LOW (64 * 1024)       /* ...until it has read down to this */
#define CONN_INPUT_MAX (128 * 1024)       /* unhandled input held while an answer is owed */
#define CONN_MAX_OWED 1024                /* enqueue answers owed before it must wait */
#define CONN_EVICT_GRACE_MS 1000          /* active this recently: never evicted */

/*
 * A connection answers its requests in order. Enqueues are handed to the group commit
 * and their answers are owed; any other request behind them is held until they are
 * answered; a wait is owed until its request finishes. Answers from the queue never run
 * the next request: that happens on a later loop turn (resume_ev), so queue callbacks
 * never see a connection change or go away under them.
 */
struct conn {
	struct server *srv;
	struct bufferevent *bev;
	struct event *resume_ev;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int admin;       /* root or a member of admin_group */
	int counted;     /* admitted: counts against max_connections_per_user */
	int owed;        /* enqueue answers owed */
	int waiting;     /* a wait answer is owed */
	char *held;      /* a line that waits for the owed answers */
	int processing;  /* inside conn_process: callbacks must not re-enter it */
	int eof;         /* the client closed its side */
	int closing;     /* close once the output is written */
	int kill;        /* drop now: freed by the outermost callback, never mid-request */
	int gone;        /* the peer closed both directions: nobody reads answers */
	int toolong;     /* an over-long line waits behind owed answers, then closes */
	int tmo_owes;    /* timeouts last set for this state (-1: never) */
	struct event *hup_ev; /* while not reading: notices the peer going away */
	int hup_fd;           /* its own dup of the socket (see conn_watch) */
	int64_t last_active; /* monotonic ms of its last request */
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
	int64_t max_per_user;
	TAILQ_HEAD(, conn) conns;
};

static void conn_process(struct conn *);
static void conn_dispatch(struct conn *, struct proto_request *);

static int
conn_busy(const struct conn *c)
{
	return c->waiting || c->held != NULL || c->owed >= CONN_MAX_OWED;
}

/* May it be closed to make room: nothing owed, nothing half-sent, quiet for a while? */
static int
conn_idle(const struct conn *c, int64_t now)
{
	return !c->waiting && c->held == NULL && c->owed == 0 && !c->closing &&
	    now - c->last_active >= CONN_EVICT_GRACE_MS &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

static void conn_hup_cb(evutil_socket_t, short, void *);

/*
 * While a connection is not read (it owes a wait after a half-close, or has a lot
 * pipelined), watch it for the peer going away: edge-triggered on a dup of the socket,
 * since libevent cannot mix edge- and level-triggered events on one descriptor. Without
 * a spare descriptor there is no watch; the wait's end or timeout frees it.
 */
static void
conn_watch(struct conn *c, int on)
{
	if (!on) {
		if (c->hup_ev != NULL) {
			event_free(c->hup_ev);
			close(c->hup_fd);
			c->hup_ev = NULL;
		}
		return;
	}
	if (c->hup_ev != NULL)
		return;
	if ((c->hup_fd = fcntl(bufferevent_getfd(c->bev), F_DUPFD_CLOEXEC, 0)) == -1)
		return;
	c->hup_ev = event_new(c->srv->base, c->hup_fd, EV_READ | EV_ET | EV_PERSIST,
	    conn_hup_cb, c);
	if (c->hup_ev == NULL || event_add(c->hup_ev, NULL) != 0) {
		if (c->hup_ev != NULL)
			event_free(c->hup_ev);
		c->hup_ev = NULL;
		close(c->hup_fd);
	}
}

/*
 * Read while there is room; time out an idle reader (a connection owing a wait is not
 * idle) and any connection whose answers make no progress for idle_timeout.
 */
static void
conn_io(struct conn *c)
{
	struct timeval tv = { c->srv->cfg->idle_timeout, 0 };
	size_t in = evbuffer_get_length(bufferevent_get_input(c->bev));
	size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));
	int owes = c->waiting || c->held != NULL || c->owed > 0;

	if (!c->eof && !c->closing && !c->kill && !c->toolong && out <= CONN_OUTPUT_HIGH &&
	    in < CONN_INPUT_MAX) {
		conn_watch(c, 0);
		bufferevent_enable(c->bev, EV_READ);
	} else {
		bufferevent_disable(c->bev, EV_READ);
		conn_watch(c, !c->gone && !c->closing && !c->kill);
	}
	/*
	 * Set only when the state changes: libevent restarts a timer whenever it is set,
	 * and a client's input must not restart the "answers make no progress" timer.
	 */
	if (owes != c->tmo_owes) {
		bufferevent_set_timeouts(c->bev, owes ? NULL : &tv, &tv);
		c->tmo_owes = owes;
	}
}

static void
conn_lost(struct conn *c)
{
	struct server *srv = c->srv;

	if (c->waiter != NULL)
		ops_wait_cancel(srv->q, c->waiter);
	if (c->owed > 0)
		ops_forget(srv->q, c);
	free(c->held);
	event_free(c->resume_ev);
	conn_watch(c, 0);
	bufferevent_free(c->bev);
	TAILQ_REMOVE(&srv->conns, c, entry);
	srv->nconns--;
	free(c);
}

/*
 * Queue one answer line. Returns -1 if the connection is to be dropped; it is not freed
 * here (callers still hold it), only marked.
 */
static int
conn_send(struct conn *c, json_object *o)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *s;
	size_t len;

	if (c->kill || c->gone) {
		json_object_put(o);
		return c->kill ? -1 : 0;
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

/* After an owed answer: carry on with the client's next lines on a later loop turn. */
static void
conn_resume_later(struct conn *c)
{
	if (!c->processing)
		event_active(c->resume_ev, 0, 0);
}

static void
conn_enqueue_answer(void *arg, json_object *o)
{
	struct conn *c = arg;

	c->owed--;
	conn_send(c, o);
	conn_resume_later(c);
}

static void
conn_wait_answer(void *arg, json_object *o)
{
	struct conn *c = arg;

	c->waiting = 0;
	c->waiter = NULL;
	conn_send(c, o);
	conn_resume_later(c);
}

static void
conn_resume_cb(evutil_socket_t fd, short events, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)events;
	if (c->kill) {
		conn_lost(c);
		return;
	}
	conn_process(c);
}

static void
conn_handle(struct conn *c, const char *line, size_t len)
{
	struct proto_request req;
	const char *code;
	char *cause;

	if (proto_request_parse(line, len, &req, &code, &cause) != 0) {
		if (c->owed > 0) {       /* its error must come after the owed answers */
			free(cause);
			c->held = xstrdup(line);
			return;
		}
		log_debug("bad request from uid %ld pid %ld: %s", (long)c->uid, (long)c->pid,
		    code);
		conn_send(c, proto_error(code, cause));
		free(cause);
		return;
	}
	if (req.op != OP_ENQUEUE && c->owed > 0) {
		proto_request_free(&req);
		c->held = xstrdup(line);
		return;
	}
	log_debug("%s from uid %ld pid %ld", proto_op_name(req.op), (long)c->uid, (long)c->pid);
	conn_dispatch(c, &req);
}

static void
conn_dispatch(struct conn *c, struct proto_request *req)
{
	struct server *srv = c->srv;
	struct ops_caller caller = { .uid = c->uid, .pid = c->pid, .admin = c->admin,
	    .requester = (int64_t)c->uid, .name = NULL };
	json_object *o;
	struct waiter *w;

	switch (req->op) {
	case OP_ENQUEUE:
		c->owed++;
		ops_enqueue(srv->q, req, &caller, conn_enqueue_answer, c);
		break;
	case OP_WAIT:
		if (c->gone)     /* nobody would read the answer */
			break;
		c->waiting = 1;
		w = ops_wait(srv->q, req->id, req->timeout_ms, &caller, conn_wait_answer,
		    c);
		if (c->waiting)
			c->waiter = w;
		break;
	case OP_STATUS:
		conn_send(c, ops_status(srv->q, req->id, &caller));
		break;
	case OP_CANCEL:
		conn_send(c, ops_cancel(srv->q, req->id, &caller));
		break;
	case OP_LIST:
		conn_send(c, ops_list(srv->q, req));
		break;
	case OP_STATS:
		conn_send(c, ops_stats(srv->q, srv->nconns));
		break;
	case OP_PAUSE:
	case OP_RESUME:
		if (!c->admin) {
			conn_send(c, proto_error("forbidden", "pause and resume need root or a "
			    "member of admin_group"));
			break;
		}
		log_notice("%s from uid %ld pid %ld", req->op == OP_PAUSE ? "pause" : "resume",
		    (long)c->uid, (long)c->pid);
		conn_send(c, ops_pause(srv->q, req->op == OP_PAUSE));
		break;
	case OP_PING:
		o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(1));
		json_object_object_add(o, "version", json_object_new_string(WPE_VERSION));
		json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
		conn_send(c, o);
		break;
	}
	proto_request_free(req);
}

/* A line held behind owed enqueue answers: its turn has come. */
static void
conn_release_held(struct conn *c)
{
	char *line = c->held;

	c->held = NULL;
	conn_handle(c, line, strlen(line));
	free(line);
}

/* Handle every complete line, in order, until one leaves it owing an answer. */
static void
conn_process(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer_ptr eol;
	size_t eol_len, avail, len;
	char *line;

	c->processing = 1;
	if (c->held != NULL && c->owed == 0 && !c->waiting)
		conn_release_held(c);
	if (c->toolong && c->owed == 0 && c->held == NULL && !c->waiting)
		goto too_long_now;
	while (!c->toolong && !conn_busy(c) && !c->closing && !c->kill &&
	    evbuffer_get_length(out) <= CONN_OUTPUT_HIGH) {
		avail = evbuffer_get_length(in);
		eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		/* The cap is on one line; a '\r' before its '\n' is not part of it. */
		if (eol.pos < 0) {
			if (avail > PROTO_MAX_LINE + 1)
				goto too_long;
			if (!c->eof || avail == 0)
				break;
			len = avail; /* a last line without a newline */
			eol_len = 0;
		} else if ((size_t)eol.pos > PROTO_MAX_LINE + 1)
			goto too_long;
		else
			len = (size_t)eol.pos;
		line = xmalloc(len + 1);
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len > PROTO_MAX_LINE) {
			free(line);
			goto too_long;
		}
		c->last_active = clock_mono_ms();
		if (len > 0)
			conn_handle(c, line, len);
		free(line);
		if (c->held && c->owed == 0 && !c->waiting)
			conn_release_held(c);
	}
	c->processing = 0;
	if (c->kill) {
		conn_lost(c);
		return;
	}
	conn_io(c);
	if (c->eof && !conn_busy(c) && c->owed == 0 && !c->closing &&
	    evbuffer_get_length(in) == 0) {
		c->closing = 1;
		if (evbuffer_get_length(out) == 0)
			conn_lost(c);
		else
			bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	}
	return;
too_long:
	if (c->owed > 0 || c->held != NULL) {
		/* Its error comes after the answers it owes; read nothing more meanwhile. */
		c->toolong = 1;
		c->processing = 0;
		conn_io(c);
		return;
	}
too_long_now:
	c->processing = 0;
	if (conn_send(c, proto_error("line_too_long",
	    "request line longer than 65536 bytes; closing the connection")) != 0) {
		conn_lost(c);
		return;
	}
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	c->last_active = clock_mono_ms();
	conn_process(c);
}

/* The output drained to its low-water mark: close, or take more of its requests. */
static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_lost(c);
		else
			bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (!c->processing)
		conn_process(c);
}

/* Has the peer closed both directions (not just its writing side)? */
static int
conn_peer_gone(struct conn *c)
{
	struct pollfd pfd;

	pfd.fd = bufferevent_getfd(c->bev);
	pfd.events = POLLOUT;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR)) != 0;
}

/*
 * The peer is gone entirely. If it was waiting, nothing after its wait may run (the wait
 * is never answered): drop the connection and its unread lines. Otherwise the lines it
 * sent before closing are still handled, their answers discarded.
 */
static void
conn_gone(struct conn *c)
{
	log_debug("client uid %ld pid %ld went away", (long)c->uid, (long)c->pid);
	c->gone = 1;
	conn_watch(c, 0);
	if (c->waiting) {
		if (c->processing)
			c->kill = 1;
		else
			conn_lost(c);
		return;
	}
	evbuffer_drain(bufferevent_get_output(c->bev),
	    evbuffer_get_length(bufferevent_get_output(c->bev)));
	if (!c->processing)
		conn_process(c);
}

/* Edge-triggered watch while not reading: new data, a half-close, or a hang-up. */
static void
conn_hup_cb(evutil_socket_t fd, short events, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)events;
	if (!c->gone && conn_peer_gone(c))
		conn_gone(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT) {
		log_debug("closing %s client uid %ld pid %ld", (what & BEV_EVENT_WRITING) ?
		    "stalled (answers not read)" : "idle", (long)c->uid, (long)c->pid);
		conn_lost(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		/*
		 * A client that only shut down its writing side still reads its answers; one
		 * that is gone (a killed CI job) frees its slot and its wait now.
		 */
		if (conn_peer_gone(c)) {
			conn_gone(c);
			return;
		}
		if (!c->processing)
			conn_process(c);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		if (c->processing)
			c->kill = 1;
		else
			conn_lost(c);
	}
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
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
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
		c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->resume_ev = event_new(srv->base, -1, 0, conn_resume_cb, c);
		c->tmo_owes = -1;
		if (c->bev == NULL || c->resume_ev == NULL) {
			if (c->bev != NULL)
				bufferevent_free(c->bev);
			else
				close(fd);
			if (c->resume_ev != NULL)
				event_free(c->resume_ev);
			free(c);
			continue;
		}
		c->last_active = clock_mono_ms();
		bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
		/* Called back when the output drains to this: see conn_write_cb. */
		bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_LOW, 0);
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
	TAILQ_FOREACH_SAFE(c, &srv->conns, entry, t) {
		c->closing = 1;
		bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
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
