/* fuzz_tokens.c: libFuzzer harness for the HTTP API's tokens file parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tokens *ts;
	char *cause = NULL;
	size_t i, j;

	if ((ts = tokens_parse((const char *)data, size, "fuzz", &cause)) != NULL) {
		/* Whatever was accepted is within the documented bounds, names unique. */
		if (ts->n > TOKENS_MAX)
			abort();
		for (i = 0; i < ts->n; i++) {
			struct token *t = &ts->v[i];

			if (!tokens_name_valid(t->name) || t->rate < 1 || t->rate > 10000 ||
			    t->types == 0 || t->ninstalls > TOKENS_MAX_PATTERNS ||
			    t->requester >= -1)
				abort();
			for (j = 0; j < i; j++) {
				if (strcmp(ts->v[j].name, t->name) == 0)
					abort();
			}
			(void)tokens_install_allowed(t, "294deacc-d8b8-4005-82c4-0727ba8ddde0",
			    "mysite");
			(void)tokens_take(t, 1000);
		}
		(void)tokens_find(ts, (const char *)data, size);
		tokens_free(ts);
	} else if (cause == NULL || strncmp(cause, "fuzz:", 5) != 0)
		abort();
	free(cause);
	return 0;
}
