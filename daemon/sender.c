/* sender.c: POST purge requests with libcurl's multi_socket API driven by libevent. */
#include "compat.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "sender.h"
#include "util.h"

struct xfer {
	struct sender *s;
	CURL *easy;
	void *job;
	struct curl_slist *headers;
	char *body;              /* the API's answer, at most SENDER_MAX_BODY bytes */
	size_t len;
	char error[CURL_ERROR_SIZE];
	int too_long;            /* the answer went past max_body: aborted */
	size_t max_body;
	sender_get_cb get_cb;    /* a GET: its own callback, not counted in in_flight */
	void *get_arg;
	int64_t started;
	LIST_ENTRY(xfer) entry;
};

/* A socket libcurl asked us to watch; lives until CURL_POLL_REMOVE. */
struct sockinfo {
	struct event *ev;
	short what;
};

struct sender {
	struct event_base *base;
	const struct config *cfg;
	CURLM *multi;
	struct event *timer;
	sender_done_cb cb;
	void *arg;
	int in_flight;
	LIST_HEAD(, xfer) xfers;
};

static void check_multi_info(struct sender *);

static void
mcode_check(const char *where, CURLMcode rc)
{
	if (rc != CURLM_OK && rc != CURLM_BAD_SOCKET)
		log_error("%s: %s", where, curl_multi_strerror(rc));
}

/* libevent: a watched socket is ready. */
static void
event_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct sender *s = arg;
	int running, action = (kind & EV_READ ? CURL_CSELECT_IN : 0) |
	    (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);

	mcode_check("curl_multi_socket_action",
	    curl_multi_socket_action(s->multi, fd, action, &running));
	check_multi_info(s);
}

/* libevent: libcurl's timeout expired. */
static void
timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct sender *s = arg;
	int running;

	(void)fd;
	(void)kind;
	mcode_check("curl_multi_socket_action",
	    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running));
	check_multi_info(s);
}

/* libcurl: arm or disarm our one timer. Never call libcurl from here. */
static int
multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct sender *s = arg;
	struct timeval tv;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(s->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
	return 0;
}

/* libcurl: start, change or stop watching a socket. Never close it. */
static int
sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct sender *s = arg;
	struct sockinfo *si = sockp;
	short kind;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (si != NULL) {
			event_free(si->ev);
			free(si);
		}
		curl_multi_assign(s->multi, fd, NULL);
		return 0;
	}
	kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) |
	    (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	if (si == NULL) {
		si = xcalloc(1, sizeof *si);
		curl_multi_assign(s->multi, fd, si);
	} else {
		if (si->what == kind)
			return 0;
		event_free(si->ev);
	}
	si->what = kind;
	if ((si->ev = event_new(s->base, fd, kind, event_cb, s)) == NULL)
		fatalx("out of memory creating a socket event");
	event_add(si->ev, NULL);
	return 0;
}

/*
 * Keep the answer, up to SENDER_MAX_BODY bytes. Past that, abort the transfer (a short
 * count fails it): an answer that never ends must not be read until the timeout.
 */
static size_t
write_cb(char *ptr, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	if (len > x->max_body - x->len) {
		x->too_long = 1;
		return 0;
	}
	memcpy(x->body + x->len, ptr, len);
	x->len += len;
	x->body[x->len] = '\0';
	return len;
}

struct sender *
sender_create(struct event_base *base, const struct config *cfg, sender_done_cb cb,
    void *arg)
{
	struct sender *s = xcalloc(1, sizeof *s);

	s->base = base;
	s->cfg = cfg;
	s->cb = cb;
	s->arg = arg;
	LIST_INIT(&s->xfers);
	if ((s->multi = curl_multi_init()) == NULL)
		fatalx("curl_multi_init failed");
	s->timer = evtimer_new(base, timer_cb, s);
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
	curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	/* One more than the purges: the catalog's GET never waits for a purge's connection. */
	curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->max_in_flight + 1);
	curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)cfg->max_in_flight + 1);
	return s;
}

static void
xfer_free(struct sender *s, struct xfer *x)
{
	LIST_REMOVE(x, entry);
	curl_multi_remove_handle(s->multi, x->easy);
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->headers);
	free(x->body);
	if (x->get_cb == NULL)
		s->in_flight--;
	free(x);
}

