/* queue-int.h: the queue's model, shared by its files (queue*.c) and nothing else. */
#ifndef WPE_QUEUE_INT_H
#define WPE_QUEUE_INT_H

#include "compat.h"

#include <stddef.h>

#include "catalog.h"
#include "heap.h"
#include "htab.h"
#include "order.h"
#include "queue.h"
#include "sched.h"
#include "sender.h"

/*
 * The store is the truth; memory is a cache of its unfinished part, changed only after
 * the store committed. Where a failure leaves memory and store apart (the API's answer
 * could not be recorded), the queue is "broken": nothing is sent and writes are refused
 * until a probe write succeeds and memory is rebuilt from the store (queue_rebuild),
 * exactly as at start-up.
 *
 * Where a queued job waits (job->slot), so that no event ever walks every job:
 *   SLOT_TIMED   in q->timed, keyed by the time its install's windows, its 429 block and
 *                its backoff let it go; the one timer is armed from the top;
 *   SLOT_PARKED  ready, but a job of its install covering one of its classes is being
 *                sent: that job's outcome reschedules the install's few jobs;
 *   SLOT_READY   ready: in the ready heap of each of its requesters (oldest job first);
 *                requesters with ready jobs take turns (q->ring), one job each.
 */
TAILQ_HEAD(waiters, waiter);

#define container_of(p, type, field) \
	((type *)(void *)((char *)(p) - offsetof(type, field)))

enum job_slot { SLOT_NONE = 0, SLOT_TIMED, SLOT_PARKED, SLOT_READY };

struct job;
struct requester;
TAILQ_HEAD(jobs, job);

/*
 * One install: its limit state and its unfinished jobs. Times are monotonic ms. One with
 * no job waits in q->lapse until its limit state says nothing any more; then its rows
 * leave the limits table and it leaves memory (queue-lapse.c).
 */
struct install {
	struct hnode hn;             /* q->installs, by id */
	char id[37];
	struct class_state cls[NCLASSES];
	struct jobs jobs;
	int njobs;
	struct heap_node ln;         /* q->lapse while it has no job */
};


/* Whoever asks for purges (a uid, -1 when unknown): the unit of fairness and quota. */
struct requester {
	struct hnode hn;             /* q->requesters, by uid */
	int64_t uid;
	int64_t njobs;               /* unfinished jobs holding its requests */
	int64_t absorbing;           /* of those, absorbed by the group commit under way */
	struct heap ready;           /* its memberships in ready jobs, by job id */
	int in_ring;
	TAILQ_ENTRY(requester) ring; /* q->ring while it has ready jobs */
};

/* A requester's unfinished requests on one job. */
struct member {
	struct requester *r;
	struct job *j;
	int nreq;
	struct heap_node hn;         /* r->ready while the job is ready */
	struct member *next;         /* j->members */
};

/* The attempt being sent: what to give back if the API never saw it. */
struct attempt {
	int64_t prev_start[NCLASSES]; /* windows before this attempt */
	int64_t started;              /* monotonic ms this attempt started */
};

/* An unfinished job (queued or sending). Finished jobs live only in the store. */
struct job {
	struct hnode hn;             /* q->jobs, by id */
	int64_t id;
	struct install *install;
	uint8_t type;        /* enum purge_type (bytes: 100,000 jobs must stay small) */
	uint8_t state;       /* enum job_state */
	uint8_t slot;        /* enum job_slot */
	uint8_t in_flight;   /* the sender holds it: its answer will come */
	int attempts;
	int64_t not_before;  /* monotonic ms or SCHED_NEVER: transient-failure backoff */
	long http_status;
	char *message;
	int64_t created_at;  /* wall ms */
	int64_t started_at;  /* wall ms */
	struct attempt *attempt; /* while being sent (kept until the job goes) */
	int64_t absorbed_into; /* during a group commit: the "all" job taking it over (it
	                        * stays where it is until the commit, out of coalescing) */
	struct heap_node tn;   /* q->timed while SLOT_TIMED */
	struct member *members;
	int nreq;              /* unfinished requests on it */
	uint8_t expire_deferred; /* EXPIRE_*: some of its requests expired while it was sent */
	TAILQ_ENTRY(job) ientry; /* install->jobs */
};

TAILQ_HEAD(pendings, pending);

/*
 * An enqueue waiting for this loop turn's group commit. One naming an install the catalog
 * does not know waits in q->resolving for the catalog fetch it asked for, then joins a
 * later commit; answers of the same client that come after it wait (as its followers)
 * until its answer is in q->unsynced, so every client's answers stay in request order.
 */
