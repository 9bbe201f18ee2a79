/* catalog-page.c: one page of GET /installs, parsed and validated; every byte is untrusted. */
#include "compat.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "catalog.h"

#define PAGE_MAX_DEPTH 16
#define MAX_QUERY 256

struct url_parts {
	int https;
	const char *host;
	size_t hostlen;
	int port;               /* 0: none given */
	const char *path;
	size_t pathlen;
	const char *query;      /* after '?', or NULL */
};

/* Split an absolute http(s) URL; -1 for anything else (user info, fragments, ...). */
static int
url_split(const char *u, struct url_parts *p)
{
	const char *a, *end;
	long port = 0;

	memset(p, 0, sizeof *p);
	if (strncasecmp(u, "https://", 8) == 0) {
		p->https = 1;
		a = u + 8;
	} else if (strncasecmp(u, "http://", 7) == 0)
		a = u + 7;
	else
		return -1;
	if (strchr(u, '#') != NULL || strchr(u, '\\') != NULL)
		return -1;
	end = a + strcspn(a, "/?");
	if (memchr(a, '@', (size_t)(end - a)) != NULL || end == a)
		return -1;
	p->host = a;
	if (*a == '[') {
		const char *rb = memchr(a, ']', (size_t)(end - a));

		if (rb == NULL)
			return -1;
		p->hostlen = (size_t)(rb + 1 - a);
		a = rb + 1;
	} else {
		p->hostlen = strcspn(a, ":/?");
		a += p->hostlen;
	}
	if (*a == ':') {
		for (a++; a < end; a++) {
			if (!isdigit((unsigned char)*a) || (port = port * 10 + (*a - '0')) > 65535)
				return -1;
		}
		if (port == 0)
			return -1;
		p->port = (int)port;
	}
	if (a != end || p->hostlen == 0)
		return -1;
	p->path = end;
	p->pathlen = strcspn(end, "?");
	if (end[p->pathlen] == '?')
		p->query = end + p->pathlen + 1;
	return 0;
}

static int
port_of(const struct url_parts *p)
{
	return p->port != 0 ? p->port : p->https ? 443 : 80;
}

static int
cause_set(char **cause, const char *unused, const char *arg)
{
	(void)unused;
	*cause = xstrdup(arg);
	return -1;
}

int
catalog_next_check(const char *base_url, const char *next, char *query, size_t qlen,
    char **cause)
{
	struct url_parts b, n;
	size_t i;

	if (strlen(next) > 2048 || url_split(next, &n) != 0)
		return cause_set(cause, "%s", "\"next\" is not a plain http(s) URL");
	if (url_split(base_url, &b) != 0)
		return cause_set(cause, "%s", "base_url cannot be parsed");
	/*
	 * The same host and path as base_url; the scheme may differ (an API behind a TLS
	 * proxy may say http://), but the next request goes to base_url's scheme and port
	 * all the same: only the query is taken from the API.
	 */
	if (n.hostlen != b.hostlen || strncasecmp(n.host, b.host, b.hostlen) != 0 ||
	    (n.port != 0 && port_of(&n) != port_of(&b)))
		return cause_set(cause, "%s", "\"next\" points at another host; refused");
	if (n.pathlen < b.pathlen + 9 || n.pathlen > b.pathlen + 10 ||
	    strncmp(n.path, b.path, b.pathlen) != 0 ||
	    strncmp(n.path + b.pathlen, "/installs/", n.pathlen - b.pathlen) != 0)
		return cause_set(cause, "%s", "\"next\" is not a URL of the installs list");
	if (n.query == NULL || *n.query == '\0' || strlen(n.query) > MAX_QUERY ||
	    strlen(n.query) >= qlen)
		return cause_set(cause, "%s", "\"next\" has no usable query");
	for (i = 0; n.query[i] != '\0'; i++) {
		if (!isalnum((unsigned char)n.query[i]) && strchr("=&_-.%+", n.query[i]) == NULL)
			return cause_set(cause, "%s", "\"next\" has characters that do not belong "
			    "in a query");
	}
	memcpy(query, n.query, i + 1);
	return 0;
}

int64_t
catalog_query_offset(const char *query)
{
	const char *p = query;
	int64_t v = -1;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, "offset=", 7) == 0) {
			p += 7;
			if (!isdigit((unsigned char)*p))
				return -1;
			for (v = 0; isdigit((unsigned char)*p); p++) {
				if (v > INT64_MAX / 10 - 10)
					return -1;
				v = v * 10 + (*p - '0');
			}
			return *p == '\0' || *p == '&' ? v : -1;
		}
		if ((p = strchr(p, '&')) != NULL)
			p++;
	}
	return -1;
}

