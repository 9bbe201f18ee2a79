/* server-dispatch.c: the socket's requests: parsed, kept in order, run through ops.c. */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ops.h"
#include "proto.h"
#include "server-int.h"
#include "util.h"

static void conn_dispatch(struct conn *, struct proto_request *);

static void
conn_enqueue_answer(void *arg, json_object *o)
{
	struct conn *c = arg;

	c->owed--;
	conn_send(c, o);
	conn_resume_later(c);
}

static void
conn_wait_answer(void *arg, json_object *o)
{
	struct conn *c = arg;

	c->waiting = 0;
	c->waiter = NULL;
	conn_send(c, o);
	conn_resume_later(c);
}

void
conn_handle(struct conn *c, const char *line, size_t len)
{
	struct proto_request req;
	const char *code;
	char *cause;

	if (proto_request_parse(line, len, &req, &code, &cause) != 0) {
		if (c->owed > 0) {       /* its error must come after the owed answers */
			free(cause);
			c->held = xstrdup(line);
			return;
		}
		log_debug("bad request from uid %ld pid %ld: %s", (long)c->uid, (long)c->pid,
		    code);
		conn_send(c, proto_error(code, cause));
		free(cause);
		return;
	}
	if (req.op != OP_ENQUEUE && c->owed > 0) {
		proto_request_free(&req);
		c->held = xstrdup(line);
		return;
	}
	log_debug("%s from uid %ld pid %ld", proto_op_name(req.op), (long)c->uid, (long)c->pid);
	conn_dispatch(c, &req);
}

static void
conn_dispatch(struct conn *c, struct proto_request *req)
{
	struct server *srv = c->srv;
	struct ops_caller caller = { .uid = c->uid, .pid = c->pid, .admin = c->admin,
	    .requester = (int64_t)c->uid, .name = NULL };
	json_object *o;
	struct waiter *w;

	switch (req->op) {
	case OP_ENQUEUE:
		c->owed++;
		ops_enqueue(srv->q, req, &caller, conn_enqueue_answer, c);
		break;
	case OP_WAIT:
		if (c->gone)     /* nobody would read the answer */
			break;
		c->waiting = 1;
		w = ops_wait(srv->q, req->id, req->timeout_ms, &caller, conn_wait_answer,
		    c);
		if (c->waiting)
			c->waiter = w;
		break;
	case OP_INSTALLS:
		/* With "refresh", answered once the fetch settles: nothing runs before. */
		if (c->gone)
			break;
		c->waiting = 1;
		w = ops_installs(srv->q, req, &caller, conn_wait_answer, c, NULL, NULL);
		if (c->waiting)
			c->waiter = w;
		break;
	case OP_STATUS:
		conn_send(c, ops_status(srv->q, req->id, &caller));
		break;
	case OP_CANCEL:
		conn_send(c, ops_cancel(srv->q, req->id, &caller));
		break;
	case OP_REQUEUE:
		/* Answered like an enqueue once its commit is durable, or at once if refused. */
		c->owed++;
		if ((o = ops_requeue(srv->q, req->id, &caller, conn_enqueue_answer, c)) != NULL) {
			c->owed--;
			conn_send(c, o);
		}
		break;
	case OP_LIST:
		conn_send(c, ops_list(srv->q, req));
		break;
	case OP_STATS:
		conn_send(c, ops_stats(srv->q, srv->nconns));
		break;
	case OP_PAUSE:
	case OP_RESUME:
		if (!c->admin) {
			conn_send(c, proto_error("forbidden", "pause and resume need root or a "
			    "member of admin_group"));
			break;
		}
		log_notice("%s from uid %ld pid %ld", req->op == OP_PAUSE ? "pause" : "resume",
		    (long)c->uid, (long)c->pid);
		conn_send(c, ops_pause(srv->q, req->op == OP_PAUSE));
		break;
	case OP_PING:
		o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(1));
		json_object_object_add(o, "version", json_object_new_string(WPE_VERSION));
		json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
		conn_send(c, o);
		break;
	}
	proto_request_free(req);
}

/* A line held behind owed enqueue answers: its turn has come. */
void
conn_release_held(struct conn *c)
{
	char *line = c->held;

	c->held = NULL;
	conn_handle(c, line, strlen(line));
	free(line);
}
