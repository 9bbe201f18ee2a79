/* http-answer.c: HTTP answers as JSON with their status (evhttp's own errors too); rate-limited logs. */
#include "compat.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "http-int.h"
#include "util.h"

static const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 417: return "Expectation Failed";
	case 429: return "Too Many Requests";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

/*
 * The Date header, made once a second: evhttp would format it for every answer (a
 * gmtime_r and a printf each time).
 */
static const char *
http_date(void)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
	    "Aug", "Sep", "Oct", "Nov", "Dec" };
	static char date[40];
	static time_t made = -1;
	time_t now = time(NULL);
	struct tm tm;

	if (now != made && gmtime_r(&now, &tm) != NULL) {
		snprintf(date, sizeof date, "%s, %02d %s %d %02d:%02d:%02d GMT", days[tm.tm_wday],
		    tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		made = now;
	}
	return date;
}

/*
 * Send an answer: its body is in b, or already in the request's output buffer (b NULL).
 * evhttp puts its headers and its body in the connection's output as two chains; over
 * TLS http-tls.c sends them as one record and one write() (it takes the output once
 * evhttp is done adding to it), a plain connection's writev sends both.
 */
void
http_reply(struct evhttp_request *req, int status, const char *reason, struct evbuffer *b)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	const char *date = http_date();

	if (date[0] != '\0')
		evhttp_add_header(hdr, "Date", date);
	/*
	 * HEAD: GET's headers without the body. libevent 2.1 leaves out only the length and
	 * sends the body, which a kept-alive client then reads as the next answer's start.
	 */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		struct evbuffer *out = evhttp_request_get_output_buffer(req);
		char len[24];

		snprintf(len, sizeof len, "%zu", evbuffer_get_length(out) +
		    (b != NULL ? evbuffer_get_length(b) : 0));
		evhttp_remove_header(hdr, "Content-Length");
		evhttp_add_header(hdr, "Content-Length", len);
		evbuffer_drain(out, evbuffer_get_length(out));
		b = NULL;
	}
	evhttp_send_reply(req, status, reason, b);
}

/* Send one JSON answer (taking o) with status; never an HTML page. */
void
http_send(struct evhttp_request *req, int status, json_object *o)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evhttp_request_get_output_buffer(req);
	const char *s;
	size_t len;

	s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	evbuffer_add(b, s, len);
	evbuffer_add(b, "\n", 1);
	json_object_put(o);
	evhttp_remove_header(hdr, "Content-Type");
	evhttp_add_header(hdr, "Content-Type", "application/json");
	/*
	 * A status that changes must not be kept by a cache in front. Only answers to GET
	 * and HEAD can be: a cache stores an answer to POST only with explicit freshness and
	 * never one to DELETE (RFC 9111, 2 and 3), so those go without the header.
	 */
	if (evhttp_request_get_command(req) & (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD))
		evhttp_add_header(hdr, "Cache-Control", "no-store");
	http_reply(req, status, http_reason(status), NULL);
}

void
http_error(struct evhttp_request *req, int status, const char *code, const char *msg)
{
	http_send(req, status, proto_error(code, msg));
}

/* The HTTP status of an ops answer: 200 for success, else by its error code. */
static int
http_status_of(json_object *o, const char **retry)
{
	json_object *v;
	const char *code;

	*retry = NULL;
	if (json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v))
		return 200;
	if (!json_object_object_get_ex(o, "error", &v))
		return 500;
	code = json_object_get_string(v);
	if (strcmp(code, "not_found") == 0)
		return 404;
	if (strcmp(code, "forbidden") == 0)
		return 403;
	if (strcmp(code, "finished") == 0 || strcmp(code, "idempotency_conflict") == 0 ||
	    strcmp(code, "not_requeueable") == 0)
		return 409;
	if (strcmp(code, "storage") == 0) {
		*retry = HTTP_STORAGE_RETRY;
		return 503;
	}
	if (strcmp(code, "queue_full") == 0) {
		*retry = HTTP_FULL_RETRY;
		return 503;
	}
	return 400;
}

