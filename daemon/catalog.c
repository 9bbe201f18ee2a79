/* catalog.c: the installs catalog in memory: by id and by name, and "did you mean" names. */
#include "compat.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"

#ifndef container_of
#define container_of(p, type, field) \
	((type *)(void *)((char *)(p) - offsetof(type, field)))
#endif

void
catalog_init(struct catalog *c)
{
	memset(c, 0, sizeof *c);
	htab_init(&c->by_id);
	htab_init(&c->by_name);
}

void
catalog_free(struct catalog *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		free(c->v[i]->domain);
		free(c->v[i]);
	}
	free(c->v);
	free(c->sorted);
	htab_free(&c->by_id);
	htab_free(&c->by_name);
	memset(c, 0, sizeof *c);
}

void
catalog_clear(struct catalog *c)
{
	catalog_free(c);
	catalog_init(c);
}

struct catalog_entry *
catalog_by_name(const struct catalog *c, const char *name)
{
	struct hnode *n;
	struct catalog_entry *e;

	for (n = htab_first(&c->by_name, htab_hash_str(name)); n != NULL; n = htab_next(n)) {
		e = container_of(n, struct catalog_entry, by_name);
		if (strcmp(e->name, name) == 0)
			return e;
	}
	return NULL;
}

struct catalog_entry *
catalog_by_id(const struct catalog *c, const char *id)
{
	struct hnode *n;
	struct catalog_entry *e;

	for (n = htab_first(&c->by_id, htab_hash_str(id)); n != NULL; n = htab_next(n)) {
		e = container_of(n, struct catalog_entry, by_id);
		if (strcmp(e->id, id) == 0)
			return e;
	}
	return NULL;
}

int
catalog_add(struct catalog *c, const struct catalog_entry *src)
{
	struct catalog_entry *e;

	if (catalog_by_id(c, src->id) != NULL || catalog_by_name(c, src->name) != NULL)
		return -1;
	free(c->sorted);
	c->sorted = NULL;
	e = xcalloc(1, sizeof *e);
	*e = *src;
	e->domain = src->domain != NULL ? xstrdup(src->domain) : NULL;
	if (c->n == c->cap) {
		c->cap = c->cap == 0 ? 256 : c->cap * 2;
		c->v = xrealloc(c->v, c->cap * sizeof(struct catalog_entry *));
	}
	c->v[c->n++] = e;
	htab_insert(&c->by_id, &e->by_id, htab_hash_str(e->id));
	htab_insert(&c->by_name, &e->by_name, htab_hash_str(e->name));
	return 0;
}

static int
by_name(const void *a, const void *b)
{
	const struct catalog_entry *x = *(struct catalog_entry *const *)a;
	const struct catalog_entry *y = *(struct catalog_entry *const *)b;

	return strcmp(x->name, y->name);
}

struct catalog_entry *const *
catalog_sorted(struct catalog *c)
{
	if (c->sorted == NULL) {
		c->sorted = xcalloc(c->n + 1, sizeof(struct catalog_entry *));
		if (c->n > 0)
			memcpy(c->sorted, c->v, c->n * sizeof(struct catalog_entry *));
		qsort(c->sorted, c->n, sizeof(struct catalog_entry *), by_name);
	}
	return c->sorted;
}

void
catalog_move(struct catalog *dst, struct catalog *src)
{
	catalog_free(dst);
	*dst = *src;
	catalog_init(src);
}

/*
 * The distance, or max + 1 as soon as it is surely more than max: lengths further apart
 * than max, or a row whose every cell is past max (cells never decrease down a column's
 * diagonal). Most names of a large catalog are ruled out in a row or two.
 */
static int
distance_within(const char *a, size_t la, const char *b, size_t lb, int max)
{
	size_t i, j;
	int row[64], prev, cur, best, rowmin;

	if (la > 63 || lb > 63)
		return max < 255 ? max + 1 : 255;
	if ((la > lb ? la - lb : lb - la) > (size_t)max)
		return max + 1;
	for (j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = (int)i;
		rowmin = row[0];
		for (j = 1; j <= lb; j++) {
			cur = row[j];
			best = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			prev = cur;
			if (best < rowmin)
				rowmin = best;
		}
		if (rowmin > max)
			return max + 1;
	}
	return row[lb] <= max ? row[lb] : max + 1;
}

int
catalog_distance(const char *a, const char *b)
{
	return distance_within(a, strlen(a), b, strlen(b), 254);
}

size_t
catalog_suggest(const struct catalog *c, const char *name, const char *out[CATALOG_SUGGEST])
{
	size_t len = strlen(name);
	int dist[CATALOG_SUGGEST], d, max = (int)len / 3;
	size_t i, n = 0, k;

	if (max < 2)
		max = 2;
	for (i = 0; i < c->n; i++) {
		const char *cand = c->v[i]->name;

		/* Beyond max: max + 1, where a prefix match ranks after the close ones. */
		d = distance_within(name, len, cand, strlen(cand), max);
		if (d > max && strncmp(cand, name, len) != 0)
			continue;
		/* Insertion into the few best, nearest first, then by name. */
		for (k = n; k > 0 && (dist[k - 1] > d ||
		    (dist[k - 1] == d && strcmp(out[k - 1], cand) > 0)); k--) {
			if (k < CATALOG_SUGGEST) {
				dist[k] = dist[k - 1];
				out[k] = out[k - 1];
			}
		}
		if (k < CATALOG_SUGGEST) {
			dist[k] = d;
			out[k] = cand;
			if (n < CATALOG_SUGGEST)
				n++;
		}
	}
	return n;
}

void
catalog_suggest_text(const struct catalog *c, const char *name, char *buf, size_t len)
{
	const char *s[CATALOG_SUGGEST];
	size_t n = catalog_suggest(c, name, s);

	if (n == 0)
		snprintf(buf, len, "%s", "");
	else if (n == 1)
		snprintf(buf, len, "did you mean %s?", s[0]);
	else if (n == 2)
		snprintf(buf, len, "did you mean %s or %s?", s[0], s[1]);
	else
		snprintf(buf, len, "did you mean %s, %s or %s?", s[0], s[1], s[2]);
}
