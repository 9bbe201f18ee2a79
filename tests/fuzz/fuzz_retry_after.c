/*
 * fuzz_retry_after.c: libFuzzer harness for the Retry-After parser and the 429 delay,
 * with the wall clock itself drawn from the input (dates at every extreme, any "now").
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct limits lim = { { 60, 0, 0 }, 1, 900, 200000, 100000, 86400 };
	char buf[256];
	int64_t delay = -1, cap = 900000, now = 1784000000000LL, d;
	uint64_t v = 0;

	if (size > 8) {
		memcpy(&v, data, 8);
		/* Any wall clock from 1970 to about the year 128,000, in ms. */
		now = (int64_t)(v % 4000000000000000ULL);
		data += 8;
		size -= 8;
	}
	if (size >= sizeof buf)
		size = sizeof buf - 1;
	memcpy(buf, data, size);
	buf[size] = '\0';
	if (sched_retry_after(buf, now, cap, &delay) == 0 && (delay < 0 || delay > cap))
		abort();
	d = sched_delay_429(buf, (int)(v >> 56), (int64_t)(v >> 60) * 30, &lim, now);
	if (d < lim.retry_initial * 1000 || d > lim.retry_max * 1000)
		abort();
	return 0;
}
