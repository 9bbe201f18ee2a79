/* sched.h: pure purge-scheduling decisions; every function takes "now" and does no I/O. */
#ifndef WPE_SCHED_H
#define WPE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "proto.h"

/*
 * "Never" for any time below: an explicit value, not 0, because a time carried across a
 * reboot is negative on the new boot's monotonic clock and still means something.
 */
#define SCHED_NEVER INT64_MIN

/* Per install and limit class: what the API has seen of us. Times in ms or SCHED_NEVER. */
struct class_state {
	int64_t last_start;     /* last purge covering this class started */
	int64_t blocked_until;  /* 429: nothing for this class before */
	int strikes;            /* consecutive 429s */
};

/* Bit mask of the limit classes a purge type covers. */
unsigned sched_type_classes(enum purge_type);

/*
 * Coalescing: where does a new request of type t go, given the types of the install's
 * queued jobs (those whose HTTP request has not started)? Returns the index of the job to
 * join, or -1 for a new job. For a new "all" job every queued job of the install is
 * absorbed into it (there can be no queued "all" job then, or it would have been joined).
 */
int sched_coalesce(enum purge_type t, const enum purge_type *queued, size_t n);

/*
 * Times are whole milliseconds, truncated: a window could open up to 2 ms early on the
 * API's clock. The guard keeps purges of one install strictly an interval apart.
 */
#define SCHED_GUARD_MS 5

/* When the interval window of one class opens again (SCHED_NEVER: no window in force). */
int64_t sched_window_end(const struct class_state *, int64_t interval_s);

/* Earliest time a queued job of type t may start, given its own not_before. */
int64_t sched_ready_at(const struct class_state cs[NCLASSES], const struct limits *,
    enum purge_type t, int64_t not_before);

/* How the API's answer is handled. */
enum sched_outcome { OUTCOME_DONE, OUTCOME_RATE_LIMITED, OUTCOME_TRANSIENT, OUTCOME_PERMANENT };
/* transport_ok is 0 for timeouts, connection, TLS errors; status is the HTTP status. */
enum sched_outcome sched_classify(int transport_ok, long status);
const char *sched_outcome_name(enum sched_outcome);
/*
 * Did a failed attempt use up the install's window? Not when the API surely did not act
 * on it: no connection was made (connect_failed), it answered 5xx, or it refused with 429.
 * A timeout or a broken answer might have been acted on, so it counts.
 */
int sched_attempt_counts(int transport_ok, long status, int connect_failed);

/*
 * Delay after the attempt-th consecutive transient failure (attempt >= 1): exponential
 * from retry_initial, capped at retry_max, with full jitter above retry_initial.
 * rnd is a uniform random 32-bit number. Returns ms.
 */
int64_t sched_backoff_transient(int attempt, const struct limits *, uint32_t rnd);

/*
 * Delay after the strikes-th consecutive 429 of a class when the API sent no usable
 * Retry-After: at least the class interval (or retry_initial), doubling, capped. ms.
 */
int64_t sched_backoff_429(int strikes, int64_t interval_s, const struct limits *);

/*
 * How long a class stays blocked after its strikes-th consecutive 429. When the API said
 * when to come back (retry_after, may be NULL), that is the time, kept within
 * [retry_initial, retry_max]; otherwise sched_backoff_429. ms.
 */
int64_t sched_delay_429(const char *retry_after, int strikes, int64_t interval_s,
    const struct limits *, int64_t now_wall_ms);

/*
 * Parse a Retry-After value: delta-seconds or an HTTP-date. now_wall_ms is the current
 * wall clock. Returns 0 and the delay in ms (>= 0, capped at cap_ms), -1 if unusable.
 */
int sched_retry_after(const char *value, int64_t now_wall_ms, int64_t cap_ms,
    int64_t *delay_ms);

/*
 * Whole-daemon backoff when the API looks down: after OUTAGE_THRESHOLD transient failures
 * in a row, only one probe at a time, spaced by the transient backoff.
 */
