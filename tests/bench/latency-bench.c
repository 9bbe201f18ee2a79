/*
 * latency-bench.c: round-trip latency of sequential requests on one open connection.
 *
 * latency-bench SOCKET COUNT MAX_SECONDS PACE_MS LINE...: sends COUNT requests one at a
 * time (the next only after the answer to the previous one arrived, and no sooner than
 * PACE_MS after the previous one was sent: 0 for back to back), cycling through the
 * given JSON lines, and prints per line the number of answers, p50, p90, p99 and max in
 * milliseconds. Stops early after MAX_SECONDS (the answer then says how many it got).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXLINES 8

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
pct(const double *v, int n, double p)
{
	int i = (int)(p * n);

	if (i >= n)
		i = n - 1;
	return v[i] * 1e3;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sun;
	static char buf[1 << 20];
	size_t have = 0;
	double *lat[MAXLINES], t, t0, maxs, pace;
	int nlat[MAXLINES] = { 0 }, nlines, count, fd, i, k;
	ssize_t n;

	if (argc < 6 || argc - 5 > MAXLINES) {
		fprintf(stderr, "usage: latency-bench SOCKET COUNT MAX_SECONDS PACE_MS LINE...\n");
		return 2;
	}
	count = atoi(argv[2]);
	maxs = atof(argv[3]);
	pace = atof(argv[4]) / 1e3;
	nlines = argc - 5;
	for (k = 0; k < nlines; k++)
		lat[k] = calloc((size_t)count, sizeof **lat);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", argv[1]);
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		perror("connect");
		return 1;
	}
	t0 = now();
	for (i = 0; i < count && now() - t0 < maxs; i++) {
		char line[4096];
		size_t len;

		k = i % nlines;
		len = (size_t)snprintf(line, sizeof line, "%s\n", argv[5 + k]);
		if (pace > 0) {
			double next = t0 + i * pace, w = next - now();

			if (w > 0) {
				struct timespec ts = { (time_t)w, (long)((w - (double)(time_t)w) * 1e9) };

				nanosleep(&ts, NULL);
			}
		}
		t = now();
		if (write(fd, line, len) != (ssize_t)len) {
			perror("write");
			return 1;
		}
		for (;;) {
			char *nl = memchr(buf, '\n', have);

			if (nl != NULL) {
				if (strncmp(buf, "{\"ok\":true", 10) != 0 &&
				    strncmp(buf, "{ \"ok\": true", 12) != 0) {
					fprintf(stderr, "error answer: %.*s\n", (int)(nl - buf),
					    buf);
					return 1;
				}
				have -= (size_t)(nl + 1 - buf);
				memmove(buf, nl + 1, have);
				break;
			}
			if (have == sizeof buf) {
				fprintf(stderr, "answer too long\n");
				return 1;
			}
			if ((n = read(fd, buf + have, sizeof buf - have)) <= 0) {
				fprintf(stderr, "connection lost\n");
				return 1;
			}
			have += (size_t)n;
		}
		lat[k][nlat[k]++] = now() - t;
	}
	for (k = 0; k < nlines; k++) {
		char op[64] = "?";
		const char *p = strstr(argv[5 + k], "\"op\"");

		if (p != NULL && sscanf(p, "\"op\":\"%63[a-z]", op) != 1)
			snprintf(op, sizeof op, "?");
		if (nlat[k] == 0) {
			printf("%s: no answers\n", op);
			continue;
		}
		qsort(lat[k], (size_t)nlat[k], sizeof **lat, cmp);
		printf("%s: n=%d p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n", op,
		    nlat[k], pct(lat[k], nlat[k], 0.5), pct(lat[k], nlat[k], 0.9),
		    pct(lat[k], nlat[k], 0.99), lat[k][nlat[k] - 1] * 1e3);
	}
	printf("%d requests in %.2f s%s\n", i, now() - t0, i < count ? " (stopped: time cap)" :
	    "");
	return 0;
}
