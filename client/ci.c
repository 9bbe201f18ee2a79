/* ci.c: what wpe-purgectl says of who asks: the CI job's environment, --source, keys. */
#include <sys/random.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ci.h"
#include "source.h"
#include "util.h"

static const char *
env_get(const char *name, void *arg)
{
	(void)arg;
	return getenv(name);
}

int
ci_source(char **overrides, int n, json_object **out, char **cause)
{
	struct source src = { { NULL } };
	const char *why, *eq, *name;
	unsigned dropped;
	size_t klen;
	int i, f;

	*out = NULL;
	source_from_env(env_get, NULL, &src, &dropped);
	for (f = 0; f < SOURCE_NFIELDS; f++) {
		if (dropped & (1u << f))
			fprintf(stderr, "wpe-purgectl: note: the CI environment's %s was left "
			    "out of the source: it %s\n", source_field_name((enum source_field)f),
			    f == SF_JOB_URL ? "is not a usable http(s) URL" : "is not valid text");
	}
	for (i = 0; i < n; i++) {
		if ((eq = strchr(overrides[i], '=')) == NULL) {
			xasprintf(cause, "--source takes KEY=VALUE, not %s", overrides[i]);
			goto fail;
		}
		klen = (size_t)(eq - overrides[i]);
		for (f = 0; f < SOURCE_NFIELDS; f++) {
			name = source_field_name((enum source_field)f);
			if (strlen(name) == klen && strncmp(overrides[i], name, klen) == 0)
				break;
		}
		if (f == SOURCE_NFIELDS) {
			xasprintf(cause, "--source KEY is one of ci, job_url, commit, ref, actor, "
			    "pipeline, not %.*s", (int)klen, overrides[i]);
			goto fail;
		}
		free(src.f[f]);
		src.f[f] = NULL;
		if (eq[1] == '\0')
			continue;
		if (source_check((enum source_field)f, eq + 1, strlen(eq + 1), &why) != 0) {
			xasprintf(cause, "--source %s %s", source_field_name((enum source_field)f),
			    why);
			goto fail;
		}
		src.f[f] = xstrdup(eq + 1);
	}
	*out = source_empty(&src) ? NULL : source_to_json(&src);
	source_free(&src);
	return 0;
fail:
	source_free(&src);
	return -1;
}

int
ci_idem_key_new(char *buf, size_t len)
{
	unsigned char r[16];
	size_t i;

	if (len < 4 + 2 * sizeof r + 1) {
		errno = ENOSPC;
		return -1;
	}
	if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
		return -1;
	snprintf(buf, len, "wpe-");
	for (i = 0; i < sizeof r; i++)
		snprintf(buf + 4 + 2 * i, len - 4 - 2 * i, "%02x", r[i]);
	return 0;
}
