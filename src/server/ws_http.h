/*
 * The HTTP/1.1 side of the server (RFC 6455 §4.2, SPEC §11.1-11.2): parse the opening request,
 * answer GET /healthz, compute Sec-WebSocket-Accept, build the 101 / error responses.
 */
#ifndef PI0_SERVER_WS_HTTP_H
#define PI0_SERVER_WS_HTTP_H
#include <stddef.h>

#define WS_HTTP_MAX_REQUEST 8192 /* request line + headers */

typedef enum {
    WS_HTTP_INCOMPLETE = 0, /* need more bytes */
    WS_HTTP_HEALTH,         /* GET /healthz */
    WS_HTTP_UPGRADE,        /* a valid websocket opening handshake */
    WS_HTTP_REJECT          /* answer status/reason, then close */
} ws_http_kind;

typedef struct {
    ws_http_kind kind;
    size_t consumed;        /* bytes of the request (through the blank line) */
    char path[256];         /* request target (truncated) */
    char key[64];           /* Sec-WebSocket-Key */
    int status;             /* REJECT: 400, 405, 426, 431 */
    char reason[160];       /* REJECT: why (goes in the body) */
} ws_http_request;

/* Look at what has arrived so far. Garbage is rejected as soon as it is visible. */
void ws_http_parse(const char *buf, size_t len, ws_http_request *req);

/* base64(SHA1(key + GUID)) into out (29 bytes incl. NUL). */
void ws_http_accept_key(const char *key, char out[29]);
void ws_sha1(const void *data, size_t len, unsigned char out[20]);
size_t ws_base64(const unsigned char *in, size_t n, char *out); /* out: 4*ceil(n/3)+1 */

/* Responses (malloc'ed, *len set). */
char *ws_http_upgrade_response(const char *key, size_t *len);
char *ws_http_health_response(size_t *len);
char *ws_http_error_response(int status, const char *reason, size_t *len);
#endif
