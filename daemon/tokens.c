/* tokens.c: parse the tokens file, find a bearer token in constant time, scopes, rate caps. */
#include "compat.h"
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tokens.h"
#include "util.h"

#define ALL_TYPES ((1u << PURGE_NTYPES) - 1)

/*
 * SHA-256 with the implementation fetched once and one context reused: EVP_Digest with
 * EVP_sha256() fetches it from the provider and allocates a context on every call, a
 * third of what authenticating an HTTPS request cost. Tokens are used on the main loop
 * only, so the static context is never shared between threads.
 */
static void
tokens_sha256(const void *data, size_t len, unsigned char out[32])
{
	static EVP_MD *md;
	static EVP_MD_CTX *ctx;
	unsigned int n = 32;

	if (md == NULL && ((md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL))
		fatalx("SHA-256 is not available");
	if (EVP_DigestInit_ex2(ctx, md, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32)
		fatalx("SHA-256 failed");
}

int
tokens_name_valid(const char *name)
{
	size_t i, len = strlen(name);

	if (len == 0 || len > TOKENS_MAX_NAME)
		return 0;
	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)name[i]) && strchr("._@-", name[i]) == NULL)
			return 0;
	}
	return 1;
}

int64_t
tokens_requester(const char *name)
{
	unsigned char h[32];
	uint64_t v = 0;
	int i;

	tokens_sha256(name, strlen(name), h);
	for (i = 0; i < 8; i++)
		v = v << 8 | h[i];
	/* 62 bits below -1: -1 and uids (>= 0) are never a token's. */
	return -2 - (int64_t)(v >> 2);
}

static void
token_clear(struct token *t)
{
	size_t i;

	free(t->name);
	for (i = 0; i < t->ninstalls; i++)
		free(t->installs[i]);
	free(t->installs);
	memset(t, 0, sizeof *t);
}

void
tokens_free(struct tokens *ts)
{
	size_t i;

	if (ts == NULL)
		return;
	for (i = 0; i < ts->n; i++)
		token_clear(&ts->v[i]);
	free(ts->v);
	free(ts);
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A pattern character: printable ASCII, no space or comma (they separate). */
static int
pattern_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > TOKENS_MAX_PATTERN)
		return 0;
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == ',')
			return 0;
	}
	return 1;
}

/* installs=a,b*,c: -1 with *why on a bad list. */
static int
token_installs(struct token *t, const char *v, const char **why)
{
	const char *p = v, *comma;
	size_t len;

	if (*v == '\0') {
		*why = "installs= needs at least one install id or pattern";
		return -1;
	}
	while (*p != '\0') {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (!pattern_valid(p, len)) {
			*why = "installs= holds an empty or over-long pattern, or one with "
			    "control characters";
			return -1;
		}
		if (t->ninstalls == TOKENS_MAX_PATTERNS) {
			*why = "installs= lists more than 64 patterns";
			return -1;
		}
		t->installs = xrealloc(t->installs, (t->ninstalls + 1) * sizeof *t->installs);
		t->installs[t->ninstalls] = xmalloc(len + 1);
		memcpy(t->installs[t->ninstalls], p, len);
		t->installs[t->ninstalls++][len] = '\0';
		p += len;
		if (*p == ',')
			p++;
		if (comma != NULL && *p == '\0') {
			*why = "installs= ends with a comma";
			return -1;
		}
	}
	return 0;
}

static int
token_types(struct token *t, const char *v, const char **why)
{
	char *copy = xstrdup(v), *tok, *save = NULL;
	enum purge_type pt;
	int rc = 0;

	t->types = 0;
	for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (purge_type_parse(tok, &pt) != 0) {
			*why = "types= lists purge types: object, page, cdn, all";
			rc = -1;
			break;
		}
		t->types |= 1u << pt;
	}
	free(copy);
	if (rc == 0 && t->types == 0) {
		*why = "types= needs at least one of object, page, cdn, all";
		rc = -1;
	}
	return rc;
}

