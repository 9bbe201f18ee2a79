/* fuzz_proto.c: libFuzzer harness for the wire-protocol and HTTP request-body decoders. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "util.h"

#include <json-c/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted enqueue's install (a UUID or a name), source and key keep their rules. */
static void
check_enqueue(const struct proto_request *req)
{
	struct source back;
	json_object *o;
	const char *why;
	char label[SOURCE_LABEL_MAX];
	int f;

	if (req->install[0] != '\0' ? !uuid_valid(req->install) || strlen(req->install) != 36 :
	    !install_name_valid(req->name))
		abort();
	if (req->type > PURGE_ALL)
		abort();
	if (req->idem_key[0] != '\0' && !proto_idem_key_valid(req->idem_key,
	    strlen(req->idem_key)))
		abort();
	if (req->source == NULL)
		return;
	if (source_empty(req->source))
		abort();
	for (f = 0; f < SOURCE_NFIELDS; f++) {
		if (req->source->f[f] != NULL && source_check((enum source_field)f,
		    req->source->f[f], strlen(req->source->f[f]), &why) != 0)
			abort();
	}
	/* Its label is bounded text; it survives the store's JSON and comes back equal. */
	source_label(req->source, 1, label, sizeof label);
	if (strlen(label) >= sizeof label || !text_plain(label, strlen(label)))
		abort();
	o = source_to_json(req->source);
	if (source_from_json(json_object_to_json_string(o), &back) != 0)
		abort();
	for (f = 0; f < SOURCE_NFIELDS; f++) {
		if ((back.f[f] == NULL) != (req->source->f[f] == NULL) ||
		    (back.f[f] != NULL && strcmp(back.f[f], req->source->f[f]) != 0))
			abort();
	}
	source_free(&back);
	json_object_put(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_request req;
	const char *code = NULL;
	char *cause = NULL;

	if (proto_request_parse((const char *)data, size, &req, &code, &cause) == 0) {
		/* An accepted enqueue carries a canonical lower-case UUID or a name. */
		if (req.op == OP_ENQUEUE)
			check_enqueue(&req);
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
		if (req.op != OP_ENQUEUE)
			abort();
		check_enqueue(&req);
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
