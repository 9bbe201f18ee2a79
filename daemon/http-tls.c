/* http-tls.c: the HTTPS listener's transport: TLS on its own thread, under evhttp. */
#include "compat.h"
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http-int.h"
#include "util.h"

/*
 * bufferevent_openssl cost a kept-alive request about 8 syscalls (it enables and
 * disables its read and write events around every answer: 4 epoll_ctl, 2 reads, 1-2
 * writes) and a third of the daemon's CPU. Here evhttp gets a bufferevent_filter over a
 * socket bufferevent that is never enabled (so evhttp's bufferevent_setfd and getfd
 * work, and libevent never polls the descriptor on the loop), and the TLS is ours: an
 * SSL object on memory BIOs, and the descriptor, on a thread of their own (the TLS
 * thread, its own event base): one persistent EV_READ event, and an EV_WRITE event only
 * while the kernel does not take what is written. A request costs the thread a read and
 * a write; the loop keeps evhttp, the handlers and the queue, and sees plaintext only.
 *
 * The loop and the thread trade mail, per connection, under one mutex (io->mu): the
 * thread hands up decrypted bytes, the peer's end or an error, "the kernel has all of
 * the answers up to N" and "a slow write progressed"; the loop hands down evhttp's
 * answers, the start (the descriptor is known) and the end. A connection with mail is on
 * the receiver's list once, and an eventfd wakes the receiver when its list stops being
 * empty, so a busy loop takes many connections' mail at one wake. What each side owns:
 *
 *  - the loop: the bufferevents evhttp has, the fields marked "loop" below;
 *  - the thread: the descriptor, the SSL object and its BIOs, the ciphertext the kernel
 *    has not taken (pend), its events, the fields marked "thread". The SSL object is made
 *    by the loop (with the context current at the accept) before the thread sees it;
 *  - both, under io->mu: the mail; atomics: how much evhttp has taken of its input.
 *
 * What evhttp expects of a bufferevent, and what this keeps to:
 *
 *  - Its read callback only while it reads (its read callback set and EV_READ enabled).
 *    While it handles a request (EV_READ disabled) or writes an answer (no read
 *    callback) it must not run: evhttp_read_cb exits the process in EVCON_WRITING.
 *    Bytes that come meanwhile stay in the input, and are shown to it when it reads
 *    again, just after the answer is written (that preempts evhttp_start_read_'s own
 *    deferred read of them).
 *  - An end of input (FIN, close_notify) or an error is told only while it reads, after
 *    it parsed what came before: told while a request is owed, evhttp would orphan the
 *    request (evhttp_connection_incoming_fail) and the answer would never go, so a
 *    client that half-closes after its request still gets the answer. A client gone for
 *    good while a long-poll waits is found by http-wait.c's hang-up watch.
 *  - Bounded memory: the thread does not read the socket while evhttp's input and the
 *    mail hold more than a request can (INPUT_CAP; evhttp refuses more than that itself
 *    when it reads), nor while ciphertext waits for the kernel (a client that does not
 *    read).
 *  - The answer is written when the kernel has it all: evhttp's completion (and its
 *    freeing of a Connection: close connection, whose shutdown(SHUT_WR) would cut what
 *    the thread holds) waits for the thread's word. Its generic timeouts
 *    (evhttp_set_timeout) are restarted on reads and writes as a socket bufferevent's are.
 *  - evhttp frees the filter (bufferevent_free clears its callbacks at once; the filter's
 *    finaliser, htls_free, runs later): from then on it is never touched. htls_free asks
 *    the thread to end the connection (its events, the SSL object, then the descriptor);
 *    the thread's last word on it, "closed", is the loop's cue to free the memory. Mail
 *    that came before it is ignored: the loop frees nothing the thread may still touch,
 *    and the thread never touches a connection after "closed".
 *  - The daemon's end: htls_io_stop joins the thread; connections evhttp frees after
 *    that (their finalisers run when the loop's base is freed) are ended on the loop.
 */

#define INPUT_CAP (HTTP_MAX_HEADERS + HTTP_MAX_BODY + 16 * 1024)
#define RECORD (16 * 1024)
#define BACKLOG (64 * 1024)   /* answers on their way to a client, before evhttp waits */

struct htls;

