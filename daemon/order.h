/* order.h: items kept in ascending key order, for paging through them by key. */
#ifndef WPE_ORDER_H
#define WPE_ORDER_H

#include <stddef.h>
#include <stdint.h>

/*
 * A sorted array of (key, item). Keys arrive mostly in ascending order (job ids), so an
 * insert is an append; a removal leaves a tombstone that keeps its key, so the array
 * stays sorted and a seek is a binary search; tombstones are squeezed out once they
 * outnumber the live items. Everything is O(1) amortized or O(log n), except inserting
 * a key below the largest, which moves the larger ones (rare: undoing a failed commit).
 */
struct order {
	int64_t *keys;
	void **items;            /* NULL: a tombstone */
	size_t n, cap, live;
};

void order_init(struct order *);
void order_free(struct order *);
/* Insert item under key; keys are unique. */
void order_insert(struct order *, int64_t key, void *item);
/* Remove the item under key; 0, or -1 if there is none. */
int order_remove(struct order *, int64_t key);
/* The position of the first live item with a key above after (order_end if none). */
size_t order_seek(const struct order *, int64_t after);
/* The live item at or after position *pos (advancing *pos past it), or NULL at the end. */
void *order_next(const struct order *, size_t *pos);
static inline size_t order_len(const struct order *o) { return o->live; }
/* For tests: 1 if the keys ascend strictly and the live count is right. */
int order_check(const struct order *);

#endif
