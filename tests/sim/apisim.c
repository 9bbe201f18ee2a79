/*
 * apisim.c: a stand-in for the WP Engine purge API on loopback, with scriptable faults.
 *
 * Faults (POST /_sim/fault) apply to the next `count` purge calls or for `for_ms`. A
 * random mode ({"random": {"202": 60, "429_seconds": 10, ...}, "seed": N}) makes every
 * purge call that no scripted fault claims draw its answer from weighted kinds (see
 * random_kinds below); {"random": null} or POST /_sim/reset turns it off.
 *
 * The call log (--log) has one JSON object per purge call: "t" (wall seconds when the
 * answer was written or the call was dropped), "arrived" (when the request had arrived),
 * "seq" (call number), "install", "type", "status" (0: dropped), "user_agent", "note",
 * "delay_ms" (how long the answer was held back), "kind" (the random draw, or "").
 */
#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "apisim.h"

#define MAX_INSTALLS 256
#define RL_MESSAGE_FMT "Object cache purges are rate-limited to one request every %d " \
	"seconds for each install"

/* A scripted fault: applies to the next `count` purge calls, or to calls until `until`. */
struct fault {
	int status;          /* answer this status (0: normal handling) */
	int delay_ms;        /* answer late */
	int drop;            /* close the connection without answering */
	int malformed;       /* answer with a body that is not JSON */
	char retry_after[64];
	char location[256];  /* a Location header (redirect faults) */
	int body_size;       /* answer with a body this long */
	char kind[24];       /* the random draw that made this answer ("": scripted) */
	int count;           /* calls left; -1: time-bounded */
	double until;        /* wall seconds */
	TAILQ_ENTRY(fault) entry;
};

static struct {
	struct event_base *base;
	const char *user, *password, *logpath;
	char installs[MAX_INSTALLS][37];
	int ninstalls;
	int unknown_delay_ms;   /* answer unknown installs' 404 this late */
	int any_install;
	double object_interval;
	const char *retry_after_mode; /* none, seconds, date */
	FILE *log;
	struct { char id[37]; double last; } last_obj[MAX_INSTALLS * 4];
	int nlast;
	TAILQ_HEAD(, fault) faults;
	unsigned long calls;
} sim;

/* The random-answer mode: weighted kinds, drawn per purge call from a seeded generator. */
enum rkind {
	RK_NORMAL,      /* "202": normal handling (the object interval, if set, then 202) */
	RK_STATUS,      /* "NNN": that status with a JSON message ("429": no Retry-After) */
	RK_429_SECONDS, /* 429, Retry-After: N seconds, N in 0..retry_after_max */
	RK_429_DATE,    /* 429, Retry-After: an HTTP-date N s from now, N in -2..retry_after_max */
	RK_429_FAR,     /* 429, Retry-After absurdly far (huge seconds or a year-2^31 date) */
	RK_SLOW,        /* held back slow_ms, then normal handling (past the client's timeout) */
	RK_LATE,        /* held back 0..late_ms, then normal handling */
	RK_DROP,        /* connection closed without an answer */
	RK_MALFORMED,   /* 500 with a body that is not JSON */
};
#define MAX_RCHOICES 32
static struct rmode {
	int on;
	struct { char name[24]; enum rkind kind; int status; double weight; } c[MAX_RCHOICES];
	int n;
	double total;
	uint64_t state;
	int slow_ms, late_ms, ra_max;
} rnd;

