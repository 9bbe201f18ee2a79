/* cmd-queue.c: wpe-purgectl's commands on the queue: list, installs, stats, ping, pause, resume. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ctl.h"
#include "proto.h"
#include "util.h"

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

int
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

int
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

int
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
