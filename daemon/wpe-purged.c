/* wpe-purged.c: the daemon's entry point: options, start-up, signals, shutdown. */
#include <sys/resource.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "http.h"
#include "ops.h"
#include "queue.h"
#include "server.h"
#include "store.h"
#include "util.h"

#define SHUTDOWN_GRACE_MS 5000
#define STATUS_MIN_MS 250        /* STATUS= at most this often; sent when it changes */
/* What the unit's LoadCredential= reads: --check-config as root uses it. */
#define SERVICE_CREDENTIALS "/etc/wpe-purged/credentials"

struct daemon {
	struct event_base *base;
	struct config cfg;
	struct store *store;
	struct queue *q;
	struct server *srv;
	struct http *http;           /* NULL: no [http] listen */
	struct tokens *tokens;       /* loaded at start, handed to http */
	struct event *status_ev;     /* one-shot: send STATUS= if the summary changed */
	int64_t status_at;           /* monotonic ms of the last STATUS= */
	char status[160];
	struct event *watchdog_ev;
	struct event *log_ev;        /* writes the loop turn's buffered log lines */
	uint64_t watchdog_usec;
	int verbose;
	int stopping;
	struct event *drain_ev;      /* at shutdown: until every answer is written */
	int64_t drain_until;
};

static __dead void
usage(FILE *f, int code)
{
	fprintf(f, "usage: wpe-purged [-v] [-c FILE] [--check-config]\n"
	    "       wpe-purged --new-token NAME\n"
	    "\n"
	    "  -c, --config FILE   configuration file (default %s)\n"
	    "      --check-config  validate the configuration and credentials, print the\n"
	    "                      effective settings (password redacted) and exit\n"
	    "      --new-token NAME  print a new HTTP API token on stdout and its line for\n"
	    "                      the tokens file on stderr\n"
	    "  -v, --verbose       log debug messages\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          print this help and exit\n", CONFIG_DEFAULT_PATH);
	exit(code);
}

/* Thousands of clients need descriptors: use the hard limit (systemd's LimitNOFILE=). */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
	}
}

static void
log_flush_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	log_flush();
}

static void
log_flush_soon(void *arg)
{
	event_active(arg, 0, 0);
}

static void
notify_status(struct daemon *d)
{
	char buf[sizeof d->status];

	ops_summary(d->q, buf, sizeof buf);
	if (strcmp(buf, d->status) == 0)
		return;
	memcpy(d->status, buf, sizeof buf);
	d->status_at = clock_mono_ms();
	sd_notifyf(0, "STATUS=%s", buf);
}

static void
status_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	notify_status(arg);
}

/*
 * The queue changed: STATUS= follows it (not a period, which showed a stale summary for
 * seconds after a burst), at most every STATUS_MIN_MS, and never from inside the queue.
 */
static void
status_changed(void *arg)
{
	struct daemon *d = arg;
	int64_t wait = d->status_at + STATUS_MIN_MS - clock_mono_ms();
	struct timeval tv;

	if (evtimer_pending(d->status_ev, NULL))
		return;
	if (wait < 0)
		wait = 0;
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
	evtimer_add(d->status_ev, &tv);
}

static void
watchdog_cb(evutil_socket_t fd, short events, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)events;
	/*
	 * Sent from the event loop, and only while the queue makes progress: a wedged loop,
	 * or one that turns while enqueues wait for a commit that never comes, stops the
	 * pings and systemd restarts us.
	 */
	if (!queue_progressing(d->q, (int64_t)(d->watchdog_usec / 2 / 1000))) {
		log_error("enqueues have waited more than %llu ms for their commit: no "
		    "watchdog ping", (unsigned long long)(d->watchdog_usec / 2 / 1000));
		return;
	}
	sd_notify(0, "WATCHDOG=1");
}

/*
 * Nothing is in flight any more: leave once every connection has read its answers (a
 * connection closes as soon as its output is written), or once the grace ran out for
 * clients that do not read; what those never read is said in the log.
 */
static void
drain_cb(evutil_socket_t fd, short events, void *arg)
{
	struct daemon *d = arg;
	struct timeval tv = { 0, 20 * 1000 };
	int n = server_connections(d->srv);

	(void)fd;
	(void)events;
	if (n > 0 && clock_mono_ms() < d->drain_until) {
		evtimer_add(d->drain_ev, &tv);
		return;
	}
	if (n > 0)
		log_warn("%d connection(s) did not read all their answers within %d ms of the "
		    "shutdown; those answers are dropped (their requests are stored)", n,
		    SHUTDOWN_GRACE_MS);
	event_base_loopexit(d->base, NULL);
}

