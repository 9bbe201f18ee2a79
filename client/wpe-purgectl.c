/* wpe-purgectl.c: command-line client for wpe-purged: enqueue, wait, inspect, control. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ci.h"
#include "http.h"
#include "proto.h"
#include "util.h"

/* Exit codes: part of the interface, scripts depend on them. */
#define EXIT_OK 0
#define EXIT_PURGE_FAILED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define EXIT_TIMEOUT 4
#define EXIT_OUTPUT 5   /* what it had to print could not be written */
#define EXIT_DENIED 6   /* this user may not use the daemon (or do this) */
#define EXIT_AGAIN 7    /* not taken now (queue full, storage failing): try again later */

#define ANSWER_MAX (64 * 1024 * 1024)
#define RECONNECT_FOR_MS 30000  /* how long a wait survives the daemon being away */
#define IO_TIMEOUT_MS 30000     /* an answer to anything but wait */

#define HTTP_WAIT_SLICE 50      /* seconds per long-poll over HTTP */
#define HTTP_AWAY_MS (5 * 60 * 1000) /* a wait without --timeout survives this much */

static const char *sock_path;
static int use_http;     /* --url or $WPE_PURGED_URL: the HTTPS API, not the socket */
static int json_out;
static int stdout_errno; /* why the first flush of stdout failed, for close_stdout */

struct conn {
	int fd;
	char *buf;
	size_t len, cap;
};

static __dead void
die(int code, const char *fmt, ...) printflike(2, 3);