struct htls_io {
	pthread_t thread;
	pthread_mutex_t mu;
	struct event_base *base;      /* the thread's */
	struct event *wake_ev;        /* the thread's: mail for it (fd[TO_IO]) */
	struct event *loop_ev;        /* the loop's: mail for it (fd[TO_LOOP]) */
	int fd[2];                    /* eventfds: wake the thread (TO_IO), the loop */
	struct evbuffer *got;         /* the thread's: decrypted, not yet handed up */
	struct evbuffer *out;         /* the thread's: answers being encrypted */
	struct evbuffer *in;          /* the loop's: bytes on their way to evhttp */
	/* under mu */
	struct htls *head[2], *tail[2];   /* connections with mail for the thread, the loop */
	bool quit;
	/* the loop's */
	bool joined;                  /* the thread is gone: connections end on the loop */
	size_t conns;                 /* struct htls not freed yet */
};

struct htls {
	struct htls_io *io;
	/* the loop */
	struct http *h;               /* while evhttp has the filter (h outlives that) */
	struct bufferevent *bev;      /* the filter evhttp has */
	struct bufferevent *under;    /* holds the descriptor for evhttp; never enabled */
	struct event *kick;           /* the start (the descriptor is known), later flushes */
	struct evbuffer_cb_entry *in_cb, *out_cb;
	uint64_t handed;              /* answers handed to the thread */
	uint64_t written;             /* ... evhttp was told are written */
	uint64_t confirmed;           /* ... the thread said the kernel has */
	uint64_t handed_bytes;        /* their bytes */
	bool keeps;                   /* evhttp keeps the connection after this answer */
	bool started;
	bool busy;                    /* in settle: evhttp's output is flushed there */
	bool dirty;                   /* evhttp's output has something to send */
	bool parse;                   /* input evhttp has not been shown */
	bool eof;                     /* the peer's end, as the thread told it */
	bool err;                     /* a TLS or socket error: nothing more is sent */
	bool dead;                    /* htls_free ran: only the thread's "closed" matters */
	/* the thread (the loop's until the start) */
	evutil_socket_t fd;
	SSL *ssl;
	BIO *rbio, *wbio;             /* memory BIOs: the network side */
	struct event *rev, *wev;
	struct evbuffer *pend;        /* ciphertext the kernel has not taken yet */
	uint64_t delivered;           /* plaintext bytes handed up */
	uint64_t seen;                /* answers received from the loop */
	uint64_t reported;            /* ... reported written */
	uint64_t taken_bytes;         /* their bytes */
	uint64_t stored_bytes;        /* sent_bytes, as last stored */
	bool t_wait;                  /* the last one is awaited (it closes the connection) */
	bool t_started, t_eof, t_err, t_polled, t_fresh, t_progress, t_closed;
	bool told_eof, told_err;
	/* both, under io->mu */
	struct htls *next[2];         /* on io's lists */
	bool queued[2];
	struct evbuffer *dn;          /* answers for the thread */
	struct evbuffer *up;          /* plaintext for evhttp */
	uint64_t dn_handed;           /* the loop's handed, with the last of dn */
	uint64_t up_written;
	bool dn_start, dn_close, dn_wait;
	bool up_eof, up_err, up_progress, up_closed;
	/* both, atomic */
	atomic_uint_fast64_t consumed;    /* bytes evhttp took from its input */
	atomic_bool capped;               /* the thread stopped reading for INPUT_CAP */
	atomic_uint_fast64_t sent_bytes;  /* answers' bytes the kernel has all of */
};

static void htls_settle(struct htls *);
static void htls_io_free(struct htls_io *);

/* Mail ------------------------------------------------------------------------------- */

enum { TO_IO, TO_LOOP };

/*
 * With io->mu held: t has mail for the thread (TO_IO) or the loop (TO_LOOP). Unlocks,
 * and wakes the receiver if its list was empty (it takes the whole list at a wake).
 */
static void
mail(struct htls *t, int to)
{
	struct htls_io *io = t->io;
	bool wake = false;
	uint64_t one = 1;

	if (!t->queued[to]) {
		t->queued[to] = true;
		t->next[to] = NULL;
		if (io->tail[to] != NULL)
			io->tail[to]->next[to] = t;
		else
			io->head[to] = t;
		io->tail[to] = t;
		wake = io->head[to] == t;
	}
	pthread_mutex_unlock(&io->mu);
	if (wake)
		(void)!write(io->fd[to], &one, sizeof one);
}

