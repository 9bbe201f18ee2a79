/* ci.h: what wpe-purgectl says of who asks: the CI job's environment, --source, keys. */
#ifndef WPE_CI_H
#define WPE_CI_H

#include <stddef.h>

#include <json-c/json.h>

/*
 * The enqueue's "source": the CI job's environment (untrusted: a value that does not pass
 * is dropped with a note on stderr, never failing the enqueue), then each KEY=VALUE of
 * overrides (checked; an empty VALUE removes the field). 0 and *out (NULL when nothing is
 * known), or -1 and *cause (free it) for a bad override.
 */
int ci_source(char **overrides, int n, json_object **out, char **cause);
/* A key nobody else will pick: "wpe-" and 128 random bits in hex. 0, or -1 (errno). */
int ci_idem_key_new(char *buf, size_t len);

#endif