static uint64_t
rnd_next(void)
{
	uint64_t z = (rnd.state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A uniform double in [0, 1). */
static double
rnd_unit(void)
{
	return (double)(rnd_next() >> 11) / 9007199254740992.0;
}

static int
rnd_int(int lo, int hi)
{
	return hi <= lo ? lo : lo + (int)(rnd_next() % (uint64_t)(hi - lo + 1));
}

double
now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* What the call log records about a call besides its answer. */
struct callinfo {
	double arrived;
	unsigned long seq;
	int delay_ms;
	char kind[24];
};

static void
log_call_info(const struct callinfo *ci, const char *install, const char *type, int status,
    const char *ua, const char *note)
{
	json_object *o;
	double now = now_s();

	if (sim.log == NULL)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "t", json_object_new_double(now));
	json_object_object_add(o, "arrived", json_object_new_double(ci ? ci->arrived : now));
	json_object_object_add(o, "seq", json_object_new_int64(ci ? (int64_t)ci->seq :
	    (int64_t)sim.calls));
	json_object_object_add(o, "delay_ms", json_object_new_int(ci ? ci->delay_ms : 0));
	json_object_object_add(o, "kind", json_object_new_string(ci ? ci->kind : ""));
	json_object_object_add(o, "install", json_object_new_string(install ? install : ""));
	json_object_object_add(o, "type", json_object_new_string(type ? type : ""));
	json_object_object_add(o, "status", json_object_new_int(status));
	json_object_object_add(o, "user_agent", json_object_new_string(ua ? ua : ""));
	json_object_object_add(o, "note", json_object_new_string(note ? note : ""));
	fprintf(sim.log, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(sim.log);
	json_object_put(o);
}

/* Calls answered before they are parsed far enough to have a call record. */
static void
log_call(const char *install, const char *type, int status, const char *ua,
    const char *note)
{
	struct callinfo ci;

	memset(&ci, 0, sizeof ci);
	ci.arrived = now_s();
	ci.seq = sim.calls;
	log_call_info(&ci, install, type, status, ua, note);
}

void
reply(struct evhttp_request *req, int status, const char *body, const char *retry_after)
{
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	if (body != NULL) {
		evbuffer_add(b, body, strlen(body));
		evhttp_add_header(h, "Content-Type", "application/json");
	}
	if (retry_after != NULL && *retry_after != '\0')
		evhttp_add_header(h, "Retry-After", retry_after);
	evhttp_send_reply(req, status, status == 202 ? "Accepted" : "Status", b);
	evbuffer_free(b);
}

void
reply_msg(struct evhttp_request *req, int status, const char *msg, const char *retry_after)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "message", json_object_new_string(msg));
	reply(req, status, json_object_to_json_string(o), retry_after);
	json_object_put(o);
}

/* Base64 of "user:password" compared against the Authorization header. */
int
auth_ok(struct evhttp_request *req)
{
	static const char tbl[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	char plain[512], enc[700];
	size_t n, i, o = 0;

	if (h == NULL || strncmp(h, "Basic ", 6) != 0)
		return 0;
	n = (size_t)snprintf(plain, sizeof plain, "%s:%s", sim.user, sim.password);
	for (i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)plain[i] << 16;

		if (i + 1 < n)
			v |= (unsigned char)plain[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)plain[i + 2];
		enc[o++] = tbl[(v >> 18) & 63];
		enc[o++] = tbl[(v >> 12) & 63];
		enc[o++] = (char)(i + 1 < n ? tbl[(v >> 6) & 63] : '=');
		enc[o++] = (char)(i + 2 < n ? tbl[v & 63] : '=');
	}
	enc[o] = '\0';
	return strcmp(h + 6, enc) == 0;
}

static double *
last_object(const char *install)
{
	int i;

	for (i = 0; i < sim.nlast; i++) {
		if (strcmp(sim.last_obj[i].id, install) == 0)
			return &sim.last_obj[i].last;
	}
	if (sim.nlast == (int)(sizeof sim.last_obj / sizeof sim.last_obj[0]))
		return NULL;
	snprintf(sim.last_obj[sim.nlast].id, 37, "%s", install);
	sim.last_obj[sim.nlast].last = 0;
	return &sim.last_obj[sim.nlast++].last;
}