/* Take the whole list of connections with mail for to; with its eventfd read. */
static struct htls *
mail_take(struct htls_io *io, int to, bool *quit)
{
	struct htls *t;
	uint64_t v;

	(void)!read(io->fd[to], &v, sizeof v);
	pthread_mutex_lock(&io->mu);
	t = io->head[to];
	io->head[to] = io->tail[to] = NULL;
	if (quit != NULL)
		*quit = io->quit;
	pthread_mutex_unlock(&io->mu);
	return t;
}

/* The thread ----------------------------------------------------------------------------- */

/* Hand the loop what it has not been told: bytes, the end, an error, written, progress. */
static void
io_report(struct htls *t)
{
	struct htls_io *io = t->io;
	size_t n = evbuffer_get_length(io->got);
	bool eof = t->t_eof && !t->told_eof, err = t->t_err && !t->told_err;
	/* written: awaited by the loop, or before it tells evhttp the peer's end */
	bool written = !t->t_err && t->seen != t->reported &&
	    evbuffer_get_length(t->pend) == 0 && (t->t_wait || t->t_eof);

	if (evbuffer_get_length(t->pend) == 0 && t->stored_bytes != t->taken_bytes) {
		t->stored_bytes = t->taken_bytes;
		atomic_store(&t->sent_bytes, t->taken_bytes);
	}

	if (n == 0 && !eof && !err && !written && !t->t_progress)
		return;
	pthread_mutex_lock(&io->mu);
	if (n > 0) {
		evbuffer_add_buffer(t->up, io->got);
		t->delivered += n;
	}
	if (eof)
		t->up_eof = t->told_eof = true;
	if (err)
		t->up_err = t->told_err = true;
	if (written) {
		t->up_written = t->reported = t->seen;
		t->t_wait = false;
	}
	if (t->t_progress)
		t->up_progress = true;
	t->t_progress = false;
	mail(t, TO_LOOP);
}

/* Read the socket only while it is worth it and memory allows. */
static void
io_poll(struct htls *t)
{
	bool want = t->t_started && !t->t_closed && !t->t_eof && !t->t_err &&
	    evbuffer_get_length(t->pend) == 0;

	if (want && t->delivered - atomic_load(&t->consumed) > INPUT_CAP) {
		/* the loop mails us once evhttp took some (htls_input), unless it just did */
		atomic_store(&t->capped, true);
		if (t->delivered - atomic_load(&t->consumed) > INPUT_CAP)
			want = false;
	}
	if (want == t->t_polled)
		return;
	if (want)
		event_add(t->rev, NULL);
	else
		event_del(t->rev);
	t->t_polled = want;
}

/* Send what the SSL object produced: write at once, poll for EV_WRITE only if blocked. */
static void
io_send(struct htls *t)
{
	char *p;
	long n = BIO_get_mem_data(t->wbio, &p);
	ssize_t w = 0;

	if (n <= 0)
		return;
	if (t->t_err) {
		(void)BIO_reset(t->wbio);
		return;
	}
	if (evbuffer_get_length(t->pend) == 0) {
		w = send(t->fd, p, (size_t)n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				(void)BIO_reset(t->wbio);
				t->t_err = true;
				return;
			}
			w = 0;
		}
	}
	if (w < n) {
		evbuffer_add(t->pend, p + w, (size_t)(n - w));
		event_add(t->wev, NULL);
		t->t_progress = true;      /* the timers restart as the answer goes out */
	}
	(void)BIO_reset(t->wbio);
}

/* The loop's answers: encrypted (a record of up to 16 KiB at a time) and sent. */
static void
io_encrypt(struct htls *t, struct evbuffer *out)
{
	size_t len;

	while (!t->t_err && (len = evbuffer_get_length(out)) > 0) {
		int n = len > RECORD ? RECORD : (int)len;
		unsigned char *p = evbuffer_pullup(out, n);
		int r;

		ERR_clear_error();
		if ((r = SSL_write(t->ssl, p, n)) <= 0) {
			ERR_clear_error();
			t->t_err = true;
			break;
		}
		evbuffer_drain(out, (size_t)r);
	}
	io_send(t);
	evbuffer_drain(out, evbuffer_get_length(out));
}

