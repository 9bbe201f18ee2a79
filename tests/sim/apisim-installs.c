/*
 * apisim-installs.c: the simulator's account: GET /installs paging, /installs/{id}, /user,
 * /status, and /_sim/installs to change the catalog and script faults while it runs.
 *
 * GET /v1/installs?limit=L&offset=O answers {previous, next, count, results} as the real
 * API does (limit at most 100; next/previous full URLs or null). POST /_sim/installs takes
 *   {"add": [{"id": UUID, "name": NAME}, ...]}, {"remove": [NAME or UUID, ...]},
 *   {"fault": {"status": 429|503|..., "page": N (-1: any), "count": C, "retry_after": "1",
 *              "delay_ms": MS, "message": TEXT, "mode": "next_host"|"not_json"|"huge"|"bad_types"|
 *              "bad_entries"|"loop"|"endless"|"cursor_loop"}}
 * and GET /_sim/installs answers {"count", "gets" (page requests), "pages" (offsets
 * answered 200, in order), "faults_left"}.
 */
#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "apisim.h"

#define SIMCAT_MAX 200100     /* past the daemon's limit, to test it */
#define SIMCAT_ACCOUNT "5a0cc0a1-1a2b-4c3d-8e4f-5a6b7c8d9e0f"

struct sinst {
	char id[37];
	char name[16];
};

struct cfault {
	int status, page, count, delay_ms;
	char retry_after[64];
	char mode[24];
	char message[1024];  /* the error's "message" ("": the usual one) */
};

static struct {
	struct event_base *base;
	int port;
	struct sinst *v;
	int n, cap, seq;
	struct cfault f;     /* one scripted page fault at a time (count 0: none) */
	unsigned long gets;
	json_object *pages;  /* offsets answered 200 */
} cat;

void
simcat_init(struct event_base *base, int port)
{
	cat.base = base;
	cat.port = port;
	cat.pages = json_object_new_array();
}

void
simcat_free(void)
{
	free(cat.v);
	json_object_put(cat.pages);
}

static int
find(const char *key)
{
	int i;

	for (i = 0; i < cat.n; i++) {
		if (strcmp(cat.v[i].id, key) == 0 || strcmp(cat.v[i].name, key) == 0)
			return i;
	}
	return -1;
}

int
simcat_known(const char *id)
{
	return find(id) >= 0;
}

static int
add_unchecked(const char *id, const char *name)
{
	struct sinst *s;

	if (cat.n == SIMCAT_MAX || strlen(id) != 36 ||
	    (name != NULL && strlen(name) >= sizeof s->name))
		return -1;
	if (cat.n == cat.cap) {
		cat.cap = cat.cap == 0 ? 64 : cat.cap * 2;
		cat.v = realloc(cat.v, (size_t)cat.cap * sizeof *cat.v);
		if (cat.v == NULL)
			abort();
	}
	s = &cat.v[cat.n++];
	snprintf(s->id, sizeof s->id, "%s", id);
	cat.seq++;
	if (name != NULL)
		snprintf(s->name, sizeof s->name, "%s", name);
	else
		snprintf(s->name, sizeof s->name, "install%d", cat.seq % 1000000);
	return 0;
}

int
simcat_add(const char *id, const char *name)
{
	if (find(id) >= 0 || (name != NULL && find(name) >= 0))
		return -1;
	return add_unchecked(id, name);
}

void
simcat_generate(int n)
{
	char id[37], name[16];
	int i;

	for (i = 1; i <= n; i++) {
		snprintf(id, sizeof id, "%08x-0000-4000-8000-%012x", (unsigned)i, (unsigned)i);
		snprintf(name, sizeof name, "site%05d", i % 1000000);
		/* Unique by construction (and unlike the --install ones): no quadratic check. */
		(void)add_unchecked(id, name);
	}
}

static const char *
env_of(int i)
{
	static const char *envs[] = { "production", "staging", "development" };

	return envs[i % 3];
}

