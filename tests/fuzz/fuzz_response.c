/* fuzz_response.c: libFuzzer harness for the API-answer classifier and message reader. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "sender.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * What sender_sanitize promises: strict UTF-8 (no overlongs, surrogates or stray bytes),
 * none of the characters that act on a terminal or reorder text.
 */
static void
check_clean(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned int need, i;
	long cp;

	while (*p != '\0') {
		if (*p < 0x80) {
			if (*p < 0x20 || *p == 0x7f)
				abort();
			p++;
			continue;
		}
		if (*p >= 0xc2 && *p <= 0xdf) {
			need = 1;
			cp = *p & 0x1f;
		} else if (*p >= 0xe0 && *p <= 0xef) {
			need = 2;
			cp = *p & 0x0f;
		} else if (*p >= 0xf0 && *p <= 0xf4) {
			need = 3;
			cp = *p & 0x07;
		} else
			abort();
		for (i = 1; i <= need; i++) {
			if ((p[i] & 0xc0) != 0x80)
				abort();
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
		    (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			abort();
		if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029 || cp == 0x061c ||
		    cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
		    (cp >= 0x2066 && cp <= 0x206f) || cp == 0xfeff)
			abort();
		p += need + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	long status;
	char *msg, *body;
	enum sched_outcome o;
	size_t max;

	if (size < 2)
		return 0;
	status = (long)(((unsigned)data[0] << 8 | data[1]) % 1000);
	o = sched_classify(data[0] & 1, status);
	if (o > OUTCOME_PERMANENT || (o == OUTCOME_DONE && (status < 200 || status > 299)))
		abort();
	/* The body as curl hands it over: bounded, NUL-terminated. */
	size -= 2;
	if (size > SENDER_MAX_BODY)
		size = SENDER_MAX_BODY;
	body = malloc(size + 1);
	memcpy(body, data + 2, size);
	body[size] = '\0';
	msg = sender_parse_message(body, size);
	if (msg != NULL) {
		if (strlen(msg) > SENDER_MAX_MESSAGE)
			abort();
		check_clean(msg);
	}
	free(msg);
	/* The raw bytes too (a Retry-After header), within a bound drawn from the input. */
	max = (size_t)data[1] % 80;
	msg = sender_sanitize(body, max);
	if (strlen(msg) > max)
		abort();
	check_clean(msg);
	free(msg);
	free(body);
	return 0;
}
