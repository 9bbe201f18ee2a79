/* queue-members.c: requesters and which jobs hold their requests: quota and fair turns. */
#include "compat.h"

#include <stdlib.h>

#include "queue-int.h"
#include "util.h"

/* Requesters and their memberships ------------------------------------------------ */

struct requester *
requester_get(struct queue *q, int64_t uid, int create)
{
	uint64_t h = htab_hash_u64((uint64_t)uid);
	struct hnode *n;
	struct requester *r;

	for (n = htab_first(&q->requesters, h); n != NULL; n = htab_next(n)) {
		r = container_of(n, struct requester, hn);
		if (r->uid == uid)
			return r;
	}
	if (!create)
		return NULL;
	r = xcalloc(1, sizeof *r);
	r->uid = uid;
	heap_init(&r->ready);
	htab_insert(&q->requesters, &r->hn, h);
	return r;
}

/* A requester with nothing unfinished is forgotten: the table holds only active ones. */
static void
requester_put(struct queue *q, struct requester *r)
{
	if (r->njobs > 0 || heap_len(&r->ready) > 0 || r->in_ring)
		return;
	htab_remove(&q->requesters, &r->hn);
	heap_free(&r->ready);
	free(r);
}

struct member *
member_find(const struct job *j, int64_t uid)
{
	struct member *m;

	for (m = j->members; m != NULL; m = m->next) {
		if (m->r->uid == uid)
			return m;
	}
	return NULL;
}

void
member_ready(struct queue *q, struct member *m)
{
	heap_set(&m->r->ready, &m->hn, m->j->id, 0);
	if (!m->r->in_ring) {
		TAILQ_INSERT_TAIL(&q->ring, m->r, ring);
		m->r->in_ring = 1;
	}
}

void
member_unready(struct queue *q, struct member *m)
{
	if (heap_contains(&m->hn))
		heap_remove(&m->r->ready, &m->hn);
	if (heap_len(&m->r->ready) == 0 && m->r->in_ring) {
		TAILQ_REMOVE(&q->ring, m->r, ring);
		m->r->in_ring = 0;
	}
}

static void member_del(struct queue *, struct job *, struct member *);

/* n more unfinished requests of uid on j (n may be 0: a job nobody is known to want). */
void
member_add(struct queue *q, struct job *j, int64_t uid, int n)
{
	struct member *m = member_find(j, uid);

	if (m == NULL) {
		m = xcalloc(1, sizeof *m);
		m->r = requester_get(q, uid, 1);
		m->j = j;
		heap_node_init(&m->hn);
		m->next = j->members;
		j->members = m;
		m->r->njobs++;
		if (j->slot == SLOT_READY)
			member_ready(q, m);
	}
	m->nreq += n;
	j->nreq += n;
	/* A real requester replaces the stand-in of a job nobody was known to want. */
	if (uid != -1 && (m = member_find(j, -1)) != NULL && m->nreq == 0)
		member_del(q, j, m);
}

static void
member_del(struct queue *q, struct job *j, struct member *m)
{
	struct member **p;

	for (p = &j->members; *p != m; p = &(*p)->next)
		;
	*p = m->next;
	j->nreq -= m->nreq;
	member_unready(q, m);
	m->r->njobs--;
	requester_put(q, m->r);
	free(m);
}

/* One request of uid on j finished (cancelled): uid leaves j with its last one. */
void
member_sub(struct queue *q, struct job *j, int64_t uid)
{
	struct member *m = member_find(j, uid);

	if (m == NULL)
		return;
	m->nreq--;
	j->nreq--;
	if (m->nreq <= 0)
		member_del(q, j, m);
	/* A ready job always has someone to take its turns. */
	if (j->members == NULL && j->slot == SLOT_READY)
		member_add(q, j, -1, 0);
}

/* The requests of from now belong to to (absorbed or merged). */
void
members_move(struct queue *q, struct job *from, struct job *to)
{
	struct member *m;

	while ((m = from->members) != NULL) {
		member_add(q, to, m->r->uid, m->nreq);
		member_del(q, from, m);
	}
	expire_move(q, from, to);
}

void
members_clear(struct queue *q, struct job *j)
{
	while (j->members != NULL)
		member_del(q, j, j->members);
}

