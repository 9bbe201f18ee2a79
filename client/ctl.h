/* ctl.h: what wpe-purgectl's files share: exit codes, options, the transport, answers, commands. */
#ifndef WPE_CTL_H
#define WPE_CTL_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

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

struct conn {
	int fd;
	char *buf;
	size_t len, cap;
};

/* wpe-purgectl.c: options, output, answers. */
extern const char *sock_path;
extern int use_http;     /* --url or $WPE_PURGED_URL: the HTTPS API, not the socket */
extern int json_out;

__dead void
die(int code, const char *fmt, ...) printflike(2, 3);
void flush_stdout(void);
/* An answer's string or number field (NULL or 0 when absent); is it {"ok":true}? */
const char *sget(json_object *, const char *);
int64_t iget(json_object *, const char *);
int is_ok(json_object *);
void print_json(json_object *);
void check_answer(json_object *);
int64_t parse_id(const char *);
double parse_timeout(const char *);
int64_t parse_count(const char *s, int64_t min, int64_t max, const char *what);
/* A new request object {"op": name}. */
json_object *op(const char *name);
__dead void sub_help(const char *text);

/* transport.c: the daemon's socket (or, with use_http, its HTTPS API: http.c). */
/* Connect; a failure is fatal unless quiet (then -1 and errno). */
int conn_open(struct conn *, int quiet);
void conn_close(struct conn *);
/* Send req, read one answer within timeout_ms (-1: none); NULL with errno. */
json_object *request(struct conn *, json_object *req, int timeout_ms);
/* Takes req; its answer. */
json_object *simple(json_object *req);

/* The commands: each returns the exit status. */
/* cmd-request.c: status, wait, cancel, requeue. */
int do_wait(int64_t id, double timeout);
int cmd_id(const char *name, int argc, char **argv);
/* cmd-enqueue.c */
int cmd_enqueue(int argc, char **argv);
/* cmd-queue.c: list, installs, stats, ping, pause, resume. */
int cmd_list(int argc, char **argv);
int cmd_installs(int argc, char **argv);
int cmd_simple(const char *name, int argc, char **argv);

#endif
