/* http-tls.c: the HTTPS listener's transport: TLS on memory BIOs under evhttp. */
#include "compat.h"
#include <sys/socket.h>

#include <errno.h>
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
 * work, and libevent never polls the descriptor), and the TLS is ours: an SSL object on
 * memory BIOs, one persistent EV_READ event on the descriptor, and an EV_WRITE event
 * only while the kernel does not take what we write. A request costs a read and a write.
 *
 * Decrypted bytes go into the filter's input; evhttp's answer is taken from the filter's
 * output (its output filter never moves anything), encrypted and written; then evhttp is
 * told it is written (its write callback) once the kernel has all of it. What evhttp
 * expects of a bufferevent, and what this keeps to:
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
 *  - Bounded memory: the socket is not read while the input holds more than a request
 *    can (INPUT_CAP; evhttp refuses more than that itself when it reads), nor while
 *    ciphertext waits for the kernel (a client that does not read).
 *  - The answer is written when the kernel has it all: evhttp's completion (and its
 *    freeing of a Connection: close connection, whose shutdown(SHUT_WR) would cut what we
 *    hold) waits for it. Its generic timeouts (evhttp_set_timeout) are restarted on
 *    our reads and writes as a socket bufferevent's are.
 *  - evhttp frees the filter (bufferevent_free clears its callbacks at once; the filter's
 *    finaliser, htls_free, runs later): from then on it is never touched, and htls_free
 *    removes our events before it closes the descriptor.
 */

#define INPUT_CAP (HTTP_MAX_HEADERS + HTTP_MAX_BODY + 16 * 1024)
#define RECORD (16 * 1024)

struct htls {
	struct http *h;
	struct bufferevent *bev;      /* the filter evhttp has */
	struct bufferevent *under;    /* holds the descriptor for evhttp; never enabled */
	evutil_socket_t fd;
	SSL *ssl;
	BIO *rbio, *wbio;             /* memory BIOs: the network side */
	struct event *rev, *wev;
	struct event *kick;           /* the start (the descriptor is known), later flushes */
	struct evbuffer *pend;        /* ciphertext the kernel has not taken yet */
	struct evbuffer_cb_entry *in_cb, *out_cb;
	unsigned started:1;
	unsigned busy:1;              /* in settle: evhttp's output is flushed there */
	unsigned dirty:1;             /* evhttp's output has something to send */
	unsigned owed:1;              /* evhttp's write callback waits for pend to drain */
	unsigned parse:1;             /* input evhttp has not been shown */
	unsigned eof:1;               /* the peer's end: nothing more is read */
	unsigned err:1;               /* a TLS or socket error: nothing more is read or sent */
	unsigned polled:1;            /* rev is added */
	unsigned fresh:1;             /* the BIOs were renewed after the handshake */
};

static void htls_settle(struct htls *);

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

/* Read the socket only while it is worth it and memory allows. */
static void
htls_poll(struct htls *t)
{
	int want = t->started && !t->eof && !t->err && htls_alive(t) &&
	    evbuffer_get_length(t->pend) == 0 &&
	    evbuffer_get_length(bufferevent_get_input(t->bev)) <= INPUT_CAP;

	if (want == t->polled)
		return;
	if (want)
		event_add(t->rev, NULL);
	else
		event_del(t->rev);
	t->polled = want;
	/* htls_input matters only while the socket is not read: off, evhttp's drains are free */
	if (want)
		evbuffer_cb_clear_flags(bufferevent_get_input(t->bev), t->in_cb,
		    EVBUFFER_CB_ENABLED);
	else
		evbuffer_cb_set_flags(bufferevent_get_input(t->bev), t->in_cb,
		    EVBUFFER_CB_ENABLED);
}

/* Send what the SSL object produced: write at once, poll for EV_WRITE only if blocked. */
static void
htls_send(struct htls *t)
{
	char *p;
	long n = BIO_get_mem_data(t->wbio, &p);
	ssize_t w = 0;

	if (n <= 0)
		return;
	if (t->err) {
		(void)BIO_reset(t->wbio);
		return;
	}
	if (evbuffer_get_length(t->pend) == 0) {
		w = send(t->fd, p, (size_t)n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				(void)BIO_reset(t->wbio);
				t->err = 1;
				return;
			}
			w = 0;
		}
	}
	if (w < n) {
		evbuffer_add(t->pend, p + w, (size_t)(n - w));
		event_add(t->wev, NULL);
	}
	(void)BIO_reset(t->wbio);
}

