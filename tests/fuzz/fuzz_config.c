/* fuzz_config.c: libFuzzer harness for the configuration parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	char *cause = NULL;

	config_defaults(&cfg);
	if (config_load_mem(&cfg, "fuzz.conf", (const char *)data, size, &cause) == 0) {
		/* Whatever was accepted is within the documented ranges. */
		if (cfg.max_in_flight < 1 || cfg.max_in_flight > 64 || cfg.timeout < 1 ||
		    cfg.limits.retry_max < cfg.limits.retry_initial ||
		    strlen(cfg.socket) > 107 || cfg.socket[0] != '/' ||
		    config_check_url(cfg.base_url, &cause) != 0)
			abort();
	} else if (cause == NULL || strncmp(cause, "fuzz.conf", 9) != 0)
		abort();
	free(cause);
	config_free(&cfg);
	return 0;
}
