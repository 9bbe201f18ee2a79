/* queue-provenance.c: who asked for each request, its idempotency key, and who asks most. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue-int.h"
#include "util.h"

/*
 * The requesters that asked most since start, in bounded memory: the space-saving
 * algorithm (Metwally et al.) with TOP_SLOTS counters. A new requester when every slot
 * is taken replaces the smallest count and starts from it: every requester asking more
 * than 1/TOP_SLOTS of all requests is certain to be listed, counts are upper bounds
 * (exact until a slot was ever replaced; "approximate" says so).
 */
#define TOP_SLOTS 64
#define TOP_SHOWN 10

struct top_slot {
	struct hnode hn;
	char label[SOURCE_LABEL_MAX];
	uint64_t count;
};

struct top {
	struct htab by_label;
	struct top_slot slot[TOP_SLOTS];
	size_t n;
	int approximate;
};

/* A label for people: the source's, else the transport's name, else the uid. */
static void
fallback_label(const struct pending *p, char *buf, size_t len)
{
	size_t n;

	if (p->name != NULL) {
		/* "token NAME (ADDRESS)": the requester is the token, wherever it comes from. */
		n = strcspn(p->name, "(");
		while (n > 0 && p->name[n - 1] == ' ')
			n--;
		snprintf(buf, len, "%.*s", (int)utf8_prefix(p->name, n < len ? n : len - 1),
		    p->name);
	} else
		snprintf(buf, len, "uid %lld", (long long)p->requester);
}

void
pending_provenance(struct pending *p)
{
	json_object *o;

	source_label(p->req.source, 1, p->who, sizeof p->who);
	source_label(p->req.source, 0, p->requester_label, sizeof p->requester_label);
	if (p->who[0] == '\0')
		fallback_label(p, p->who, sizeof p->who);
	if (p->requester_label[0] == '\0')
		fallback_label(p, p->requester_label, sizeof p->requester_label);
	if (p->req.source != NULL) {
		o = source_to_json(p->req.source);
		p->source_json = xstrdup(json_object_to_json_string_ext(o,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(o);
	}
}

void
pending_prov(const struct pending *p, struct store_prov *prov)
{
	prov->source = p->source_json;
	prov->idem_key = p->req.idem_key[0] != '\0' ? p->req.idem_key : NULL;
	prov->who = p->who;
}

/* Does the stored request ask for the install p asks for (by id or by name)? */
static int
same_install(struct queue *q, const struct store_idem *r, const struct pending *p)
{
	const struct catalog_entry *e;

	if (p->req.install[0] != '\0') {
		if (r->install[0] != '\0')
			return strcmp(r->install, p->req.install) == 0;
		/* Held by a name the catalog did not have: the same only if it says so now. */
		return (e = catalog_by_name(&q->cat, r->name)) != NULL &&
		    strcmp(e->id, p->req.install) == 0;
	}
	if (strcmp(r->name, p->req.name) == 0)
		return 1;
	return r->install[0] != '\0' && (e = catalog_by_name(&q->cat, p->req.name)) != NULL &&
	    strcmp(e->id, r->install) == 0;
}

/*
 * Before placing p: a request its requester already made with the same key is answered
 * again (replayed) or, asked for something else, refused. Looked up in the store, inside
 * this group commit's transaction: a key used earlier in the same batch is seen, and one
 * whose commit failed was never remembered. 0: not seen, go on; 1: p->out says it
 * (replayed, or an error); -1: storage error.
 */
int
idem_check(struct queue *q, struct pending *p)
{
	struct store_idem r;
	int rc;

	if (p->req.idem_key[0] == '\0' || p->held_id != 0)
		return 0;
	if ((rc = store_idem_find(q->store, p->requester, p->req.idem_key, &r)) <= 0)
		return rc;
	if (r.type != p->req.type || !same_install(q, &r, p)) {
		p->out.error = "idempotency_conflict";
		snprintf(p->out.message, sizeof p->out.message, "this idempotency key was used "
		    "for request %lld, a %s purge of %s; a new request needs a new key",
		    (long long)r.id, purge_type_name(r.type), r.install[0] != '\0' ?
		    r.install : r.name);
		return 1;
	}
	p->out.replayed = 1;
	p->out.request_id = r.id;
	p->out.job_id = r.job;
	p->out.coalesced = r.coalesced;
	p->out.state = r.state;
	p->out.held = r.job == 0;
	memcpy(p->out.install, r.install, sizeof p->out.install);
	snprintf(p->out.name, sizeof p->out.name, "%s", r.install[0] != '\0' &&
	    catalog_by_id(&q->cat, r.install) != NULL ? names_of(q, r.install) : r.name);
	return 1;
}

/* " via LABEL (URL)" for the log line of a request with a source; "" without. */
void
pending_via(const struct pending *p, char *buf, size_t len)
{
	const char *url = p->req.source != NULL ? p->req.source->f[SF_JOB_URL] : NULL;

	buf[0] = '\0';
	if (p->req.source == NULL)
		return;
	/* Validated text (no control characters); a URL's query may hold a secret: cut. */
	if (url != NULL)
		snprintf(buf, len, " via %s (%.*s)", p->who, (int)strcspn(url, "?#"), url);
	else
		snprintf(buf, len, " via %s", p->who);
}

/* Top requesters ------------------------------------------------------------------ */

void
top_add(struct queue *q, const char *label)
{
	struct top *t = q->top;
	struct top_slot *s, *min;
	struct hnode *hn;
	uint64_t h = htab_hash_str(label);
	size_t i;

	if (t == NULL) {
		t = q->top = xcalloc(1, sizeof *t);
		htab_init(&t->by_label);
	}
	for (hn = htab_first(&t->by_label, h); hn != NULL; hn = htab_next(hn)) {
		s = container_of(hn, struct top_slot, hn);
		if (strcmp(s->label, label) == 0) {
			s->count++;
			return;
		}
	}
	if (t->n < TOP_SLOTS) {
		s = &t->slot[t->n++];
		s->count = 1;
	} else {
		for (min = &t->slot[0], i = 1; i < TOP_SLOTS; i++) {
			if (t->slot[i].count < min->count)
				min = &t->slot[i];
		}
		htab_remove(&t->by_label, &min->hn);
		s = min;
		s->count++;
		t->approximate = 1;
	}
	snprintf(s->label, sizeof s->label, "%s", label);
	htab_insert(&t->by_label, &s->hn, h);
}

static int
top_cmp(const void *a, const void *b)
{
	const struct top_slot *x = *(struct top_slot *const *)a;
	const struct top_slot *y = *(struct top_slot *const *)b;

	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->label, y->label);
}

json_object *
top_json(struct queue *q)
{
	struct top_slot *v[TOP_SLOTS] = { NULL };
	json_object *arr = json_object_new_array(), *e;
	size_t i, n = q->top != NULL ? q->top->n : 0;

	for (i = 0; i < n; i++)
		v[i] = &q->top->slot[i];
	qsort(v, n, sizeof(struct top_slot *), top_cmp);
	for (i = 0; i < n && i < TOP_SHOWN; i++) {
		e = json_object_new_object();
		json_object_object_add(e, "requester", json_object_new_string(v[i]->label));
		json_object_object_add(e, "requests", json_object_new_int64(
		    (int64_t)v[i]->count));
		if (q->top->approximate)
			json_object_object_add(e, "approximate", json_object_new_boolean(1));
		json_object_array_add(arr, e);
	}
	return arr;
}

void
top_free(struct queue *q)
{
	if (q->top == NULL)
		return;
	htab_free(&q->top->by_label);
	free(q->top);
	q->top = NULL;
}
