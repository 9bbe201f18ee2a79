/* fuzz_proto.c: libFuzzer harness for the wire-protocol and HTTP request-body decoders. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_request req;
	const char *code = NULL;
	char *cause = NULL;

	if (proto_request_parse((const char *)data, size, &req, &code, &cause) == 0) {
		/* An accepted enqueue always carries a canonical lower-case UUID. */
		if (req.op == OP_ENQUEUE && (!uuid_valid(req.install) ||
		    strlen(req.install) != 36 || req.type > PURGE_ALL))
			abort();
		if ((req.op == OP_STATUS || req.op == OP_WAIT || req.op == OP_CANCEL) &&
		    req.id <= 0)
			abort();
		if (req.reason != NULL && strlen(req.reason) > PROTO_MAX_REASON)
			abort();
		proto_request_free(&req);
	} else if (code == NULL || cause == NULL || *cause == '\0')
		abort();
	free(cause);

	/* The same bytes as an HTTP body (POST /v1/purges) and as a /v1/jobs query. */
	code = NULL;
	cause = NULL;
	if (proto_body_parse((const char *)data, size, OP_ENQUEUE, &req, &code, &cause) == 0) {
		if (req.op != OP_ENQUEUE || !uuid_valid(req.install) || strlen(req.install) != 36)
			abort();
		proto_request_free(&req);
	} else if (code == NULL || cause == NULL || *cause == '\0')
		abort();
	free(cause);
	code = NULL;
	cause = NULL;
	if (proto_body_parse((const char *)data, size, OP_LIST, &req, &code, &cause) == 0) {
		if (req.op != OP_LIST || req.limit < 1 || req.limit > PROTO_LIST_MAX)
			abort();
		proto_request_free(&req);
	} else if (code == NULL || cause == NULL || *cause == '\0')
		abort();
	free(cause);
	return 0;
}
