/* fuzz_response.c: libFuzzer harness for the API-answer classifier and message reader. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "sender.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	long status;
	char *msg, *body;
	enum sched_outcome o;
	size_t i;

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
		for (i = 0; msg[i] != '\0'; i++) {
			if ((unsigned char)msg[i] < 0x20 || msg[i] == 0x7f)
				abort();
		}
	}
	free(msg);
	free(body);
	return 0;
}
