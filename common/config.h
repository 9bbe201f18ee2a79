/* config.h: the wpe-purged.conf settings, their defaults, and the API credentials. */
#ifndef WPE_CONFIG_H
#define WPE_CONFIG_H

#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>

#include "util.h"

#define CONFIG_DEFAULT_PATH "/etc/wpe-purged/wpe-purged.conf"
#define CREDENTIAL_NAME "wpengine-api" /* systemd LoadCredential= name */

/* Largest files read: anything bigger is a mistake (or an attack), refused at once. */
#define CONFIG_MAX_SIZE (1024 * 1024)
#define CREDENTIALS_MAX_SIZE (64 * 1024)
#define CA_FILE_MAX_SIZE (16 * 1024 * 1024)
#define CONFIG_DEFAULT_TOKENS "/etc/wpe-purged/tokens"

/* Where the HTTP API listens: [http] listen, parsed. */
enum listen_kind { LISTEN_INET, LISTEN_UNIX };
struct listen_addr {
	enum listen_kind kind;
	char host[64];           /* numeric IPv4 or IPv6 (without brackets) */
	int port;
	char path[108];          /* LISTEN_UNIX */
	int loopback;            /* 127.0.0.0/8, ::1 or a Unix socket */
};

/* The limit classes: each purge type covers one or more of them (all covers every one). */
enum limit_class { CLASS_OBJECT = 0, CLASS_PAGE, CLASS_CDN };
#define NCLASSES 3

/* The [limits] section: what SIGHUP reloads. Times in seconds. */
struct limits {
	int64_t interval[NCLASSES];
	int64_t retry_initial;
	int64_t retry_max;
	int64_t max_queued;          /* unfinished jobs in the whole daemon */
	int64_t max_queued_per_user; /* jobs holding one requester's unfinished requests */
	int64_t max_age;             /* an unfinished request expires this long after it
	                              * was accepted (0: never) */
};

struct config {
	char *path;
	/* [daemon] */
	char *socket;
	mode_t socket_mode;
	char *database;
	enum log_level log_level;
	int64_t retention;
	uid_t *allow_uids;       /* empty lists: anyone who can open the socket */
	size_t nallow_uids;
	gid_t *allow_gids;
	size_t nallow_gids;
	gid_t admin_gid;         /* (gid_t)-1: none; root is always an administrator */
	int64_t max_conns_per_user; /* 0: automatic, half the descriptor limit */
	int64_t idle_timeout;    /* seconds a connection may sit idle (not waiting) */
	/* [api] */
	char *base_url;          /* no trailing slash */
	char *credentials_file;  /* NULL: $CREDENTIALS_DIRECTORY/wpengine-api */
	char *ca_file;           /* NULL: system CAs */
	int64_t max_in_flight;
	int64_t timeout;
	int64_t catalog_refresh; /* seconds between fetches of the installs catalog */
	/* [limits] */
	struct limits limits;
	/* [http] */
	char *http_listen;       /* NULL: no HTTP API */
	struct listen_addr http_addr;
	char *tls_cert;          /* both or neither: HTTPS only */
	char *tls_key;
	char *tokens_file;
	int64_t http_max_conns;
	int64_t http_header_timeout; /* seconds from a request's start to its last header */
	int64_t http_body_timeout;   /* seconds from the headers to the end of the body */
	int64_t http_idle_timeout;   /* seconds a keep-alive connection may wait; read/write gaps */
	int metrics_auth;
	/* From the credentials file, never logged. */
	char *api_user;
	char *api_password;
};

/* Fill cfg with the defaults. */
void config_defaults(struct config *);
/*
 * Read path over the defaults: a regular file of at most CONFIG_MAX_SIZE bytes (a FIFO
 * or a device is refused, never waited on); a ca_file it names must be a readable
 * regular file. Returns 0, or -1 with *cause set to "file:line: reason" or
 * "file: reason" (caller frees).
 */
int config_load(struct config *, const char *path, char **cause);
/* Parse config text from memory (for the fuzzer and tests); as config_load. */
int config_load_mem(struct config *, const char *name, const char *buf, size_t len,
    char **cause);
/*
 * Read the API credentials the config names: a regular file of at most
 * CREDENTIALS_MAX_SIZE bytes, not a symbolic link. 0, or -1 with *cause.
 */
int config_load_credentials(struct config *, char **cause);
/* Print the effective settings, password redacted. */
void config_print(const struct config *, FILE *);
void config_free(struct config *);

/* Parse "90", "90s", "15m", "2h", "7d" into seconds within [min, max]. */
int config_parse_duration(const char *, int64_t min, int64_t max, int64_t *out);
/* Validate a base URL; http:// only for loopback hosts. 0, or -1 with *cause. */
int config_check_url(const char *, char **cause);
/*
 * Parse an [http] listen value: "127.0.0.1:8787", "[::1]:8443", "unix:/run/x.sock".
 * 0, or -1 with *cause (a reason, without file or line).
 */
int config_parse_listen(const char *, struct listen_addr *, char **cause);

#endif