static struct fault *
next_fault(void)
{
	struct fault *f, *t;
	double now = now_s();

	for (f = TAILQ_FIRST(&sim.faults); f != NULL; f = t) {
		t = TAILQ_NEXT(f, entry);
		if ((f->count == 0) || (f->count < 0 && now >= f->until)) {
			TAILQ_REMOVE(&sim.faults, f, entry);
			free(f);
			continue;
		}
		if (f->count > 0)
			f->count--;
		return f;
	}
	return NULL;
}

struct delayed {
	struct evhttp_request *req;
	struct fault f;
	struct callinfo ci;
	char install[37], type[16], ua[128];
	struct event *ev;
};

static void answer_purge(struct evhttp_request *, const struct fault *, struct callinfo *,
    const char *, const char *, const char *);

static void
delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;

	(void)fd;
	(void)what;
	d->f.delay_ms = 0;
	answer_purge(d->req, &d->f, &d->ci, d->install, d->type, d->ua);
	event_free(d->ev);
	free(d);
}

static void
answer_purge(struct evhttp_request *req, const struct fault *f, struct callinfo *ci,
    const char *install, const char *type, const char *ua)
{
	char msg[256], date[64];
	double *last, now = now_s();
	time_t t;
	struct tm tm;
	const char *ra = NULL;

	if (f != NULL && f->delay_ms > 0) {
		struct delayed *d = calloc(1, sizeof *d);
		struct timeval tv = { f->delay_ms / 1000, (f->delay_ms % 1000) * 1000 };

		d->req = req;
		d->f = *f;
		d->ci = *ci;
		d->ci.delay_ms = f->delay_ms;
		snprintf(d->install, sizeof d->install, "%s", install);
		snprintf(d->type, sizeof d->type, "%s", type);
		snprintf(d->ua, sizeof d->ua, "%s", ua);
		d->ev = evtimer_new(sim.base, delayed_cb, d);
		evtimer_add(d->ev, &tv);
		return;
	}
	if (f != NULL && f->drop) {
		struct evhttp_connection *evcon = evhttp_request_get_connection(req);

		log_call_info(ci, install, type, 0, ua, "dropped");
		if (evcon != NULL)
			evhttp_connection_free(evcon);
		else    /* the client left while the answer was held back */
			evhttp_request_free(req);
		return;
	}
	if (f != NULL && (f->location[0] != '\0' || f->body_size > 0)) {
		struct evbuffer *b = evbuffer_new();
		int i;

		if (f->location[0] != '\0')
			evhttp_add_header(evhttp_request_get_output_headers(req), "Location",
			    f->location);
		evbuffer_add_printf(b, "{\"message\":\"");
		for (i = 0; i < f->body_size; i++)
			evbuffer_add(b, "A", 1);
		evbuffer_add_printf(b, "\"}");
		if (f->retry_after[0] != '\0')
			evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
			    f->retry_after);
		log_call_info(ci, install, type, f->status ? f->status : 302, ua,
		    f->location[0] ? "redirect" : "big body");
		evhttp_send_reply(req, f->status ? f->status : 302, "Status", b);
		evbuffer_free(b);
		return;
	}
	if (f != NULL && f->malformed) {
		log_call_info(ci, install, type, f->status ? f->status : 500, ua, "malformed");
		reply(req, f->status ? f->status : 500, "<html>gateway error", NULL);
		return;
	}
	if (f != NULL && f->status != 0) {
		log_call_info(ci, install, type, f->status, ua, "fault");
		if (f->status == 429)
			snprintf(msg, sizeof msg, RL_MESSAGE_FMT, (int)sim.object_interval);
		else
			snprintf(msg, sizeof msg, "simulated %d", f->status);
		reply_msg(req, f->status, msg, f->retry_after[0] ? f->retry_after : NULL);
		return;
	}
	if (strcmp(type, "object") == 0 || strcmp(type, "all") == 0) {
		last = last_object(install);
		if (last != NULL && *last > 0 && now - *last < sim.object_interval) {
			snprintf(msg, sizeof msg, RL_MESSAGE_FMT, (int)sim.object_interval);
			if (strcmp(sim.retry_after_mode, "seconds") == 0) {
				snprintf(date, sizeof date, "%d",
				    (int)(sim.object_interval - (now - *last)) + 1);
				ra = date;
			} else if (strcmp(sim.retry_after_mode, "date") == 0) {
				t = (time_t)(*last + sim.object_interval) + 1;
				gmtime_r(&t, &tm);
				strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
				ra = date;
			}
			log_call_info(ci, install, type, 429, ua, ra ? ra : "");
			reply_msg(req, 429, msg, ra);
			return;
		}
		if (last != NULL)
			*last = now;
	}
	log_call_info(ci, install, type, 202, ua, "");
	reply(req, 202, NULL, NULL);
}

