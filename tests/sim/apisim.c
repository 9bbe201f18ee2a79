/* apisim.c: a stand-in for the WP Engine purge API on loopback, with scriptable faults. */
#include <sys/queue.h>
#include <sys/time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

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
	int count;           /* calls left; -1: time-bounded */
	double until;        /* wall seconds */
	TAILQ_ENTRY(fault) entry;
};

static struct {
	struct event_base *base;
	const char *user, *password, *logpath;
	char installs[MAX_INSTALLS][37];
	int ninstalls;
	int any_install;
	double object_interval;
	const char *retry_after_mode; /* none, seconds, date */
	FILE *log;
	struct { char id[37]; double last; } last_obj[MAX_INSTALLS * 4];
	int nlast;
	TAILQ_HEAD(, fault) faults;
	unsigned long calls;
} sim;

static double
now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void
log_call(const char *install, const char *type, int status, const char *ua,
    const char *note)
{
	json_object *o;

	if (sim.log == NULL)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "t", json_object_new_double(now_s()));
	json_object_object_add(o, "install", json_object_new_string(install ? install : ""));
	json_object_object_add(o, "type", json_object_new_string(type ? type : ""));
	json_object_object_add(o, "status", json_object_new_int(status));
	json_object_object_add(o, "user_agent", json_object_new_string(ua ? ua : ""));
	json_object_object_add(o, "note", json_object_new_string(note ? note : ""));
	fprintf(sim.log, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(sim.log);
	json_object_put(o);
}

static void
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

static void
reply_msg(struct evhttp_request *req, int status, const char *msg, const char *retry_after)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "message", json_object_new_string(msg));
	reply(req, status, json_object_to_json_string(o), retry_after);
	json_object_put(o);
}

/* Base64 of "user:password" compared against the Authorization header. */
static int
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
	char install[37], type[16], ua[128];
	struct event *ev;
};

static void answer_purge(struct evhttp_request *, const struct fault *, const char *,
    const char *, const char *);

static void
delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;

	(void)fd;
	(void)what;
	d->f.delay_ms = 0;
	answer_purge(d->req, &d->f, d->install, d->type, d->ua);
	event_free(d->ev);
	free(d);
}

static void
answer_purge(struct evhttp_request *req, const struct fault *f, const char *install,
    const char *type, const char *ua)
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
		snprintf(d->install, sizeof d->install, "%s", install);
		snprintf(d->type, sizeof d->type, "%s", type);
		snprintf(d->ua, sizeof d->ua, "%s", ua);
		d->ev = evtimer_new(sim.base, delayed_cb, d);
		evtimer_add(d->ev, &tv);
		return;
	}
	if (f != NULL && f->drop) {
		log_call(install, type, 0, ua, "dropped");
		evhttp_connection_free(evhttp_request_get_connection(req));
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
		log_call(install, type, f->status ? f->status : 302, ua,
		    f->location[0] ? "redirect" : "big body");
		evhttp_send_reply(req, f->status ? f->status : 302, "Status", b);
		evbuffer_free(b);
		return;
	}
	if (f != NULL && f->malformed) {
		log_call(install, type, f->status ? f->status : 500, ua, "malformed");
		reply(req, f->status ? f->status : 500, "<html>gateway error", NULL);
		return;
	}
	if (f != NULL && f->status != 0) {
		log_call(install, type, f->status, ua, "fault");
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
			log_call(install, type, 429, ua, ra ? ra : "");
			reply_msg(req, 429, msg, ra);
			return;
		}
		if (last != NULL)
			*last = now;
	}
	log_call(install, type, 202, ua, "");
	reply(req, 202, NULL, NULL);
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

	sim.calls++;
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
	for (i = 0; i < sim.ninstalls && !known; i++) {
		if (strcmp(sim.installs[i], install) == 0)
			known = 1;
	}
	if (!known) {
		log_call(install, type, 404, ua, "unknown install");
		reply_msg(req, 404, "Not Found", NULL);
		return;
	}
	answer_purge(req, next_fault(), install, type, ua);
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
		reply(req, 200, "{\"ok\":true}", NULL);
	} else if (strcmp(path, "/v1/status") == 0)
		reply(req, 200, "{\"success\":true}", NULL);
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
	    "    [--retry-after none|seconds|date] [--log FILE]\n");
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
		{ NULL, 0, NULL, 0 }
	};
	struct evhttp *http;
	struct evhttp_bound_socket *bs;
	struct event *sigs[2];
	const char *portfile = NULL;
	int ch, port = 0;
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
	fprintf(stderr, "apisim: listening on 127.0.0.1:%d\n", port);
	sigs[0] = evsignal_new(sim.base, SIGTERM, sig_cb, sim.base);
	sigs[1] = evsignal_new(sim.base, SIGINT, sig_cb, sim.base);
	evsignal_add(sigs[0], NULL);
	evsignal_add(sigs[1], NULL);
	event_base_dispatch(sim.base);
	event_free(sigs[0]);
	event_free(sigs[1]);
	evhttp_free(http);
	event_base_free(sim.base);
	if (sim.log != NULL)
		fclose(sim.log);
	return 0;
}