static json_object *
install_json(int i)
{
	json_object *o = json_object_new_object(), *acc = json_object_new_object();
	char buf[160];

	json_object_object_add(o, "id", json_object_new_string(cat.v[i].id));
	json_object_object_add(o, "name", json_object_new_string(cat.v[i].name));
	json_object_object_add(acc, "id", json_object_new_string(SIMCAT_ACCOUNT));
	json_object_object_add(o, "account", acc);
	json_object_object_add(o, "php_version", json_object_new_string("8.2"));
	json_object_object_add(o, "status", json_object_new_string("active"));
	json_object_object_add(o, "site", NULL);
	snprintf(buf, sizeof buf, "%s.wpengine.com", cat.v[i].name);
	json_object_object_add(o, "cname", json_object_new_string(buf));
	snprintf(buf, sizeof buf, "%s.example.com", cat.v[i].name);
	json_object_object_add(o, "primary_domain", json_object_new_string(buf));
	json_object_object_add(o, "environment", i % 7 == 6 ? NULL :
	    json_object_new_string(env_of(i)));
	json_object_object_add(o, "is_multisite", json_object_new_boolean(0));
	return o;
}

static long
query_long(const char *query, const char *key, long dflt)
{
	struct evkeyvalq q;
	const char *v;
	char *end;
	long n = dflt;

	TAILQ_INIT(&q);
	if (query != NULL && evhttp_parse_query_str(query, &q) == 0 &&
	    (v = evhttp_find_header(&q, key)) != NULL) {
		n = strtol(v, &end, 10);
		if (*end != '\0' || end == v)
			n = -1;
	}
	evhttp_clear_headers(&q);
	return n;
}

static json_object *
page_url(const char *host, long limit, long offset)
{
	char buf[256];

	snprintf(buf, sizeof buf, "http://%s:%d/v1/installs?limit=%ld&offset=%ld", host,
	    cat.port, limit, offset);
	return json_object_new_string(buf);
}

struct held {
	struct evhttp_request *req;
	int status;
	char *body;
	char retry_after[64];
	struct event *ev;
};

static void
held_cb(evutil_socket_t fd, short what, void *arg)
{
	struct held *h = arg;

	(void)fd;
	(void)what;
	reply(h->req, h->status, h->body, h->retry_after);
	event_free(h->ev);
	free(h->body);
	free(h);
}

/* Answer now, or delay_ms later. */
static void
answer(struct evhttp_request *req, int status, const char *body, const char *ra, int delay_ms)
{
	struct held *h;
	struct timeval tv;

	if (delay_ms <= 0) {
		reply(req, status, body, ra);
		return;
	}
	h = calloc(1, sizeof *h);
	if (h == NULL || (h->body = strdup(body)) == NULL)
		abort();
	h->req = req;
	h->status = status;
	snprintf(h->retry_after, sizeof h->retry_after, "%s", ra != NULL ? ra : "");
	h->ev = evtimer_new(cat.base, held_cb, h);
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	evtimer_add(h->ev, &tv);
}