/*
 * A memory BIO keeps the largest buffer it ever needed: without this the handshake's
 * flight (the certificate chain) and the ClientHello would stay with each connection for
 * its life, which made a held long-poll cost 22.5 KiB instead of 17.7. Once the
 * handshake is done and both are empty, fresh ones take their place (SSL_set_bio frees
 * the old pair).
 */
static void
io_renew_bios(struct htls *t)
{
	BIO *r, *w;

	if (t->t_fresh || t->t_err || !SSL_is_init_finished(t->ssl) ||
	    BIO_ctrl_pending(t->rbio) != 0 || BIO_ctrl_pending(t->wbio) != 0)
		return;
	if ((r = BIO_new(BIO_s_mem())) == NULL || (w = BIO_new(BIO_s_mem())) == NULL)
		fatalx("out of memory");
	BIO_set_mem_eof_return(r, -1);
	SSL_set_bio(t->ssl, r, w);
	t->rbio = r;
	t->wbio = w;
	t->t_fresh = true;
}

static void
io_read(evutil_socket_t fd, short events, void *arg)
{
	struct htls *t = arg;
	char buf[RECORD + 512];
	ssize_t n;
	int r = 0;
	bool bad = false;

	(void)events;
	n = read(fd, buf, sizeof buf);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		t->t_err = true;
	} else if (n == 0)
		t->t_eof = true;
	else
		(void)BIO_write(t->rbio, buf, (int)n);
	/* The handshake too: SSL_read does it while it is not done. */
	if (n > 0)
		ERR_clear_error();  /* SSL_get_error needs the thread's error queue empty */
	while (n > 0 && (r = SSL_read(t->ssl, buf, sizeof buf)) > 0)
		evbuffer_add(t->io->got, buf, (size_t)r);
	if (n > 0) {
		switch (SSL_get_error(t->ssl, r)) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			break;
		case SSL_ERROR_ZERO_RETURN:     /* close_notify */
			t->t_eof = true;
			break;
		default:                        /* not TLS, a failed handshake, a bad record */
			bad = true;
			ERR_clear_error();
			break;
		}
	}
	/* The handshake, tickets, an alert: the alert of a failure too, before t_err stops it. */
	io_send(t);
	if (bad)
		t->t_err = true;
	io_renew_bios(t);
	io_report(t);
	io_poll(t);
}

static void
io_write(evutil_socket_t fd, short events, void *arg)
{
	struct htls *t = arg;
	int n;

	(void)events;
	n = evbuffer_write(t->pend, fd);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		t->t_err = true;
		evbuffer_drain(t->pend, evbuffer_get_length(t->pend));
	} else if (n > 0)
		t->t_progress = true;
	if (evbuffer_get_length(t->pend) == 0)
		event_del(t->wev);
	io_report(t);
	io_poll(t);
}

/* The connection's end on the thread: its events, the SSL object, then the descriptor. */
static void
io_teardown(struct htls *t)
{
	if (t->rev != NULL)
		event_free(t->rev);
	if (t->wev != NULL)
		event_free(t->wev);
	SSL_free(t->ssl);
	evbuffer_free(t->pend);
	if (t->t_started)
		close(t->fd);
	t->t_closed = true;
}

/* The thread's mail: starts, answers, resumes, ends. */
static void
io_mail(evutil_socket_t fd, short events, void *arg)
{
	struct htls_io *io = arg;
	struct htls *t, *next;
	bool quit, start, close_;

	(void)fd;
	(void)events;
	for (t = mail_take(io, TO_IO, &quit); t != NULL; t = next) {
		pthread_mutex_lock(&io->mu);
		next = t->next[TO_IO];
		t->queued[TO_IO] = false;
		start = t->dn_start;
		close_ = t->dn_close;
		t->dn_start = false;    /* mail with nothing else: io_poll looks again */
		if (evbuffer_get_length(t->dn) > 0) {
			t->taken_bytes += evbuffer_get_length(t->dn);
			evbuffer_add_buffer(io->out, t->dn);
			t->seen = t->dn_handed;
			t->t_wait = t->t_wait || t->dn_wait;
			t->dn_wait = false;
		}
		pthread_mutex_unlock(&io->mu);
		if (start)
			t->t_started = true;    /* the descriptor is ours to close */
		if (close_) {
			evbuffer_drain(io->out, evbuffer_get_length(io->out));
			io_teardown(t);
			pthread_mutex_lock(&io->mu);
			t->up_closed = true;
			mail(t, TO_LOOP);
			continue;       /* the loop may free t now */
		}
		if (start && ((t->rev = event_new(io->base, t->fd, EV_READ | EV_PERSIST, io_read,
		    t)) == NULL || (t->wev = event_new(io->base, t->fd, EV_WRITE | EV_PERSIST,
		    io_write, t)) == NULL))
			fatalx("out of memory");
		if (evbuffer_get_length(io->out) > 0)
			io_encrypt(t, io->out);
		io_report(t);
		io_poll(t);
	}
	if (quit)
		event_base_loopbreak(io->base);
}

