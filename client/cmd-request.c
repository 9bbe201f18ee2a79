/* cmd-request.c: wpe-purgectl's commands on one request: status, wait, cancel, requeue. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl.h"
#include "http.h"
#include "util.h"

static void
print_status(json_object *o)
{
	static const char *keys[] = { "id", "install", "type", "state", "job", "job_type",
		"attempts", "http_status", "message", "reason", "requested_by", "enqueued_at",
		"next_attempt_at", "finished_at", "requeued_from", NULL };
	json_object *v;
	int i;

	for (i = 0; keys[i] != NULL; i++) {
		if (json_object_object_get_ex(o, keys[i], &v) && v != NULL)
			printf("%-16s %s\n", keys[i], json_object_get_string(v));
	}
	if (json_object_object_get_ex(o, "source", &v) && v != NULL) {
		json_object_object_foreach(v, k, sv)
			printf("source.%-9s %s\n", k, json_object_get_string(sv));
	}
}

static int
state_exit(json_object *o)
{
	const char *st = sget(o, "state");

	if (st != NULL && strcmp(st, "done") == 0)
		return EXIT_OK;
	return EXIT_PURGE_FAILED;
}

/* Human line for a finished request. */
static void
print_final(json_object *o)
{
	const char *st = sget(o, "state"), *msg = sget(o, "message");
	int64_t http = iget(o, "http_status");

	if (st != NULL && strcmp(st, "done") == 0) {
		printf("request %lld: done: %s purge of %s accepted (HTTP %lld) after %lld "
		    "attempt(s)\n", (long long)iget(o, "id"), sget(o, "job_type"),
		    sget(o, "install"), (long long)http, (long long)iget(o, "attempts"));
		return;
	}
	fprintf(stderr, "wpe-purgectl: request %lld %s", (long long)iget(o, "id"),
	    st != NULL ? st : "failed");
	/* An expired request's message says why, the API's last answer included. */
	if (http != 0 && (st == NULL || strcmp(st, "expired") != 0))
		fprintf(stderr, ": HTTP %lld", (long long)http);
	if (msg != NULL)
		fprintf(stderr, ": %s", msg);
	fputc('\n', stderr);
}

/*
 * Wait for request id over HTTP: long-polls of HTTP_WAIT_SLICE seconds, through daemon
 * restarts, network errors, 429s and 503s (the request is on disk), until the timeout
 * (without one, until the daemon has been unreachable for HTTP_AWAY_MS).
 */
static int
do_wait_http(int64_t id, double timeout)
{
	int64_t deadline = timeout < 0 ? -1 : clock_mono_ms() + (int64_t)(timeout * 1000);
	int64_t away_since = 0, now, delay = 250;
	json_object *req, *o;
	const char *err;
	char *cause;
	double slice;
	long after;
	int retry, rc;

	for (;;) {
		now = clock_mono_ms();
		if (deadline >= 0 && now >= deadline)
			break;
		slice = deadline < 0 ? HTTP_WAIT_SLICE : (double)(deadline - now) / 1000.0;
		if (slice > HTTP_WAIT_SLICE)
			slice = HTTP_WAIT_SLICE;
		req = op("wait");
		json_object_object_add(req, "id", json_object_new_int64(id));
		json_object_object_add(req, "timeout", json_object_new_double(slice));
		o = chttp_call(req, (long)(slice * 1000) + 15000, &cause, &retry, &after);
		json_object_put(req);
		err = o != NULL ? sget(o, "error") : NULL;
		if (o != NULL && !is_ok(o) && err != NULL && strcmp(err, "timeout") == 0) {
			away_since = 0;
			if (json_out)
				print_json(o);
			json_object_put(o);
			continue;   /* the next slice */
		}
		if (o != NULL && (is_ok(o) || !retry)) {
			free(cause);
			check_answer(o);
			if (json_out)
				print_json(o);
			else
				print_final(o);
			rc = state_exit(o);
			json_object_put(o);
			return rc;
		}
		/* No answer, or "try again" (429, 503): the request stays queued; retry. */
		if (away_since == 0)
			away_since = now;
		if (deadline < 0 && now - away_since > HTTP_AWAY_MS)
			die(EXIT_UNREACHABLE, "lost wpe-purged at %s while waiting for request "
			    "%lld (%s); it is still queued", chttp_url(), (long long)id,
			    o != NULL ? sget(o, "message") : cause);
		json_object_put(o);
		free(cause);
		usleep((useconds_t)(after > 0 ? after : delay) * 1000);
		delay = delay * 2 > 5000 ? 5000 : delay * 2;
	}
	fprintf(stderr, "wpe-purgectl: request %lld is not finished after %g s; it stays "
	    "queued\n", (long long)id, timeout);
	return EXIT_TIMEOUT;
}

