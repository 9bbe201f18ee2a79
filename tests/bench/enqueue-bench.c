/* enqueue-bench.c: durable enqueues per second acknowledged by wpe-purged over N connections. */
#include <sys/socket.h>
#include <sys/un.h>

#include <pthread.h>
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

static void *
worker(void *arg)
{
	int id = (int)(intptr_t)arg, fd, i, k;
	struct sockaddr_un sun;
	char req[256], buf[4096] = "";
	size_t have = 0;
	ssize_t n;
	double t;

	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		perror("connect");
		exit(1);
	}
	for (i = 0; i < per_conn; i++) {
		k = (id * per_conn + i) % installs;
		snprintf(req, sizeof req, "{\"op\":\"enqueue\",\"install\":"
		    "\"%08x-0000-4000-8000-000000000000\",\"type\":\"%s\"}\n", k,
		    (i & 1) ? "object" : "page");
		t = now();
		if (write(fd, req, strlen(req)) < 0) {
			perror("write");
			exit(1);
		}
		for (;;) {
			char *nl = memchr(buf, '\n', have);

			if (nl != NULL) {
				if (strncmp(buf, "{\"ok\":true", 10) != 0) {
					fprintf(stderr, "error answer: %.*s\n", (int)(nl - buf), buf);
					exit(1);
				}
				have -= (size_t)(nl + 1 - buf);
				memmove(buf, nl + 1, have);
				break;
			}
			if ((n = read(fd, buf + have, sizeof buf - have)) <= 0) {
				fprintf(stderr, "connection lost\n");
				exit(1);
			}
			have += (size_t)n;
		}
		lat[id * per_conn + i] = now() - t;
	}
	close(fd);
	return NULL;
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
	int conns, i, total;
	pthread_t *th;
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
	th = calloc((size_t)conns, sizeof *th);
	t0 = now();
	for (i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
	for (i = 0; i < conns; i++)
		pthread_join(th[i], NULL);
	el = now() - t0;
	qsort(lat, (size_t)total, sizeof *lat, cmp);
	printf("%d durable enqueues over %d connections in %.2f s: %.0f/s; latency p50 %.2f ms, "
	    "p99 %.2f ms, max %.2f ms\n", total, conns, el, total / el, lat[total / 2] * 1e3,
	    lat[(int)(total * 0.99)] * 1e3, lat[total - 1] * 1e3);
	return 0;
}