static void *
io_main(void *arg)
{
	struct htls_io *io = arg;

	(void)pthread_setname_np(pthread_self(), "wpe-purged-tls");    /* top -H, ps -L */
	event_base_dispatch(io->base);
	OPENSSL_thread_stop();
	return NULL;
}

/* The loop ----------------------------------------------------------------------------- */

/* evhttp still has the filter (bufferevent_free clears the callbacks at once). */
static int
htls_alive(struct htls *t)
{
	bufferevent_event_cb ecb = NULL;

	bufferevent_getcb(t->bev, NULL, NULL, &ecb, NULL);
	return ecb != NULL;
}

/* evhttp reads: its read callback is set and EV_READ enabled (not handling, not writing). */
static int
htls_reading(struct htls *t)
{
	bufferevent_data_cb rcb = NULL;
	bufferevent_event_cb ecb = NULL;

	bufferevent_getcb(t->bev, &rcb, NULL, &ecb, NULL);
	return ecb != NULL && rcb != NULL && (bufferevent_get_enabled(t->bev) & EV_READ);
}

/* evhttp writes an answer (evhttp_write_buffer clears the read callback). */
static int
htls_writing(struct htls *t)
{
	bufferevent_data_cb rcb = NULL;
	bufferevent_event_cb ecb = NULL;

	bufferevent_getcb(t->bev, &rcb, NULL, &ecb, NULL);
	return ecb != NULL && rcb == NULL;
}

/* Progress: restart evhttp's gap timers (a socket bufferevent does on each read/write). */
static void
htls_touch(struct htls *t)
{
	struct timeval tv = { (time_t)t->h->cfg->http_idle_timeout, 0 };

	bufferevent_set_timeouts(t->bev, &tv, &tv);
}