/*
 * Wait for request id; survive the daemon restarting (the request is on disk) by
 * reconnecting for up to RECONNECT_FOR_MS. timeout < 0: no limit.
 */
int
do_wait(int64_t id, double timeout)
{
	int64_t deadline = timeout < 0 ? -1 : clock_mono_ms() + (int64_t)(timeout * 1000);
	int64_t away_since = 0, now, delay = 100;
	struct conn c;
	json_object *req, *o;
	const char *err;

	if (use_http)
		return do_wait_http(id, timeout);
	c.fd = -1;
	c.buf = NULL;
	for (;;) {
		now = clock_mono_ms();
		if (c.fd == -1 && conn_open(&c, 1) != 0) {
			if (away_since == 0)
				away_since = now;
			if (now - away_since > RECONNECT_FOR_MS)
				die(EXIT_UNREACHABLE, "lost wpe-purged at %s while waiting for "
				    "request %lld; it is still queued", sock_path, (long long)id);
			if (deadline >= 0 && now >= deadline)
				break;
			usleep((useconds_t)delay * 1000);
			delay = delay * 2 > 2000 ? 2000 : delay * 2;
			continue;
		}
		away_since = 0;
		delay = 100;
		req = json_object_new_object();
		json_object_object_add(req, "op", json_object_new_string("wait"));
		json_object_object_add(req, "id", json_object_new_int64(id));
		if (deadline >= 0) {
			double left = (double)(deadline - now) / 1000.0;

			json_object_object_add(req, "timeout",
			    json_object_new_double(left > 0 ? left : 0));
		}
		o = request(&c, req, -1);
		json_object_put(req);
		if (o == NULL) { /* the daemon went away: reconnect and wait again */
			conn_close(&c);
			continue;
		}
		conn_close(&c);
		err = sget(o, "error");
		if (!is_ok(o) && err != NULL && strcmp(err, "timeout") == 0) {
			if (json_out)
				print_json(o);
			json_object_put(o);
			break;
		}
		check_answer(o);
		if (json_out)
			print_json(o);
		else
			print_final(o);
		int rc = state_exit(o);
		json_object_put(o);
		return rc;
	}
	fprintf(stderr, "wpe-purgectl: request %lld is not finished after %g s; it stays "
	    "queued\n", (long long)id, timeout);
	return EXIT_TIMEOUT;
}

int
cmd_id(const char *name, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	double timeout = -1;
	int ch, is_wait = strcmp(name, "wait") == 0;
	json_object *req, *o;
	int64_t id;

	optind = 0; /* glibc: re-initialise after the "+" pass */
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'T':
			if (!is_wait)
				die(EXIT_USAGE, "%s takes no --timeout", name);
			timeout = parse_timeout(optarg);
			break;
		case 'h':
			sub_help(is_wait ? "wait ID [--timeout SECONDS]" :
			    strcmp(name, "cancel") == 0 ? "cancel ID" :
			    strcmp(name, "requeue") == 0 ? "requeue ID" : "status ID");
		default: exit(EXIT_USAGE);
		}
	}
	if (optind != argc - 1)
		die(EXIT_USAGE, "%s takes one request ID", name);
	id = parse_id(argv[optind]);
	if (is_wait)
		return do_wait(id, timeout);
	req = op(name);
	json_object_object_add(req, "id", json_object_new_int64(id));
	o = simple(req);
	check_answer(o);
	if (json_out)
		print_json(o);
	else if (strcmp(name, "cancel") == 0)
		printf("request %lld cancelled\n", (long long)id);
	else if (strcmp(name, "requeue") == 0 && json_object_object_get(o, "job") == NULL)
		printf("request %lld requeued as request %lld: held until the installs catalog "
		    "is read\n", (long long)id, (long long)iget(o, "id"));
	else if (strcmp(name, "requeue") == 0)
		printf("request %lld requeued as request %lld: %s job %lld\n", (long long)id,
		    (long long)iget(o, "id"), json_object_get_boolean(json_object_object_get(o,
		    "coalesced")) ? "joined" : "new", (long long)iget(o, "job"));
	else
		print_status(o);
	json_object_put(o);
	return EXIT_OK;
}