/* evhttp's output: encrypted (a record of up to 16 KiB at a time) and sent. */
static void
htls_flush(struct htls *t)
{
	struct evbuffer *out = bufferevent_get_output(t->bev);
	size_t len;
	int sent = 0;

	t->dirty = 0;
	while (!t->err && (len = evbuffer_get_length(out)) > 0) {
		int n = len > RECORD ? RECORD : (int)len;
		unsigned char *p = evbuffer_pullup(out, n);
		int r = SSL_write(t->ssl, p, n);

		if (r <= 0) {
			ERR_clear_error();
			t->err = 1;
			break;
		}
		evbuffer_drain(out, (size_t)r);
		sent = 1;
	}
	htls_send(t);
	if (t->err) {
		evbuffer_drain(out, evbuffer_get_length(out));
		return;
	}
	if (!sent)
		return;
	/*
	 * evhttp restarted its timers as it handed the answer over (bufferevent_enable), and
	 * restarts its read timer once told the answer is written: only a write the kernel
	 * does not take at once needs them restarted here (and on each progress after it).
	 */
	if (evbuffer_get_length(t->pend) > 0) {
		htls_touch(t);
		t->owed = 1;       /* told when the kernel has it (htls_write) */
		return;
	}
	/* evhttp_write_cb: the answer is written (evhttp_send_done may free the connection) */
	bufferevent_trigger(t->bev, EV_WRITE, 0);
	if (htls_alive(t) && htls_reading(t) &&
	    evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
		t->parse = 1;
}

/*
 * Bring evhttp up to date: its output sent, buffered input shown while it reads, then an
 * end or an error told. Never inside one of evhttp's own calls (busy).
 */
static void
htls_settle(struct htls *t)
{
	if (t->busy)
		return;
	t->busy = 1;
	while (htls_alive(t)) {
		if (t->dirty && !t->owed) {
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
			t->parse = 0;
			if (evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
				bufferevent_trigger(t->bev, EV_READ, 0);
			continue;
		}
		if (t->eof || t->err) {
			/* evhttp frees the connection, or ends a body that had no length */
			bufferevent_trigger_event(t->bev, BEV_EVENT_READING |
			    (t->err ? BEV_EVENT_ERROR : BEV_EVENT_EOF), 0);
		}
		break;
	}
	t->busy = 0;
	htls_poll(t);
}

/*
 * A memory BIO keeps the largest buffer it ever needed: without this the handshake's
 * flight (the certificate chain) and the ClientHello would stay with each connection for
 * its life, which made a held long-poll cost 22.5 KiB instead of 17.7. Once the
 * handshake is done and both are empty, fresh ones take their place (SSL_set_bio frees
 * the old pair).
 */
static void
htls_renew_bios(struct htls *t)
{
	BIO *r, *w;

	if (t->fresh || t->err || !SSL_is_init_finished(t->ssl) ||
	    BIO_ctrl_pending(t->rbio) != 0 || BIO_ctrl_pending(t->wbio) != 0)
		return;
	if ((r = BIO_new(BIO_s_mem())) == NULL || (w = BIO_new(BIO_s_mem())) == NULL)
		fatalx("out of memory");
	BIO_set_mem_eof_return(r, -1);
	SSL_set_bio(t->ssl, r, w);
	t->rbio = r;
	t->wbio = w;
	t->fresh = 1;
}

static void
htls_read(evutil_socket_t fd, short events, void *arg)
{
	struct htls *t = arg;
	struct evbuffer *in = bufferevent_get_input(t->bev);
	char buf[RECORD + 512];
	ssize_t n;
	int r = 0, got = 0, bad = 0;

	(void)events;
	if (!htls_alive(t)) {
		event_del(t->rev);
		t->polled = 0;
		return;
	}
	n = read(fd, buf, sizeof buf);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		t->err = 1;
	} else if (n == 0)
		t->eof = 1;
	else
		(void)BIO_write(t->rbio, buf, (int)n);
	/*
	 * The handshake too: SSL_read does it while it is not done. SSL_get_error reads the
	 * thread's error queue, which must be empty before the call: libcurl's sends share
	 * this thread and may leave errors on it.
	 */
	if (n > 0)
		ERR_clear_error();
	while (n > 0 && (r = SSL_read(t->ssl, buf, sizeof buf)) > 0) {
		evbuffer_add(in, buf, (size_t)r);
		got = 1;
	}
	if (n > 0) {
		switch (SSL_get_error(t->ssl, r)) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			break;
		case SSL_ERROR_ZERO_RETURN:     /* close_notify */
			t->eof = 1;
			break;
		default:                        /* not TLS, a failed handshake, a bad record */
			bad = 1;
			ERR_clear_error();
			break;
		}
	}
	/* The handshake, tickets, an alert: the alert of a failure too, before err stops it. */
	htls_send(t);
	if (bad)
		t->err = 1;
	htls_renew_bios(t);
	if (got) {
		t->parse = 1;
		if (htls_reading(t))
			htls_touch(t);
	}
	htls_settle(t);
}