/* Tell evhttp its answer is written (evhttp_send_done may free the connection). */
static void
htls_written(struct htls *t, uint64_t n)
{
	t->written = n;
	bufferevent_trigger(t->bev, EV_WRITE, 0);     /* evhttp_write_cb */
	if (htls_reading(t) &&
	    evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
		t->parse = true;
}

/*
 * Does the answer's head say the connection ends after it? hconn_keeps decided from the
 * request; what it cannot see is a "Connection: close" added to the answer (evhttp's
 * errors, ours). Any Connection header but keep-alive, or no complete head: yes.
 */
static bool
htls_closes(struct evbuffer *out)
{
	struct evbuffer_ptr end = evbuffer_search(out, "\r\n\r\n", 4, NULL);
	const char *p, *e, *line;

	if (end.pos < 0)
		return true;
	p = (const char *)evbuffer_pullup(out, end.pos + 2);
	e = p + end.pos + 2;
	for (line = memchr(p, '\n', (size_t)(e - p)); line != NULL && ++line < e;
	    line = memchr(line, '\n', (size_t)(e - line))) {
		if ((size_t)(e - line) < 11 || strncasecmp(line, "Connection:", 11) != 0)
			continue;
		line += 11;
		while (line < e && (*line == ' ' || *line == '\t'))
			line++;
		if ((size_t)(e - line) < 10 || strncasecmp(line, "keep-alive", 10) != 0)
			return true;
	}
	return false;
}

/*
 * evhttp's answer: handed to the thread. On a connection that stays open evhttp is told
 * at once that it is written, and reads the next request while the thread sends it: the
 * thread's queue stands for the kernel's, up to BACKLOG bytes (a client that does not
 * read gets no more answers made for it than that). Otherwise evhttp is told only once
 * the kernel has all of it (the thread says so): an answer after which evhttp closes
 * the connection (the request said so, hconn_keeps, or the answer's head: evhttp's free
 * would shut the socket under it), or one over the backlog. The peer's end is not told
 * before the thread said the kernel has every answer (htls_settle), for the same reason.
 */
static void
htls_flush(struct htls *t)
{
	struct evbuffer *out = bufferevent_get_output(t->bev);
	struct htls_io *io = t->io;
	size_t len = evbuffer_get_length(out);
	bool wait;

	t->dirty = false;
	if (len == 0)
		return;
	if (t->err || io->joined) {
		evbuffer_drain(out, len);
		return;
	}
	wait = !t->keeps || t->handed_bytes - atomic_load(&t->sent_bytes) + len > BACKLOG ||
	    htls_closes(out);
	t->keeps = false;       /* for this answer only (a 100 Continue, evhttp's own errors) */
	t->handed++;
	t->handed_bytes += len;
	pthread_mutex_lock(&io->mu);
	evbuffer_add_buffer(t->dn, out);
	t->dn_handed = t->handed;
	if (wait)
		t->dn_wait = true;
	mail(t, TO_IO);
	if (wait)
		return;         /* htls_mail tells evhttp, when the thread says so */
	/*
	 * evhttp restarted its timers as it handed the answer over (bufferevent_enable), and
	 * restarts its read timer once told the answer is written: only a write the kernel
	 * does not take at once needs them restarted (the thread says so: up_progress).
	 */
	htls_written(t, t->handed);
}

/*
 * Bring evhttp up to date: its output handed over, buffered input shown while it reads,
 * then an end or an error told. Never inside one of evhttp's own calls (busy).
 */
static void
htls_settle(struct htls *t)
{
	if (t->busy)
		return;
	t->busy = true;
	while (htls_alive(t)) {
		if (t->dirty && t->written == t->handed) {
			htls_flush(t);
			continue;
		}
		if (t->err && htls_writing(t)) {
			/* evhttp has handed the answer over (userdone): it frees the connection */
			bufferevent_trigger_event(t->bev, BEV_EVENT_ERROR | BEV_EVENT_WRITING, 0);
			continue;
		}
		if (!htls_reading(t))
			break;
		if (t->parse) {
			t->parse = false;
			if (evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
				bufferevent_trigger(t->bev, EV_READ, 0);
			continue;
		}
		if (t->err || (t->eof && t->confirmed == t->handed)) {
			/* evhttp frees the connection, or ends a body that had no length */
			bufferevent_trigger_event(t->bev, BEV_EVENT_READING |
			    (t->err ? BEV_EVENT_ERROR : BEV_EVENT_EOF), 0);
		}
		break;
	}
	t->busy = false;
}

/* The memory, once the thread has said its last word on the connection (or is gone). */
static void
htls_release(struct htls *t)
{
	struct htls_io *io = t->io;

	evbuffer_free(t->dn);
	evbuffer_free(t->up);
	free(t);
	if (--io->conns == 0 && io->joined)
		htls_io_free(io);
}

/* The thread's mail for one connection, taken under io->mu. */
struct up_mail {
	uint64_t written;
	bool eof, err, progress, closed;
};

static void
htls_mail(struct htls *t, const struct up_mail *m)
{
	struct htls_io *io = t->io;
	size_t n = evbuffer_get_length(io->in);

	if (m->closed) {
		evbuffer_drain(io->in, n);
		htls_release(t);
		return;
	}
	if (t->dead || io->joined || !htls_alive(t)) {
		evbuffer_drain(io->in, n);
		return;
	}
	if (m->eof)
		t->eof = true;
	if (m->err)
		t->err = true;
	if (n > 0) {
		evbuffer_add_buffer(bufferevent_get_input(t->bev), io->in);
		t->parse = true;
		if (htls_reading(t))
			htls_touch(t);
	}
	if (m->progress)
		htls_touch(t);
	if (m->written > t->confirmed)
		t->confirmed = m->written;
	if (t->confirmed > t->written && !t->err)
		htls_written(t, t->confirmed);
	if (htls_alive(t))
		htls_settle(t);
}

/* The loop's mail: for each connection with some, bytes, written, an end, an error. */
static void
htls_loop_mail(evutil_socket_t fd, short events, void *arg)
{
	struct htls_io *io = arg;
	struct htls *t, *next;
	struct up_mail m;

	(void)fd;
	(void)events;
	for (t = mail_take(io, TO_LOOP, NULL); t != NULL; t = next) {
		pthread_mutex_lock(&io->mu);
		next = t->next[TO_LOOP];
		t->queued[TO_LOOP] = false;
		m.written = t->up_written;
		m.eof = t->up_eof;
		m.err = t->up_err;
		m.progress = t->up_progress;
		m.closed = t->up_closed;
		t->up_eof = t->up_err = t->up_progress = false;
		if (evbuffer_get_length(t->up) > 0)
			evbuffer_add_buffer(io->in, t->up);
		pthread_mutex_unlock(&io->mu);
		htls_mail(t, &m);
	}
}

/* evhttp's answer is in the output: handed over from the loop once evhttp is done. */
static void
htls_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct htls *t = arg;

	(void)buf;
	if (info->n_added == 0 || t->dirty)
		return;
	t->dirty = true;
	if (!t->busy && t->started)
		event_active(t->kick, 0, 0);
}

/* evhttp took input: count it; if the thread stopped reading for INPUT_CAP, wake it. */
static void
htls_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct htls *t = arg;

	(void)buf;
	if (info->n_deleted == 0)
		return;
	atomic_fetch_add(&t->consumed, info->n_deleted);
	if (!atomic_load(&t->capped) || !atomic_exchange(&t->capped, false))
		return;
	pthread_mutex_lock(&t->io->mu);
	mail(t, TO_IO);         /* io_poll looks again */
}

