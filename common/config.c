/* config.c: parse wpe-purged.conf (INI syntax through libinih): keys, defaults, checks, printing. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <grp.h>
#include <pwd.h>
#include <stdint.h>

#include <ini.h>

#include "config.h"
#include "proto.h"

enum key_kind { K_PATH, K_MODE, K_INT, K_DURATION, K_LOGLEVEL, K_URL, K_USERS,
	K_GROUPS, K_GROUP, K_LISTEN, K_BOOL };

static const struct key {
	const char *section;
	const char *name;
	enum key_kind kind;
	size_t off;
	int64_t min, max;
} keys[] = {
	{ "daemon", "socket", K_PATH, offsetof(struct config, socket), 1, 107 },
	{ "daemon", "socket_mode", K_MODE, offsetof(struct config, socket_mode), 0, 0777 },
	{ "daemon", "database", K_PATH, offsetof(struct config, database), 1, 4096 },
	{ "daemon", "log_level", K_LOGLEVEL, offsetof(struct config, log_level), 0, 0 },
	{ "daemon", "retention", K_DURATION, offsetof(struct config, retention), 60, 366 * 86400 },
	{ "daemon", "allow_users", K_USERS, 0, 0, 0 },
	{ "daemon", "allow_groups", K_GROUPS, 0, 0, 0 },
	{ "daemon", "admin_group", K_GROUP, offsetof(struct config, admin_gid), 0, 0 },
	{ "daemon", "max_connections_per_user", K_INT,
	    offsetof(struct config, max_conns_per_user), 0, 1000000 },
	{ "daemon", "idle_timeout", K_DURATION, offsetof(struct config, idle_timeout), 1,
	    86400 },
	{ "api", "base_url", K_URL, offsetof(struct config, base_url), 0, 0 },
	{ "api", "credentials_file", K_PATH, offsetof(struct config, credentials_file), 1, 4096 },
	{ "api", "ca_file", K_PATH, offsetof(struct config, ca_file), 1, 4096 },
	{ "api", "max_in_flight", K_INT, offsetof(struct config, max_in_flight), 1, 64 },
	{ "api", "timeout", K_DURATION, offsetof(struct config, timeout), 1, 600 },
	{ "api", "catalog_refresh", K_DURATION, offsetof(struct config, catalog_refresh), 5,
	    7 * 86400 },
	{ "limits", "object_interval", K_DURATION,
	    offsetof(struct config, limits.interval[CLASS_OBJECT]), 0, 86400 },
	{ "limits", "page_interval", K_DURATION,
	    offsetof(struct config, limits.interval[CLASS_PAGE]), 0, 86400 },
	{ "limits", "cdn_interval", K_DURATION,
	    offsetof(struct config, limits.interval[CLASS_CDN]), 0, 86400 },
	{ "limits", "retry_initial", K_DURATION, offsetof(struct config, limits.retry_initial),
	    1, 3600 },
	{ "limits", "retry_max", K_DURATION, offsetof(struct config, limits.retry_max), 1,
	    86400 },
	{ "limits", "max_queued", K_INT, offsetof(struct config, limits.max_queued), 1,
	    10000000 },
	{ "limits", "max_queued_per_user", K_INT,
	    offsetof(struct config, limits.max_queued_per_user), 1, 10000000 },
	{ "limits", "max_age", K_DURATION, offsetof(struct config, limits.max_age), 0,
	    366 * 86400 },
	{ "http", "listen", K_LISTEN, offsetof(struct config, http_listen), 0, 0 },
	{ "http", "tls_cert", K_PATH, offsetof(struct config, tls_cert), 1, 4096 },
	{ "http", "tls_key", K_PATH, offsetof(struct config, tls_key), 1, 4096 },
	{ "http", "tokens_file", K_PATH, offsetof(struct config, tokens_file), 1, 4096 },
	{ "http", "max_connections", K_INT, offsetof(struct config, http_max_conns), 1,
	    1000000 },
	{ "http", "metrics_auth", K_BOOL, offsetof(struct config, metrics_auth), 0, 0 },
	{ "http", "header_timeout", K_DURATION, offsetof(struct config, http_header_timeout), 1,
	    3600 },
	{ "http", "body_timeout", K_DURATION, offsetof(struct config, http_body_timeout), 1,
	    3600 },
	{ "http", "idle_timeout", K_DURATION, offsetof(struct config, http_idle_timeout), 1,
	    86400 },
};
#define NKEYS (sizeof keys / sizeof keys[0])

struct parse_state {
	struct config *cfg;
	uint64_t seen;     /* bit per key: duplicates are errors */
	char *error;       /* reason for the first failing line */
};