/* A transfer with what every API request has: auth, TLS, timeouts, bounded answer. */
static struct xfer *
xfer_new(struct sender *s, const char *url, size_t max_body, char **cause)
{
	const struct config *cfg = s->cfg;
	struct xfer *x = xcalloc(1, sizeof *x);

	x->s = s;
	x->max_body = max_body;
	x->body = xmalloc(max_body + 1);
	x->body[0] = '\0';
	x->started = clock_mono_ms();
	if ((x->easy = curl_easy_init()) == NULL) {
		free(x->body);
		free(x);
		xasprintf(cause, "curl_easy_init failed");
		return NULL;
	}
	x->headers = curl_slist_append(NULL, "Accept: application/json");
	curl_easy_setopt(x->easy, CURLOPT_URL, url);
	curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(x->easy, CURLOPT_USERAGENT, "wpe-purged/" WPE_VERSION);
	curl_easy_setopt(x->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(x->easy, CURLOPT_USERNAME, cfg->api_user);
	curl_easy_setopt(x->easy, CURLOPT_PASSWORD, cfg->api_password);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)cfg->timeout * 1000);
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)(cfg->timeout < 10 ? cfg->timeout : 10) * 1000);
	curl_easy_setopt(x->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (cfg->ca_file != NULL)
		curl_easy_setopt(x->easy, CURLOPT_CAINFO, cfg->ca_file);
	curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
	/* A declared length over the cap fails before the body; write_cb catches the rest. */
	curl_easy_setopt(x->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->error);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	return x;
}

static int
xfer_add(struct sender *s, struct xfer *x, char **cause)
{
	CURLMcode mrc;

	LIST_INSERT_HEAD(&s->xfers, x, entry);
	if (x->get_cb == NULL)
		s->in_flight++;
	if ((mrc = curl_multi_add_handle(s->multi, x->easy)) != CURLM_OK) {
		xasprintf(cause, "curl_multi_add_handle: %s", curl_multi_strerror(mrc));
		xfer_free(s, x);
		return -1;
	}
	return 0;
}

int
sender_start(struct sender *s, void *job, const char *install, enum purge_type type,
    char **cause)
{
	struct xfer *x;
	char *url, body[32];

	if (!uuid_valid(install)) { /* the URL path must never carry anything else */
		xasprintf(cause, "refusing to send: bad install id");
		return -1;
	}
	xasprintf(&url, "%s/installs/%s/purge_cache", s->cfg->base_url, install);
	x = xfer_new(s, url, SENDER_MAX_BODY, cause);
	free(url);
	if (x == NULL)
		return -1;
	x->job = job;
	snprintf(body, sizeof body, "{\"type\":\"%s\"}", purge_type_name(type));
	x->headers = curl_slist_append(x->headers, "Content-Type: application/json");
	x->headers = curl_slist_append(x->headers, "Expect:");
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(x->easy, CURLOPT_COPYPOSTFIELDS, body);
	/*
	 * A connection of its own for every purge: on a reused connection that dies before
	 * any answer, libcurl quietly sends the POST again, so one attempt could reach the
	 * API twice, inside the install's window. A purge is never resent behind our back.
	 */
	curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(x->easy, CURLOPT_FORBID_REUSE, 1L);
	return xfer_add(s, x, cause);
}

int
sender_get(struct sender *s, const char *url, size_t max_body, sender_get_cb cb, void *arg,
    char **cause)
{
	struct xfer *x = xfer_new(s, url, max_body, cause);

	if (x == NULL)
		return -1;
	x->get_cb = cb;
	x->get_arg = arg;
	curl_easy_setopt(x->easy, CURLOPT_HTTPGET, 1L);
	return xfer_add(s, x, cause);
}

void
sender_get_cancel(struct sender *s, void *arg)
{
	struct xfer *x, *next;

	for (x = LIST_FIRST(&s->xfers); x != NULL; x = next) {
		next = LIST_NEXT(x, entry);
		if (x->get_cb != NULL && x->get_arg == arg)
			xfer_free(s, x);
	}
}

int
sender_in_flight(const struct sender *s)
{
	return s->in_flight;
}

/*
 * Decode the UTF-8 character at p: its code point and length, or -1 and length 1 when p
 * does not start a valid one (stray byte, overlong form, surrogate, beyond U+10FFFF, or
 * cut short: the terminating NUL is never a continuation byte, so reading stops there).
 */
static long
utf8_next(const unsigned char *p, size_t *n)
{
	unsigned int c = p[0], need, i;
	long cp;

	*n = 1;
	if (c < 0x80)
		return (long)c;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		cp = c & 0x07;
	} else
		return -1;
	for (i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*n = need + 1;
	return cp;
}

/* Characters that would act on a terminal or a log viewer rather than be read. */
static int
sanitize_blank(long cp)
{
	/* C0 and C1 controls (U+009B is the 8-bit CSI), DEL, line and paragraph separators */
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029;
}

static int
sanitize_invisible(long cp)
{
	/* Bidi marks, embeddings, overrides and isolates; deprecated format controls; BOM */
	return cp == 0x061c || cp == 0x200e || cp == 0x200f ||
	    (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x206f) || cp == 0xfeff;
}

