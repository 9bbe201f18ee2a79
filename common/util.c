/* util.c: allocation wrappers, logging to stderr (journal-aware), clocks, parsing helpers. */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static const char *log_prog = "wpe";
static enum log_level log_level = LOG_INFO;
static int log_journal; /* stderr is connected to the journal: use <N> prefixes */
static long log_pid;    /* cached: getpid(2) is a system call */
/* Buffered logging (log_set_buffered): lines wait in stderr's buffer for log_flush(). */
static void (*log_flush_request)(void *);
static void *log_flush_arg;
static int log_flush_requested;
static char log_buf[64 * 1024];

void *
xmalloc(size_t size)
{
	void *p;

	if (size == 0)
		size = 1;
	if ((p = malloc(size)) == NULL)
		fatalx("out of memory allocating %zu bytes", size);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p;

	if (n == 0 || size == 0)
		n = size = 1;
	if ((p = calloc(n, size)) == NULL)
		fatalx("out of memory allocating %zu x %zu bytes", n, size);
	return p;
}

void *
xrealloc(void *old, size_t size)
{
	void *p;

	if (size == 0)
		size = 1;
	if ((p = realloc(old, size)) == NULL)
		fatalx("out of memory reallocating %zu bytes", size);
	return p;
}

char *
xstrdup(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL)
		fatalx("out of memory");
	return p;
}

int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(ret, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx("out of memory");
	return n;
}

/*
 * The journal sets JOURNAL_STREAM to "dev:ino" of the stream it reads; when stderr is
 * that stream, use sd-daemon "<N>" priority prefixes instead of our own timestamps.
 */
void
log_init(const char *progname)
{
	const char *js;
	char *end;
	struct stat sb;
	unsigned long long dev, ino;

	log_prog = progname;
	log_pid = (long)getpid();
	if ((js = getenv("JOURNAL_STREAM")) == NULL || fstat(STDERR_FILENO, &sb) != 0)
		return;
	errno = 0;
	dev = strtoull(js, &end, 10);
	if (errno != 0 || end == js || *end != ':')
		return;
	js = end + 1;
	ino = strtoull(js, &end, 10);
	if (errno != 0 || end == js || *end != '\0')
		return;
	log_journal = (unsigned long long)sb.st_dev == dev &&
	    (unsigned long long)sb.st_ino == ino;
}

static void
log_write_out(void)
{
	log_flush_requested = 0;
	fflush(stderr);
}

void
log_set_buffered(void (*request)(void *), void *arg)
{
	log_write_out();
	log_flush_request = request;
	log_flush_arg = arg;
	log_flush_requested = 0;
	/* glibc flushes and switches the buffer at any time; nothing is pending here. */
	if (request != NULL)
		setvbuf(stderr, log_buf, _IOFBF, sizeof log_buf);
	else
		setvbuf(stderr, NULL, _IONBF, 0);
}

void
log_flush(void)
{
	if (log_flush_requested)
		log_write_out();
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

static const char *log_names[] = { "error", "warning", "notice", "info", "debug" };

const char *
log_level_name(enum log_level level)
{
	return log_names[level];
}

int
log_level_parse(const char *s, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof log_names / sizeof log_names[0]; i++) {
		if (strcmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static void log_vmsg(enum log_level, const char *, va_list) printflike(2, 0);

static void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const int syslog_prio[] = { 3, 4, 5, 6, 7 };
	char msg[2048], ts[32], *p;

	vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): started by the caller */
	/* One event per line: never let a newline from anywhere split a log entry. */
	for (p = msg; *p != '\0'; p++) {
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	}
	if (log_journal)
		fprintf(stderr, "<%d>%s\n", syslog_prio[level], msg);
	else {
		if (log_pid == 0)
			log_pid = (long)getpid();
		fprintf(stderr, "%s %s[%ld] %s: %s\n", fmt_rfc3339(clock_wall_ms(), ts, sizeof ts),
		    log_prog, log_pid, log_names[level], msg);
	}
	/* Errors go out at once; the rest with the other lines of this loop turn. */
	if (log_flush_request == NULL || level == LOG_ERROR)
		log_write_out();
	else if (!log_flush_requested) {
		log_flush_requested = 1;
		log_flush_request(log_flush_arg);
	}
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
	va_end(ap);
	log_error("fatal: %s: %s", msg, strerror(saved));
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

int64_t
clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
fmt_rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char base[24];

	if (ms < 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, len, "1970-01-01T00:00:00.000Z");
		return buf;
	}
	snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
	return buf;
}

int
parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

size_t
utf8_prefix(const char *s, size_t max)
{
	size_t len = strnlen(s, max), i;

	if (len < max || s[len] == '\0')
		return len;
	/* s[len] is the first byte left out: if it continues a character, drop its start. */
	for (i = 0; i < 3 && len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80; i++)
		len--;
	return len;
}

int
uuid_valid(const char *s)
{
	size_t i;

	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (!isxdigit((unsigned char)s[i]))
			return 0;
	}
	return s[36] == '\0';
}

int
install_name_valid(const char *s)
{
	size_t i;

	if (s[0] < 'a' || s[0] > 'z')
		return 0;
	for (i = 1; s[i] != '\0'; i++) {
		if (i >= INSTALL_NAME_MAX || !((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9')))
			return 0;
	}
	return i >= 3;
}

int
text_plain(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	unsigned long cp;

	if (!text_valid(s, len))
		return 0;
	while (p < end) {
		if (*p < 0x80) {
			p++;
			continue;
		}
		/* Valid UTF-8 (checked above): 2 to 4 bytes. */
		if (*p < 0xe0) {
			cp = (unsigned long)(p[0] & 0x1f) << 6 | (p[1] & 0x3f);
			p += 2;
		} else if (*p < 0xf0) {
			cp = (unsigned long)(p[0] & 0x0f) << 12 | (unsigned long)(p[1] & 0x3f) << 6 |
			    (p[2] & 0x3f);
			p += 3;
		} else {
			p += 4;
			continue;       /* above U+FFFF: none of those below */
		}
		if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029 || cp == 0x061c ||
		    cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
		    (cp >= 0x2066 && cp <= 0x206f) || cp == 0xfeff)
			return 0;
	}
	return 1;
}

int
text_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	unsigned int c, need;

	while (p < end) {
		c = *p++;
		if (c < 0x20 || c == 0x7f)
			return 0;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			need = 1;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3;
		else
			return 0;
		if ((size_t)(end - p) < need)
			return 0;
		/* reject overlongs and surrogates */
		if ((c == 0xe0 && p[0] < 0xa0) || (c == 0xed && p[0] > 0x9f) ||
		    (c == 0xf0 && p[0] < 0x90) || (c == 0xf4 && p[0] > 0x8f))
			return 0;
		while (need-- > 0) {
			if ((*p++ & 0xc0) != 0x80)
				return 0;
		}
	}
	return 1;
}
