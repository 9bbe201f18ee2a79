/* queue-prune.c: forgetting finished requests after the retention period, timed exactly. */
#include "compat.h"

#include "queue-int.h"
#include "util.h"

#define PRUNE_BATCH 500
#define PRUNE_RETRY_MS (60 * 1000)  /* after an error, or rows that could not go yet */
#define PRUNE_SLACK_MS 1000         /* rows go once strictly older than the retention */

/*
 * No polling: the timer is armed for when the oldest finished row passes the retention
 * period, so an idle daemon with nothing to forget never wakes up.
 */
static void
prune_at(struct queue *q, int64_t at_wall)
{
	int64_t now = clock_wall_ms(), o = at_wall > now ? at_wall - now : 0;
	struct timeval tv = { o / 1000, (o % 1000) * 1000 };

	q->prune_at = at_wall;
	evtimer_add(q->prune_ev, &tv);
}

/* A row finished at finished_wall: make sure the timer comes for it. */
void
prune_arm(struct queue *q, int64_t finished_wall)
{
	if (q->prune_at == 0 && q->prune_ev != NULL && !q->stopping)
		prune_at(q, finished_wall + q->cfg->retention * 1000 + PRUNE_SLACK_MS);
}

/*
 * Arm for the oldest finished row, if any. One already due goes at once at start-up;
 * after a pass it is a row that could not go yet (or the store could not tell): later.
 */
static void
prune_next(struct queue *q, int first)
{
	int64_t oldest = store_oldest_finished(q->store), now = clock_wall_ms();

	q->prune_at = 0;
	if (oldest == 0)
		return;
	if (oldest < 0 || oldest + q->cfg->retention * 1000 <= now)
		prune_at(q, first && oldest > 0 ? now : now + PRUNE_RETRY_MS);
	else
		prune_at(q, oldest + q->cfg->retention * 1000 + PRUNE_SLACK_MS);
}

static void
prune_cb(evutil_socket_t fd, short events, void *arg)
{
	struct queue *q = arg;
	uint64_t gen;
	int n = 0;

	(void)fd;
	(void)events;
	if (store_begin(q->store) == 0) {
		n = store_prune(q->store, clock_wall_ms() - q->cfg->retention * 1000,
		    PRUNE_BATCH);
		/* Forgetting need not wait for the disk: synced with the next sync. */
		if (n < 0 || store_commit_async(q->store, &gen) != 0) {
			store_rollback(q->store);
			n = 0;
		}
	}
	if (n > 0)
		log_debug("pruned %d finished row(s) older than the retention period", n);
	/* A full batch means more is waiting: come back soon, but yield to the loop. */
	if (n >= PRUNE_BATCH)
		prune_at(q, clock_wall_ms() + 1000);
	else
		prune_next(q, 0);
}

void
prune_start(struct queue *q)
{
	if ((q->prune_ev = evtimer_new(q->base, prune_cb, q)) == NULL)
		fatalx("out of memory creating a timer");
	prune_next(q, 1);
}