static void
htls_kick(evutil_socket_t fd, short events, void *arg)
{
	struct htls *t = arg;

	(void)fd;
	(void)events;
	if (!htls_alive(t))
		return;
	if (!t->started) {
		/* evhttp has called bufferevent_setfd by now (the bevcb gets no descriptor) */
		evutil_socket_t s = bufferevent_getfd(t->bev);

		if (s == -1)
			fatalx("HTTPS: a connection without a descriptor");
		t->started = true;
		pthread_mutex_lock(&t->io->mu);
		t->fd = s;
		t->dn_start = true;
		mail(t, TO_IO);
	}
	htls_settle(t);
}

/*
 * The filter's finaliser, after evhttp freed it: the thread ends the connection and says
 * "closed", or, once the thread is gone, the loop ends it.
 */
static void
htls_free(void *arg)
{
	struct htls *t = arg;
	struct htls_io *io = t->io;

	evbuffer_remove_cb_entry(bufferevent_get_input(t->bev), t->in_cb);
	evbuffer_remove_cb_entry(bufferevent_get_output(t->bev), t->out_cb);
	event_free(t->kick);
	t->dead = true;
	t->h = NULL;
	if (io->joined) {
		t->t_started = t->started;
		io_teardown(t);
		htls_release(t);
		return;
	}
	pthread_mutex_lock(&io->mu);
	t->dn_close = true;
	mail(t, TO_IO);
}

static enum bufferevent_filter_result
htls_no_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t lim,
    enum bufferevent_flush_mode mode, void *arg)
{
	(void)src;
	(void)dst;
	(void)lim;
	(void)mode;
	(void)arg;
	return BEV_NEED_MORE;   /* htls_flush takes the output itself */
}

