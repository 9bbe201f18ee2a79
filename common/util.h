/* util.h: allocation wrappers, logging, clocks and small string helpers shared by all programs. */
#ifndef WPE_UTIL_H
#define WPE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define WPE_VERSION "0.1.0"

#ifndef __dead
#define __dead __attribute__((__noreturn__))
#endif
#define printflike(a, b) __attribute__((format(printf, a, b)))

enum log_level { LOG_ERROR = 0, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG };

void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
int xasprintf(char **, const char *, ...) printflike(2, 3);

void log_init(const char *progname);
/*
 * Buffer log lines instead of one write(2) each: request(arg) is called when a line is
 * buffered and no flush is pending; it must arrange for log_flush() to run soon (the
 * daemon activates an event, so all the lines of a loop turn go out in one write).
 * Errors are written at once, and exit() flushes. request NULL: unbuffered again.
 */
void log_set_buffered(void (*request)(void *), void *arg);
/* Write the buffered lines, if any. */
void log_flush(void);
void log_set_level(enum log_level);
enum log_level log_get_level(void);
int log_level_parse(const char *, enum log_level *);
const char *log_level_name(enum log_level);
void log_msg(enum log_level, const char *, ...) printflike(2, 3);
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
/* fatal: start-up failures and broken invariants only, never client input. */
__dead void fatal(const char *, ...) printflike(1, 2);
__dead void fatalx(const char *, ...) printflike(1, 2);

/* Wall clock and monotonic clock in milliseconds. */
int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);
/* Format unix milliseconds as RFC 3339 UTC ("2026-11-27T12:00:00.123Z"); buf >= 32. */
char *fmt_rfc3339(int64_t ms, char *buf, size_t len);

/* Parse a whole decimal integer in [min, max]; 0 on success, -1 otherwise. */
int parse_int64(const char *, int64_t min, int64_t max, int64_t *out);
/*
 * The length of the longest prefix of s of at most max bytes that does not end inside a
 * UTF-8 character: for quoting a bounded part of text with "%.*s".
 */
size_t utf8_prefix(const char *s, size_t max);
/* len bytes of valid UTF-8 (no overlongs, surrogates) without control characters? */
int text_valid(const char *s, size_t len);
/*
 * text_valid, and nothing that acts on a terminal or a log viewer rather than be read:
 * no C1 controls (U+0080-U+009F: U+009B is the 8-bit CSI), no line or paragraph
 * separators (U+2028, U+2029), no bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E,
 * U+2066-U+206F), no U+FEFF.
 */
int text_plain(const char *s, size_t len);
/* Is s a canonical UUID (8-4-4-4-12 hex digits)? Upper case is accepted. */
int uuid_valid(const char *s);
/* Is s a WP Engine install name (^[a-z][a-z0-9]{2,13}$)? */
#define INSTALL_NAME_MAX 14
int install_name_valid(const char *s);

#endif
