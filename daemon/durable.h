/* durable.h: making committed WAL frames durable, inline or on a worker thread. */
#ifndef WPE_DURABLE_H
#define WPE_DURABLE_H

#include <stdint.h>

/*
 * SQLite runs with synchronous=NORMAL in WAL mode: a commit writes its frames to the WAL
 * without syncing. These functions then make them durable with fdatasync(2) of the WAL:
 * durable_now() inline (what synchronous=FULL would do inside COMMIT), or
 * durable_request() on a worker thread, so the event loop prepares the next batch while
 * the disk syncs this one; whoever needs the durability (an answer to a client) waits
 * for durable_done() to reach the generation it got. A failed fdatasync is fatal, as in
 * PostgreSQL: the kernel may have dropped the data, so nothing may be acknowledged.
 */
struct durable;

/* NULL (and *cause) if the WAL cannot be opened. */
struct durable *durable_open(const char *wal_path, char **cause);
void durable_close(struct durable *);
/* Sync now: everything committed so far is durable on return. */
void durable_now(struct durable *);
/* Ask the worker for a sync covering everything committed so far; its generation. */
uint64_t durable_request(struct durable *);
/*
 * Readable when a sync completed (for the event loop): only the loop's callback drains
 * it (durable_drain), so a completion seen early elsewhere still wakes that callback.
 */
int durable_fd(struct durable *);
void durable_drain(struct durable *);
/* The highest generation known durable. */
uint64_t durable_done(struct durable *);

#endif