/* A hostile or broken page, as the fault's mode says. */
static char *
hostile_page(const char *mode, long limit, long offset)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array(), *e;
	char *s;
	size_t n;

	json_object_object_add(o, "previous", NULL);
	json_object_object_add(o, "count", json_object_new_int64(cat.n));
	if (strcmp(mode, "not_json") == 0) {
		json_object_put(o);
		json_object_put(arr);
		return strdup("<html>502 Bad Gateway</html>");
	}
	if (strcmp(mode, "huge") == 0) {
		json_object_put(o);
		json_object_put(arr);
		n = 4u << 20;
		if ((s = malloc(n + 1)) == NULL)
			abort();
		memset(s, ' ', n);
		s[0] = '[';
		s[n - 1] = ']';
		s[n] = '\0';
		return s;
	}
	if (strcmp(mode, "bad_types") == 0) {
		json_object_object_add(o, "results", json_object_new_string("nope"));
		json_object_object_add(o, "next", json_object_new_int(7));
		json_object_put(arr);
	} else if (strcmp(mode, "bad_entries") == 0) {
		e = json_object_new_object();          /* no id, no name */
		json_object_array_add(arr, e);
		e = json_object_new_object();
		json_object_object_add(e, "id", json_object_new_int(5));
		json_object_object_add(e, "name", json_object_new_string("Bad Name!"));
		json_object_array_add(arr, e);
		e = json_object_new_object();
		json_object_object_add(e, "id", json_object_new_string("not-a-uuid"));
		json_object_object_add(e, "name", json_object_new_string("fine"));
		json_object_array_add(arr, e);
		json_object_array_add(arr, json_object_new_string("an install?"));
		if (cat.n > 0)
			json_object_array_add(arr, install_json(0));
		json_object_object_add(o, "results", arr);
		json_object_object_add(o, "next", NULL);
	} else {
		json_object_object_add(o, "results", arr);
		if (strcmp(mode, "next_host") == 0)
			json_object_object_add(o, "next", page_url("127.0.0.2", limit,
			    offset + limit));
		else if (strcmp(mode, "loop") == 0)
			json_object_object_add(o, "next", page_url("127.0.0.1", limit, offset));
		else    /* endless: an empty page that always has a next one */
			json_object_object_add(o, "next", page_url("127.0.0.1", limit,
			    offset + limit));
		if (strcmp(mode, "endless") == 0)
			json_object_object_add(o, "count", json_object_new_int64(1000000000000LL));
	}
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static void
installs_page(struct evhttp_request *req)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	long limit = query_long(query, "limit", 100), offset = query_long(query, "offset", 0);
	json_object *o, *arr;
	struct cfault *f = &cat.f;
	char *hostile;
	long i;
	int delay = 0;

	cat.gets++;
	if (limit < 1 || limit > 100 || offset < 0) {
		reply_msg(req, 400, "limit must be 1 to 100, offset 0 or more", NULL);
		return;
	}
	if (f->count != 0 && (f->page < 0 || f->page == offset / limit)) {
		if (f->count > 0)
			f->count--;
		if (strcmp(f->mode, "cursor_loop") == 0) {
			/* A full page whose next is a cursor (no offset), two cursors in turn. */
			char buf[256];

			o = json_object_new_object();
			arr = json_object_new_array();
			for (i = 0; i < limit && i < cat.n; i++)
				json_object_array_add(arr, install_json((int)i));
			snprintf(buf, sizeof buf, "http://127.0.0.1:%d/v1/installs?limit=%ld&"
			    "cursor=c%lu", cat.port, limit, cat.gets % 2);
			json_object_object_add(o, "next", json_object_new_string(buf));
			json_object_object_add(o, "count", json_object_new_int64(cat.n));
			json_object_object_add(o, "results", arr);
			answer(req, 200, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			    NULL, f->delay_ms);
			json_object_put(o);
			return;
		}
		if (f->mode[0] != '\0') {
			hostile = hostile_page(f->mode, limit, offset);
			answer(req, 200, hostile, NULL, f->delay_ms);
			free(hostile);
			return;
		}
		if (f->status != 0) {
			o = json_object_new_object();
			json_object_object_add(o, "message", json_object_new_string(
			    f->message[0] != '\0' ? f->message : f->status == 429 ?
			    "Too Many Requests" : "Service Unavailable"));
			answer(req, f->status, json_object_to_json_string(o), f->retry_after,
			    f->delay_ms);
			json_object_put(o);
			return;
		}
		delay = f->delay_ms;    /* a slow page, answered normally */
	}
	o = json_object_new_object();
	arr = json_object_new_array();
	for (i = offset; i < offset + limit && i < cat.n; i++)
		json_object_array_add(arr, install_json((int)i));
	json_object_object_add(o, "previous", offset > 0 ? page_url("127.0.0.1", limit,
	    offset > limit ? offset - limit : 0) : NULL);
	json_object_object_add(o, "next", offset + limit < cat.n ? page_url("127.0.0.1", limit,
	    offset + limit) : NULL);
	json_object_object_add(o, "count", json_object_new_int64(cat.n));
	json_object_object_add(o, "results", arr);
	json_object_array_add(cat.pages, json_object_new_int64(offset));
	answer(req, 200, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), NULL, delay);
	json_object_put(o);
}