static __dead void
die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("wpe-purgectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): started above */
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static const char usage_text[] =
    "usage: wpe-purgectl [-s SOCKET] [--json] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  enqueue INSTALL [-t TYPE] [--reason TEXT] [--wait [--timeout SECONDS]]\n"
    "          [--idempotency-key KEY] [--source KEY=VALUE]... [--no-source]\n"
    "                     queue a purge of INSTALL (a UUID or an install name); TYPE\n"
    "                     is object, page, cdn or all (the default); who asked is\n"
    "                     taken from the CI job's environment\n"
    "  status ID          show a request\n"
    "  wait ID [--timeout SECONDS]\n"
    "                     wait until a request is done, failed, cancelled or expired\n"
    "  list [--install ID] [--type TYPE] [--state queued|sending] [--limit N]\n"
    "       [--after JOB]  jobs not finished yet (100 at a time), what each waits for\n"
    "  installs [--refresh]\n"
    "                     the account's installs: name, environment, domain, id, last\n"
    "                     purge, queued jobs (--refresh: read them from the API first)\n"
    "  stats              counters\n"
    "  cancel ID          cancel a request\n"
    "  requeue ID         enqueue a failed, expired or cancelled request again\n"
    "  pause | resume     stop / restart sending (requests are still accepted)\n"
    "  ping               check that the daemon answers\n"
    "\n"
    "options:\n"
    "  -s, --socket PATH  daemon socket (default $WPE_PURGED_SOCKET, else\n"
    "                     " PROTO_DEFAULT_SOCKET ")\n"
    "      --url URL      use the daemon's HTTPS API instead (default $WPE_PURGED_URL)\n"
    "      --token-file FILE\n"
    "                     the API token (default $WPE_PURGED_TOKEN; never an argument)\n"
    "      --cacert FILE  CA bundle for a private CA\n"
    "      --json         print the daemon's answers as JSON, one per line\n"
    "  -h, --help         this help; COMMAND --help for one command\n"
    "  -V, --version      print the version\n"
    "\n"
    "exit status: 0 success (with --wait: purged), 1 the purge failed, was cancelled or\n"
    "expired, 2 usage error or input rejected, 3 daemon unreachable, 4 wait timed out,\n"
    "5 the output could not be written, 6 permission denied, 7 not taken now (queue full\n"
    "or storage failing): try again later.\n";

/*
 * On exit: what was printed must have reached stdout (a full disk, a closed pipe). A
 * script must never take a lost answer, such as an enqueue's request id, for success:
 * turn a successful exit into EXIT_OUTPUT, as coreutils' close_stdout does.
 */
static void
close_stdout(int status, void *arg)
{
	int pending = __fpending(stdout) != 0, earlier = ferror(stdout), failed, e;

	(void)arg;
	errno = 0;
	failed = fclose(stdout) != 0;
	e = failed ? errno : stdout_errno;
	/* Nothing to write to a closed stdout is fine (EBADF with nothing pending). */
	if (!earlier && (!failed || (!pending && e == EBADF)))
		return;
	fprintf(stderr, "wpe-purgectl: cannot write to standard output%s%s\n",
	    e != 0 ? ": " : "", e != 0 ? strerror(e) : "");
	_exit(status != 0 ? status : EXIT_OUTPUT);
}

/* Push out what was printed now (a waiting client shows the id before it waits). */
static void
flush_stdout(void)
{
	if (fflush(stdout) != 0 && stdout_errno == 0)
		stdout_errno = errno;
}

static __dead void
usage(int code)
{
	fputs(usage_text, code == 0 ? stdout : stderr);
	exit(code);
}

/*
 * The socket exists but we may not open it: say which group opens it, not just
 * "Permission denied", which reads like a broken daemon.
 */
static __dead void
die_denied(void)
{
	struct stat sb;
	struct group *gr;
	char gname[64] = "";

	if (stat(sock_path, &sb) == 0) {
		if ((gr = getgrgid(sb.st_gid)) != NULL)
			snprintf(gname, sizeof gname, "%s", gr->gr_name);
		else
			snprintf(gname, sizeof gname, "%lu", (unsigned long)sb.st_gid);
	}
	if (gname[0] != '\0')
		die(EXIT_DENIED, "permission denied: only members of the group \"%s\" may use "
		    "wpe-purged at %s; ask an administrator to run `usermod -aG %s YOUR_USER`, "
		    "then log in again (or run `newgrp %s`)", gname, sock_path, gname, gname);
	die(EXIT_DENIED, "permission denied: you may not open %s (or the directory it is "
	    "in); ask the administrator of wpe-purged for access", sock_path);
}

static int
conn_open(struct conn *c, int quiet)
{
	struct sockaddr_un sun;

	memset(c, 0, sizeof *c);
	if (strlen(sock_path) >= sizeof sun.sun_path)
		die(EXIT_USAGE, "socket path too long: %s", sock_path);
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		die(EXIT_UNREACHABLE, "socket: %s", strerror(errno));
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		int e = errno;

		close(c->fd);
		c->fd = -1;
		if (e == EACCES || e == EPERM)
			die_denied();
		if (!quiet)
			die(EXIT_UNREACHABLE, "cannot reach wpe-purged at %s: %s", sock_path,
			    strerror(e));
		errno = e;
		return -1;
	}
	return 0;
}

static void
conn_close(struct conn *c)
{
	if (c->fd != -1)
		close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof *c);
	c->fd = -1;
}

static int
conn_write(struct conn *c, const char *s, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(c->fd, s, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Read one answer line within timeout_ms (-1: none). Returns the parsed object, or NULL
 * with errno: ETIMEDOUT, or ECONNRESET for a closed or broken connection.
 */
static json_object *
conn_read(struct conn *c, int timeout_ms)
{
	struct pollfd pfd = { c->fd, POLLIN, 0 };
	json_object *o;
	char *nl;
	ssize_t n;
	size_t linelen;

	for (;;) {
		if (c->len > 0 && (nl = memchr(c->buf, '\n', c->len)) != NULL) {
			*nl = '\0';
			linelen = (size_t)(nl - c->buf);
			o = json_tokener_parse(c->buf);
			memmove(c->buf, nl + 1, c->len - linelen - 1);
			c->len -= linelen + 1;
			if (o == NULL || !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				die(EXIT_UNREACHABLE, "the daemon sent an answer that is not JSON");
			}
			return o;
		}
		if (c->len + 4096 + 1 > c->cap) {
			if (c->cap >= ANSWER_MAX)
				die(EXIT_UNREACHABLE, "the daemon's answer is too long");
			c->cap = c->cap == 0 ? 65536 : c->cap * 2;
			c->buf = xrealloc(c->buf, c->cap);
		}
		n = poll(&pfd, 1, timeout_ms);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == 0) {
			errno = ETIMEDOUT;
			return NULL;
		}
		n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			errno = ECONNRESET;
			return NULL;
		}
		c->len += (size_t)n;
	}
}

