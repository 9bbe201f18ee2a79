/* server-int.h: what the Unix socket server's files (server*.c) share: connections, the server. */
#ifndef WPE_SERVER_INT_H
#define WPE_SERVER_INT_H

#include "compat.h"
#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "server.h"

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

/* server-conn.c: connections: I/O, line framing, lifetime. */
int conn_idle(const struct conn *, int64_t now);
/* Read while there is room, or watch for the peer going away (see conn_watch). */
void conn_io(struct conn *);
/* Free the connection now: its waiter cancelled, its owed answers forgotten. */
void conn_lost(struct conn *);
void conn_close_soon(struct conn *);
int conn_send(struct conn *, json_object *);
void conn_resume_later(struct conn *);
void conn_read_cb(evutil_socket_t, short, void *);
void conn_write_cb(evutil_socket_t, short, void *);
void conn_resume_cb(evutil_socket_t, short, void *);

/* server-dispatch.c: each request line to its operation, in order. */
/* Parse one line and run it, or hold it behind the answers owed before it. */
void conn_handle(struct conn *, const char *line, size_t len);
void conn_release_held(struct conn *);

#endif