char *
sender_sanitize(const char *in, size_t max)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	const unsigned char *p = (const unsigned char *)in;
	size_t len = strlen(in), cap, o = 0, inlen, outlen;
	const char *add;
	char *out;
	long cp;

	/* At most 3 bytes out per byte in (a stray byte becomes U+FFFD). */
	cap = len < max / 3 ? len * 3 : max;
	out = xmalloc(cap + 1);
	while (*p != '\0') {
		cp = utf8_next(p, &inlen);
		add = (const char *)p;
		outlen = inlen;
		if (cp == -1) {
			add = replacement;
			outlen = sizeof replacement - 1;
		} else if (sanitize_blank(cp)) {
			add = " ";
			outlen = 1;
		} else if (sanitize_invisible(cp))
			outlen = 0;
		if (o + outlen > cap)
			break;
		memcpy(out + o, add, outlen);
		o += outlen;
		p += inlen;
	}
	out[o] = '\0';
	return out;
}

char *
sender_parse_message(const char *body, size_t len)
{
	json_tokener *tok;
	json_object *obj, *m;
	char *msg = NULL;

	if (len == 0)
		return NULL;
	if ((tok = json_tokener_new_ex(16)) == NULL)
		return NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, body, (int)len);
	if (obj != NULL && json_object_is_type(obj, json_type_object) &&
	    json_object_object_get_ex(obj, "message", &m) &&
	    json_object_is_type(m, json_type_string) && json_object_get_string_len(m) > 0)
		msg = sender_sanitize(json_object_get_string(m), SENDER_MAX_MESSAGE);
	json_object_put(obj);
	json_tokener_free(tok);
	return msg;
}

static void
check_multi_info(struct sender *s)
{
	struct send_result r;
	struct curl_header *h;
	struct xfer *x;
	CURLMsg *msg;
	int left;
	char *ra;

	while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		memset(&r, 0, sizeof r);
		ra = NULL;
		if (msg->data.result == CURLE_OK) {
			r.transport_ok = 1;
			curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
			if (curl_easy_header(x->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) ==
			    CURLHE_OK && h->value != NULL)
				ra = sender_sanitize(h->value, 64);
			r.retry_after = ra;
			if (x->get_cb == NULL || r.status < 200 || r.status > 299)
				r.message = sender_parse_message(x->body, x->len);
		} else {
			CURLcode rc = msg->data.result;

			if (x->too_long || rc == CURLE_FILESIZE_EXCEEDED)
				r.error = x->get_cb != NULL ? "the answer is too long; transfer "
				    "aborted" : "the answer is longer than " SENDER_MAX_BODY_TEXT
				    "; transfer aborted";
			else if (x->error[0] != '\0')
				r.error = x->error;
			else
				r.error = curl_easy_strerror(rc);
			/* A broken answer: the API may have acted, so connect_failed stays 0. */
			r.connect_failed = rc == CURLE_COULDNT_CONNECT ||
			    rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY ||
			    rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
			    rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_UNSUPPORTED_PROTOCOL;
		}
		r.seconds = (double)(clock_mono_ms() - x->started) / 1000.0;
		/* Read all we need, then clean up, then tell the queue. */
		{
			void *job = x->job, *garg = x->get_arg;
			sender_get_cb gcb = x->get_cb;
			char errbuf[CURL_ERROR_SIZE], *body = NULL;
			size_t blen = x->len;

			if (!r.transport_ok) {
				char *clean = sender_sanitize(r.error, sizeof errbuf - 1);

				snprintf(errbuf, sizeof errbuf, "%s", clean);
				free(clean);
				r.error = errbuf;
			}
			if (gcb != NULL) {
				body = x->body;      /* kept for the callback */
				x->body = NULL;
			}
			xfer_free(s, x);
			if (gcb != NULL)
				gcb(garg, &r, body, blen);
			else
				s->cb(s->arg, job, &r);
			free(body);
		}
		free(ra);
		free(r.message);
	}
}

void
sender_abort_all(struct sender *s, void (*cb)(void *, void *), void *arg)
{
	struct xfer *x;

	/* The analyzer cannot follow LIST_REMOVE's le_prev update: a known false positive. */
	while ((x = LIST_FIRST(&s->xfers)) != NULL) {
		void *job = x->job; /* NOLINT(clang-analyzer-unix.Malloc) */
		int get = x->get_cb != NULL;

		xfer_free(s, x);
		if (cb != NULL && !get)
			cb(arg, job);
	}
}

void
sender_free(struct sender *s)
{
	if (s == NULL)
		return;
	sender_abort_all(s, NULL, NULL);
	curl_multi_cleanup(s->multi);
	event_free(s->timer);
	free(s);
}