static json_object *
request(struct conn *c, json_object *req, int timeout_ms)
{
	const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	char *line;
	json_object *o;

	xasprintf(&line, "%s\n", s);
	if (conn_write(c, line, strlen(line)) != 0) {
		free(line);
		/* The daemon may have refused us and closed: its reason is still readable. */
		if ((o = conn_read(c, 1000)) != NULL)
			return o;
		errno = ECONNRESET;
		return NULL;
	}
	free(line);
	o = conn_read(c, timeout_ms);
	return o;
}

static const char *sget(json_object *, const char *);
static json_object *op(const char *);

/*
 * One request over HTTP. A token's rate cap (429) is waited out, within the usual
 * answer timeout; anything else that is not an answer is exit 3.
 */
static json_object *
simple_http(json_object *req)
{
	int64_t deadline = clock_mono_ms() + IO_TIMEOUT_MS, left;
	json_object *o;
	char *cause;
	long after;
	int retry;

	for (;;) {
		left = deadline - clock_mono_ms();
		o = chttp_call(req, left > 1000 ? (long)left : 1000L, &cause, &retry, &after);
		if (after <= 0)
			after = 1000;
		if (retry != 2 || clock_mono_ms() + after >= deadline) {
			if (o != NULL)
				break;
			die(EXIT_UNREACHABLE, "no answer from wpe-purged at %s: %s", chttp_url(),
			    cause);
		}
		json_object_put(o);
		free(cause);
		usleep((useconds_t)after * 1000);
	}
	free(cause);
	json_object_put(req);
	return o;
}

/* One request on a fresh connection; any failure to talk is exit 3. */
static json_object *
simple(json_object *req)
{
	struct conn c;
	json_object *o;

	if (use_http)
		return simple_http(req);

	conn_open(&c, 0);
	o = request(&c, req, IO_TIMEOUT_MS);
	if (o == NULL)
		die(EXIT_UNREACHABLE, "no answer from wpe-purged at %s: %s", sock_path,
		    errno == ETIMEDOUT ? "timed out" : "connection closed");
	conn_close(&c);
	json_object_put(req);
	return o;
}

static const char *
sget(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || v == NULL)
		return NULL;
	return json_object_get_string(v);
}

static int64_t
iget(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || v == NULL)
		return 0;
	return json_object_get_int64(v);
}

static int
is_ok(json_object *o)
{
	json_object *v;

	return json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

static void
print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	flush_stdout();
}

/* A daemon error answer: print it and exit 2 (or return if it is a timeout). */
static void
check_answer(json_object *o)
{
	const char *err;

	if (is_ok(o))
		return;
	err = sget(o, "error");
	if (err != NULL && strcmp(err, "timeout") == 0)
		return;
	if (json_out)
		print_json(o);
	fprintf(stderr, "wpe-purgectl: %s (%s)\n", sget(o, "message") ? sget(o, "message") :
	    "the daemon refused the request", err ? err : "error");
	if (err != NULL && (strcmp(err, "forbidden") == 0 || strcmp(err, "unauthorized") == 0))
		exit(EXIT_DENIED);
	if (err != NULL && (strcmp(err, "queue_full") == 0 || strcmp(err, "storage") == 0))
		exit(EXIT_AGAIN);
	exit(EXIT_USAGE);
}

static int64_t
parse_id(const char *s)
{
	int64_t id;

	if (parse_int64(s, 1, INT64_MAX, &id) != 0)
		die(EXIT_USAGE, "not a request id: %s", s);
	return id;
}