void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->socket = xstrdup(PROTO_DEFAULT_SOCKET);
	cfg->socket_mode = 0660;
	cfg->database = xstrdup("/var/lib/wpe-purged/queue.sqlite");
	cfg->log_level = LOG_INFO;
	cfg->retention = 7 * 86400;
	cfg->admin_gid = (gid_t)-1;
	cfg->max_conns_per_user = 0;    /* automatic: half the descriptor limit */
	cfg->idle_timeout = 300;
	cfg->base_url = xstrdup("https://api.wpengineapi.com/v1");
	cfg->max_in_flight = 4;
	cfg->timeout = 30;
	cfg->catalog_refresh = 3600;
	cfg->limits.interval[CLASS_OBJECT] = 60;
	cfg->limits.interval[CLASS_PAGE] = 0;
	cfg->limits.interval[CLASS_CDN] = 0;
	cfg->limits.retry_initial = 5;
	cfg->limits.retry_max = 900;
	cfg->limits.max_queued = 200000;
	cfg->limits.max_queued_per_user = 100000;
	cfg->limits.max_age = 86400;
	cfg->tokens_file = xstrdup(CONFIG_DEFAULT_TOKENS);
	cfg->http_max_conns = 4096;
	cfg->http_header_timeout = 10;
	cfg->http_body_timeout = 30;
	cfg->http_idle_timeout = 10;
	cfg->metrics_auth = 1;
}

#define MAX_IDS 256

/* A user or group name, or a numeric id. */
static int
resolve_id(const char *name, int group, unsigned long *out)
{
	int64_t v;

	if (parse_int64(name, 0, (int64_t)UINT32_MAX - 1, &v) == 0) {
		*out = (unsigned long)v;
		return 0;
	}
	if (group) {
		struct group *gr = getgrnam(name);

		if (gr == NULL)
			return -1;
		*out = gr->gr_gid;
	} else {
		struct passwd *pw = getpwnam(name);

		if (pw == NULL)
			return -1;
		*out = pw->pw_uid;
	}
	return 0;
}