struct pending {
	struct proto_request req;
	uint64_t seq;            /* arrival order */
	int64_t held_id;         /* a held request resolving (no answer owed), or 0 */
	int64_t requeued_from;   /* a requeue: the request it enqueues again, or 0 */
	int resolved_once;       /* back from q->resolving: unknown now means unknown */
	struct pendings followers;
	int64_t requester;
	pid_t pid;
	char *name;              /* NULL: a Unix-socket peer, logged as uid and pid */
	char who[SOURCE_LABEL_MAX];             /* who asked, for people (queue-provenance.c) */
	char requester_label[SOURCE_LABEL_MAX]; /* the same without the pipeline: for stats */
	char *source_json;       /* req.source as stored, or NULL */
	queue_answer_cb cb;      /* NULL once forgotten */
	void *arg;
	struct queue_placed out;
	json_object *answer;     /* committed: delivered once durable (gen) */
	uint64_t gen;
	TAILQ_ENTRY(pending) entry;
};

/*
 * A request by a name before any catalog was ever loaded: accepted, stored with job 0,
 * resolved (joining or making a job, or failing as unknown_install) when one arrives.
 * Invariant: none exists while q->cat.fetched_at != 0.
 */
struct held {
	int64_t id;
	int64_t requester;
	pid_t pid;
	enum purge_type type;
	char name[INSTALL_NAME_MAX + 1];
	char who[SOURCE_LABEL_MAX];  /* who asked: the job it makes is theirs in "list" */
	TAILQ_ENTRY(held) entry;
};
TAILQ_HEAD(helds, held);

/* The catalog fetch under way (queue-catalog.c). */
struct catfetch {
	int running;             /* a fetch is under way (a page at the API or waiting) */
	int in_flight;           /* a page is at the API */
	int64_t offset;          /* of the page asked for (-1: unknown, a cursor query) */
	char query[257];
	int pages, restarts, skipped;
	int64_t first_count;     /* "count" on its first page, -1: none */
	int count_changed;       /* "count" moved while paging: read it again */
	uint64_t *seen;          /* hashes of the queries this paging asked for */
	int nseen;
	struct catalog_backoff backoff;
	int64_t started;         /* mono ms */
	int64_t last_unknown;    /* mono ms an unknown name last started one, or SCHED_NEVER */
	struct event *timer;     /* a page's retry, or the next periodic fetch */
	char error[256];         /* why the last fetch failed ("" if it did not) */
	struct waiters waiters;  /* installs --refresh, answered when this fetch settles */
};

struct waiter {
	struct queue *q;
	struct hnode by_req;     /* q->waiters_req, while waiting */
	struct hnode by_job;     /* q->waiters_job, while waiting */
	int waiting;             /* on both tables */
	struct waiters *batch;   /* or in a wake batch (see waiters_wake) */
	TAILQ_ENTRY(waiter) entry;
	int64_t request_id;
	int64_t job_id;
	int64_t requester;
	int admin;
	struct event *timer;
	queue_answer_cb cb;
	void *arg;
	/* installs --refresh: the page to answer with */
	int64_t limit;
	char after[INSTALL_NAME_MAX + 1];
	int (*visible)(const void *, const char *, const char *);
	const void *varg;
};