/* Seconds as plain decimal: "90", "1.5", ".5"; no sign, exponent, hex, or blanks. */
static double
parse_timeout(const char *s)
{
	const char *p;
	char *end;
	double d;
	int digits = 0, dots = 0;

	for (p = s; *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9')
			digits++;
		else if (*p == '.' && dots++ == 0)
			continue;
		else
			break;
	}
	if (*p != '\0' || digits == 0)
		goto bad;
	errno = 0;
	d = strtod(s, &end);
	if (*end != '\0' || errno != 0 || !isfinite(d) || d > PROTO_MAX_WAIT)
		goto bad;
	return d;
bad:
	die(EXIT_USAGE, "--timeout takes seconds from 0 to %d, not %s", PROTO_MAX_WAIT, s);
}

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
static int
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

static json_object *
op(const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(name));
	return o;
}

static __dead void
sub_help(const char *text)
{
	printf("usage: wpe-purgectl [-s SOCKET] [--json] %s\n", text);
	exit(EXIT_OK);
}

/*
 * Send an enqueue that carries an idempotency key: when its answer is lost (the daemon
 * restarted or was killed, the connection or network dropped), send it again with the
 * same key for up to RECONNECT_FOR_MS: the daemon answers a request it already queued
 * with that request ("replayed"), so a retry never makes a second one.
 */
static json_object *
enqueue_retrying(json_object *req, const char *key)
{
	int64_t away_since = 0, now, delay = 100;
	struct conn c;
	json_object *o = NULL;
	char *cause = NULL, why[256];
	long after;
	int retry, told = 0;

	for (;;) {
		now = clock_mono_ms();
		if (use_http) {
			o = chttp_call(req, IO_TIMEOUT_MS, &cause, &retry, &after);
			/*
			 * wpe-purged answered: that is the answer, a 503 queue_full or storage
			 * too (nothing was queued: exit 7, as without a key). Only its token's
			 * rate cap (429) is waited out, as simple_http does.
			 */
			if (o != NULL && retry != 2)
				break;
			snprintf(why, sizeof why, "%s", o != NULL && sget(o, "message") != NULL ?
			    sget(o, "message") : cause != NULL ? cause : "no answer");
			json_object_put(o);
			o = NULL;
			free(cause);
			cause = NULL;
			if (!retry)
				die(EXIT_UNREACHABLE, "no answer from wpe-purged at %s: %s",
				    chttp_url(), why);
			if (after > delay)
				delay = after;
		} else if (conn_open(&c, 1) == 0) {
			o = request(&c, req, IO_TIMEOUT_MS);
			conn_close(&c);
			if (o != NULL)
				break;
			snprintf(why, sizeof why, "%s", errno == ETIMEDOUT ? "timed out" :
			    "connection closed");
		} else
			snprintf(why, sizeof why, "%s", strerror(errno));
		if (away_since == 0)
			away_since = now;
		if (now - away_since > RECONNECT_FOR_MS)
			die(EXIT_UNREACHABLE, "no answer from wpe-purged at %s to the enqueue (%s); "
			    "it may have been queued: run the same command again with "
			    "--idempotency-key %s", use_http ? chttp_url() : sock_path, why, key);
		if (!told++)
			fprintf(stderr, "wpe-purgectl: no answer to the enqueue (%s); sending it "
			    "again with the same idempotency key\n", why);
		usleep((useconds_t)delay * 1000);
		delay = delay * 2 > 2000 ? 2000 : delay * 2;
	}
	free(cause);
	json_object_put(req);
	return o;
}

/*
 * o is unknown_field for "source" (src_own: this client made it from the CI's
 * environment) or "idempotency_key" (key_own: it made the key up for --wait): that field's
 * name, else NULL.
 */
static const char *
unknown_own_field(json_object *o, int src_own, int key_own)
{
	const char *err = sget(o, "error"), *msg = sget(o, "message");

	if (is_ok(o) || err == NULL || strcmp(err, "unknown_field") != 0 || msg == NULL)
		return NULL;
	if (src_own && strstr(msg, "\"source\"") != NULL)
		return "source";
	if (key_own && strstr(msg, "\"idempotency_key\"") != NULL)
		return "idempotency_key";
	return NULL;
}