/* One line's fields into t: 0, 1 (blank or comment), or -1 with *why. */
static int
token_line(struct token *t, char *line, const char **why)
{
	char *f[8], *save = NULL, *tok;
	size_t nf = 0, i, j;
	int seen_inst = 0, seen_types = 0, seen_rate = 0;
	int64_t rate;

	memset(t, 0, sizeof *t);
	t->types = ALL_TYPES;
	t->rate = TOKENS_DEFAULT_RATE;
	if ((tok = strchr(line, '#')) != NULL)
		*tok = '\0';
	for (tok = strtok_r(line, " \t\r", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t\r", &save)) {
		if (nf == sizeof f / sizeof f[0]) {
			*why = "too many fields (NAME SHA256-HEX [installs=..] [types=..] [admin] "
			    "[rate=N/s])";
			return -1;
		}
		f[nf++] = tok;
	}
	if (nf == 0)
		return 1;
	if (!tokens_name_valid(f[0])) {
		*why = "the token name must be 1 to 64 letters, digits, '.', '_', '@' or '-'";
		return -1;
	}
	/* Never quote the second field: it may be a token pasted by mistake. */
	if (nf < 2 || strlen(f[1]) != 64) {
		*why = "the second field must be the token's SHA-256 in hex (64 digits, as "
		    "wpe-purged --new-token prints it), not the token itself";
		return -1;
	}
	for (i = 0; i < 32; i++) {
		int hi = hexval(f[1][2 * i]), lo = hexval(f[1][2 * i + 1]);

		if (hi < 0 || lo < 0) {
			*why = "the second field must be 64 hex digits (the token's SHA-256)";
			return -1;
		}
		t->hash[i] = (unsigned char)(hi << 4 | lo);
	}
	t->name = xstrdup(f[0]);
	for (j = 2; j < nf; j++) {
		if (strncmp(f[j], "installs=", 9) == 0) {
			if (seen_inst++) {
				*why = "installs= appears twice";
				return -1;
			}
			if (token_installs(t, f[j] + 9, why) != 0)
				return -1;
		} else if (strncmp(f[j], "types=", 6) == 0) {
			if (seen_types++) {
				*why = "types= appears twice";
				return -1;
			}
			if (token_types(t, f[j] + 6, why) != 0)
				return -1;
		} else if (strcmp(f[j], "admin") == 0) {
			if (t->admin++) {
				*why = "admin appears twice";
				return -1;
			}
		} else if (strncmp(f[j], "rate=", 5) == 0) {
			size_t l = strlen(f[j] + 5);
			char num[16];

			if (seen_rate++) {
				*why = "rate= appears twice";
				return -1;
			}
			if (l < 3 || l - 2 >= sizeof num || strcmp(f[j] + 5 + l - 2, "/s") != 0) {
				*why = "rate= must be N/s, N requests a second from 1 to 10000";
				return -1;
			}
			memcpy(num, f[j] + 5, l - 2);
			num[l - 2] = '\0';
			if (parse_int64(num, 1, 10000, &rate) != 0) {
				*why = "rate= must be N/s, N requests a second from 1 to 10000";
				return -1;
			}
			t->rate = rate;
		} else {
			*why = "unknown option (expected installs=, types=, admin or rate=N/s)";
			return -1;
		}
	}
	t->requester = tokens_requester(t->name);
	return 0;
}

struct tokens *
tokens_parse(const char *buf, size_t len, const char *name, char **cause)
{
	struct tokens *ts = xcalloc(1, sizeof *ts);
	const char *p = buf, *end = buf + len, *nl, *why = NULL;
	char line[TOKENS_MAX_LINE + 1];
	struct token t;
	size_t cap = 0, i, ll;
	int lineno = 0, rc;

	while (p < end) {
		lineno++;
		nl = memchr(p, '\n', (size_t)(end - p));
		ll = (nl != NULL ? (size_t)(nl - p) : (size_t)(end - p));
		if (ll > TOKENS_MAX_LINE) {
			why = "line longer than 4096 bytes";
			goto bad;
		}
		memcpy(line, p, ll);
		line[ll] = '\0';
		p += ll + (nl != NULL);
		if (memchr(line, '\0', ll) != NULL) {
			why = "NUL byte";
			goto bad;
		}
		rc = token_line(&t, line, &why);
		if (rc == 1)
			continue;
		if (rc != 0) {
			token_clear(&t);
			goto bad;
		}
		for (i = 0; i < ts->n; i++) {
			if (strcmp(ts->v[i].name, t.name) == 0)
				break;
		}
		if (i < ts->n) {
			token_clear(&t);
			why = "a token of this name is already listed";
			goto bad;
		}
		if (ts->n == TOKENS_MAX) {
			token_clear(&t);
			why = "more than 10000 tokens";
			goto bad;
		}
		if (ts->n == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			ts->v = xrealloc(ts->v, cap * sizeof *ts->v);
		}
		ts->v[ts->n++] = t;
	}
	explicit_bzero(line, sizeof line);
	return ts;
bad:
	explicit_bzero(line, sizeof line);
	xasprintf(cause, "%s:%d: %s", name, lineno, why);
	tokens_free(ts);
	return NULL;
}

struct tokens *
tokens_load(const char *path, char **cause)
{
	struct tokens *ts;
	struct stat sb;
	char *buf;
	size_t len = 0;
	ssize_t n;
	int fd;

	/* O_NONBLOCK: a FIFO must not hang the loop on SIGHUP; O_NOFOLLOW: no symlink. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) == -1) {
		if (errno == ELOOP)
			xasprintf(cause, "tokens file %s is a symbolic link; name the file "
			    "itself", path);
		else
			xasprintf(cause, "tokens file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &sb) != 0) {
		xasprintf(cause, "tokens file %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	if (!S_ISREG(sb.st_mode)) {
		xasprintf(cause, "tokens file %s is not a regular file", path);
		close(fd);
		return NULL;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		xasprintf(cause, "tokens file %s is writable by group or others (mode %04o): "
		    "anyone who can write it can add a token; chmod go-w it", path,
		    (unsigned)(sb.st_mode & 07777));
		close(fd);
		return NULL;
	}
	if (sb.st_size > TOKENS_MAX_SIZE) {
		xasprintf(cause, "tokens file %s: larger than 1 MiB", path);
		close(fd);
		return NULL;
	}
	buf = xmalloc(TOKENS_MAX_SIZE + 1);
	while (len <= TOKENS_MAX_SIZE &&
	    (n = read(fd, buf + len, TOKENS_MAX_SIZE + 1 - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			xasprintf(cause, "tokens file %s: %s", path, strerror(errno));
			close(fd);
			free(buf);
			return NULL;
		}
		len += (size_t)n;
	}
	close(fd);
	if (len > TOKENS_MAX_SIZE) {
		xasprintf(cause, "tokens file %s: larger than 1 MiB", path);
		free(buf);
		return NULL;
	}
	ts = tokens_parse(buf, len, path, cause);
	free(buf);
	return ts;
}

void
tokens_carry(struct tokens *to, const struct tokens *from)
{
	size_t i, j;

	if (from == NULL)
		return;
	for (i = 0; i < to->n; i++) {
		for (j = 0; j < from->n; j++) {
			if (strcmp(to->v[i].name, from->v[j].name) == 0) {
				to->v[i].bucket = from->v[j].bucket;
				to->v[i].bucket_at = from->v[j].bucket_at;
				break;
			}
		}
	}
}

struct token *
tokens_find(struct tokens *ts, const char *secret, size_t len)
{
	unsigned char h[32];
	struct token *found = NULL;
	size_t i;

	if (ts == NULL || len == 0 || len > TOKENS_MAX_SECRET)
		return NULL;
	tokens_sha256(secret, len, h);
	/* Every entry, whichever matches: the time says nothing about which one did. */
	for (i = 0; i < ts->n; i++) {
		if (CRYPTO_memcmp(h, ts->v[i].hash, sizeof h) == 0)
			found = &ts->v[i];
	}
	explicit_bzero(h, sizeof h);
	return found;
}

struct token_scope {
	char **patterns;
	size_t n;
};

static int
patterns_match(char *const *p, size_t n, const char *id, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if ((id != NULL && id[0] != '\0' && fnmatch(p[i], id, FNM_CASEFOLD) == 0) ||
		    (name != NULL && name[0] != '\0' && fnmatch(p[i], name, 0) == 0))
			return 1;
	}
	return 0;
}

