/* apisim.h: what the simulator's parts share (apisim.c: purges and faults; apisim-installs.c). */
#ifndef APISIM_H
#define APISIM_H

#include <event2/event.h>
#include <event2/http.h>

double now_s(void);
void reply(struct evhttp_request *, int status, const char *body, const char *retry_after);
void reply_msg(struct evhttp_request *, int status, const char *msg, const char *retry_after);
int auth_ok(struct evhttp_request *);

/* apisim-installs.c: the account's installs, GET /installs paging, /user, /status. */
void simcat_init(struct event_base *, int port);
/* Add n generated installs ("site00001", ...). */
void simcat_generate(int n);
/* Add one install; name NULL: "install<N>". -1 if the catalog is full or it exists. */
int simcat_add(const char *id, const char *name);
int simcat_known(const char *id);
/* Requests under /v1/installs (but not purge_cache), /v1/user, /v1/status, /_sim/installs. */
int simcat_handle(struct evhttp_request *, const char *path);
void simcat_free(void);

#endif
