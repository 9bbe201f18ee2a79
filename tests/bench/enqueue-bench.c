/* enqueue-bench.c: durable enqueues per second acknowledged by wpe-purged over N connections. */
#include <sys/socket.h>
#include <sys/un.h>

#include <sys/epoll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path;
static int per_conn;
static double *lat;     /* per request latency, seconds */
static int installs;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One thread and epoll, like redis-benchmark: a thread per connection would spend the
 * client's half of this 2-core machine on context switches and measure the client.
 */
struct conn {
	int fd, sent, done;
	double t;
	char buf[4096];
	size_t have;
};

static void
send_next(struct conn *c, int id)
{
	char req[256];
	int k = (id * per_conn + c->sent) % installs;

	snprintf(req, sizeof req, "{\"op\":\"enqueue\",\"install\":"
	    "\"%08x-0000-4000-8000-000000000000\",\"type\":\"%s\"}\n", k,
	    (c->sent & 1) ? "object" : "page");
	c->t = now();
	if (write(c->fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		perror("write");
		exit(1);
	}
	c->sent++;
}

static void
run(int conns)
{
	struct conn *cs = calloc((size_t)conns, sizeof *cs);
	struct epoll_event ev, evs[256];
	struct sockaddr_un sun;
	int ep = epoll_create1(0), i, n, left = conns, idx = 0;
	ssize_t r;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
	for (i = 0; i < conns; i++) {
		cs[i].fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(cs[i].fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
			perror("connect");
			exit(1);
		}
		ev.events = EPOLLIN;
		ev.data.u32 = (uint32_t)i;
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
	}
	for (i = 0; i < conns; i++)
		send_next(&cs[i], i);
	while (left > 0) {
		n = epoll_wait(ep, evs, 256, -1);
		for (int e = 0; e < n; e++) {
			struct conn *c = &cs[evs[e].data.u32];
			char *nl;

			if ((r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have)) <= 0) {
				fprintf(stderr, "connection lost\n");
				exit(1);
			}
			c->have += (size_t)r;
			while ((nl = memchr(c->buf, '\n', c->have)) != NULL) {
				if (strncmp(c->buf, "{\"ok\":true", 10) != 0) {
					fprintf(stderr, "error answer: %.*s\n", (int)(nl - c->buf),
					    c->buf);
					exit(1);
				}
				lat[idx++] = now() - c->t;
				c->have -= (size_t)(nl + 1 - c->buf);
				memmove(c->buf, nl + 1, c->have);
				if (++c->done == per_conn)
					left--;
				else
					send_next(c, (int)evs[e].data.u32);
			}
		}
	}
	for (i = 0; i < conns; i++)
		close(cs[i].fd);
	free(cs);
	close(ep);
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	int conns, total;
	double t0, el;

	if (argc != 5) {
		fprintf(stderr, "usage: enqueue-bench SOCKET CONNECTIONS REQUESTS_PER_CONN "
		    "INSTALLS\n");
		return 2;
	}
	sock_path = argv[1];
	conns = atoi(argv[2]);
	per_conn = atoi(argv[3]);
	installs = atoi(argv[4]);
	total = conns * per_conn;
	lat = calloc((size_t)total, sizeof *lat);
	t0 = now();
	run(conns);
	el = now() - t0;
	qsort(lat, (size_t)total, sizeof *lat, cmp);
	printf("%d durable enqueues over %d connections in %.2f s: %.0f/s; latency p50 %.2f ms, "
	    "p99 %.2f ms, max %.2f ms\n", total, conns, el, total / el, lat[total / 2] * 1e3,
	    lat[(int)(total * 0.99)] * 1e3, lat[total - 1] * 1e3);
	return 0;
}