static int
cmd_enqueue(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "type", required_argument, NULL, 't' },
		{ "reason", required_argument, NULL, 'r' },
		{ "wait", no_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "idempotency-key", required_argument, NULL, 'k' },
		{ "source", required_argument, NULL, 'S' },
		{ "no-source", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *type = "all", *reason = NULL, *install = NULL, *key = NULL;
	char keybuf[64], *cause = NULL, **overrides = xcalloc((size_t)argc + 1, sizeof(char *));
	const char *unasked;
	double timeout = -1;
	int ch, wait = 0, nosource = 0, noverrides = 0;
	json_object *req, *o, *src = NULL;
	enum purge_type t;

	optind = 0; /* glibc: re-initialise after the "+" pass */
	while ((ch = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
		switch (ch) {
		case 't': type = optarg; break;
		case 'r': reason = optarg; break;
		case 'w': wait = 1; break;
		case 'T': timeout = parse_timeout(optarg); break;
		case 'k': key = optarg; break;
		case 'S': overrides[noverrides++] = optarg; break;
		case 'N': nosource = 1; break;
		case 'h':
			sub_help("enqueue INSTALL [-t|--type object|page|cdn|all] "
			    "[--reason TEXT] [--wait [--timeout SECONDS]] [--idempotency-key KEY] "
			    "[--source KEY=VALUE]... [--no-source]");
		default: exit(EXIT_USAGE);
		}
	}
	if (optind != argc - 1)
		die(EXIT_USAGE, "enqueue takes one INSTALL id (see enqueue --help)");
	install = argv[optind];
	if (purge_type_parse(type, &t) != 0)
		die(EXIT_USAGE, "--type must be object, page, cdn or all, not %s", type);
	if (!uuid_valid(install) && (strlen(install) > INSTALL_NAME_MAX ||
	    !install_name_valid(install)))
		die(EXIT_USAGE, "INSTALL must be a WP Engine install id (a UUID) or name (3 to 14 "
		    "lower-case letters and digits, starting with a letter), not %s", install);
	if (timeout >= 0 && !wait)
		die(EXIT_USAGE, "--timeout goes with --wait");
	if (key != NULL && !proto_idem_key_valid(key, strlen(key)))
		die(EXIT_USAGE, "--idempotency-key takes 1 to %d printable ASCII characters "
		    "without blanks", PROTO_MAX_IDEM_KEY);
	if (nosource && noverrides > 0)
		die(EXIT_USAGE, "--no-source and --source do not go together");
	/* --wait survives a lost answer: with a key, sending again never queues twice. */
	if (key == NULL && wait) {
		if (ci_idem_key_new(keybuf, sizeof keybuf) != 0)
			die(EXIT_USAGE, "getrandom: %s", strerror(errno));
		key = keybuf;
	}
	req = op("enqueue");
	json_object_object_add(req, "install", json_object_new_string(install));
	json_object_object_add(req, "type", json_object_new_string(type));
	if (reason != NULL)
		json_object_object_add(req, "reason", json_object_new_string(reason));
	if (!nosource && ci_source(overrides, noverrides, &src, &cause) != 0)
		die(EXIT_USAGE, "%s", cause);
	if (src != NULL)
		json_object_object_add(req, "source", src);
	free(overrides);
	if (key != NULL)
		json_object_object_add(req, "idempotency_key", json_object_new_string(key));
	for (;;) {
		json_object_get(req);
		o = key != NULL ? enqueue_retrying(req, key) : simple(req);
		/*
		 * A daemon older than protocol 4 refuses the fields this client added on its
		 * own (the CI's source, --wait's key): they never make the enqueue fail, so
		 * it goes again without them. Those the user gave are kept (and refused).
		 */
		if ((unasked = unknown_own_field(o, src != NULL && noverrides == 0,
		    key == keybuf)) == NULL)
			break;
		fprintf(stderr, "wpe-purgectl: note: wpe-purged at %s is older than this client "
		    "and does not take \"%s\"; sent without it\n", use_http ? chttp_url() :
		    sock_path, unasked);
		json_object_object_del(req, unasked);
		if (strcmp(unasked, "idempotency_key") == 0)
			key = NULL;
		else
			src = NULL;
		json_object_put(o);
	}
	json_object_put(req);
	check_answer(o);
	if (json_out)
		print_json(o);
	else if (json_object_object_get(o, "job") == NULL)
		printf("request %lld queued for %s: held until the installs catalog is read\n",
		    (long long)iget(o, "id"), install);
	else
		printf("request %lld %s%s%s%s: %s job %lld\n", (long long)iget(o, "id"),
		    json_object_get_boolean(json_object_object_get(o, "replayed")) ?
		    "was queued before (the same idempotency key)" : "queued",
		    sget(o, "name") != NULL && !uuid_valid(install) ? " (" : "",
		    sget(o, "name") != NULL && !uuid_valid(install) ? sget(o, "install") : "",
		    sget(o, "name") != NULL && !uuid_valid(install) ? ")" : "",
		    json_object_get_boolean(json_object_object_get(o, "coalesced")) ?
		    "joined" : "new", (long long)iget(o, "job"));
	flush_stdout();
	int64_t id = iget(o, "id");
	json_object_put(o);
	return wait ? do_wait(id, timeout) : EXIT_OK;
}

/* A decimal count within [min, max] for an option, or exit 2. */
static int64_t
parse_count(const char *s, int64_t min, int64_t max, const char *what)
{
	int64_t v;

	if (parse_int64(s, min, max, &v) != 0)
		die(EXIT_USAGE, "%s takes a whole number from %lld to %lld, not %s", what,
		    (long long)min, (long long)max, s);
	return v;
}

static int
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

static void
print_list(json_object *o)
{
	json_object *jobs, *e;
	size_t i, n;
	const char *next;

	if (!json_object_object_get_ex(o, "jobs", &jobs) || (n = json_object_array_length(jobs))
	    == 0) {
		printf("no unfinished jobs%s\n", json_object_get_boolean(
		    json_object_object_get(o, "paused")) ? " (sending is paused)" : "");
		return;
	}
	printf("%-6s %-36s %-14s %-6s %-8s %4s %4s %-24s %-24s %s\n", "JOB", "INSTALL",
	    "NAME", "TYPE", "STATE", "REQS", "TRY", "NEXT/STARTED", "REQUESTED BY",
	    "WAITING FOR");
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(jobs, i);
		next = sget(e, "next_attempt_at");
		if (next == NULL)
			next = sget(e, "started_at");
		printf("%-6lld %-36s %-14s %-6s %-8s %4lld %4lld %-24s %-24s %s",
		    (long long)iget(e, "job"), sget(e, "install"),
		    sget(e, "name") != NULL ? sget(e, "name") : "-", sget(e, "type"),
		    sget(e, "state"),
		    (long long)iget(e, "requests"), (long long)iget(e, "attempts"),
		    next ? next : "-", sget(e, "requested_by") ? sget(e, "requested_by") : "-",
		    sget(e, "waiting_for") ? sget(e, "waiting_for") : "");
		if (sget(e, "message") != NULL)
			printf(" (last: %s)", sget(e, "message"));
		putchar('\n');
	}
	if ((int64_t)n < iget(o, "total"))
		printf("... %lld more: wpe-purgectl list --after %lld (with the same filters)\n",
		    (long long)(iget(o, "total") - (int64_t)n), (long long)iget(o, "next"));
}

