/* transport.c: wpe-purgectl's requests to the daemon: its Unix socket, or the HTTPS API. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl.h"
#include "http.h"
#include "util.h"

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

int
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

void
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

json_object *
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
json_object *
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