/* Draws one answer in random mode, as a one-off fault. */
static void
random_draw(struct fault *f)
{
	double x = rnd_unit() * rnd.total;
	int i, k;
	time_t t;
	struct tm tm;

	memset(f, 0, sizeof *f);
	for (i = 0; i < rnd.n - 1 && x >= rnd.c[i].weight; i++)
		x -= rnd.c[i].weight;
	snprintf(f->kind, sizeof f->kind, "%s", rnd.c[i].name);
	switch (rnd.c[i].kind) {
	case RK_NORMAL:
		break;
	case RK_STATUS:
		f->status = rnd.c[i].status;
		break;
	case RK_429_SECONDS:
		f->status = 429;
		snprintf(f->retry_after, sizeof f->retry_after, "%d", rnd_int(0, rnd.ra_max));
		break;
	case RK_429_DATE:
		f->status = 429;
		t = (time_t)now_s() + rnd_int(-2, rnd.ra_max);
		gmtime_r(&t, &tm);
		strftime(f->retry_after, sizeof f->retry_after, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		break;
	case RK_429_FAR:
		f->status = 429;
		k = rnd_int(0, 2);
		snprintf(f->retry_after, sizeof f->retry_after, "%s",
		    k == 0 ? "99999999999999999999" : k == 1 ?
		    "Mon, 01 Jan 2147483647 00:00:00 GMT" : "Fri, 31 Dec 9999 23:59:59 GMT");
		break;
	case RK_SLOW:
		f->delay_ms = rnd.slow_ms;
		break;
	case RK_LATE:
		f->delay_ms = rnd_int(1, rnd.late_ms);
		break;
	case RK_DROP:
		f->drop = 1;
		break;
	case RK_MALFORMED:
		f->malformed = 1;
		f->status = 500;
		break;
	}
}

/*
 * {"random": {KIND: WEIGHT, ...}, "seed": N, "slow_ms": MS, "late_ms": MS,
 *  "retry_after_max": S}; {"random": null} or {"random": {}} turns the mode off.
 * Returns -1 on a bad kind or weight.
 */
static int random_parse(json_object *);

static int
random_config(json_object *o)
{
	struct rmode saved = rnd;   /* a bad request changes nothing */
	int rc;

	if ((rc = random_parse(o)) != 0)
		rnd = saved;
	return rc;
}

static int
random_parse(json_object *o)
{
	static const struct { const char *name; enum rkind kind; } named[] = {
		{ "202", RK_NORMAL }, { "ok", RK_NORMAL }, { "429_seconds", RK_429_SECONDS },
		{ "429_date", RK_429_DATE }, { "429_far", RK_429_FAR }, { "slow", RK_SLOW },
		{ "late", RK_LATE }, { "drop", RK_DROP }, { "malformed", RK_MALFORMED },
	};
	json_object *r = NULL, *v;
	size_t i;
	int n = 0, status;
	char *end;

	json_object_object_get_ex(o, "random", &r);
	rnd.on = 0;
	rnd.n = 0;
	rnd.total = 0;
	if (r == NULL || !json_object_is_type(r, json_type_object))
		return r == NULL ? 0 : -1;
	rnd.slow_ms = 2500;
	rnd.late_ms = 300;
	rnd.ra_max = 3;
	if (json_object_object_get_ex(o, "seed", &v))
		rnd.state = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(o, "slow_ms", &v))
		rnd.slow_ms = json_object_get_int(v);
	if (json_object_object_get_ex(o, "late_ms", &v))
		rnd.late_ms = json_object_get_int(v);
	if (json_object_object_get_ex(o, "retry_after_max", &v))
		rnd.ra_max = json_object_get_int(v);
	json_object_object_foreach(r, key, val) {
		double w = json_object_get_double(val);

		if (n == MAX_RCHOICES || w < 0 || strlen(key) >= sizeof rnd.c[0].name)
			return -1;
		snprintf(rnd.c[n].name, sizeof rnd.c[n].name, "%s", key);
		for (i = 0; i < sizeof named / sizeof named[0]; i++) {
			if (strcmp(key, named[i].name) == 0)
				break;
		}
		if (i < sizeof named / sizeof named[0]) {
			rnd.c[n].kind = named[i].kind;
		} else {
			status = (int)strtol(key, &end, 10);
			if (*end != '\0' || status < 200 || status > 599)
				return -1;
			rnd.c[n].kind = RK_STATUS;
			rnd.c[n].status = status;
		}
		rnd.c[n].weight = w;
		rnd.total += w;
		n++;
	}
	rnd.n = n;
	rnd.on = n > 0 && rnd.total > 0;
	return 0;
}