void
http_send_ops(struct evhttp_request *req, json_object *o)
{
	const char *retry;
	int status = http_status_of(o, &retry);

	if (retry != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", retry);
	http_send(req, status, o);
}

const char *
http_answer_install(json_object *o)
{
	json_object *v;

	if (json_object_object_get_ex(o, "install", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

int
http_answer_ok(json_object *o)
{
	json_object *v;

	return json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

const char *
http_answer_state(json_object *o)
{
	json_object *v;

	if (json_object_object_get_ex(o, "state", &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return "";
}

/*
 * evhttp answers some requests itself, with evhttp_send_error and a small HTML page:
 * those it cannot parse (400: a bad request line or header, headers over 16 KiB, a bad
 * Content-Length, a malformed chunked body), a body over 64 KiB (413), an unknown method
 * (501), an Expect other than 100-continue (417). libevent 2.1 has no hook for that page
 * (evhttp_set_errorcb is 2.2's), but it calls evhttp_send_error through the PLT (the
 * Debian library is not linked -Bsymbolic), so this definition in the executable is the
 * one it runs: the same answer, as JSON. Like libevent's, it closes the connection. The
 * daemon links libevent dynamically; a static link fails on the duplicate symbol rather
 * than silently answering HTML. test_http.NeverHtml checks every case above.
 */
void
evhttp_send_error(struct evhttp_request *req, int error, const char *reason)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	const char *code, *msg;

	(void)reason;
	/* A failed chunked body is reported as 413; it may only be malformed. */
	if (req->chunked && error == 413)
		error = 400;
	switch (error) {
	case 400:
		code = "bad_request";
		msg = req->chunked ? "the chunked body is malformed or over 64 KiB" :
		    "the request cannot be parsed: a bad request line, header or "
		    "Content-Length, or headers over 16 KiB";
		break;
	case 413:
		code = "too_large";
		msg = "the body is over 64 KiB";
		break;
	case 417:
		code = "expectation_failed";
		msg = "the only Expect understood is 100-continue";
		break;
	case 501:
		code = "not_implemented";
		msg = "unknown method";
		break;
	case 404:
		code = "not_found";
		msg = "no such endpoint (see docs/http.md)";
		break;
	default:
		code = "error";
		msg = "the request cannot be answered";
		break;
	}
	/* As evhttp_send_page_: a fresh set of headers, HTTP/1.1 if the version is unknown. */
	evhttp_clear_headers(hdr);
	if (req->major == 0 || req->minor == 0) {
		req->major = 1;
		req->minor = 1;
	}
	evhttp_add_header(hdr, "Connection", "close");
	http_error(req, error, code, msg);
}

/* Rate-limited log lines ---------------------------------------------------------------- */

#define HTTP_LOG_SLOTS 64

static struct {
	char key[80];
	int64_t sec;
	unsigned long suppressed;
} http_log_slots[HTTP_LOG_SLOTS];

int
http_log_allowed(const char *kind, const char *addr, unsigned long *suppressed)
{
	char key[80];
	int64_t now = clock_mono_ms() / 1000;
	size_t i, victim = 0;

	snprintf(key, sizeof key, "%s %s", kind, addr);
	*suppressed = 0;
	for (i = 0; i < HTTP_LOG_SLOTS; i++) {
		if (strcmp(http_log_slots[i].key, key) == 0)
			break;
		if (http_log_slots[i].sec < http_log_slots[victim].sec)
			victim = i;
	}
	if (i == HTTP_LOG_SLOTS) {
		/* A new address takes the slot quiet for longest (an unused one first). */
		i = victim;
		snprintf(http_log_slots[i].key, sizeof http_log_slots[i].key, "%s", key);
		http_log_slots[i].sec = now;
		http_log_slots[i].suppressed = 0;
		return 1;
	}
	if (http_log_slots[i].sec == now) {
		http_log_slots[i].suppressed++;
		return 0;
	}
	*suppressed = http_log_slots[i].suppressed;
	http_log_slots[i].sec = now;
	http_log_slots[i].suppressed = 0;
	return 1;
}

const char *
http_log_more(unsigned long suppressed)
{
	static char buf[64];

	if (suppressed == 0)
		return "";
	snprintf(buf, sizeof buf, " (and %lu more like it not logged)", suppressed);
	return buf;
}
