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
#include <event2/event.h>
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
#define CONN_READ_CHUNK 16384             /* read(2) into this much reserved space... */
#define CONN_READ_ROUNDS 4                /* ...again while each read fills it */

/*
 * A connection answers its requests in order. Enqueues are handed to the group commit
 * and their answers are owed; any other request behind them is held until they are
 * answered; a wait is owed until its request finishes. Answers from the queue never run
 * the next request: that happens on a later loop turn (resume_ev), so queue callbacks
 * never see a connection change or go away under them.
 *
 * I/O is plain events, to keep system calls per request at what Redis makes: the read
 * event stays added from one request to the next (no epoll_ctl per request) and is read
 * with one read(2) into reserved buffer space (no FIONREAD); answers are written with
 * one writev(2) as soon as the pass that produced them ends, and a write event is added
 * only while the socket is full.
 */
struct conn {
	struct server *srv;
	int fd;
	struct evbuffer *in;
	struct evbuffer *out;
	struct event *rd_ev;    /* EV_PERSIST; added while reading, its timer = idle_timeout */
	struct event *wr_ev;    /* EV_PERSIST; added only while answers wait for room */
	struct event *resume_ev;
	int reading;     /* rd_ev is added */
	int writing;     /* wr_ev is added */
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
	int rd_owes;     /* owed something when rd_ev's timer was last set */
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
	    evbuffer_get_length(c->in) == 0 && evbuffer_get_length(c->out) == 0;
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
	if ((c->hup_fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0)) == -1)
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

static void
conn_read_stop(struct conn *c)
{
	if (c->reading) {
		event_del(c->rd_ev);
		c->reading = 0;
	}
}

static void
conn_write_stop(struct conn *c)
{
	if (c->writing) {
		event_del(c->wr_ev);
		c->writing = 0;
	}
}

/* Nobody will read the answers: drop what is buffered. */
static void
conn_discard_output(struct conn *c)
{
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	conn_write_stop(c);
}

/*
 * Write the buffered answers now: one writev(2). What the socket does not take waits
 * for the write event, whose timer drops a connection whose answers make no progress
 * for idle_timeout. 0, or -1 if the peer cannot be written to any more.
 */
static int
conn_flush(struct conn *c)
{
	struct timeval tv = { c->srv->cfg->idle_timeout, 0 };

	if (c->writing || c->kill || c->gone || evbuffer_get_length(c->out) == 0)
		return 0;   /* while writing, the socket was full: the write event says when */
	log_flush();    /* what is logged about a request is out before its answer */
	if (evbuffer_write(c->out, c->fd) == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR)
		return -1;
	if (evbuffer_get_length(c->out) > 0) {
		event_add(c->wr_ev, &tv);
		c->writing = 1;
	}
	return 0;
}

/*
 * Read while there is room; time out an idle reader (a connection owing a wait is not
 * idle) and any connection whose answers make no progress for idle_timeout.
 */
static void
conn_io(struct conn *c)
{
	struct timeval tv = { c->srv->cfg->idle_timeout, 0 };
	size_t in = evbuffer_get_length(c->in);
	size_t out = evbuffer_get_length(c->out);
	int owes = c->waiting || c->held != NULL || c->owed > 0;

	if (!c->eof && !c->closing && !c->kill && !c->toolong && out <= CONN_OUTPUT_HIGH &&
	    in < CONN_INPUT_MAX) {
		conn_watch(c, 0);
		/*
		 * The read event stays added; its timer is set only when the state changes
		 * (event_add restarts a timer whenever it is set). A read restarts it (the
		 * event is persistent), but never the write event's "no progress" timer.
		 */
		if (!c->reading) {
			event_add(c->rd_ev, owes ? NULL : &tv);
			c->reading = 1;
		} else if (owes != c->rd_owes) {
			if (owes)
				event_remove_timer(c->rd_ev);
			else
				event_add(c->rd_ev, &tv);
		}
		c->rd_owes = owes;
	} else {
		conn_read_stop(c);
		conn_watch(c, !c->gone && !c->closing && !c->kill);
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
	event_free(c->rd_ev);
	event_free(c->wr_ev);
	conn_watch(c, 0);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	close(c->fd);
	TAILQ_REMOVE(&srv->conns, c, entry);
	srv->nconns--;
	free(c);
}

/* Close once the answers are written (now, if they are). Not while processing. */
static void
conn_close_soon(struct conn *c)
{
	c->closing = 1;
	conn_read_stop(c);
	conn_watch(c, 0);
	if (conn_flush(c) != 0 || evbuffer_get_length(c->out) == 0)
		conn_lost(c);
}

/*
 * Queue one answer line; it is written when the pass that produced it ends (conn_process
 * or, for answers from the queue, its resume_ev). Returns -1 if the connection is to be
 * dropped; it is not freed here (callers still hold it), only marked.
 */
static int
conn_send(struct conn *c, json_object *o)
{
	struct evbuffer *out = c->out;
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
		conn_discard_output(c);
		conn_read_stop(c);
		c->closing = c->kill = 1;
		return -1;
	}
	return 0;
}