/* A new HTTPS connection's bufferevent for evhttp, with TLS by the context current now. */
struct bufferevent *
htls_new(struct http *h, struct event_base *base, struct htls **tp)
{
	struct htls *t = xcalloc(1, sizeof *t);

	t->io = h->io;
	t->h = h;
	t->fd = -1;
	atomic_init(&t->consumed, 0);
	atomic_init(&t->capped, false);
	atomic_init(&t->sent_bytes, 0);
	if ((t->ssl = SSL_new(h->ctx)) == NULL)
		fatalx("SSL_new failed");
	if ((t->rbio = BIO_new(BIO_s_mem())) == NULL || (t->wbio = BIO_new(BIO_s_mem())) == NULL)
		fatalx("out of memory");
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_accept_state(t->ssl);
	/* No close on free: the thread closes the descriptor, after its events are gone. */
	if ((t->pend = evbuffer_new()) == NULL || (t->dn = evbuffer_new()) == NULL ||
	    (t->up = evbuffer_new()) == NULL ||
	    (t->under = bufferevent_socket_new(base, -1, 0)) == NULL ||
	    (t->bev = bufferevent_filter_new(t->under, NULL, htls_no_output,
	    BEV_OPT_CLOSE_ON_FREE, htls_free, t)) == NULL)
		fatalx("out of memory");
	/* bufferevent_filter_new enabled it: with a descriptor, that would poll it. */
	bufferevent_disable(t->under, EV_READ | EV_WRITE);
	if ((t->out_cb = evbuffer_add_cb(bufferevent_get_output(t->bev), htls_output,
	    t)) == NULL ||
	    (t->in_cb = evbuffer_add_cb(bufferevent_get_input(t->bev), htls_input,
	    t)) == NULL || (t->kick = event_new(base, -1, 0, htls_kick, t)) == NULL)
		fatalx("out of memory");
	t->io->conns++;
	event_active(t->kick, 0, 0);
	*tp = t;
	return t->bev;
}

int
htls_unsent(const struct htls *t)
{
	return !t->err && t->handed_bytes != atomic_load(&t->sent_bytes);
}

void
htls_expect(struct htls *t, int keeps)
{
	t->keeps = keeps != 0;
}

/* The TLS thread ------------------------------------------------------------------------ */

static void
htls_io_free(struct htls_io *io)
{
	if (io->wake_ev != NULL)
		event_free(io->wake_ev);
	if (io->loop_ev != NULL)
		event_free(io->loop_ev);
	if (io->base != NULL)
		event_base_free(io->base);
	if (io->got != NULL)
		evbuffer_free(io->got);
	if (io->out != NULL)
		evbuffer_free(io->out);
	if (io->in != NULL)
		evbuffer_free(io->in);
	if (io->fd[TO_IO] != -1)
		close(io->fd[TO_IO]);
	if (io->fd[TO_LOOP] != -1)
		close(io->fd[TO_LOOP]);
	pthread_mutex_destroy(&io->mu);
	free(io);
}

struct htls_io *
htls_io_start(struct event_base *loop, char **cause)
{
	struct htls_io *io = xcalloc(1, sizeof *io);

	io->fd[TO_IO] = io->fd[TO_LOOP] = -1;
	pthread_mutex_init(&io->mu, NULL);
	if ((io->fd[TO_IO] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (io->fd[TO_LOOP] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		xasprintf(cause, "eventfd: %s", strerror(errno));
		goto fail;
	}
	if ((io->base = event_base_new()) == NULL ||
	    (io->wake_ev = event_new(io->base, io->fd[TO_IO], EV_READ | EV_PERSIST, io_mail,
	    io)) == NULL || (io->loop_ev = event_new(loop, io->fd[TO_LOOP], EV_READ | EV_PERSIST,
	    htls_loop_mail, io)) == NULL || (io->got = evbuffer_new()) == NULL ||
	    (io->out = evbuffer_new()) == NULL || (io->in = evbuffer_new()) == NULL)
		fatalx("out of memory");
	event_add(io->wake_ev, NULL);
	event_add(io->loop_ev, NULL);
	if ((errno = pthread_create(&io->thread, NULL, io_main, io)) != 0) {
		xasprintf(cause, "pthread_create: %s", strerror(errno));
		goto fail;
	}
	return io;
fail:
	htls_io_free(io);
	return NULL;
}

/*
 * The daemon ends, before evhttp is freed: the thread's pending mail is done (answers
 * handed to it are sent), it is joined, then its "closed"s are taken; the rest of its
 * mail is ignored. From now on connections end on the loop (htls_free).
 */
void
htls_io_stop(struct htls_io *io)
{
	if (io == NULL)
		return;
	pthread_mutex_lock(&io->mu);
	io->quit = true;
	pthread_mutex_unlock(&io->mu);
	(void)!write(io->fd[TO_IO], &(uint64_t){ 1 }, sizeof(uint64_t));
	pthread_join(io->thread, NULL);
	io->joined = true;
	io->conns++;            /* not freed by a "closed" taken here */
	htls_loop_mail(io->fd[TO_LOOP], EV_READ, io);
	event_free(io->loop_ev);
	io->loop_ev = NULL;
	if (--io->conns == 0)
		htls_io_free(io);
}
