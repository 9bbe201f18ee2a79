/* heap.h: an indexed binary min-heap of items keyed by (time, sequence), O(log n). */
#ifndef WPE_HEAP_H
#define WPE_HEAP_H

#include <stddef.h>
#include <stdint.h>

/*
 * Each item embeds a struct heap_node; the heap keeps the node's index current, so an
 * item can be removed or re-keyed in O(log n) without a search. Ties on key are broken
 * by seq (first in, first out).
 */
struct heap_node {
	int64_t key;
	uint64_t seq;
	size_t index;            /* HEAP_NONE when not in a heap */
};
#define HEAP_NONE ((size_t)-1)

struct heap {
	struct heap_node **v;
	size_t n, cap;
};

static inline void heap_node_init(struct heap_node *n) { n->index = HEAP_NONE; }
void heap_init(struct heap *);
void heap_free(struct heap *);
static inline size_t heap_len(const struct heap *h) { return h->n; }
static inline int heap_contains(const struct heap_node *n) { return n->index != HEAP_NONE; }
/* The node with the smallest (key, seq), or NULL. */
static inline struct heap_node *heap_top(const struct heap *h) { return h->n ? h->v[0] : NULL; }
/* Insert, or move if already in this heap, with a new key (seq is kept when moving). */
void heap_set(struct heap *, struct heap_node *, int64_t key, uint64_t seq);
void heap_remove(struct heap *, struct heap_node *);
struct heap_node *heap_pop(struct heap *);
/* For tests: 1 if every parent is <= its children and every index is right. */
int heap_check(const struct heap *);

#endif
