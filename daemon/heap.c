/* heap.c: an indexed binary min-heap: the scheduler's "what becomes ready next". */
#include <stdlib.h>

#include "heap.h"
#include "util.h"

static int
less(const struct heap_node *a, const struct heap_node *b)
{
	return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void
place(struct heap *h, size_t i, struct heap_node *n)
{
	h->v[i] = n;
	n->index = i;
}

static void
sift_up(struct heap *h, size_t i)
{
	struct heap_node *n = h->v[i];
	size_t parent;

	while (i > 0) {
		parent = (i - 1) / 2;
		if (!less(n, h->v[parent]))
			break;
		place(h, i, h->v[parent]);
		i = parent;
	}
	place(h, i, n);
}

static void
sift_down(struct heap *h, size_t i)
{
	struct heap_node *n = h->v[i];
	size_t c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && less(h->v[c + 1], h->v[c]))
			c++;
		if (!less(h->v[c], n))
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, n);
}

void
heap_init(struct heap *h)
{
	h->v = NULL;
	h->n = h->cap = 0;
}

void
heap_free(struct heap *h)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		h->v[i]->index = HEAP_NONE;
	free(h->v);
	heap_init(h);
}

void
heap_set(struct heap *h, struct heap_node *n, int64_t key, uint64_t seq)
{
	int64_t old;

	if (n->index != HEAP_NONE) {
		old = n->key;
		n->key = key;
		if (key < old)
			sift_up(h, n->index);
		else if (key > old)
			sift_down(h, n->index);
		return;
	}
	if (h->n == h->cap) {
		h->cap = h->cap == 0 ? 64 : h->cap * 2;
		h->v = xrealloc(h->v, h->cap * sizeof(struct heap_node *));
	}
	n->key = key;
	n->seq = seq;
	place(h, h->n++, n);
	sift_up(h, n->index);
}

void
heap_remove(struct heap *h, struct heap_node *n)
{
	size_t i = n->index;
	struct heap_node *last;

	if (i == HEAP_NONE)
		return;
	n->index = HEAP_NONE;
	last = h->v[--h->n];
	if (i == h->n)
		return;
	place(h, i, last);
	if (i > 0 && less(last, h->v[(i - 1) / 2]))
		sift_up(h, i);
	else
		sift_down(h, i);
}

struct heap_node *
heap_pop(struct heap *h)
{
	struct heap_node *n = heap_top(h);

	if (n != NULL)
		heap_remove(h, n);
	return n;
}

int
heap_check(const struct heap *h)
{
	size_t i;

	for (i = 0; i < h->n; i++) {
		if (h->v[i]->index != i)
			return 0;
		if (i > 0 && less(h->v[i], h->v[(i - 1) / 2]))
			return 0;
	}
	return 1;
}