static void
htls_write(evutil_socket_t fd, short events, void *arg)
{
	struct htls *t = arg;
	int n;

	(void)events;
	n = evbuffer_write(t->pend, fd);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		t->err = 1;
		evbuffer_drain(t->pend, evbuffer_get_length(t->pend));
	}
	if (evbuffer_get_length(t->pend) > 0) {
		if (htls_alive(t))
			htls_touch(t);
		return;
	}
	event_del(t->wev);
	if (htls_alive(t) && t->owed && !t->err) {
		t->owed = 0;
		bufferevent_trigger(t->bev, EV_WRITE, 0);
		if (htls_alive(t) && htls_reading(t) &&
		    evbuffer_get_length(bufferevent_get_input(t->bev)) > 0)
			t->parse = 1;
	}
	t->owed = 0;
	if (htls_alive(t))
		htls_settle(t);
}

/* evhttp's answer is in the output: sent from the loop once evhttp is done adding it. */
static void
htls_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct htls *t = arg;

	(void)buf;
	if (info->n_added == 0 || t->dirty)
		return;
	t->dirty = 1;
	if (!t->busy && t->started)
		event_active(t->kick, 0, 0);
}

/* evhttp took input: read the socket again if the cap stopped it. */
static void
htls_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct htls *t = arg;

	(void)buf;
	if (info->n_deleted > 0 && !t->polled && !t->busy && t->started)
		htls_poll(t);
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
		t->started = 1;
		t->fd = bufferevent_getfd(t->bev);
		if (t->fd == -1)
			fatalx("HTTPS: a connection without a descriptor");
		if ((t->rev = event_new(t->h->base, t->fd, EV_READ | EV_PERSIST, htls_read,
		    t)) == NULL || (t->wev = event_new(t->h->base, t->fd,
		    EV_WRITE | EV_PERSIST, htls_write, t)) == NULL)
			fatalx("out of memory");
	}
	htls_settle(t);
}

/* The filter's finaliser, after evhttp freed it: our events go before the descriptor. */
static void
htls_free(void *arg)
{
	struct htls *t = arg;

	evbuffer_remove_cb_entry(bufferevent_get_input(t->bev), t->in_cb);
	evbuffer_remove_cb_entry(bufferevent_get_output(t->bev), t->out_cb);
	if (t->rev != NULL)
		event_free(t->rev);
	if (t->wev != NULL)
		event_free(t->wev);
	event_free(t->kick);
	SSL_free(t->ssl);
	evbuffer_free(t->pend);
	if (t->started)
		close(t->fd);
	free(t);
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
htls_new(struct http *h, struct event_base *base)
{
	struct htls *t = xcalloc(1, sizeof *t);

	t->h = h;
	t->fd = -1;
	if ((t->ssl = SSL_new(h->ctx)) == NULL)
		fatalx("SSL_new failed");
	if ((t->rbio = BIO_new(BIO_s_mem())) == NULL || (t->wbio = BIO_new(BIO_s_mem())) == NULL)
		fatalx("out of memory");
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_accept_state(t->ssl);
	/* No close on free: htls_free closes the descriptor, after our events are gone. */
	if ((t->pend = evbuffer_new()) == NULL ||
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
	event_active(t->kick, 0, 0);
	return t->bev;
}