int
tokens_install_allowed(const struct token *t, const char *id, const char *name)
{
	return t->installs == NULL || patterns_match(t->installs, t->ninstalls, id, name);
}

struct token_scope *
tokens_scope(const struct token *t)
{
	struct token_scope *s;
	size_t i;

	if (t->installs == NULL)
		return NULL;
	s = xcalloc(1, sizeof *s);
	s->patterns = xcalloc(t->ninstalls, sizeof *s->patterns);
	for (i = 0; i < t->ninstalls; i++)
		s->patterns[i] = xstrdup(t->installs[i]);
	s->n = t->ninstalls;
	return s;
}

int
tokens_scope_allows(const struct token_scope *s, const char *id, const char *name)
{
	return s == NULL || patterns_match(s->patterns, s->n, id, name);
}

void
tokens_scope_free(struct token_scope *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		free(s->patterns[i]);
	free(s->patterns);
	free(s);
}

int
tokens_type_allowed(const struct token *t, enum purge_type type)
{
	return (t->types & (1u << type)) != 0;
}

int64_t
tokens_take(struct token *t, int64_t now_ms)
{
	int64_t cap = t->rate * TOKENS_BURST_FACTOR * 1000, elapsed;

	if (t->bucket_at == 0) {
		t->bucket = cap;
		t->bucket_at = now_ms;
	}
	elapsed = now_ms - t->bucket_at;
	if (elapsed > 0) {
		/* rate requests a second: rate thousandths a millisecond. */
		t->bucket = elapsed >= TOKENS_BURST_FACTOR * 1000 ? cap :
		    t->bucket + elapsed * t->rate;
		if (t->bucket > cap)
			t->bucket = cap;
		t->bucket_at = now_ms;
	}
	if (t->bucket >= 1000) {
		t->bucket -= 1000;
		return 0;
	}
	return (1000 - t->bucket + t->rate - 1) / t->rate;
}

