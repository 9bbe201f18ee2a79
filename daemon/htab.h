/* htab.h: an intrusive chained hash table that grows with its contents. */
#ifndef WPE_HTAB_H
#define WPE_HTAB_H

#include <stddef.h>
#include <stdint.h>

/*
 * Items embed a struct hnode and are found by hash; the caller compares keys while
 * walking the chain (htab_first/htab_next visit only nodes with the same hash). The
 * table doubles when it holds more items than buckets: lookups stay O(1) at any size.
 */
struct hnode {
	struct hnode *next;
	uint64_t hash;
};

struct htab {
	struct hnode **b;
	size_t nb, n;
};

void htab_init(struct htab *);
void htab_free(struct htab *);          /* the items are the caller's */
void htab_insert(struct htab *, struct hnode *, uint64_t hash);
void htab_remove(struct htab *, struct hnode *);
struct hnode *htab_first(const struct htab *, uint64_t hash);
struct hnode *htab_next(struct hnode *);
/* Call fn for every item; fn may remove the item it is given, and no other. */
void htab_foreach(struct htab *, void (*fn)(struct hnode *, void *), void *arg);
static inline size_t htab_len(const struct htab *t) { return t->n; }

uint64_t htab_hash_str(const char *);
uint64_t htab_hash_u64(uint64_t);

#endif