static void
stopped_cb(void *arg)
{
	struct daemon *d = arg;

	d->drain_until = clock_mono_ms() + SHUTDOWN_GRACE_MS;
	if ((d->drain_ev = evtimer_new(d->base, drain_cb, d)) == NULL) {
		event_base_loopexit(d->base, NULL);
		return;
	}
	drain_cb(-1, 0, d);
}

static void
sig_stop(evutil_socket_t sig, short events, void *arg)
{
	struct daemon *d = arg;

	(void)events;
	if (d->stopping) {
		log_notice("second signal %d: exiting now", (int)sig);
		event_base_loopbreak(d->base);
		return;
	}
	d->stopping = 1;
	log_notice("received signal %d: shutting down", (int)sig);
	sd_notify(0, "STOPPING=1");
	queue_shutdown(d->q, SHUTDOWN_GRACE_MS, stopped_cb, d);
	server_stop(d->srv);
	if (d->http != NULL)
		http_stop(d->http);
}

static void
sig_hup(evutil_socket_t sig, short events, void *arg)
{
	struct daemon *d = arg;
	struct config nc;
	char *cause = NULL;

	(void)sig;
	(void)events;
	sd_notify(0, "RELOADING=1");
	config_defaults(&nc);
	if (config_load(&nc, d->cfg.path, &cause) != 0) {
		log_error("reload failed, keeping the running settings: %s", cause);
		free(cause);
	} else {
		d->cfg.limits = nc.limits;
		d->cfg.log_level = nc.log_level;
		if (!d->verbose)
			log_set_level(nc.log_level);
		if (strcmp(nc.socket, d->cfg.socket) != 0 ||
		    strcmp(nc.database, d->cfg.database) != 0 ||
		    strcmp(nc.base_url, d->cfg.base_url) != 0)
			log_notice("reload: only [limits] and log_level change on SIGHUP; "
			    "restart for the other settings");
		queue_reload(d->q, &nc.limits);
		log_notice("reloaded [limits] and log level from %s", d->cfg.path);
		if (d->http != NULL)
			http_reload(d->http, &nc);
	}
	config_free(&nc);
	sd_notify(0, "READY=1");
	notify_status(d);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ "new-token", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 }
	};
	struct daemon d;
	const char *path = CONFIG_DEFAULT_PATH;
	struct event *sigs[3];
	struct event_config *evcfg;
	struct timeval tv;
	char *cause = NULL;
	int ch, check = 0, service_cred = 0, i;

	memset(&d, 0, sizeof d);
	log_init("wpe-purged");
	while ((ch = getopt_long(argc, argv, "c:vVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check = 1;
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'V':
			printf("wpe-purged %s (protocol %d)\n", WPE_VERSION, PROTO_VERSION);
			return 0;
		case 'h':
			usage(stdout, 0);
		case 'T': {
			char *secret, *line;

			if (tokens_generate(optarg, &secret, &line, &cause) != 0) {
				fprintf(stderr, "wpe-purged: %s\n", cause);
				free(cause);
				return 2;
			}
			printf("%s\n", secret);
			fprintf(stderr, "# add this line to the tokens file (tokens_file in "
			    "[http]), then reload (SIGHUP):\n%s\n", line);
			explicit_bzero(secret, strlen(secret));
			free(secret);
			free(line);
			return 0;
		}
		default:
			usage(stderr, 2);
		}
	}
	if (optind != argc)
		usage(stderr, 2);

	config_defaults(&d.cfg);
	if (config_load(&d.cfg, path, &cause) == 0 && check && geteuid() == 0 &&
	    d.cfg.credentials_file == NULL && getenv("CREDENTIALS_DIRECTORY") == NULL &&
	    access(SERVICE_CREDENTIALS, F_OK) == 0) {
		/* An operator checking the installed service: read what the unit would. */
		d.cfg.credentials_file = xstrdup(SERVICE_CREDENTIALS);
		service_cred = 1;
	}
	if (cause != NULL ||
	    config_load_credentials(&d.cfg, &cause) != 0 ||
	    (d.cfg.http_listen != NULL &&
	    (d.tokens = tokens_load(d.cfg.tokens_file, &cause)) == NULL)) {
		if (check)
			fprintf(stderr, "%s\n", cause);
		else
			log_error("%s", cause);
		free(cause);
		config_free(&d.cfg);
		return 2;
	}
	if (check) {
		if (service_cred) {
			free(d.cfg.credentials_file);
			d.cfg.credentials_file = NULL;
			printf("# credentials read from %s, as the service's LoadCredential= "
			    "gives them: OK\n", SERVICE_CREDENTIALS);
		}
		config_print(&d.cfg, stdout);
		if (d.tokens != NULL) {
			printf("# %zu token(s) in %s:", d.tokens->n, d.cfg.tokens_file);
			for (size_t t = 0; t < d.tokens->n; t++)
				printf(" %s%s", d.tokens->v[t].name, d.tokens->v[t].admin ?
				    " (admin)" : "");
			printf("\n");
			tokens_free(d.tokens);
		}
		config_free(&d.cfg);
		return 0;
	}
	log_set_level(d.verbose ? LOG_DEBUG : d.cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("curl_global_init failed");

	/*
	 * One priority, first come first served: the group commit is queued behind the
	 * reads that fed it, and a loop pass runs at most 64 callbacks before it polls
	 * again, so no client's burst keeps others (or the commit) waiting.
	 */
	if ((evcfg = event_config_new()) == NULL ||
	    event_config_set_max_dispatch_interval(evcfg, NULL, 64, 0) != 0 ||
	    (d.base = event_base_new_with_config(evcfg)) == NULL)
		fatalx("event_base_new failed");
	event_config_free(evcfg);
	if ((d.log_ev = event_new(d.base, -1, 0, log_flush_cb, NULL)) == NULL)
		fatalx("event_new failed");
	log_set_buffered(log_flush_soon, d.log_ev);

	if ((d.store = store_open(d.cfg.database, &cause)) == NULL) {
		log_error("%s", cause);
		free(cause);
		return 1;
	}
	d.q = queue_create(d.base, &d.cfg, d.store);
	if (queue_start(d.q) != 0) {
		log_error("could not load the queue from %s", d.cfg.database);
		return 1;
	}
	if ((d.srv = server_create(d.base, &d.cfg, d.q, &cause)) == NULL) {
		log_error("%s", cause);
		free(cause);
		return 1;
	}
	if (d.cfg.http_listen != NULL) {
		d.http = http_create(d.base, &d.cfg, d.q, d.srv, d.tokens, &cause);
		d.tokens = NULL;    /* the http owns them, or they were freed */
		if (d.http == NULL) {
			log_error("%s", cause);
			free(cause);
			return 1;
		}
	}
	sigs[0] = evsignal_new(d.base, SIGTERM, sig_stop, &d);
	sigs[1] = evsignal_new(d.base, SIGINT, sig_stop, &d);
	sigs[2] = evsignal_new(d.base, SIGHUP, sig_hup, &d);
	for (i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);

	d.status_ev = evtimer_new(d.base, status_cb, &d);
	queue_set_changed_cb(d.q, status_changed, &d);
	if (sd_watchdog_enabled(0, &d.watchdog_usec) > 0) {
		d.watchdog_ev = event_new(d.base, -1, EV_PERSIST, watchdog_cb, &d);
		tv.tv_sec = (time_t)(d.watchdog_usec / 2 / 1000000);
		tv.tv_usec = (suseconds_t)(d.watchdog_usec / 2 % 1000000);
		event_add(d.watchdog_ev, &tv);
	}

	log_notice("wpe-purged %s ready on %s (database %s, API %s)", WPE_VERSION,
	    d.cfg.socket, d.cfg.database, d.cfg.base_url);
	sd_notify(0, "READY=1");
	notify_status(&d);

	event_base_dispatch(d.base);

	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(d.status_ev);
	if (d.watchdog_ev != NULL)
		event_free(d.watchdog_ev);
	if (d.drain_ev != NULL)
		event_free(d.drain_ev);
	server_free(d.srv);
	http_free(d.http);  /* before the queue: its connections cancel their waits */
	queue_free(d.q);    /* the sender's curl_multi_cleanup runs before the base goes */
	store_close(d.store);
	log_set_buffered(NULL, NULL);
	event_free(d.log_ev);
	event_base_free(d.base);
	curl_global_cleanup();
	config_free(&d.cfg);
	log_notice("stopped");
	return 0;
}