/* A string member of o, or NULL (absent, null or not a string). */
static const char *
str_member(json_object *o, const char *key, size_t *len)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	*len = (size_t)json_object_get_string_len(v);
	return json_object_get_string(v);
}

static int
chars_in(const char *s, size_t len, const char *extra)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)s[i]) && strchr(extra, s[i]) == NULL)
			return 0;
	}
	return s[len] == '\0';
}

/* One entry of "results" as an install, or -1 (skipped). */
static int
entry_parse(json_object *o, struct catalog_entry *e)
{
	json_object *acc;
	const char *s;
	size_t len = 0, i;

	memset(e, 0, sizeof *e);
	if (!json_object_is_type(o, json_type_object))
		return -1;
	if ((s = str_member(o, "id", &len)) == NULL || len != 36 || !uuid_valid(s))
		return -1;
	for (i = 0; i < 36; i++)
		e->id[i] = (char)tolower((unsigned char)s[i]);
	if ((s = str_member(o, "name", &len)) == NULL || len > INSTALL_NAME_MAX ||
	    strlen(s) != len || !install_name_valid(s))
		return -1;
	memcpy(e->name, s, len + 1);
	/* What is only shown is kept when it is plainly what it claims, else left out. */
	if ((s = str_member(o, "environment", &len)) != NULL && len <= CATALOG_MAX_ENV &&
	    chars_in(s, len, "_-"))
		memcpy(e->environment, s, len + 1);
	if ((s = str_member(o, "primary_domain", &len)) != NULL && len > 0 &&
	    len <= CATALOG_MAX_DOMAIN && chars_in(s, len, ".-"))
		e->domain = xstrdup(s);
	if (json_object_object_get_ex(o, "account", &acc) &&
	    json_object_is_type(acc, json_type_object) &&
	    (s = str_member(acc, "id", &len)) != NULL && len == 36 && uuid_valid(s)) {
		for (i = 0; i < 36; i++)
			e->account[i] = (char)tolower((unsigned char)s[i]);
	}
	return 0;
}

void
catalog_page_free(struct catalog_page *pg)
{
	size_t i;

	for (i = 0; i < pg->n; i++)
		free(pg->items[i].domain);
	free(pg->items);
	memset(pg, 0, sizeof *pg);
}

int
catalog_page_parse(const char *body, size_t len, const char *base_url, int64_t offset,
    struct catalog_page *pg, char **cause)
{
	json_tokener *tok;
	json_object *o = NULL, *results, *next, *count;
	size_t i, n;
	int64_t noff;
	int rc = -1;

	memset(pg, 0, sizeof *pg);
	pg->count = -1;
	*cause = NULL;
	if (len > CATALOG_MAX_BODY || memchr(body, '\0', len) != NULL)
		return cause_set(cause, "%s", "the answer is too long or holds NUL bytes");
	if ((tok = json_tokener_new_ex(PAGE_MAX_DEPTH)) == NULL)
		fatalx("out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, body, (int)len);
	if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object)) {
		cause_set(cause, "%s", "the answer is not a JSON object");
		goto out;
	}
	if (!json_object_object_get_ex(o, "results", &results) ||
	    !json_object_is_type(results, json_type_array)) {
		cause_set(cause, "%s", "the answer has no \"results\" array");
		goto out;
	}
	if ((n = json_object_array_length(results)) > CATALOG_PAGE_LIMIT) {
		cause_set(cause, "%s", "the page holds more installs than were asked for");
		goto out;
	}
	if (json_object_object_get_ex(o, "count", &count) &&
	    json_object_is_type(count, json_type_int) && json_object_get_int64(count) >= 0)
		pg->count = json_object_get_int64(count);
	if (json_object_object_get_ex(o, "next", &next) && next != NULL) {
		if (!json_object_is_type(next, json_type_string)) {
			cause_set(cause, "%s", "\"next\" is neither null nor a URL");
			goto out;
		}
		if (catalog_next_check(base_url, json_object_get_string(next), pg->next_query,
		    sizeof pg->next_query, cause) != 0)
			goto out;
		if (n == 0) {
			cause_set(cause, "%s", "an empty page says there is another one");
			goto out;
		}
		noff = catalog_query_offset(pg->next_query);
		if (noff >= 0 && noff <= offset) {
			cause_set(cause, "%s", "\"next\" does not move forward");
			goto out;
		}
		pg->has_next = 1;
	}
	pg->items = xcalloc(n + 1, sizeof *pg->items);
	for (i = 0; i < n; i++) {
		if (entry_parse(json_object_array_get_idx(results, i), &pg->items[pg->n]) == 0)
			pg->n++;
		else
			pg->skipped++;
	}
	rc = 0;
out:
	if (rc != 0)
		catalog_page_free(pg);
	json_object_put(o);
	json_tokener_free(tok);
	return rc;
}
