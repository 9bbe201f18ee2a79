/* cmd-enqueue.c: wpe-purgectl enqueue: its options, who asked, sending it again safely. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ci.h"
#include "ctl.h"
#include "http.h"
#include "proto.h"
#include "util.h"

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

int
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
