/* server-conn.c: Unix socket connections: reading, line framing, writing answers, lifetime. */
#include "compat.h"
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "ops.h"
#include "proto.h"
#include "server-int.h"
#include "util.h"

static void conn_process(struct conn *);

static int
conn_busy(const struct conn *c)
{
	return c->waiting || c->held != NULL || c->owed >= CONN_MAX_OWED;
}

/* May it be closed to make room: nothing owed, nothing half-sent, quiet for a while? */
int
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
void
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

void
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
void
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
int
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
void
conn_resume_later(struct conn *c)
{
	if (!c->processing)
		event_active(c->resume_ev, 0, 0);
}

void
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
void
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
void
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
