/* fuzz_retry_after.c: libFuzzer harness for the Retry-After parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[256];
	int64_t delay = -1, cap = 900000;

	if (size >= sizeof buf)
		size = sizeof buf - 1;
	memcpy(buf, data, size);
	buf[size] = '\0';
	if (sched_retry_after(buf, 1784000000000LL, cap, &delay) == 0 &&
	    (delay < 0 || delay > cap))
		abort();
	return 0;
}
