/* durable.c: fdatasync of the WAL off the event loop, in generations. */
#include "compat.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable.h"
#include "util.h"

struct durable {
	int fd;                  /* the WAL, read-only: only synced */
	int pipe[2];             /* worker -> loop: a sync completed */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t wanted;         /* the latest generation asked for */
	uint64_t done;           /* the latest generation durable */
	int err;                 /* errno of a failed fdatasync (fatal) */
	int stop;
};

static void
sync_or_die(struct durable *d)
{
	if (fdatasync(d->fd) != 0)
		fatal("fdatasync of the queue database's WAL failed; nothing can be "
		    "acknowledged as stored any more");
}

static void *
worker(void *arg)
{
	struct durable *d = arg;
	uint64_t g;
	int e;

	(void)pthread_setname_np(pthread_self(), "wpe-purged-sync");   /* top -H, ps -L */
	pthread_mutex_lock(&d->mu);
	for (;;) {
		while (!d->stop && d->done >= d->wanted)
			pthread_cond_wait(&d->cv, &d->mu);
		if (d->stop)
			break;
		g = d->wanted;   /* one sync covers every generation asked for so far */
		pthread_mutex_unlock(&d->mu);
		e = fdatasync(d->fd) == 0 ? 0 : errno;
		pthread_mutex_lock(&d->mu);
		if (e != 0)
			d->err = e;
		else if (g > d->done)
			d->done = g;
		/* Wake the loop; a full pipe already means "look". */
		(void)!write(d->pipe[1], "s", 1);
		if (e != 0)
			break;   /* no retry: a later success would not bring lost writes back */
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

struct durable *
durable_open(const char *wal_path, char **cause)
{
	struct durable *d = xcalloc(1, sizeof *d);

	d->pipe[0] = d->pipe[1] = -1;
	if ((d->fd = open(wal_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1) {
		xasprintf(cause, "%s: %s", wal_path, strerror(errno));
		free(d);
		return NULL;
	}
	if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		xasprintf(cause, "pipe: %s", strerror(errno));
		close(d->fd);
		free(d);
		return NULL;
	}
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	if ((errno = pthread_create(&d->thread, NULL, worker, d)) != 0) {
		xasprintf(cause, "pthread_create: %s", strerror(errno));
		close(d->fd);
		close(d->pipe[0]);
		close(d->pipe[1]);
		free(d);
		return NULL;
	}
	return d;
}

void
durable_close(struct durable *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = 1;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	close(d->fd);
	close(d->pipe[0]);
	close(d->pipe[1]);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d);
}

void
durable_now(struct durable *d)
{
	uint64_t g;

	(void)durable_done(d);   /* fatal if the worker's sync already failed */
	pthread_mutex_lock(&d->mu);
	g = d->wanted;
	pthread_mutex_unlock(&d->mu);
	sync_or_die(d);
	pthread_mutex_lock(&d->mu);
	if (g > d->done) {
		d->done = g;    /* what was asked before this sync is covered by it */
		(void)!write(d->pipe[1], "s", 1);
	}
	pthread_mutex_unlock(&d->mu);
}

uint64_t
durable_request(struct durable *d)
{
	uint64_t g;

	pthread_mutex_lock(&d->mu);
	g = ++d->wanted;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return g;
}

int
durable_fd(struct durable *d)
{
	return d->pipe[0];
}

void
durable_drain(struct durable *d)
{
	char buf[64];

	while (read(d->pipe[0], buf, sizeof buf) > 0)
		;
}

uint64_t
durable_done(struct durable *d)
{
	uint64_t g;
	int e;

	pthread_mutex_lock(&d->mu);
	g = d->done;
	e = d->err;
	pthread_mutex_unlock(&d->mu);
	if (e != 0)
		fatalx("fdatasync of the queue database's WAL failed: %s; nothing can be "
		    "acknowledged as stored any more", strerror(e));
	return g;
}