static int
cmd_list(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "install", required_argument, NULL, 'i' },
		{ "type", required_argument, NULL, 't' },
		{ "state", required_argument, NULL, 'S' },
		{ "limit", required_argument, NULL, 'l' },
		{ "after", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	json_object *req = op("list"), *o;
	enum purge_type t;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "t:h", lo, NULL)) != -1) {
		switch (ch) {
		case 'i':
			/* getopt sets optarg for required_argument: never NULL here. */
			if (!uuid_valid(optarg) && (strlen(optarg) > INSTALL_NAME_MAX || /* NOLINT(clang-analyzer-core.NonNullParamChecker) */
			    !install_name_valid(optarg)))
				die(EXIT_USAGE, "--install takes a WP Engine install id (a UUID) "
				    "or name, not %s", optarg);
			json_object_object_add(req, "install", json_object_new_string(optarg));
			break;
		case 't':
			if (purge_type_parse(optarg, &t) != 0)
				die(EXIT_USAGE, "--type must be object, page, cdn or all, not %s",
				    optarg);
			json_object_object_add(req, "type", json_object_new_string(optarg));
			break;
		case 'S':
			/* getopt sets optarg for required_argument: never NULL here. */
			if (strcmp(optarg, "queued") != 0 && /* NOLINT(clang-analyzer-core.NonNullParamChecker) */
			    strcmp(optarg, "sending") != 0)
				die(EXIT_USAGE, "--state must be queued or sending, not %s", optarg);
			json_object_object_add(req, "state", json_object_new_string(optarg));
			break;
		case 'l':
			json_object_object_add(req, "limit", json_object_new_int64(
			    parse_count(optarg, 1, PROTO_LIST_MAX, "--limit")));
			break;
		case 'a':
			json_object_object_add(req, "after", json_object_new_int64(
			    parse_count(optarg, 0, INT64_MAX, "--after")));
			break;
		case 'h':
			sub_help("list [--install ID] [--type TYPE] [--state queued|sending] "
			    "[--limit N] [--after JOB]");
		default: exit(EXIT_USAGE);
		}
	}
	if (optind != argc)
		die(EXIT_USAGE, "list takes options only (see list --help)");
	o = simple(req);
	check_answer(o);
	if (json_out)
		print_json(o);
	else
		print_list(o);
	json_object_put(o);
	return EXIT_OK;
}