static void
purge_cb(struct evhttp_request *req, const char *path)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	const char *ua = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "User-Agent");
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
	char install[37] = "", body[1024], type[16] = "";
	json_object *o = NULL, *v;
	size_t n;
	int i, known = sim.any_install;
	struct callinfo cinfo, *ci = &cinfo;
	struct fault drawn;
	const struct fault *f;

	sim.calls++;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.arrived = now_s();
	cinfo.seq = sim.calls;
	/* path: /v1/installs/{uuid}/purge_cache */
	if (strlen(path) != strlen("/v1/installs/") + 36 + strlen("/purge_cache") ||
	    strncmp(path, "/v1/installs/", 13) != 0 ||
	    strcmp(path + 13 + 36, "/purge_cache") != 0) {
		log_call(NULL, NULL, 404, ua, "bad path");
		reply_msg(req, 404, "Not Found", NULL);
		return;
	}
	memcpy(install, path + 13, 36);
	install[36] = '\0';
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		reply_msg(req, 405, "Method Not Allowed", NULL);
		return;
	}
	if (!auth_ok(req)) {
		log_call(install, NULL, 401, ua, "bad credentials");
		reply_msg(req, 401, "Bad Credentials", NULL);
		return;
	}
	n = evbuffer_get_length(in);
	if (n >= sizeof body)
		n = sizeof body - 1;
	evbuffer_copyout(in, body, n);
	body[n] = '\0';
	if (ct != NULL && strncmp(ct, "application/json", 16) == 0)
		o = json_tokener_parse(body);
	if (o == NULL || !json_object_object_get_ex(o, "type", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    (strcmp(json_object_get_string(v), "object") != 0 &&
	    strcmp(json_object_get_string(v), "page") != 0 &&
	    strcmp(json_object_get_string(v), "cdn") != 0 &&
	    strcmp(json_object_get_string(v), "all") != 0)) {
		json_object_put(o);
		log_call(install, NULL, 400, ua, "bad body");
		reply(req, 400, "{\"message\":\"Invalid type\",\"errors\":[{\"resource\":"
		    "\"purge_cache\",\"field\":\"type\",\"type\":\"invalid_value\",\"code\":"
		    "\"invalid\",\"message\":\"Invalid type\"}]}", NULL);
		return;
	}
	snprintf(type, sizeof type, "%s", json_object_get_string(v));
	json_object_put(o);
	known = known || simcat_known(install);
	for (i = 0; i < sim.ninstalls && !known; i++) {
		if (strcmp(sim.installs[i], install) == 0)
			known = 1;
	}
	if (!known && sim.unknown_delay_ms > 0) {
		/* A slow 404, as for a junk install behind a busy API. */
		struct fault uf;

		memset(&uf, 0, sizeof uf);
		uf.status = 404;
		uf.delay_ms = sim.unknown_delay_ms;
		answer_purge(req, &uf, ci, install, type, ua);
		return;
	}
	if (!known) {
		log_call_info(ci, install, type, 404, ua, "unknown install");
		reply_msg(req, 404, "Not Found", NULL);
		return;
	}
	if ((f = next_fault()) == NULL && rnd.on) {
		random_draw(&drawn);
		snprintf(ci->kind, sizeof ci->kind, "%s", drawn.kind);
		f = &drawn;
	}
	answer_purge(req, f, ci, install, type, ua);
}

