/* http.c: wpe-purgectl over HTTPS: each socket-protocol request as an HTTP API call. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <dlfcn.h>

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

#include "http.h"
#include "util.h"

#define ANSWER_MAX (16 * 1024 * 1024)
#define TOKEN_MAX 512

/*
 * libcurl is loaded only when --url is used: linked in, its dozens of libraries would
 * cost every socket command milliseconds before main (4.8 ms instead of 1.1 for a ping).
 */
static struct {
	CURLcode (*global_init)(long);
	CURL *(*easy_init)(void);
	void (*easy_reset)(CURL *);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	const char *(*easy_strerror)(CURLcode);
	char *(*easy_escape)(CURL *, const char *, int);
	void (*free)(void *);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
} lc;

/* The POSIX idiom for a function pointer from dlsym. */
#define LOAD(field, name) do {						\
	if ((*(void **)&lc.field = dlsym(h, name)) == NULL) {		\
		xasprintf(cause, "libcurl.so.4 lacks %s", name);	\
		return -1;						\
	}								\
} while (0)

static int
load_curl(char **cause)
{
	void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);

	if (h == NULL) {
		xasprintf(cause, "--url needs libcurl (the libcurl4 package): %s", dlerror());
		return -1;
	}
	LOAD(global_init, "curl_global_init");
	LOAD(easy_init, "curl_easy_init");
	LOAD(easy_reset, "curl_easy_reset");
	LOAD(easy_setopt, "curl_easy_setopt");
	LOAD(easy_perform, "curl_easy_perform");
	LOAD(easy_getinfo, "curl_easy_getinfo");
	LOAD(easy_strerror, "curl_easy_strerror");
	LOAD(easy_escape, "curl_easy_escape");
	LOAD(free, "curl_free");
	LOAD(slist_append, "curl_slist_append");
	LOAD(slist_free_all, "curl_slist_free_all");
	return 0;
}

static struct {
	char *base;          /* the URL without a trailing slash */
	char *auth;          /* "Authorization: Bearer ..." */
	const char *cacert;
	CURL *curl;          /* one handle: keep-alive across calls */
} ch;

struct body {
	char *p;
	size_t len;
	int too_long;
};

static int
loopback_host(const char *url)
{
	const char *h = strstr(url, "://") + 3;

	return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost", 9) == 0 ||
	    strncmp(h, "[::1]", 5) == 0;
}

static char *
read_token(const char *path, char **cause)
{
	char buf[TOKEN_MAX + 2], *s, *e;
	FILE *f;
	size_t n;

	if (path == NULL) {
		if ((s = getenv("WPE_PURGED_TOKEN")) == NULL || *s == '\0') {
			xasprintf(cause, "no token: use --token-file FILE or set WPE_PURGED_TOKEN");
			return NULL;
		}
		snprintf(buf, sizeof buf, "%s", s);
	} else {
		if ((f = fopen(path, "re")) == NULL) {
			xasprintf(cause, "%s: %s", path, strerror(errno));
			return NULL;
		}
		n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = '\0';
	}
	/* The first line, without surrounding white space. */
	for (s = buf; isspace((unsigned char)*s); s++)
		;
	for (e = s; *e != '\0' && *e != '\n' && *e != '\r'; e++)
		;
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	if (*s == '\0' || strlen(s) > TOKEN_MAX) {
		xasprintf(cause, "the token %s is empty or too long", path != NULL ?
		    "file" : "in WPE_PURGED_TOKEN");
		explicit_bzero(buf, sizeof buf);
		return NULL;
	}
	for (e = s; *e != '\0'; e++) {
		if (!isgraph((unsigned char)*e)) {
			xasprintf(cause, "the token holds a character that cannot be sent");
			explicit_bzero(buf, sizeof buf);
			return NULL;
		}
	}
	xasprintf(&e, "Authorization: Bearer %s", s);
	explicit_bzero(buf, sizeof buf);
	return e;
}

int
chttp_init(const char *url, const char *token_file, const char *cacert, char **cause)
{
	size_t len = strlen(url);

	if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
		xasprintf(cause, "--url must start with https:// (or http:// for a loopback "
		    "address), not %s", url);
		return -1;
	}
	if (strncmp(url, "http://", 7) == 0 && !loopback_host(url)) {
		xasprintf(cause, "refusing to send a token in clear to %s: use https://", url);
		return -1;
	}
	if ((ch.auth = read_token(token_file, cause)) == NULL)
		return -1;
	ch.base = xstrdup(url);
	while (len > 0 && ch.base[len - 1] == '/')
		ch.base[--len] = '\0';
	ch.cacert = cacert;
	if (load_curl(cause) != 0)
		return -1;
	if (lc.global_init(CURL_GLOBAL_DEFAULT) != 0 || (ch.curl = lc.easy_init()) == NULL) {
		xasprintf(cause, "cannot initialise libcurl");
		return -1;
	}
	return 0;
}

