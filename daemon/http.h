/* http.h: the HTTP(S) API for CI runners on other hosts (docs/http.md), over the ops layer. */
#ifndef WPE_HTTP_H
#define WPE_HTTP_H

#include <event2/event.h>

#include "config.h"
#include "queue.h"
#include "server.h"
#include "tokens.h"

struct http;

/*
 * Listen as cfg's [http] says, answering with ts (the http takes it over). NULL with
 * *cause when the listener, the certificate or the key cannot be set up.
 */
struct http *http_create(struct event_base *, const struct config *, struct queue *,
    struct server *, struct tokens *ts, char **cause);
/*
 * SIGHUP: read the tokens file and the certificate and key again, from nc. What cannot
 * be read is kept as it was, and the log says why. Open connections stay open.
 */
void http_reload(struct http *, const struct config *nc);
/* Stop accepting connections (shutdown). */
void http_stop(struct http *);
int http_connections(const struct http *);
/* Before queue_free: closing its connections cancels their waits. */
void http_free(struct http *);

#endif
