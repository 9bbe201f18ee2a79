/* htab.c: the growing hash tables behind installs, jobs and waiters. */
#include <stdlib.h>

#include "htab.h"
#include "util.h"

#define HTAB_MIN 64

void
htab_init(struct htab *t)
{
	t->nb = HTAB_MIN;
	t->n = 0;
	t->b = xcalloc(t->nb, sizeof(struct hnode *));
}

void
htab_free(struct htab *t)
{
	free(t->b);
	t->b = NULL;
	t->nb = t->n = 0;
}

static void
grow(struct htab *t)
{
	size_t nb = t->nb * 2, i;
	struct hnode **b = xcalloc(nb, sizeof(struct hnode *)), *n, *next;

	for (i = 0; i < t->nb; i++) {
		for (n = t->b[i]; n != NULL; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

void
htab_insert(struct htab *t, struct hnode *n, uint64_t hash)
{
	struct hnode **head;

	if (t->n >= t->nb)
		grow(t);
	n->hash = hash;
	head = &t->b[hash & (t->nb - 1)];
	n->next = *head;
	*head = n;
	t->n++;
}

void
htab_remove(struct htab *t, struct hnode *n)
{
	struct hnode **p = &t->b[n->hash & (t->nb - 1)];

	while (*p != NULL) {
		if (*p == n) {
			*p = n->next;
			n->next = NULL;
			t->n--;
			return;
		}
		p = &(*p)->next;
	}
}

struct hnode *
htab_first(const struct htab *t, uint64_t hash)
{
	struct hnode *n = t->b[hash & (t->nb - 1)];

	while (n != NULL && n->hash != hash)
		n = n->next;
	return n;
}

struct hnode *
htab_next(struct hnode *n)
{
	uint64_t hash = n->hash;

	for (n = n->next; n != NULL && n->hash != hash; n = n->next)
		;
	return n;
}

void
htab_foreach(struct htab *t, void (*fn)(struct hnode *, void *), void *arg)
{
	struct hnode *n, *next;
	size_t i;

	for (i = 0; i < t->nb; i++) {
		for (n = t->b[i]; n != NULL; n = next) {
			next = n->next;
			fn(n, arg);
		}
	}
}

uint64_t
htab_hash_str(const char *s)
{
	uint64_t h = 14695981039346656037ULL;   /* FNV-1a */

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

uint64_t
htab_hash_u64(uint64_t x)
{
	/* splitmix64's finaliser: ids are sequential, buckets must not be. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}
