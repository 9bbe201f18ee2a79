/* server.h: the Unix socket server: listening, connections, line framing, dispatch. */
#ifndef WPE_SERVER_H
#define WPE_SERVER_H

#include <event2/event.h>

#include "config.h"
#include "queue.h"

struct server;

/* Take the socket from systemd, or bind it. NULL and *cause on failure. */
struct server *server_create(struct event_base *, const struct config *, struct queue *,
    char **cause);
/* Stop accepting and close every connection once its answers are written. */
void server_stop(struct server *);
int server_connections(const struct server *);
void server_free(struct server *);

#endif
