/* test_ds.c: the scheduler's data structures keep their invariants under random use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "heap.h"
#include "htab.h"
#include "order.h"

#define N 20000

struct item {
	struct heap_node hn;
	struct hnode tn;
	int64_t id;
	int64_t key;
	int in;
};

static uint64_t rng = 88172645463325252ULL;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Random inserts, re-keys, removes and pops; after each: the heap property, the indexes,
 * and the top equal to the smallest (key, seq) of a plain scan. */
static void
test_heap_random(void **state)
{
	static struct item it[2000];
	struct heap h;
	struct heap_node *top;
	size_t i, k, n = sizeof it / sizeof it[0], best;
	uint64_t seq = 0;
	int op;

	(void)state;
	heap_init(&h);
	for (i = 0; i < n; i++) {
		heap_node_init(&it[i].hn);
		it[i].id = (int64_t)i;
	}
	for (k = 0; k < 200000; k++) {
		i = rnd() % n;
		op = (int)(rnd() % 4);
		if (op == 0 || op == 1)
			heap_set(&h, &it[i].hn, (int64_t)(rnd() % 1000) - 500, seq++);
		else if (op == 2)
			heap_remove(&h, &it[i].hn);
		else if ((top = heap_pop(&h)) != NULL)
			assert_false(heap_contains(top));
		if (k % 97 == 0) {
			assert_true(heap_check(&h));
			best = n;
			for (i = 0; i < n; i++) {
				if (!heap_contains(&it[i].hn))
					continue;
				if (best == n || it[i].hn.key < it[best].hn.key ||
				    (it[i].hn.key == it[best].hn.key &&
				    it[i].hn.seq < it[best].hn.seq))
					best = i;
			}
			top = heap_top(&h);
			if (best == n)
				assert_null(top);
			else
				assert_ptr_equal(top, &it[best].hn);
		}
	}
	/* Draining yields non-decreasing keys, ties in insertion order. */
	{
		int64_t last = INT64_MIN;
		uint64_t lastseq = 0;

		while ((top = heap_pop(&h)) != NULL) {
			assert_true(top->key > last || (top->key == last && top->seq > lastseq));
			last = top->key;
			lastseq = top->seq;
		}
	}
	heap_free(&h);
}

static struct item *
find(struct htab *t, int64_t id)
{
	struct hnode *n;

	for (n = htab_first(t, htab_hash_u64((uint64_t)id)); n != NULL; n = htab_next(n)) {
		struct item *x = (struct item *)((char *)n - offsetof(struct item, tn));

		if (x->id == id)
			return x;
	}
	return NULL;
}

/* Inserts and removes through many growths: every present item is found, no absent one. */
static void
test_htab_random(void **state)
{
	struct item *it = calloc(N, sizeof *it);
	struct htab t;
	size_t i, k, present = 0;

	(void)state;
	assert_non_null(it);
	htab_init(&t);
	for (i = 0; i < N; i++)
		it[i].id = (int64_t)(i * 7919);   /* ids that collide in low bits */
	for (k = 0; k < 5 * N; k++) {
		i = rnd() % N;
		if (!it[i].in) {
			htab_insert(&t, &it[i].tn, htab_hash_u64((uint64_t)it[i].id));
			it[i].in = 1;
			present++;
		} else if (rnd() % 3 == 0) {
			htab_remove(&t, &it[i].tn);
			it[i].in = 0;
			present--;
		}
		assert_int_equal(htab_len(&t), present);
	}
	for (i = 0; i < N; i++) {
		if (it[i].in)
			assert_ptr_equal(find(&t, it[i].id), &it[i]);
		else
			assert_null(find(&t, it[i].id));
	}
	/* The table grew with its contents: chains stay short. */
	assert_true(t.nb >= present);
	htab_free(&t);
	free(it);
}

/*
 * The id order under the queue's use: mostly ascending inserts, random removals, a few
 * re-inserts below the top (undo of a failed commit). After each step: keys ascend, the
 * live count is right, and a seek from any key finds exactly the next live key a plain
 * array says it should, walking forward in order.
 */
static void
test_order_random(void **state)
{
	static int live[N];
	static int items[N];
	struct order o;
	int64_t next_id = 1, key, want;
	size_t k, pos, nlive = 0;
	int *got;

	(void)state;
	order_init(&o);
	for (k = 0; k < 200000; k++) {
		int op = (int)(rnd() % 10);

		if (op < 4 && next_id < N) {
			key = next_id++;
			order_insert(&o, key, &items[key]);
			live[key] = 1;
			nlive++;
		} else if (op < 8 && next_id > 1) {
			key = 1 + (int64_t)(rnd() % (uint64_t)(next_id - 1));
			assert_int_equal(order_remove(&o, key), live[key] ? 0 : -1);
			if (live[key])
				nlive--;
			live[key] = 0;
		} else if (op == 8 && next_id > 1) {
			key = 1 + (int64_t)(rnd() % (uint64_t)(next_id - 1));
			if (!live[key]) {
				order_insert(&o, key, &items[key]);
				live[key] = 1;
				nlive++;
			}
		} else if (next_id > 1) {
			key = (int64_t)(rnd() % (uint64_t)next_id);
			for (want = key + 1; want < next_id && !live[want]; want++)
				;
			pos = order_seek(&o, key);
			got = order_next(&o, &pos);
			if (want >= next_id)
				assert_null(got);
			else
				assert_ptr_equal(got, &items[want]);
		}
		assert_int_equal(order_len(&o), nlive);
		if (k % 1000 == 0)
			assert_true(order_check(&o));
	}
	/* A full walk visits every live key once, ascending. */
	pos = 0;
	want = 0;
	while ((got = order_next(&o, &pos)) != NULL) {
		assert_true(got - items > want);
		want = got - items;
		assert_true(live[want]);
		nlive--;
	}
	assert_int_equal(nlive, 0);
	assert_true(order_check(&o));
	order_free(&o);
}

static void
test_hash_spread(void **state)
{
	(void)state;
	assert_int_not_equal(htab_hash_str("294deacc-d8b8-4005-82c4-0727ba8ddde0"),
	    htab_hash_str("294deacc-d8b8-4005-82c4-0727ba8ddde1"));
	assert_int_not_equal(htab_hash_u64(1) & 63, htab_hash_u64(65) & 63);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heap_random),
		cmocka_unit_test(test_htab_random),
		cmocka_unit_test(test_order_random),
		cmocka_unit_test(test_hash_spread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