/*
 * After an owed answer: write it and carry on with the client's next lines from
 * resume_ev, right after the callback that answered (the group commit) returns.
 */
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
	case OP_INSTALLS:
		/* With "refresh", answered once the fetch settles: nothing runs before. */
		if (c->gone)
			break;
		c->waiting = 1;
		w = ops_installs(srv->q, req, &caller, conn_wait_answer, c, NULL, NULL);
		if (c->waiting)
			c->waiter = w;
		break;
	case OP_STATUS:
		conn_send(c, ops_status(srv->q, req->id, &caller));
		break;
	case OP_CANCEL:
		conn_send(c, ops_cancel(srv->q, req->id, &caller));
		break;
	case OP_REQUEUE:
		/* Answered like an enqueue once its commit is durable, or at once if refused. */
		c->owed++;
		if ((o = ops_requeue(srv->q, req->id, &caller, conn_enqueue_answer, c)) != NULL) {
			c->owed--;
			conn_send(c, o);
		}
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

static void conn_gone(struct conn *);
static int conn_peer_gone(struct conn *);

/* conn_flush from inside conn_process: a peer that cannot be written to is gone. */
static void
conn_flush_processing(struct conn *c)
{
	if (conn_flush(c) != 0)
		conn_gone(c);
}

/*
 * Handle every complete line, in order, until one leaves it owing an answer; then write
 * the answers of the pass at once.
 */
static void
conn_process(struct conn *c)
{
	struct evbuffer *in = c->in;
	struct evbuffer *out = c->out;
	struct evbuffer_ptr eol;
	size_t eol_len, avail, len;
	char *line;

	c->processing = 1;
	if (c->held != NULL && c->owed == 0 && !c->waiting)
		conn_release_held(c);
	if (c->toolong && c->owed == 0 && c->held == NULL && !c->waiting)
		goto too_long_now;
again:
	while (!c->toolong && !conn_busy(c) && !c->closing && !c->kill) {
		if (evbuffer_get_length(out) > CONN_OUTPUT_HIGH) {
			/* Stop here unless the socket takes enough; its write event resumes. */
			conn_flush_processing(c);
			if (c->kill || evbuffer_get_length(out) > CONN_OUTPUT_HIGH)
				break;
		}
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
done:
	if (!c->kill && !c->gone && conn_flush(c) != 0) {
		/* Gone: its remaining lines still run (answers discarded), unless it waited. */
		conn_gone(c);
		if (!c->kill)
			goto again;
	}
	c->processing = 0;
	if (c->kill) {
		conn_lost(c);
		return;
	}
	if (c->closing) {   /* stopping: free it once its answers are written */
		if (evbuffer_get_length(out) == 0)
			conn_lost(c);
		return;
	}
	if (c->eof && !conn_busy(c) && c->owed == 0 && evbuffer_get_length(in) == 0)
		conn_close_soon(c);
	else
		conn_io(c);
	return;
too_long:
	if (c->owed > 0 || c->held != NULL) {
		/* Its error comes after the answers it owes; read nothing more meanwhile. */
		c->toolong = 1;
		goto done;
	}
too_long_now:
	c->processing = 0;
	if (conn_send(c, proto_error("line_too_long",
	    "request line longer than 65536 bytes; closing the connection")) != 0) {
		conn_lost(c);
		return;
	}
	conn_close_soon(c);
}

/* Readable: one read(2) into reserved space, more only while each fills it. */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec v;
	ssize_t n = -1;
	size_t got = 0, room;
	int i;

	if (what & EV_TIMEOUT) {
		log_debug("closing idle client uid %ld pid %ld", (long)c->uid, (long)c->pid);
		conn_lost(c);
		return;
	}
	for (i = 0; i < CONN_READ_ROUNDS; i++) {
		if (evbuffer_reserve_space(c->in, CONN_READ_CHUNK, &v, 1) != 1) {
			errno = ENOMEM;
			break;
		}
		room = v.iov_len;
		if ((n = read(fd, v.iov_base, room)) <= 0) {
			evbuffer_commit_space(c->in, &v, 0);
			break;
		}
		got += (size_t)n;
		v.iov_len = (size_t)n;
		evbuffer_commit_space(c->in, &v, 1);
		if ((size_t)n < room || evbuffer_get_length(c->in) >= CONN_INPUT_MAX)
			break;
	}
	if (got > 0)
		c->last_active = clock_mono_ms();
	if (n == 0) {
		c->eof = 1;
		conn_read_stop(c);
		/*
		 * A client that only shut down its writing side still reads its answers; one
		 * that is gone (a killed CI job) frees its slot and its wait now.
		 */
		if (conn_peer_gone(c)) {
			conn_gone(c);
			return;
		}
	} else if (n == -1 && got == 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		conn_lost(c);   /* reset */
		return;
	}
	conn_process(c);
}

/* The socket has room again: write; close, or take more of its requests. */
static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (what & EV_TIMEOUT) {
		log_debug("closing stalled (answers not read) client uid %ld pid %ld",
		    (long)c->uid, (long)c->pid);
		conn_lost(c);
		return;
	}
	if (evbuffer_write(c->out, fd) == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		conn_gone(c);
		return;
	}
	if (evbuffer_get_length(c->out) == 0)
		conn_write_stop(c);
	if (c->closing) {
		if (evbuffer_get_length(c->out) == 0)
			conn_lost(c);
		return;
	}
	if (evbuffer_get_length(c->out) <= CONN_OUTPUT_LOW)
		conn_process(c);
}

/* Has the peer closed both directions (not just its writing side)? */
static int
conn_peer_gone(struct conn *c)
{
	struct pollfd pfd;

	pfd.fd = c->fd;
	pfd.events = POLLOUT;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR)) != 0;
}

/*
 * The peer is gone entirely (or cannot be written to). If it was waiting, nothing after
 * its wait may run (the wait is never answered): drop the connection and its unread
 * lines. Otherwise the lines it sent before closing are still handled, their answers
 * discarded.
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
	conn_discard_output(c);
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