/* "alice, bob 1002" into ids; -1 and ps->error on an unknown name. */
static int
set_id_list(struct parse_state *ps, const char *key, const char *value, int group)
{
	char *copy = xstrdup(value), *tok, *save = NULL;
	unsigned long id;
	size_t n = 0;
	unsigned long ids[MAX_IDS];
	int rc = 0;

	for (tok = strtok_r(copy, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (n == MAX_IDS) {
			xasprintf(&ps->error, "%s lists more than %d names", key, MAX_IDS);
			rc = -1;
			break;
		}
		if (resolve_id(tok, group, &id) != 0) {
			xasprintf(&ps->error, "%s: no %s named \"%.*s\"", key,
			    group ? "group" : "user", (int)utf8_prefix(tok, 64), tok);
			rc = -1;
			break;
		}
		ids[n++] = id;
	}
	free(copy);
	if (rc != 0)
		return -1;
	if (group) {
		free(ps->cfg->allow_gids);
		ps->cfg->allow_gids = xcalloc(n, sizeof *ps->cfg->allow_gids);
		for (ps->cfg->nallow_gids = 0; ps->cfg->nallow_gids < n; ps->cfg->nallow_gids++)
			ps->cfg->allow_gids[ps->cfg->nallow_gids] =
			    (gid_t)ids[ps->cfg->nallow_gids];
	} else {
		free(ps->cfg->allow_uids);
		ps->cfg->allow_uids = xcalloc(n, sizeof *ps->cfg->allow_uids);
		for (ps->cfg->nallow_uids = 0; ps->cfg->nallow_uids < n; ps->cfg->nallow_uids++)
			ps->cfg->allow_uids[ps->cfg->nallow_uids] =
			    (uid_t)ids[ps->cfg->nallow_uids];
	}
	return 0;
}

static int
set_key(struct parse_state *ps, const struct key *k, const char *value)
{
	char *field = (char *)ps->cfg + k->off, *end, *cause;
	int64_t v;
	long mode;

	switch (k->kind) {
	case K_PATH:
		if (*value == '\0' || strlen(value) > (size_t)k->max) {
			xasprintf(&ps->error, "%s must be between 1 and %lld characters", k->name,
			    (long long)k->max);
			return -1;
		}
		if (value[0] != '/') {
			xasprintf(&ps->error, "%s must be an absolute path", k->name);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case K_MODE:
		errno = 0;
		mode = strtol(value, &end, 8);
		if (*value == '\0' || *end != '\0' || errno != 0 || mode < 0 || mode > 0777) {
			xasprintf(&ps->error, "%s must be an octal mode such as 0660", k->name);
			return -1;
		}
		*(mode_t *)field = (mode_t)mode;
		return 0;
	case K_INT:
		if (parse_int64(value, k->min, k->max, &v) != 0) {
			xasprintf(&ps->error, "%s must be a whole number from %lld to %lld",
			    k->name, (long long)k->min, (long long)k->max);
			return -1;
		}
		*(int64_t *)field = v;
		return 0;
	case K_DURATION:
		if (config_parse_duration(value, k->min, k->max, &v) != 0) {
			xasprintf(&ps->error, "%s must be a duration from %llds to %llds "
			    "(a number of seconds, or with a suffix s, m, h or d)", k->name,
			    (long long)k->min, (long long)k->max);
			return -1;
		}
		*(int64_t *)field = v;
		return 0;
	case K_LOGLEVEL:
		if (log_level_parse(value, (enum log_level *)field) != 0) {
			xasprintf(&ps->error, "%s must be error, warning, notice, info or debug",
			    k->name);
			return -1;
		}
		return 0;
	case K_USERS:
		return set_id_list(ps, k->name, value, 0);
	case K_GROUPS:
		return set_id_list(ps, k->name, value, 1);
	case K_GROUP: {
		unsigned long id;

		if (*value == '\0') {
			*(gid_t *)field = (gid_t)-1;
			return 0;
		}
		if (resolve_id(value, 1, &id) != 0) {
			xasprintf(&ps->error, "%s: no group named \"%.*s\"", k->name,
			    (int)utf8_prefix(value, 64), value);
			return -1;
		}
		*(gid_t *)field = (gid_t)id;
		return 0;
	}
	case K_LISTEN:
		free(*(char **)field);
		*(char **)field = NULL;
		if (*value == '\0')
			return 0;
		if (config_parse_listen(value, &ps->cfg->http_addr, &cause) != 0) {
			ps->error = cause;
			return -1;
		}
		*(char **)field = xstrdup(value);
		return 0;
	case K_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 ||
		    strcmp(value, "on") == 0 || strcmp(value, "1") == 0)
			*(int *)field = 1;
		else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0 ||
		    strcmp(value, "off") == 0 || strcmp(value, "0") == 0)
			*(int *)field = 0;
		else {
			xasprintf(&ps->error, "%s must be yes or no", k->name);
			return -1;
		}
		return 0;
	case K_URL:
		if (strlen(value) > 1024 || config_check_url(value, &cause) != 0) {
			if (strlen(value) > 1024)
				xasprintf(&ps->error, "base_url is too long");
			else
				ps->error = cause;
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		end = *(char **)field + strlen(value);
		while (end > *(char **)field + 8 && end[-1] == '/')
			*--end = '\0';
		return 0;
	}
	return -1;
}

/* libinih handler: returning 0 makes ini_parse report this line. Keep the first error. */
static int
config_handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	size_t i;

	if (ps->error != NULL)
		return 1;
	if (name == NULL) /* a section header alone: checked when a key arrives */
		return 1;
	for (i = 0; i < NKEYS; i++) {
		if (strcmp(section, keys[i].section) == 0 && strcmp(name, keys[i].name) == 0)
			break;
	}
	if (i == NKEYS) {
		for (i = 0; i < NKEYS; i++) {
			if (strcmp(section, keys[i].section) == 0)
				break;
		}
		if (i == NKEYS)
			xasprintf(&ps->error, "unknown section [%.*s]",
			    (int)utf8_prefix(section, 64), section);
		else
			xasprintf(&ps->error, "unknown key \"%.*s\" in [%s]",
			    (int)utf8_prefix(name, 64), name, section);
		return 0;
	}
	if (ps->seen & ((uint64_t)1 << i)) {
		xasprintf(&ps->error, "%s is set twice", name);
		return 0;
	}
	ps->seen |= (uint64_t)1 << i;
	return set_key(ps, &keys[i], value) == 0;
}