int
tokens_generate(const char *name, char **secret, char **line, char **cause)
{
	unsigned char raw[32], h[32];
	char b64[64], hex[65];
	size_t i, n;
	int len;

	if (!tokens_name_valid(name)) {
		xasprintf(cause, "token name must be 1 to 64 letters, digits, '.', '_', '@' "
		    "or '-'");
		return -1;
	}
	if (RAND_bytes(raw, sizeof raw) != 1) {
		xasprintf(cause, "no random bytes from OpenSSL");
		return -1;
	}
	len = EVP_EncodeBlock((unsigned char *)b64, raw, sizeof raw);
	explicit_bzero(raw, sizeof raw);
	if (len != 44)
		fatalx("base64 of 32 bytes is not 44 characters");
	for (i = n = 0; i < (size_t)len; i++) {
		if (b64[i] == '=')
			continue;
		if (b64[i] == '+')
			b64[n++] = '-';
		else if (b64[i] == '/')
			b64[n++] = '_';
		else
			b64[n++] = b64[i];
	}
	b64[n] = '\0';
	xasprintf(secret, "%s%s", TOKENS_PREFIX, b64);
	explicit_bzero(b64, sizeof b64);
	tokens_sha256(*secret, strlen(*secret), h);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	xasprintf(line, "%s %s", name, hex);
	return 0;
}