static const char *
dash(const char *s)
{
	return s != NULL ? s : "-";
}

static int
cmd_installs(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "refresh", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	json_object *req = op("installs"), *o, *arr, *e;
	size_t i, n = 0, pages = 0;
	char after[64];
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'r':
			json_object_object_add(req, "refresh", json_object_new_boolean(1));
			break;
		case 'j': json_out = 1; break;
		case 'h': sub_help("installs [--json] [--refresh]");
		default: exit(EXIT_USAGE);
		}
	}
	if (optind != argc)
		die(EXIT_USAGE, "installs takes options only (see installs --help)");
	/* Page after page (by name), each answer "next" names the last one of. */
	for (;;) {
		o = simple(req);
		check_answer(o);
		pages++;
		if (json_out)
			print_json(o);
		else if (sget(o, "fetched_at") == NULL) {
			printf("the installs catalog has not been read from the API yet%s%s\n",
			    sget(o, "refresh_error") ? ": " : "",
			    sget(o, "refresh_error") ? sget(o, "refresh_error") : "");
			json_object_put(o);
			break;
		} else {
			if (pages == 1)
				printf("%-14s %-11s %-32s %-36s %-24s %s\n", "NAME", "ENVIRONMENT",
				    "DOMAIN", "ID", "LAST PURGE", "QUEUED");
			arr = json_object_object_get(o, "installs");
			for (i = 0; arr != NULL && i < json_object_array_length(arr); i++, n++) {
				e = json_object_array_get_idx(arr, i);
				printf("%-14s %-11s %-32s %-36s %-24s %lld\n", sget(e, "name"),
				    dash(sget(e, "environment")), dash(sget(e, "domain")),
				    sget(e, "id"), dash(sget(e, "last_purge")),
				    (long long)iget(e, "queued_jobs"));
			}
		}
		/* A next page: never more than the catalog can have (a daemon gone wrong). */
		if (sget(o, "next") == NULL || pages > 200000) {
			if (!json_out)
				printf("%zu installs, read from the API %s%s%s\n", n,
				    sget(o, "fetched_at"), sget(o, "refresh_error") ?
				    "; reading them again failed: " : "", sget(o, "refresh_error") ?
				    sget(o, "refresh_error") : "");
			json_object_put(o);
			break;
		}
		snprintf(after, sizeof after, "%s", sget(o, "next"));
		json_object_put(o);
		req = op("installs");
		json_object_object_add(req, "after", json_object_new_string(after));
	}
	return EXIT_OK;
}