/*
 * The line of "key" in [section] of an INI text (0 if absent), for errors about settings
 * that are only wrong together, found after libinih is done.
 */
static int
config_key_line(const char *buf, size_t len, const char *section, const char *key)
{
	const char *p = buf, *end = buf + len, *nl, *s, *e;
	size_t klen = strlen(key);
	int line = 0, in = 0;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		e = nl != NULL ? nl : end;
		line++;
		for (s = p; s < e && (*s == ' ' || *s == '\t'); s++)
			;
		if (s < e && *s == '[') {
			const char *close = memchr(s, ']', (size_t)(e - s));

			in = close != NULL && (size_t)(close - s - 1) == strlen(section) &&
			    strncmp(s + 1, section, strlen(section)) == 0;
		} else if (in && (size_t)(e - s) > klen && strncmp(s, key, klen) == 0 &&
		    (s[klen] == ' ' || s[klen] == '\t' || s[klen] == '=' || s[klen] == ':'))
			return line;
		p = e + 1;
	}
	return 0;
}

/* Settings valid alone but not together: "file:line: reason" naming the line to change. */
static int
config_check_http(struct config *cfg, const char *buf, size_t len, const char *path,
    char **cause)
{
	const char *why = NULL, *key = "listen";

	if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
		why = "tls_cert and tls_key go together: set both, or neither";
		key = cfg->tls_cert != NULL ? "tls_cert" : "tls_key";
	} else if (cfg->http_listen != NULL && !cfg->http_addr.loopback &&
	    cfg->tls_cert == NULL)
		why = "an HTTP listener on an address that is not loopback needs tls_cert and "
		    "tls_key: tokens never cross a network in clear (plain HTTP is for a "
		    "reverse proxy on loopback or a Unix socket)";
	else if (cfg->http_listen != NULL && cfg->http_addr.kind == LISTEN_UNIX &&
	    cfg->tls_cert != NULL)
		why = "TLS on a unix: listener is not supported; put the proxy's TLS in front";
	if (why == NULL)
		return 0;
	xasprintf(cause, "%s:%d: %s", path, config_key_line(buf, len, "http", key), why);
	return -1;
}

static int
config_parse(struct config *cfg, FILE *f, const char *path, char **cause)
{
	struct parse_state ps = { cfg, 0, NULL };
	int line;

	line = ini_parse_file(f, config_handler, &ps);
	if (line != 0) {
		if (line > 0)
			xasprintf(cause, "%s:%d: %s", path, line,
			    ps.error != NULL ? ps.error : "syntax error (expected key = value)");
		else
			xasprintf(cause, "%s: cannot be read", path);
		free(ps.error);
		return -1;
	}
	if (cfg->limits.retry_max < cfg->limits.retry_initial) {
		xasprintf(cause, "%s: retry_max (%llds) is less than retry_initial (%llds)",
		    path, (long long)cfg->limits.retry_max, (long long)cfg->limits.retry_initial);
		return -1;
	}
	return 0;
}

int
config_load_mem(struct config *cfg, const char *name, const char *buf, size_t len,
    char **cause)
{
	FILE *f;
	int rc;

	if (len == 0)
		return 0;
	if ((f = fmemopen((void *)buf, len, "r")) == NULL)
		fatal("fmemopen");
	rc = config_parse(cfg, f, name, cause);
	fclose(f);
	if (rc == 0)
		rc = config_check_http(cfg, buf, len, name, cause);
	return rc;
}

