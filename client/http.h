/* http.h: wpe-purgectl's HTTPS transport: socket-protocol requests as HTTP API calls. */
#ifndef WPE_CLIENT_HTTP_H
#define WPE_CLIENT_HTTP_H

#include <json-c/json.h>

/*
 * Set up for url (https://..., or http:// to a loopback host only: a token never
 * crosses a network in clear), the token from token_file or else $WPE_PURGED_TOKEN,
 * and an optional CA bundle. 0, or -1 with *cause (free it).
 */
int chttp_init(const char *url, const char *token_file, const char *cacert, char **cause);
/*
 * Send one request object of the socket protocol ({"op":"enqueue",...}) as its HTTP API
 * call and return the answer in the socket protocol's shape (an HTTP 202 to a wait that
 * ended first becomes the "timeout" error; a 401 the "unauthorized" error). NULL when
 * there is no usable answer (connection failed, not JSON, a proxy's error page): *cause
 * says why. *retry: 2 the token's rate cap (429), 1 trying again later may help (no
 * answer, 503), 0 not; *retry_after_ms when the server said when. timeout_ms bounds the
 * whole call.
 */
json_object *chttp_call(json_object *req, long timeout_ms, char **cause, int *retry,
    long *retry_after_ms);
const char *chttp_url(void);

#endif