static void
control(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	json_object *o, *v, *e, *x, *a;
	char body[65536];
	size_t n = evbuffer_get_length(in), i;
	int k;

	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		o = json_object_new_object();
		json_object_object_add(o, "count", json_object_new_int(cat.n));
		json_object_object_add(o, "gets", json_object_new_int64((int64_t)cat.gets));
		json_object_object_add(o, "pages", json_object_get(cat.pages));
		json_object_object_add(o, "faults_left", json_object_new_int(cat.f.count));
		reply(req, 200, json_object_to_json_string(o), NULL);
		json_object_put(o);
		return;
	}
	if (n >= sizeof body)
		n = sizeof body - 1;
	evbuffer_copyout(in, body, n);
	body[n] = '\0';
	if ((o = json_tokener_parse(body)) == NULL) {
		reply_msg(req, 400, "bad request", NULL);
		return;
	}
	if (json_object_object_get_ex(o, "add", &v)) {
		for (i = 0; i < json_object_array_length(v); i++) {
			e = json_object_array_get_idx(v, i);
			if (!json_object_object_get_ex(e, "id", &x) ||
			    !json_object_object_get_ex(e, "name", &a) ||
			    simcat_add(json_object_get_string(x), json_object_get_string(a)) != 0) {
				json_object_put(o);
				reply_msg(req, 400, "bad or duplicate install", NULL);
				return;
			}
		}
	}
	if (json_object_object_get_ex(o, "remove", &v)) {
		for (i = 0; i < json_object_array_length(v); i++) {
			if ((k = find(json_object_get_string(json_object_array_get_idx(v, i)))) >= 0) {
				memmove(&cat.v[k], &cat.v[k + 1], (size_t)(cat.n - k - 1) *
				    sizeof *cat.v);
				cat.n--;
			}
		}
	}
	if (json_object_object_get_ex(o, "fault", &v)) {
		memset(&cat.f, 0, sizeof cat.f);
		cat.f.page = -1;
		cat.f.count = 1;
		if (json_object_object_get_ex(v, "status", &x))
			cat.f.status = json_object_get_int(x);
		if (json_object_object_get_ex(v, "page", &x))
			cat.f.page = json_object_get_int(x);
		if (json_object_object_get_ex(v, "count", &x))
			cat.f.count = json_object_get_int(x);
		if (json_object_object_get_ex(v, "delay_ms", &x))
			cat.f.delay_ms = json_object_get_int(x);
		if (json_object_object_get_ex(v, "retry_after", &x))
			snprintf(cat.f.retry_after, sizeof cat.f.retry_after, "%s",
			    json_object_get_string(x));
		if (json_object_object_get_ex(v, "message", &x))
			snprintf(cat.f.message, sizeof cat.f.message, "%s",
			    json_object_get_string(x));
		if (json_object_object_get_ex(v, "mode", &x))
			snprintf(cat.f.mode, sizeof cat.f.mode, "%s", json_object_get_string(x));
	}
	if (json_object_object_get_ex(o, "reset_stats", NULL)) {
		cat.gets = 0;
		json_object_put(cat.pages);
		cat.pages = json_object_new_array();
	}
	json_object_put(o);
	reply(req, 200, "{\"ok\":true}", NULL);
}

int
simcat_handle(struct evhttp_request *req, const char *path)
{
	json_object *o;
	int i;

	if (strcmp(path, "/_sim/installs") == 0) {
		control(req);
		return 1;
	}
	if (strcmp(path, "/v1/status") == 0) {
		reply(req, 200, "{\"success\":true,\"created_on\":\"2026-11-28T00:00:00Z\"}", NULL);
		return 1;
	}
	if (strcmp(path, "/v1/user") != 0 && strcmp(path, "/v1/installs") != 0 &&
	    (strncmp(path, "/v1/installs/", 13) != 0 || strlen(path) != 13 + 36))
		return 0;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		reply_msg(req, 405, "Method Not Allowed", NULL);
		return 1;
	}
	if (!auth_ok(req)) {
		reply_msg(req, 401, "Bad Credentials", NULL);
		return 1;
	}
	if (strcmp(path, "/v1/user") == 0) {
		reply(req, 200, "{\"id\":\"a1b2c3d4-0000-4000-8000-000000000001\",\"first_name\":"
		    "\"API\",\"last_name\":\"User\",\"email\":\"api@example.com\"}", NULL);
		return 1;
	}
	if (strcmp(path, "/v1/installs") == 0) {
		installs_page(req);
		return 1;
	}
	if ((i = find(path + 13)) < 0) {
		reply_msg(req, 404, "Not Found", NULL);
		return 1;
	}
	o = install_json(i);
	reply(req, 200, json_object_to_json_string(o), NULL);
	json_object_put(o);
	return 1;
}