void
config_print(const struct config *cfg, FILE *f)
{
	static const char *cn[NCLASSES] = { "object", "page", "cdn" };
	int i;

	fprintf(f, "# effective settings from %s\n", cfg->path ? cfg->path : "(defaults)");
	fprintf(f, "[daemon]\nsocket = %s\nsocket_mode = %04o\ndatabase = %s\n"
	    "log_level = %s\nretention = %llds\n", cfg->socket, (unsigned)cfg->socket_mode,
	    cfg->database, log_level_name(cfg->log_level), (long long)cfg->retention);
	fprintf(f, "# allow_users: %zu id(s), allow_groups: %zu id(s)%s\n", cfg->nallow_uids,
	    cfg->nallow_gids, cfg->nallow_uids + cfg->nallow_gids == 0 ?
	    " (anyone who can open the socket)" : "");
	for (size_t u = 0; u < cfg->nallow_uids; u++)
		fprintf(f, "#   uid %lu\n", (unsigned long)cfg->allow_uids[u]);
	for (size_t g = 0; g < cfg->nallow_gids; g++)
		fprintf(f, "#   gid %lu\n", (unsigned long)cfg->allow_gids[g]);
	if (cfg->admin_gid != (gid_t)-1)
		fprintf(f, "admin_group = %lu\n", (unsigned long)cfg->admin_gid);
	fprintf(f, "max_connections_per_user = %lld%s\nidle_timeout = %llds\n\n",
	    (long long)cfg->max_conns_per_user, cfg->max_conns_per_user == 0 ?
	    " (automatic: half the descriptor limit)" : "", (long long)cfg->idle_timeout);
	fprintf(f, "[api]\nbase_url = %s\n", cfg->base_url);
	if (cfg->credentials_file != NULL)
		fprintf(f, "credentials_file = %s\n", cfg->credentials_file);
	else
		fprintf(f, "# credentials_file unset: $CREDENTIALS_DIRECTORY/%s\n",
		    CREDENTIAL_NAME);
	if (cfg->ca_file != NULL)
		fprintf(f, "ca_file = %s\n", cfg->ca_file);
	fprintf(f, "max_in_flight = %lld\ntimeout = %llds\ncatalog_refresh = %llds\n",
	    (long long)cfg->max_in_flight, (long long)cfg->timeout,
	    (long long)cfg->catalog_refresh);
	if (cfg->api_user != NULL)
		fprintf(f, "# api user = %s, password = (redacted)\n", cfg->api_user);
	fprintf(f, "\n[limits]\n");
	for (i = 0; i < NCLASSES; i++)
		fprintf(f, "%s_interval = %llds\n", cn[i], (long long)cfg->limits.interval[i]);
	fprintf(f, "retry_initial = %llds\nretry_max = %llds\n",
	    (long long)cfg->limits.retry_initial, (long long)cfg->limits.retry_max);
	fprintf(f, "max_queued = %lld\nmax_queued_per_user = %lld\n",
	    (long long)cfg->limits.max_queued, (long long)cfg->limits.max_queued_per_user);
	fprintf(f, "max_age = %llds%s\n", (long long)cfg->limits.max_age,
	    cfg->limits.max_age == 0 ? " (never)" : "");
	fprintf(f, "\n[http]\n");
	if (cfg->http_listen == NULL)
		fprintf(f, "listen =\n# (no HTTP API)\n");
	else
		fprintf(f, "listen = %s\n# %s%s\n", cfg->http_listen,
		    cfg->tls_cert != NULL ? "HTTPS only" : "plain HTTP",
		    cfg->http_addr.loopback ? " (loopback or a Unix socket)" : "");
	if (cfg->tls_cert != NULL)
		fprintf(f, "tls_cert = %s\ntls_key = %s\n", cfg->tls_cert, cfg->tls_key);
	fprintf(f, "tokens_file = %s\nmax_connections = %lld\nmetrics_auth = %s\n",
	    cfg->tokens_file, (long long)cfg->http_max_conns, cfg->metrics_auth ? "yes" : "no");
	fprintf(f, "header_timeout = %llds\nbody_timeout = %llds\nidle_timeout = %llds\n",
	    (long long)cfg->http_header_timeout, (long long)cfg->http_body_timeout,
	    (long long)cfg->http_idle_timeout);
}

void
config_free(struct config *cfg)
{
	free(cfg->path);
	free(cfg->socket);
	free(cfg->database);
	free(cfg->base_url);
	free(cfg->credentials_file);
	free(cfg->ca_file);
	free(cfg->http_listen);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tokens_file);
	free(cfg->allow_uids);
	free(cfg->allow_gids);
	free(cfg->api_user);
	if (cfg->api_password != NULL)
		explicit_bzero(cfg->api_password, strlen(cfg->api_password));
	free(cfg->api_password);
	memset(cfg, 0, sizeof *cfg);
}
