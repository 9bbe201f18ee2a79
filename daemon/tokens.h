/* tokens.h: the HTTP API's bearer tokens: the tokens file, lookup, scopes and rate caps. */
#ifndef WPE_TOKENS_H
#define WPE_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define TOKENS_MAX_SIZE (1024 * 1024) /* a bigger tokens file is refused */
#define TOKENS_MAX (10000)            /* tokens in one file */
#define TOKENS_MAX_LINE 4096
#define TOKENS_MAX_NAME 64
#define TOKENS_MAX_PATTERNS 64
#define TOKENS_MAX_PATTERN 128
#define TOKENS_MAX_SECRET 256         /* longer Authorization values are not looked up */
#define TOKENS_PREFIX "wpq_"
#define TOKENS_DEFAULT_RATE 20        /* requests a second... */
#define TOKENS_BURST_FACTOR 5         /* ...with a burst of 5 seconds' worth (100) */

/* One line of the tokens file: who, what it may touch, how fast. Never the secret. */
struct token {
	char *name;
	unsigned char hash[32];      /* SHA-256 of the whole token string */
	char **installs;             /* shell globs on install ids and names; NULL: all */
	size_t ninstalls;
	unsigned types;              /* bit per enum purge_type */
	int admin;
	int64_t rate;                /* requests per second */
	int64_t requester;           /* the queue's owner id: tokens_requester(name) */
	/* The token bucket, in thousandths of a request. */
	int64_t bucket;
	int64_t bucket_at;           /* monotonic ms of the last refill; 0: full */
};

struct tokens {
	struct token *v;
	size_t n;
};

/*
 * Parse a tokens file's text; name is used in errors ("name:line: reason"). Returns the
 * set (free with tokens_free), or NULL with *cause set.
 */
struct tokens *tokens_parse(const char *buf, size_t len, const char *name, char **cause);
/*
 * Read and parse path: a regular file (not a symbolic link) of at most TOKENS_MAX_SIZE
 * bytes that neither group nor others may write. NULL with *cause on any problem.
 */
struct tokens *tokens_load(const char *path, char **cause);
void tokens_free(struct tokens *);
/* Keep the rate buckets of tokens that are still there (by name) after a reload. */
void tokens_carry(struct tokens *to, const struct tokens *from);
/*
 * The token whose hash matches secret, or NULL. Every entry is compared, in constant
 * time, whichever matches.
 */
struct token *tokens_find(struct tokens *, const char *secret, size_t len);
/*
 * May the token act on this install? A pattern matches its id or its name; either may
 * be "" or NULL when unknown (a name the catalog does not have; an id of no name).
 */
int tokens_install_allowed(const struct token *, const char *id, const char *name);
/*
 * A copy of a token's install scope that outlives a reload of the tokens file (an
 * answer that waits for the catalog keeps it). NULL: every install.
 */
struct token_scope;
struct token_scope *tokens_scope(const struct token *);
int tokens_scope_allows(const struct token_scope *, const char *id, const char *name);
void tokens_scope_free(struct token_scope *);
int tokens_type_allowed(const struct token *, enum purge_type);
/* Take one request from its bucket: 0, or the milliseconds until one is available. */
int64_t tokens_take(struct token *, int64_t now_ms);
/* The stable requester id of a token name: negative, never a uid. */
int64_t tokens_requester(const char *name);
/*
 * A fresh random token: *secret ("wpq_" and 43 base64url characters of 256 random bits)
 * and *line (the tokens-file line for name). 0, or -1 with *cause.
 */
int tokens_generate(const char *name, char **secret, char **line, char **cause);
/* Is name usable as a token name (1 to TOKENS_MAX_NAME of [A-Za-z0-9._@-])? */
int tokens_name_valid(const char *name);

#endif