struct queue {
	struct event_base *base;
	struct config *cfg;
	struct limits limits;
	struct store *store;
	struct sender *sender;
	struct htab installs;
	struct htab jobs;        /* by id */
	struct order order;      /* the same jobs in id order, for list */
	struct htab requesters;
	struct heap timed;       /* SLOT_TIMED jobs by ready time */
	TAILQ_HEAD(, requester) ring;
	int64_t nqueued, nsending;
	struct pendings pending;
	struct pendings resolving; /* enqueues of unknown names waiting for a fetch */
	int nreleased;           /* of those, back in q->pending and not committed yet */
	uint64_t seq;
	struct catalog cat;      /* the account's installs (fetched_at 0: never loaded) */
	struct catalog staging;  /* the pages the fetch under way has read */
	struct catfetch fetch;
	size_t suggest_left;     /* catalog names "did you mean" may still compare this batch */
	struct helds held;
	size_t nheld;
	int64_t pending_since;   /* monotonic ms the oldest uncommitted enqueue arrived */
	struct pendings unsynced; /* committed, answered once the disk has them */
	int64_t unsynced_since;
	struct event *durable_ev; /* the store's syncs completing */
	struct starting {        /* "sending" committed, handed to the sender once durable */
		int64_t id;
		uint64_t gen;
	} *starting;
	size_t nstarting, capstarting;
	struct htab waiters_req, waiters_job;
	struct event *flush_ev;  /* group commit: queued behind this turn's reads */
	struct event *timer;     /* the one scheduling timer */
	int64_t timer_at;        /* when it is armed for (INT64_MAX: not armed) */
	struct event *prune_ev;
	int64_t prune_at;        /* wall ms the prune timer is armed for (0: not armed) */
	struct event *probe_ev;  /* storage probe while broken */
	struct event *grace_ev;
	struct outage outage;
	struct queue_stats stats;
	struct top *top;         /* who asked most (queue-provenance.c), NULL until someone did */
	/*
	 * Expiry (queue-expire.c) keeps nothing per request: requests are read in id order
	 * (acceptance order) from expire_scan on. Below it every request is finished, or
	 * expired while its job was being sent (that job's expire_deferred says so).
	 */
	int64_t expire_scan;
	int64_t expire_first;    /* wall ms the first unfinished request from expire_scan on
	                          * was accepted (or a newer one, earlier: a clock set back);
	                          * 0: none */
	int expire_more;         /* more to read at once (a full batch or a turn's rows) */
	int64_t *undeferred;     /* jobs whose deferred requests expire at once */
	size_t nundeferred, capundeferred;
	struct event *expire_ev; /* the one expiry timer: the oldest request's max_age */
	int64_t expire_at;       /* wall ms it is armed for (0: not armed) */
	int64_t expire_retry;    /* wall ms: not before (a failed expiry write), or 0 */
	struct heap lapse;       /* installs without jobs, by when their limits lapse */
	struct event *lapse_ev;
	int64_t lapse_at;        /* monotonic ms it is armed for (INT64_MAX: not armed) */
	int64_t lapse_retry;     /* monotonic ms: not before (a failed write), or 0 */
	int64_t paused_since;    /* wall ms sending was paused (persisted), 0: not paused */
	int paused;
	int stopping;
	int broken;              /* memory may differ from the store: see above */
	int store_failing;       /* the last write transaction failed (for /healthz) */
	int64_t last_recover;
	int running, rerun;
	int flush_armed;
	int warned_401;
	int check;               /* WPE_PURGED_CHECK: verify the invariants after each run */
	int64_t started_wall;
	void (*changed_cb)(void *);
	void *changed_arg;
	void (*stopped_cb)(void *);
	void *stopped_arg;
};

/* queue.c: the model */
int64_t queue_now(void);
int64_t queue_to_wall(int64_t mono);
int64_t queue_to_mono(int64_t wall);
struct install *install_get(struct queue *, const char *id, int create);
struct job *job_find(struct queue *, int64_t id);
struct job **queue_jobs(struct queue *, size_t *n);
size_t install_queued(struct install *, const struct job *skip, struct job **,
    enum purge_type *, size_t max);
struct job *job_new(struct queue *, int64_t id, struct install *, enum purge_type);
void job_link(struct queue *, struct job *);
void job_unlink(struct queue *, struct job *);
void job_destroy(struct queue *, struct job *);
void job_free(struct queue *, struct job *);
void job_set_message(struct job *, const char *);
void job_row(const struct job *, struct store_job *, int64_t finished_at);
void job_set_state(struct queue *, struct job *, enum job_state);

/* queue-rebuild.c: memory from the store again; probing the store while it fails */
int queue_rebuild(struct queue *);
void queue_break(struct queue *);
int queue_try_recover(struct queue *);
void rebuild_probe_cb(evutil_socket_t, short, void *);

/* queue-members.c: requesters */
struct requester *requester_get(struct queue *, int64_t uid, int create);
struct member *member_find(const struct job *, int64_t uid);
void member_add(struct queue *, struct job *, int64_t uid, int n);
void member_sub(struct queue *, struct job *, int64_t uid);
void members_move(struct queue *, struct job *from, struct job *to);
void members_clear(struct queue *, struct job *);
void member_ready(struct queue *, struct member *);
void member_unready(struct queue *, struct member *);

/* queue-dispatch.c: scheduling and sending */
void queue_run(struct queue *);
void job_sched(struct queue *, struct job *, int64_t now);
void job_unslot(struct queue *, struct job *);
void install_resched(struct queue *, struct install *, int64_t now);
int classes_busy(const struct install *, enum purge_type);
int persist_classes(struct queue *, const struct install *, const struct class_state *,
    unsigned mask);
void queue_check_stopped(struct queue *);
void queue_launch(struct queue *);
int queue_in_flight(struct queue *);

