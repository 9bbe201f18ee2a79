/* wpe-purgectl.c: command-line client for wpe-purged: options, the transport's choice, output. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl.h"
#include "http.h"
#include "proto.h"
#include "util.h"

const char *sock_path;
int use_http;     /* --url or $WPE_PURGED_URL: the HTTPS API, not the socket */
int json_out;
static int stdout_errno; /* why the first flush of stdout failed, for close_stdout */

__dead void
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
void
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

const char *
sget(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || v == NULL)
		return NULL;
	return json_object_get_string(v);
}

int64_t
iget(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || v == NULL)
		return 0;
	return json_object_get_int64(v);
}

int
is_ok(json_object *o)
{
	json_object *v;

	return json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
}

void
print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	flush_stdout();
}

/* A daemon error answer: print it and exit 2 (or return if it is a timeout). */
void
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

int64_t
parse_id(const char *s)
{
	int64_t id;

	if (parse_int64(s, 1, INT64_MAX, &id) != 0)
		die(EXIT_USAGE, "not a request id: %s", s);
	return id;
}

/* Seconds as plain decimal: "90", "1.5", ".5"; no sign, exponent, hex, or blanks. */
double
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

json_object *
op(const char *name)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(name));
	return o;
}

__dead void
sub_help(const char *text)
{
	printf("usage: wpe-purgectl [-s SOCKET] [--json] %s\n", text);
	exit(EXIT_OK);
}

/* A decimal count within [min, max] for an option, or exit 2. */
int64_t
parse_count(const char *s, int64_t min, int64_t max, const char *what)
{
	int64_t v;

	if (parse_int64(s, min, max, &v) != 0)
		die(EXIT_USAGE, "%s takes a whole number from %lld to %lld, not %s", what,
		    (long long)min, (long long)max, s);
	return v;
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
