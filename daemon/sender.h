/* sender.h: HTTP purge requests through libcurl's multi_socket API on the libevent loop. */
#ifndef WPE_SENDER_H
#define WPE_SENDER_H

#include <event2/event.h>

#include "config.h"
#include "proto.h"

#define SENDER_MAX_BODY (64 * 1024)  /* bytes of an API answer; a longer one is aborted */
#define SENDER_MAX_BODY_TEXT "64 KiB"
#define SENDER_MAX_MESSAGE 512       /* bytes of the API's "message" kept for status */

struct send_result {
	int transport_ok;        /* 0: no HTTP answer (timeout, connection, TLS, ...) */
	long status;             /* HTTP status when transport_ok */
	const char *error;       /* transport error text, when !transport_ok */
	int connect_failed;      /* no connection was made: the API never saw the request */
	const char *retry_after; /* Retry-After header value, or NULL */
	char *message;           /* the API's "message", sanitised and bounded, or NULL */
	double seconds;          /* how long the request took */
};

/* Called once per started request with its outcome; job is the caller's pointer. */
/*
 * GET requests (the installs catalog) share the multi handle, its connections and its
 * limits, but are not purges: they are counted apart (sender_in_flight counts purges
 * only, so a catalog fetch never takes a purge's sending slot), may reuse connections
 * (a GET is safe to repeat), and their callback gets the body (at most max_body bytes).
 */
typedef void (*sender_get_cb)(void *arg, const struct send_result *, const char *body,
    size_t len);
typedef void (*sender_done_cb)(void *arg, void *job, const struct send_result *);

struct sender;

struct sender *sender_create(struct event_base *, const struct config *, sender_done_cb,
    void *arg);
/* Start POST {base_url}/installs/{install}/purge_cache. 0, or -1 with *cause. */
int sender_start(struct sender *, void *job, const char *install, enum purge_type,
    char **cause);
int sender_in_flight(const struct sender *);
/* Start GET url (an http(s) URL built by the caller). 0, or -1 with *cause. */
int sender_get(struct sender *, const char *url, size_t max_body, sender_get_cb, void *arg,
    char **cause);
/* Drop the GETs under way for arg, without calling back. */
void sender_get_cancel(struct sender *, void *arg);
/* Abort every request under way without calling back; returns their jobs via cb. */
void sender_abort_all(struct sender *, void (*cb)(void *arg, void *job), void *arg);
void sender_free(struct sender *);

/* Pull a bounded, printable "message" out of an API answer body. NULL if none. */
char *sender_parse_message(const char *body, size_t len);
/*
 * Text from the API made safe to show and log, in at most max bytes (whole characters):
 * valid UTF-8; C0 and C1 controls, DEL and U+2028/U+2029 become spaces; bidi controls
 * (U+061C, U+200E/F, U+202A-E, U+2066-F) and U+FEFF are removed; bytes that are not
 * UTF-8 become U+FFFD. The caller frees the result.
 */
char *sender_sanitize(const char *in, size_t max);

#endif