/* queue-outcome.c */
void queue_sent(void *, void *, const struct send_result *);

/* queue-waiters.c */
struct waiter *waiter_new(struct queue *, int64_t request_id, int64_t job_id,
    int64_t timeout_ms, int64_t requester, int admin, queue_answer_cb, void *arg);
void waiter_free(struct waiter *);
void waiters_wake(struct queue *, int64_t request_id, int64_t job_id);
void waiters_recheck(struct queue *);
void waiters_move(struct queue *, int64_t from, int64_t to);
void waiters_free_all(struct queue *);
struct waiter *waiter_catalog_new(struct queue *, int64_t requester, int admin,
    queue_answer_cb, void *arg);
void waiters_catalog_done(struct queue *);

/* queue-prune.c */
void prune_arm(struct queue *, int64_t finished_wall);
void prune_start(struct queue *);

/* queue-check.c */
void queue_check(struct queue *);
void queue_check_lifecycle(struct queue *);

/* queue-expire.c: unfinished requests expire after max_age */
#define EXPIRE_DEFERRED 1      /* job->expire_deferred: waiting for the answer */
#define EXPIRE_PENDING 2       /* on q->undeferred: they expire at once */
void expire_init(struct queue *);
void expire_note(struct queue *, int64_t id, int64_t accepted);
void expire_move(struct queue *, struct job *from, struct job *to);
void expire_undefer(struct queue *, struct job *);
int expire_reset(struct queue *);
void expire_arm(struct queue *);
void expire_free(struct queue *);

/* queue-lapse.c: installs whose limit state lapsed leave the limits table and memory */
void lapse_init(struct queue *);
void lapse_track(struct queue *, struct install *);
void lapse_arm(struct queue *);
void lapse_reload(struct queue *);
void lapse_free(struct queue *);

/* queue-names.c: a held request finished (expired, cancelled): it waits no more */
void held_drop(struct queue *, int64_t id);

/* queue-names.c: names, held requests, enqueues waiting for a fetch */
enum resolve { RESOLVED = 0, RESOLVE_UNKNOWN, RESOLVE_HOLD, RESOLVE_WAIT };
enum resolve names_resolve(struct queue *, struct pending *);
int64_t held_max(const struct queue *);
int held_place(struct queue *, struct pending *, int64_t now_wall, struct held **);
void held_settle(struct queue *, struct held *, int failed);
void held_free_all(struct queue *);
int held_load(struct queue *);
void held_resolve(struct queue *);
void resolving_add(struct queue *, struct pending *);
void resolving_release(struct queue *);
struct pending *resolving_before(struct queue *, const struct pending *);
void resolving_forget(struct queue *, void *arg);
void resolving_free_all(struct queue *);
void pending_free(struct pending *);
const char *names_of(struct queue *, const char *install);

/* queue-provenance.c: who asked, idempotency keys, top requesters */
void pending_provenance(struct pending *);
void pending_prov(const struct pending *, struct store_prov *);
int idem_check(struct queue *, struct pending *);
void pending_via(const struct pending *, char *buf, size_t len);
void top_add(struct queue *, const char *label);
json_object *top_json(struct queue *);
void top_free(struct queue *);

/* queue-catalog.c: fetching the catalog */
void catalog_start(struct queue *);
void catalog_want(struct queue *, int unknown_name);
void catalog_stop(struct queue *);
/*
 * Is a page of the fetch at the API right now? Only then may an enqueue or installs
 * --refresh wait for it: a fetch waiting out a backoff (up to retry_max, or a 429's
 * Retry-After) has settled for them, and they are answered at once.
 */
static inline int catalog_asking(const struct queue *q)
{ return q->fetch.running && q->fetch.in_flight; }
void catalog_free_all(struct queue *);

/* queue-enqueue.c */
struct undo_log;
int enqueue_place(struct queue *, struct pending *, int64_t now_wall, struct undo_log *);
struct undo_log *undo_new(void);
void undo_free(struct undo_log *);
void enqueue_settle(struct queue *, struct undo_log *, int failed);
void queue_enqueue(struct queue *, const struct proto_request *, int64_t requester, pid_t,
    const char *name, queue_answer_cb, void *arg);
void queue_requeue(struct queue *, const struct proto_request *, int64_t from,
    int64_t requester, pid_t, const char *name, queue_answer_cb, void *arg);
void queue_enqueue_forget(struct queue *, void *arg);
void queue_flush(struct queue *);
void queue_deliver(struct queue *, int all);
int queue_cancel(struct queue *, int64_t id, int64_t uid, int64_t job_id);

#endif
