/* catalog.h: the account's installs (id, name, ...) in memory, and reading them from the API. */
#ifndef WPE_CATALOG_H
#define WPE_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "htab.h"
#include "util.h"

#define CATALOG_PAGE_LIMIT 100          /* installs per page (the API's maximum) */
#define CATALOG_MAX_INSTALLS 200000     /* a catalog past this is refused as absurd */
#define CATALOG_MAX_PAGES (CATALOG_MAX_INSTALLS / CATALOG_PAGE_LIMIT + 10)
#define CATALOG_MAX_BODY (2 * 1024 * 1024) /* bytes of one page; a longer one is aborted */
#define CATALOG_MAX_DOMAIN 253
#define CATALOG_MAX_ENV 32
#define CATALOG_SUGGEST 3               /* "did you mean" names at most */
/*
 * Catalog names compared for "did you mean" in one batch (a group commit, or the held
 * requests a new catalog resolves): past it, unknown names get no suggestions, so that
 * thousands of them against a large catalog never stall the event loop for seconds.
 */
#define CATALOG_SUGGEST_BUDGET 1000000

/* One install as the API describes it, validated. */
struct catalog_entry {
	struct hnode by_id, by_name;
	char id[37];                        /* lower-case UUID */
	char name[INSTALL_NAME_MAX + 1];
	char environment[CATALOG_MAX_ENV + 1];  /* "": none */
	char *domain;                       /* primary_domain, NULL: none */
	char account[37];                   /* "": none */
	int64_t last_purge;                 /* wall ms of the last accepted purge, 0: none */
};

struct catalog {
	struct htab by_id, by_name;
	struct catalog_entry **v;           /* in the order added */
	struct catalog_entry **sorted;      /* by name, built when first asked; NULL: not yet */
	size_t n, cap;
	int64_t fetched_at;                 /* wall ms of the fetch it came from; 0: never */
};

void catalog_init(struct catalog *);
void catalog_clear(struct catalog *);   /* empty it (fetched_at too) */
void catalog_free(struct catalog *);    /* free it (catalog_init before any reuse) */
/*
 * Add an entry (copied). 0, or -1 if its id or name is already there (the first one
 * stays: an install that moved between pages while they were read).
 */
int catalog_add(struct catalog *, const struct catalog_entry *);
/* Take src's contents into dst (whose old ones are freed); src is left empty. */
void catalog_move(struct catalog *dst, struct catalog *src);

/* Lookups for every transport: NULL when unknown. */
struct catalog_entry *catalog_by_name(const struct catalog *, const char *name);
struct catalog_entry *catalog_by_id(const struct catalog *, const char *id);
static inline size_t catalog_len(const struct catalog *c) { return c->n; }
static inline struct catalog_entry *catalog_at(const struct catalog *c, size_t i)
{ return c->v[i]; }

/* The entries by name (n of them; valid until the catalog changes). */
struct catalog_entry *const *catalog_sorted(struct catalog *);

/* Levenshtein distance between two short strings (capped at 255). */
int catalog_distance(const char *a, const char *b);
/*
 * Up to CATALOG_SUGGEST names close to name (nearest first, then by name): within an
 * edit distance of a third of its length (at least 2), or starting with it. Returns n.
 */
size_t catalog_suggest(const struct catalog *, const char *name,
    const char *out[CATALOG_SUGGEST]);
/* "did you mean a, b or c?" into buf, or "" when there is nothing close. */
void catalog_suggest_text(const struct catalog *, const char *name, char *buf, size_t len);

/*
 * One page of GET /installs, parsed and validated (catalog-page.c). A page is refused
 * whole (-1 and *cause) when it is not the documented shape: not a JSON object, results
 * not an array or longer than CATALOG_PAGE_LIMIT, next neither null nor a URL of
 * base_url's host and /installs path, an empty page that has a next one, a next that
 * does not move forward. Entries that are not valid installs are skipped and counted.
 */
struct catalog_page {
	struct catalog_entry *items;
	size_t n;
	int skipped;
	int has_next;
	char next_query[257];               /* the query of the next page's URL */
	int64_t count;                      /* the API's "count", -1 when absent */
};
int catalog_page_parse(const char *body, size_t len, const char *base_url, int64_t offset,
    struct catalog_page *, char **cause);
void catalog_page_free(struct catalog_page *);
/*
 * Is next a URL on base_url's host (scheme aside) for base_url's path + "/installs"?
 * Fills query (its query part, checked to be plain) and returns 0, else -1 and *cause.
 */
int catalog_next_check(const char *base_url, const char *next, char *query, size_t qlen,
    char **cause);
/* The "offset" in a query, or -1. */
int64_t catalog_query_offset(const char *query);

#endif