static void
print_stats(json_object *o)
{
	json_object_object_foreach(o, key, val) {
		if (strcmp(key, "ok") == 0)
			continue;
		if (val != NULL && json_object_is_type(val, json_type_object)) {
			json_object_object_foreach(val, k2, v2)
				printf("%s.%-18s %s\n", key, k2, json_object_get_string(v2));
			continue;
		}
		printf("%-22s %s\n", key, val ? json_object_get_string(val) : "-");
	}
}

static int
cmd_simple(const char *name, int argc, char **argv)
{
	json_object *o;

	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
		sub_help(name);
	if (argc != 1)
		die(EXIT_USAGE, "%s takes no arguments", name);
	o = simple(op(name));
	check_answer(o);
	if (json_out)
		print_json(o);
	else if (strcmp(name, "list") == 0)
		print_list(o);
	else if (strcmp(name, "stats") == 0)
		print_stats(o);
	else if (strcmp(name, "ping") == 0)
		printf("wpe-purged %s (protocol %lld) is alive\n", sget(o, "version"),
		    (long long)iget(o, "protocol"));
	else
		printf("sending %s\n", strcmp(name, "pause") == 0 ? "paused" : "resumed");
	json_object_put(o);
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "url", required_argument, NULL, 'u' },
		{ "token-file", required_argument, NULL, 'k' },
		{ "cacert", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *cmd, *url = getenv("WPE_PURGED_URL"), *token_file = NULL, *cacert = NULL;
	char *cause = NULL;
	int ch;

	signal(SIGPIPE, SIG_IGN);
	if (on_exit(close_stdout, NULL) != 0)
		die(EXIT_USAGE, "on_exit failed");
	if ((sock_path = getenv("WPE_PURGED_SOCKET")) == NULL || *sock_path == '\0')
		sock_path = PROTO_DEFAULT_SOCKET;
	/* "+": stop at the command; its own options are parsed by the command. */
	while ((ch = getopt_long(argc, argv, "+s:hV", lo, NULL)) != -1) {
		switch (ch) {
		case 's': sock_path = optarg; url = NULL; break;
		case 'u': url = optarg; break;
		case 'k': token_file = optarg; break;
		case 'c': cacert = optarg; break;
		case 'j': json_out = 1; break;
		case 'h': usage(EXIT_OK);
		case 'V': printf("wpe-purgectl %s (protocol %d)\n", WPE_VERSION, PROTO_VERSION);
			return EXIT_OK;
		default: usage(EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage(EXIT_USAGE);
	if (url != NULL && *url != '\0') {
		if (chttp_init(url, token_file, cacert, &cause) != 0)
			die(EXIT_USAGE, "%s", cause);
		use_http = 1;
	}
	cmd = argv[0];
	if (strcmp(cmd, "enqueue") == 0)
		return cmd_enqueue(argc, argv);
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "wait") == 0 ||
	    strcmp(cmd, "cancel") == 0 || strcmp(cmd, "requeue") == 0)
		return cmd_id(cmd, argc, argv);
	if (strcmp(cmd, "list") == 0)
		return cmd_list(argc, argv);
	if (strcmp(cmd, "installs") == 0)
		return cmd_installs(argc, argv);
	if (strcmp(cmd, "stats") == 0 ||
	    strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
	    strcmp(cmd, "ping") == 0)
		return cmd_simple(cmd, argc, argv);
	die(EXIT_USAGE, "unknown command \"%s\" (see --help)", cmd);
}
