/* ops-installs.c: the installs catalog as JSON answers and name lookups, for every transport. */
#include "compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "queue-int.h"
#include "util.h"

static void
add_str(json_object *o, const char *key, const char *s)
{
	json_object_object_add(o, key, s == NULL || s[0] == '\0' ? NULL :
	    json_object_new_string(s));
}

static void
add_time(json_object *o, const char *key, int64_t wall)
{
	char buf[32];

	json_object_object_add(o, key, wall == 0 ? NULL :
	    json_object_new_string(fmt_rfc3339(wall, buf, sizeof buf)));
}

json_object *
ops_catalog_stats(struct queue *q)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "installs", json_object_new_int64((int64_t)catalog_len(&q->cat)));
	add_time(o, "fetched_at", q->cat.fetched_at);
	json_object_object_add(o, "refreshing", json_object_new_boolean(q->fetch.running));
	add_str(o, "error", q->fetch.error);
	json_object_object_add(o, "fetches", json_object_new_int64((int64_t)q->stats.catalog_fetches));
	json_object_object_add(o, "api_calls", json_object_new_int64((int64_t)q->stats.catalog_calls));
	json_object_object_add(o, "pages", json_object_new_int64((int64_t)q->stats.catalog_pages));
	json_object_object_add(o, "failed_pages",
	    json_object_new_int64((int64_t)q->stats.catalog_failed));
	return o;
}

json_object *
ops_installs_list(struct queue *q, const char *after, int64_t limit, ops_visible_fn visible,
    const void *varg)
{
	json_object *o = json_object_new_object(), *arr, *e;
	struct catalog_entry *const *v = catalog_sorted(&q->cat);
	struct install *in;
	size_t n = catalog_len(&q->cat), i, lo = 0, hi = n, end, shown = 0, count = 0;
	const char *next = NULL;

	/* The first name past "after" (names are unique), then at most limit of them. */
	while (after != NULL && after[0] != '\0' && lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(v[mid]->name, after) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	end = limit > 0 && (size_t)limit < n - lo ? lo + (size_t)limit : n;
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	if (visible != NULL) {
		/* Seen through a scope: counted and paged among the visible ones only. */
		for (i = 0; i < n; i++) {
			if (!visible(varg, v[i]->id, v[i]->name))
				continue;
			count++;
			if (i < lo)
				continue;
			if (limit > 0 && shown == (size_t)limit) {
				if (next == NULL)
					next = v[end - 1]->name;
				continue;
			}
			shown++;
			end = i + 1;
		}
		if (shown == 0)
			end = lo;
	} else {
		count = n;
		if (end < n && end > lo)
			next = v[end - 1]->name;
	}
	arr = json_object_new_array_ext((int)(end - lo));
	for (i = lo; i < end; i++) {
		if (visible != NULL && !visible(varg, v[i]->id, v[i]->name))
			continue;
		e = json_object_new_object();
		add_str(e, "name", v[i]->name);
		add_str(e, "environment", v[i]->environment);
		add_str(e, "domain", v[i]->domain);
		add_str(e, "id", v[i]->id);
		add_str(e, "account", v[i]->account);
		add_time(e, "last_purge", v[i]->last_purge);
		in = install_get(q, v[i]->id, 0);
		json_object_object_add(e, "queued_jobs", json_object_new_int(in != NULL ?
		    in->njobs : 0));
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "installs", arr);
	add_str(o, "next", next);
	json_object_object_add(o, "count", json_object_new_int64((int64_t)count));
	add_time(o, "fetched_at", q->cat.fetched_at);
	json_object_object_add(o, "refreshing", json_object_new_boolean(q->fetch.running));
	add_str(o, "refresh_error", q->fetch.error);
	json_object_object_add(o, "unresolved_requests", json_object_new_int64(
	    (int64_t)q->nheld));
	return o;
}

struct waiter *
ops_installs(struct queue *q, const struct proto_request *req, const struct ops_caller *c,
    queue_answer_cb cb, void *arg, ops_visible_fn visible, const void *varg)
{
	if (req->refresh && !q->stopping) {
		if (!q->fetch.running && (c->admin ||
		    sched_catalog_unknown_allowed(q->fetch.last_unknown, queue_now())))
			catalog_want(q, !c->admin);
		if (catalog_asking(q)) {
			struct waiter *w = waiter_catalog_new(q, c->requester, c->admin, cb,
			    arg);

			w->limit = req->limit;
			memcpy(w->after, req->after_name, sizeof w->after);
			w->visible = visible;
			w->varg = varg;
			return w;
		}
	}
	cb(arg, ops_installs_list(q, req->after_name, req->limit, visible, varg));
	return NULL;
}

int
ops_install_resolve(struct queue *q, const char *what, char id[37],
    char name[INSTALL_NAME_MAX + 1])
{
	const struct catalog_entry *e;
	size_t i;

	if (strlen(what) == 36 && uuid_valid(what)) {
		for (i = 0; i < 36; i++)
			id[i] = (char)(what[i] >= 'A' && what[i] <= 'F' ? what[i] + 32 : what[i]);
		id[36] = '\0';
		snprintf(name, INSTALL_NAME_MAX + 1, "%s", names_of(q, id));
		return 1;
	}
	if (strlen(what) > INSTALL_NAME_MAX || !install_name_valid(what) ||
	    (e = catalog_by_name(&q->cat, what)) == NULL)
		return 0;
	memcpy(id, e->id, 37);
	memcpy(name, e->name, INSTALL_NAME_MAX + 1);
	return 1;
}

const struct catalog *
ops_catalog(struct queue *q)
{
	return &q->cat;
}
