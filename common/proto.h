/* proto.h: the wpe-purged wire protocol: newline-delimited JSON over a Unix stream socket. */
#ifndef WPE_PROTO_H
#define WPE_PROTO_H

#include <stdint.h>

#include "source.h"
#include "util.h"

struct json_object;

/*
 * Bump PROTO_VERSION if any of these change: the ops, their fields, the answers'
 * fields or the error codes. docs/protocol.md describes version 4 (3: install names,
 * the "installs" op, "name" in answers, the unknown_install error; 4: "source" and
 * "idempotency_key" of enqueue, "replayed", the idempotency_conflict error, the
 * "expired" state and max_age, the "requeue" op and requeued_from, the persisted pause).
 */
#define PROTO_VERSION 4

#define PROTO_MAX_LINE (64 * 1024)   /* longer unterminated line: error, then close */
#define PROTO_MAX_DEPTH 4            /* JSON nesting allowed in a request */
#define PROTO_MAX_REASON 1024        /* bytes of "reason" text kept */
#define PROTO_MAX_IDEM_KEY 128       /* "idempotency_key": printable ASCII, no blanks */
#define PROTO_MAX_WAIT (7 * 86400)   /* longest "timeout" of a wait, seconds */
#define PROTO_DEFAULT_SOCKET "/run/wpe-purged/wpe-purged.sock"
#define PROTO_LIST_DEFAULT 100       /* jobs in one "list" answer unless "limit" says */
#define PROTO_LIST_MAX 1000
/*
 * Installs in one "installs" answer, by name, unless "limit" says (5,000 are about 1 MiB
 * of JSON); "next" names the "after" of the next page. A 200,000-install catalog in one
 * answer was 41 MB: past the daemon's 4 MiB output cap, the client was dropped.
 */
#define PROTO_INSTALLS_DEFAULT 5000
#define PROTO_INSTALLS_MAX 5000

enum purge_type { PURGE_OBJECT = 0, PURGE_PAGE, PURGE_CDN, PURGE_ALL };
#define PURGE_NTYPES 4

enum proto_op {
	OP_ENQUEUE, OP_STATUS, OP_WAIT, OP_LIST, OP_STATS, OP_CANCEL, OP_PAUSE, OP_RESUME,
	OP_PING, OP_INSTALLS, OP_REQUEUE
};

struct proto_request {
	enum proto_op op;
	char install[37];       /* enqueue, list: lower-case UUID, or "" when a name is given */
	char name[INSTALL_NAME_MAX + 1]; /* enqueue, list: an install name instead, or "" */
	enum purge_type type;   /* enqueue */
	char *reason;           /* enqueue: optional, NULL if absent */
	struct source *source;  /* enqueue: who asked (source.h), NULL if absent */
	char idem_key[PROTO_MAX_IDEM_KEY + 1]; /* enqueue: "" if absent */
	int64_t id;             /* status, wait, cancel, requeue */
	int64_t timeout_ms;     /* wait: -1 for none */
	/* list: filters (install and type above) and paging */
	int has_install, has_type;
	int state;              /* -1: any; 0 queued, 1 sending */
	int64_t after;          /* jobs with a larger id */
	int64_t limit;          /* 1..PROTO_LIST_MAX */
	int refresh;            /* installs: fetch the catalog from the API first */
	char after_name[INSTALL_NAME_MAX + 1]; /* installs: names after this one ("": all) */
};

const char *purge_type_name(enum purge_type);
const char *proto_op_name(enum proto_op);
int purge_type_parse(const char *, enum purge_type *);

/*
 * Decode one request line (no newline). Returns 0 and fills req (free with
 * proto_request_free), or -1 and sets *code to a machine error code and *cause to a
 * sentence for a person (free it).
 */
int proto_request_parse(const char *line, size_t len, struct proto_request *req,
    const char **code, char **cause);
/*
 * Decode a request's fields given its op, from a JSON object without "op" (an HTTP
 * body, or query parameters made into one): the same checks and error codes.
 */
int proto_body_parse(const char *body, size_t len, enum proto_op, struct proto_request *req,
    const char **code, char **cause);
void proto_request_free(struct proto_request *);
/* Is s (len bytes) an acceptable idempotency key? For the HTTP header too. */
int proto_idem_key_valid(const char *s, size_t len);

/* An error answer object {"ok":false,"error":code,"message":message}. */
struct json_object *proto_error(const char *code, const char *message);

#endif