#define OUTAGE_THRESHOLD 3
struct outage {
	int failures;   /* consecutive transient failures, any job */
	int64_t until;  /* no probe before */
	int64_t since;  /* the first of those failures (SCHED_NEVER or 0: none) */
};
void sched_outage_failure(struct outage *, const struct limits *, int64_t now, uint32_t rnd);
void sched_outage_answer(struct outage *);
/* May a request start now, with in_flight requests under way? */
int sched_outage_allows(const struct outage *, int64_t now, int in_flight);
/* When may the next request start (0 = no outage restriction)? */
int64_t sched_outage_next(const struct outage *);
/* Since when the API looks down (the first failure of the run), or SCHED_NEVER. */
int64_t sched_outage_since(const struct outage *);

/*
 * Requests that cannot wait forever: one still unfinished max_age after it was accepted
 * expires. Times are wall-clock ms; max_age is seconds, 0 meaning never. The order of
 * expiry is the order of acceptance whatever max_age is, so the queue keys its heap by
 * acceptance time and a new max_age (SIGHUP) only moves the one timer.
 */
int64_t sched_expires_at(int64_t accepted, int64_t max_age_s);   /* 0: never */
int sched_expired(int64_t accepted, int64_t max_age_s, int64_t now);
/* What was in the way of a request that expired, as its owner is told. */
struct expiry_facts {
	int64_t max_age_s;
	int64_t paused_since;    /* wall ms sending was paused, 0: not paused */
	int64_t outage_since;    /* wall ms the API looks down since, 0: it does not */
	int held;                /* by a name, waiting for a first installs catalog */
	const char *catalog_error; /* why reading the catalog failed, NULL or "" */
	int attempts;            /* of its job */
	long http_status;        /* the job's last answer (0: none) */
	const char *message;     /* the job's last message (NULL: none) */
};
void sched_expiry_reason(const struct expiry_facts *, char *buf, size_t len);
/* A duration as the configuration writes it: "24h", "90s", "2d", "0". */
void sched_fmt_duration(int64_t s, char *buf, size_t len);

/*
 * When an install's limit state stops saying anything, so that its row may go from the
 * limits table (with no job left): every window over, every 429 block over, and a block's
 * strikes kept retry_max longer (a 429 soon after still backs off from where it was).
 * SCHED_NEVER: it says nothing already. Times as in struct class_state.
 */
int64_t sched_limits_lapse(const struct class_state cs[NCLASSES], const struct limits *);

/*
 * The installs catalog. A fetch is due at start when the stored one is older than the
 * refresh period, then every period; an unknown name may ask for one at most once every
 * SCHED_CATALOG_UNKNOWN_MS. A failed page is retried after a backoff like a purge's (429:
 * Retry-After or the interval-based backoff; 5xx and no answer: exponential with jitter);
 * any other answer abandons the fetch until the next period.
 */
#define SCHED_CATALOG_UNKNOWN_MS 60000
struct catalog_backoff {
	int failures;   /* consecutive transient failures of this fetch */
	int strikes;    /* consecutive 429s */
};
/* ms until the periodic fetch is due (0: now). fetched_wall 0: never fetched. */
int64_t sched_catalog_due(int64_t fetched_wall, int64_t refresh_s, int64_t now_wall);
/* May an unknown name start a fetch now? last: when one last did (SCHED_NEVER: never). */
int sched_catalog_unknown_allowed(int64_t last, int64_t now);
/*
 * A page failed with outcome out (never OUTCOME_DONE): ms before asking for it again, or
 * -1 to give the fetch up (a permanent answer). Updates b.
 */
int64_t sched_catalog_retry(struct catalog_backoff *b, enum sched_outcome out,
    const char *retry_after, const struct limits *, int64_t now_wall, uint32_t rnd);
/* A page answered: the backoff starts over. */
void sched_catalog_answered(struct catalog_backoff *b);

#endif
