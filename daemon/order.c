/* order.c: a sorted array with tombstones: the queue's jobs in id order, for paging. */
#include <stdlib.h>
#include <string.h>

#include "order.h"
#include "util.h"

void
order_init(struct order *o)
{
	memset(o, 0, sizeof *o);
}

void
order_free(struct order *o)
{
	free(o->keys);
	free(o->items);
	memset(o, 0, sizeof *o);
}

/* The first position whose key is >= key (tombstones keep theirs, so keys are sorted). */
static size_t
lower_bound(const struct order *o, int64_t key)
{
	size_t lo = 0, hi = o->n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (o->keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Drop the tombstones once they are the majority: amortized O(1) per removal. */
static void
squeeze(struct order *o)
{
	size_t i, k = 0;

	for (i = 0; i < o->n; i++) {
		if (o->items[i] == NULL)
			continue;
		o->keys[k] = o->keys[i];
		o->items[k++] = o->items[i];
	}
	o->n = k;
}

void
order_insert(struct order *o, int64_t key, void *item)
{
	size_t i;

	if (o->n == o->cap) {
		if (o->n > 2 * o->live + 16) {
			squeeze(o);
		} else {
			o->cap = o->cap == 0 ? 64 : o->cap * 2;
			o->keys = xrealloc(o->keys, o->cap * sizeof *o->keys);
			o->items = xrealloc(o->items, o->cap * sizeof(void *));
		}
	}
	if (o->n == 0 || o->keys[o->n - 1] < key)
		i = o->n;
	else {
		i = lower_bound(o, key);
		if (o->items[i] == NULL && o->keys[i] == key) {
			/* Its own tombstone (undo of a removal): revive it in place. */
			o->items[i] = item;
			o->live++;
			return;
		}
		memmove(o->keys + i + 1, o->keys + i, (o->n - i) * sizeof *o->keys);
		memmove(o->items + i + 1, o->items + i, (o->n - i) * sizeof(void *));
	}
	o->keys[i] = key;
	o->items[i] = item;
	o->n++;
	o->live++;
}

int
order_remove(struct order *o, int64_t key)
{
	size_t i = lower_bound(o, key);

	if (i == o->n || o->keys[i] != key || o->items[i] == NULL)
		return -1;
	o->items[i] = NULL;
	o->live--;
	if (o->live == 0)
		o->n = 0;
	else if (o->n - o->live > o->live && o->n > 64)
		squeeze(o);
	return 0;
}

size_t
order_seek(const struct order *o, int64_t after)
{
	return after == INT64_MAX ? o->n : lower_bound(o, after + 1);
}

void *
order_next(const struct order *o, size_t *pos)
{
	while (*pos < o->n) {
		void *item = o->items[(*pos)++];

		if (item != NULL)
			return item;
	}
	return NULL;
}

int
order_check(const struct order *o)
{
	size_t i, live = 0;

	for (i = 0; i < o->n; i++) {
		if (i > 0 && o->keys[i - 1] >= o->keys[i])
			return 0;
		if (o->items[i] != NULL)
			live++;
	}
	return live == o->live && o->n <= o->cap;
}