const char *
chttp_url(void)
{
	return ch.base;
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;

	n *= size;
	if (b->len + n > ANSWER_MAX) {
		b->too_long = 1;
		return 0;
	}
	b->p = xrealloc(b->p, b->len + n + 1);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return n;
}

static const char *
jstr(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v != NULL ?
	    json_object_get_string(v) : NULL;
}

static int64_t
jint(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && v != NULL ?
	    json_object_get_int64(v) : 0;
}

static void
add_param(char **url, int *first, const char *key, const char *val)
{
	char *esc = lc.easy_escape(ch.curl, val, 0), *n;

	xasprintf(&n, "%s%s%s=%s", *url, *first ? "?" : "&", key, esc != NULL ? esc : "");
	lc.free(esc);
	free(*url);
	*url = n;
	*first = 0;
}

/* The HTTP call for a request: method, URL and body (NULL: none). */
static int
map_request(json_object *req, const char **method, char **url, char **body, char **cause)
{
	const char *op = jstr(req, "op"), *keys[] = { "install", "type", "state", NULL };
	json_object *b, *v;
	char num[32];
	int first = 1, i;

	*body = NULL;
	if (op == NULL)
		op = "";
	if (strcmp(op, "enqueue") == 0) {
		*method = "POST";
		xasprintf(url, "%s/v1/purges", ch.base);
		b = json_object_new_object();
		for (i = 0; i < 2; i++) {
			if (json_object_object_get_ex(req, keys[i], &v))
				json_object_object_add(b, keys[i], json_object_get(v));
		}
		if (json_object_object_get_ex(req, "reason", &v))
			json_object_object_add(b, "reason", json_object_get(v));
		if (json_object_object_get_ex(req, "source", &v))
			json_object_object_add(b, "source", json_object_get(v));
		*body = xstrdup(json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
		json_object_put(b);
	} else if (strcmp(op, "requeue") == 0) {
		*method = "POST";
		xasprintf(url, "%s/v1/purges/%lld/requeue", ch.base, (long long)jint(req, "id"));
		*body = xstrdup("{}");
	} else if (strcmp(op, "status") == 0 || strcmp(op, "wait") == 0 ||
	    strcmp(op, "cancel") == 0) {
		*method = strcmp(op, "cancel") == 0 ? "DELETE" : "GET";
		xasprintf(url, "%s/v1/purges/%lld", ch.base, (long long)jint(req, "id"));
		if (strcmp(op, "wait") == 0) {
			json_object_object_get_ex(req, "timeout", &v);
			snprintf(num, sizeof num, "%.3f", v != NULL ? json_object_get_double(v) :
			    60.0);
			add_param(url, &first, "wait", num);
		}
	} else if (strcmp(op, "list") == 0) {
		*method = "GET";
		xasprintf(url, "%s/v1/jobs", ch.base);
		for (i = 0; keys[i] != NULL; i++) {
			if ((keys[i][0] == 's' ? jstr(req, "state") : jstr(req, keys[i])) != NULL)
				add_param(url, &first, keys[i], jstr(req, keys[i]));
		}
		if (jint(req, "after") != 0) {
			snprintf(num, sizeof num, "%lld", (long long)jint(req, "after"));
			add_param(url, &first, "after", num);
		}
		if (jint(req, "limit") != 0) {
			snprintf(num, sizeof num, "%lld", (long long)jint(req, "limit"));
			add_param(url, &first, "limit", num);
		}
	} else if (strcmp(op, "installs") == 0) {
		*method = "GET";
		xasprintf(url, "%s/v1/installs", ch.base);
		if (json_object_object_get_ex(req, "refresh", &v) && json_object_get_boolean(v))
			add_param(url, &first, "refresh", "1");
		if (jstr(req, "after") != NULL)
			add_param(url, &first, "after", jstr(req, "after"));
		if (jint(req, "limit") != 0) {
			snprintf(num, sizeof num, "%lld", (long long)jint(req, "limit"));
			add_param(url, &first, "limit", num);
		}
	} else if (strcmp(op, "stats") == 0 || strcmp(op, "ping") == 0) {
		/* ping over HTTP: an authenticated call that also shows the version. */
		*method = "GET";
		xasprintf(url, "%s/v1/stats", ch.base);
	} else if (strcmp(op, "pause") == 0 || strcmp(op, "resume") == 0) {
		*method = "POST";
		xasprintf(url, "%s/v1/%s", ch.base, op);
		*body = xstrdup("{}");
	} else {
		xasprintf(cause, "%s is not available over HTTP", op);
		return -1;
	}
	return 0;
}

static long
header_retry_after(const char *hdrs)
{
	const char *p = hdrs;
	long v;

	while (p != NULL && *p != '\0') {
		if (strncasecmp(p, "Retry-After:", 12) == 0) {
			v = strtol(p + 12, NULL, 10);
			return v > 0 && v < 3600 ? v * 1000 : 1000;
		}
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return 0;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	return on_body(p, size, n, arg);
}

json_object *
chttp_call(json_object *req, long timeout_ms, char **cause, int *retry,
    long *retry_after_ms)
{
	struct curl_slist *hdrs = NULL;
	struct body b = { NULL, 0, 0 }, h = { NULL, 0, 0 };
	const char *method;
	char *url = NULL, *body = NULL;
	json_object *o = NULL, *e;
	long status = 0;
	CURLcode rc;

	*retry = 0;
	*retry_after_ms = 0;
	*cause = NULL;
	if (map_request(req, &method, &url, &body, cause) != 0)
		return NULL;
	hdrs = lc.slist_append(hdrs, ch.auth);
	hdrs = lc.slist_append(hdrs, "Accept: application/json");
	if (jstr(req, "idempotency_key") != NULL) {
		/* Checked by the caller: printable ASCII without blanks, safe in a header. */
		char *idem;

		xasprintf(&idem, "Idempotency-Key: %s", jstr(req, "idempotency_key"));
		hdrs = lc.slist_append(hdrs, idem);
		free(idem);
	}
	if (body != NULL)
		hdrs = lc.slist_append(hdrs, "Content-Type: application/json");
	lc.easy_reset(ch.curl);
	lc.easy_setopt(ch.curl, CURLOPT_URL, url);
	lc.easy_setopt(ch.curl, CURLOPT_CUSTOMREQUEST, method);
	lc.easy_setopt(ch.curl, CURLOPT_HTTPHEADER, hdrs);
	if (body != NULL)
		lc.easy_setopt(ch.curl, CURLOPT_POSTFIELDS, body);
	else if (strcmp(method, "GET") == 0)
		lc.easy_setopt(ch.curl, CURLOPT_HTTPGET, 1L);
	lc.easy_setopt(ch.curl, CURLOPT_WRITEFUNCTION, on_body);
	lc.easy_setopt(ch.curl, CURLOPT_WRITEDATA, &b);
	lc.easy_setopt(ch.curl, CURLOPT_HEADERFUNCTION, on_header);
	lc.easy_setopt(ch.curl, CURLOPT_HEADERDATA, &h);
	lc.easy_setopt(ch.curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	lc.easy_setopt(ch.curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ?
	    timeout_ms : 10000L);
	lc.easy_setopt(ch.curl, CURLOPT_NOSIGNAL, 1L);
	lc.easy_setopt(ch.curl, CURLOPT_FOLLOWLOCATION, 0L);   /* the token stays here */
	lc.easy_setopt(ch.curl, CURLOPT_PROTOCOLS_STR, "https,http");
	lc.easy_setopt(ch.curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (ch.cacert != NULL)
		lc.easy_setopt(ch.curl, CURLOPT_CAINFO, ch.cacert);
	lc.easy_setopt(ch.curl, CURLOPT_USERAGENT, "wpe-purgectl/" WPE_VERSION);
	rc = lc.easy_perform(ch.curl);
	lc.slist_free_all(hdrs);
	free(url);
	free(body);
	if (rc != CURLE_OK) {
		/* Never connected, or lost: worth trying again (a restart, a network blip). */
		xasprintf(cause, "%s", lc.easy_strerror(rc));
		*retry = rc != CURLE_SSL_CACERT_BADFILE && rc != CURLE_PEER_FAILED_VERIFICATION &&
		    rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_URL_MALFORMAT;
		goto out;
	}
	lc.easy_getinfo(ch.curl, CURLINFO_RESPONSE_CODE, &status);
	*retry_after_ms = header_retry_after(h.p);
	if (b.p != NULL)
		o = json_tokener_parse(b.p);
	if (o == NULL || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "ok", &e)) {
		/* Not wpe-purged speaking: a proxy's or load balancer's error page. */
		json_object_put(o);
		o = NULL;
		xasprintf(cause, "HTTP %ld from %s, not an answer from wpe-purged", status,
		    ch.base);
		*retry = status == 429 ? 2 : status == 502 || status == 503 || status == 504;
		goto out;
	}
	if (status == 401)
		json_object_object_add(o, "error", json_object_new_string("unauthorized"));
	if (status == 429)
		*retry = 2;
	else if (status == 503 && !json_object_get_boolean(e))
		*retry = 1;
	if (strcmp(jstr(req, "op") != NULL ? jstr(req, "op") : "", "wait") == 0 &&
	    status == 202) {
		/* The long-poll slice ended first: the socket protocol's "timeout". */
		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "error", json_object_new_string("timeout"));
	}
out:
	free(b.p);
	free(h.p);
	return o;
}
