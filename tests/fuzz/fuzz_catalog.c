/* fuzz_catalog.c: libFuzzer harness for the installs catalog's page reader and next URLs. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BASE "https://api.wpengineapi.com/v1"

/* Letters, digits and the few characters allowed beside them, nothing else. */
static void
check_plain(const char *s, const char *extra)
{
	for (; *s != '\0'; s++) {
		if (!isalnum((unsigned char)*s) && strchr(extra, *s) == NULL)
			abort();
	}
}

static void
check_query(const char *q)
{
	for (; *q != '\0'; q++) {
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == '#')
			abort();
	}
}

/*
 * What the reader promises of a page it accepts: at most a page of installs, each with
 * a valid lower-case id and a valid name, the shown fields plain; a plain next query
 * whose offset moves forward; and a catalog built from it finds every install it kept.
 */
static void
page(const char *body, size_t len)
{
	struct catalog_page pg;
	struct catalog c;
	char *cause = NULL;
	size_t i, added = 0;

	if (catalog_page_parse(body, len, BASE, 100, &pg, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		return;
	}
	if (pg.n > CATALOG_PAGE_LIMIT)
		abort();
	if (pg.has_next) {
		check_query(pg.next_query);
		int64_t off = catalog_query_offset(pg.next_query);

		if (off >= 0 && off <= 100)
			abort();
	}
	catalog_init(&c);
	for (i = 0; i < pg.n; i++) {
		const struct catalog_entry *e = &pg.items[i];

		if (strlen(e->id) != 36 || !uuid_valid(e->id) || !install_name_valid(e->name))
			abort();
		check_plain(e->id, "-");
		check_plain(e->environment, "_-");
		if (e->domain != NULL)
			check_plain(e->domain, ".-");
		if (e->account[0] != '\0' && !uuid_valid(e->account))
			abort();
		if (catalog_add(&c, e) == 0)
			added++;
	}
	if (catalog_len(&c) != added)
		abort();
	for (i = 0; i < catalog_len(&c); i++) {
		const struct catalog_entry *e = catalog_at(&c, i);

		if (catalog_by_id(&c, e->id) != e || catalog_by_name(&c, e->name) != e)
			abort();
	}
	if (pg.n > 0) {
		char buf[256];
		const char *out[CATALOG_SUGGEST];

		catalog_suggest_text(&c, pg.items[0].name, buf, sizeof buf);
		if (catalog_suggest(&c, pg.items[0].name, out) > CATALOG_SUGGEST)
			abort();
	}
	catalog_free(&c);
	catalog_page_free(&pg);
}

/* A next URL is accepted only on the API's own host and path, with a plain query. */
static void
next_url(const char *next)
{
	char query[257], *cause = NULL;

	if (catalog_next_check(BASE, next, query, sizeof query, &cause) != 0) {
		if (cause == NULL)
			abort();
		free(cause);
		return;
	}
	const char *host = strncasecmp(next, "https://", 8) == 0 ? next + 8 :
	    strncasecmp(next, "http://", 7) == 0 ? next + 7 : NULL;

	if (host == NULL || strncasecmp(host, "api.wpengineapi.com", 19) != 0 ||
	    strchr("/:?", host[19]) == NULL)
		abort();
	check_query(query);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1 || size > 64 * 1024)
		return 0;
	s = malloc(size);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (data[0] & 1)
		next_url(s);
	else
		page(s, size - 1);
	free(s);
	return 0;
}