/* POST /_sim/fault {"status":503,"count":3} or {"status":503,"for_ms":2000}, etc. */
static void
fault_cb(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	char body[1024];
	size_t n = evbuffer_get_length(in);
	json_object *o, *v;
	struct fault *f;

	if (n >= sizeof body)
		n = sizeof body - 1;
	evbuffer_copyout(in, body, n);
	body[n] = '\0';
	if ((o = json_tokener_parse(body)) == NULL) {
		reply_msg(req, 400, "bad fault", NULL);
		return;
	}
	if (json_object_object_get_ex(o, "random", NULL)) {
		if (random_config(o) != 0) {
			json_object_put(o);
			reply_msg(req, 400, "bad random fault", NULL);
			return;
		}
		json_object_put(o);
		reply(req, 200, "{\"ok\":true}", NULL);
		return;
	}
	f = calloc(1, sizeof *f);
	f->count = 1;
	if (json_object_object_get_ex(o, "status", &v))
		f->status = json_object_get_int(v);
	if (json_object_object_get_ex(o, "delay_ms", &v))
		f->delay_ms = json_object_get_int(v);
	if (json_object_object_get_ex(o, "drop", &v))
		f->drop = json_object_get_boolean(v);
	if (json_object_object_get_ex(o, "malformed", &v))
		f->malformed = json_object_get_boolean(v);
	if (json_object_object_get_ex(o, "retry_after", &v))
		snprintf(f->retry_after, sizeof f->retry_after, "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "location", &v))
		snprintf(f->location, sizeof f->location, "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "body_size", &v))
		f->body_size = json_object_get_int(v);
	if (json_object_object_get_ex(o, "count", &v))
		f->count = json_object_get_int(v);
	if (json_object_object_get_ex(o, "for_ms", &v)) {
		f->count = -1;
		f->until = now_s() + json_object_get_double(v) / 1000.0;
	}
	json_object_put(o);
	TAILQ_INSERT_TAIL(&sim.faults, f, entry);
	reply(req, 200, "{\"ok\":true}", NULL);
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	struct evhttp_uri *u = evhttp_uri_parse(uri);
	const char *path = u ? evhttp_uri_get_path(u) : NULL;
	struct fault *f;

	(void)arg;
	if (path == NULL)
		reply_msg(req, 400, "bad uri", NULL);
	else if (strcmp(path, "/_sim/fault") == 0)
		fault_cb(req);
	else if (strcmp(path, "/_sim/reset") == 0) {
		while ((f = TAILQ_FIRST(&sim.faults)) != NULL) {
			TAILQ_REMOVE(&sim.faults, f, entry);
			free(f);
		}
		rnd.on = 0;
		reply(req, 200, "{\"ok\":true}", NULL);
	} else if (simcat_handle(req, path))
		;
	else
		purge_cb(req, path);
	if (u != NULL)
		evhttp_uri_free(u);
}

static void
sig_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

static void
usage(void)
{
	fprintf(stderr, "usage: apisim [--port N] [--port-file F] [--user U --password P]\n"
	    "    [--install UUID ...] [--any-install] [--object-interval S]\n"
	    "    [--retry-after none|seconds|date] [--log FILE] [--unknown-delay MS]\n"
	    "    [--installs N]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "port-file", required_argument, NULL, 'P' },
		{ "user", required_argument, NULL, 'u' },
		{ "password", required_argument, NULL, 'w' },
		{ "install", required_argument, NULL, 'i' },
		{ "any-install", no_argument, NULL, 'a' },
		{ "object-interval", required_argument, NULL, 'o' },
		{ "retry-after", required_argument, NULL, 'r' },
		{ "log", required_argument, NULL, 'l' },
		{ "unknown-delay", required_argument, NULL, 'U' },
		{ "installs", required_argument, NULL, 'N' },
		{ NULL, 0, NULL, 0 }
	};
	struct evhttp *http;
	struct evhttp_bound_socket *bs;
	struct event *sigs[2];
	const char *portfile = NULL;
	int ch, port = 0, ngen = 0, i;
	FILE *pf;

	sim.user = "user";
	sim.password = "password";
	sim.object_interval = 60;
	sim.retry_after_mode = "none";
	TAILQ_INIT(&sim.faults);
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'p': port = (int)strtol(optarg, NULL, 10); break;
		case 'P': portfile = optarg; break;
		case 'u': sim.user = optarg; break;
		case 'w': sim.password = optarg; break;
		case 'i':
			if (sim.ninstalls == MAX_INSTALLS || strlen(optarg) != 36)
				usage();
			snprintf(sim.installs[sim.ninstalls++], 37, "%s", optarg);
			break;
		case 'a': sim.any_install = 1; break;
		case 'o': sim.object_interval = strtod(optarg, NULL); break;
		case 'r': sim.retry_after_mode = optarg; break;
		case 'l': sim.logpath = optarg; break;
		case 'U': sim.unknown_delay_ms = (int)strtol(optarg, NULL, 10); break;
		case 'N': ngen = (int)strtol(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (sim.logpath != NULL && (sim.log = fopen(sim.logpath, "a")) == NULL) {
		perror(sim.logpath);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sim.base = event_base_new();
	http = evhttp_new(sim.base);
	evhttp_set_gencb(http, request_cb, NULL);
	evhttp_set_max_body_size(http, 65536);
	if ((bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)port)) ==
	    NULL) {
		fprintf(stderr, "apisim: cannot bind 127.0.0.1:%d\n", port);
		return 1;
	}
	{
		/*
		 * Accepted connections inherit it: evhttp writes an answer's headers and body
		 * apart, and Nagle held the body until libcurl's delayed ACK (40 ms for every
		 * catalog page on a kept-alive connection; purges use fresh ones).
		 */
		int one = 1;

		(void)setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof one);
	}
	if (port == 0) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;

		memset(&ss, 0, sizeof ss);
		getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len);
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	if (portfile != NULL) {
		char tmp[4096];

		snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
		if ((pf = fopen(tmp, "w")) == NULL) {
			perror(tmp);
			return 1;
		}
		fprintf(pf, "%d\n", port);
		fclose(pf);
		rename(tmp, portfile);
	}
	/* The catalog: the --install ones first (install1, install2, ...), then --installs N. */
	simcat_init(sim.base, port);
	for (i = 0; i < sim.ninstalls; i++)
		(void)simcat_add(sim.installs[i], NULL);
	simcat_generate(ngen);
	fprintf(stderr, "apisim: listening on 127.0.0.1:%d\n", port);
	sigs[0] = evsignal_new(sim.base, SIGTERM, sig_cb, sim.base);
	sigs[1] = evsignal_new(sim.base, SIGINT, sig_cb, sim.base);
	evsignal_add(sigs[0], NULL);
	evsignal_add(sigs[1], NULL);
	event_base_dispatch(sim.base);
	event_free(sigs[0]);
	event_free(sigs[1]);
	evhttp_free(http);
	simcat_free();
	event_base_free(sim.base);
	if (sim.log != NULL)
		fclose(sim.log);
	return 0;
}
