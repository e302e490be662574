/*
 * The socket thread of the policy server: one poll() loop over the listening socket and every
 * connection (non-blocking), the HTTP upgrade (ws_http.c), websocket framing by wslay, and the
 * openpi message sequence (SPEC §11.3): metadata on connect, then request -> response.
 *
 * Complete binary messages become pi0_requests on the request queue (one outstanding per
 * connection, further ones wait in the connection, in order); the engine thread answers with
 * ws_server_reply(). Nothing in this loop blocks: a slow, stalled or vanished client only
 * affects its own connection, and an answer for a connection that is gone is dropped.
 *
 * Errors are sent the way openpi does (SPEC §11.6): a text frame with the message, then close
 * 1011 "Internal server error. Traceback included in previous frame." (1009 for a message over
 * the size limit, 1001 when the server is shutting down).
 */
#ifndef PI0_SERVER_WS_SERVER_H
#define PI0_SERVER_WS_SERVER_H
#include <stddef.h>
#include <stdint.h>

#include "server/request_queue.h"

#define WS_CLOSE_REASON_1011 "Internal server error. Traceback included in previous frame."

typedef struct {
    const char *host;            /* bind address; NULL: "0.0.0.0" */
    int port;                    /* 0: any free port (see ws_server_port) */
    size_t max_message;          /* largest request in bytes (after reassembly) */
    int max_connections;
    double handshake_timeout_s;  /* for the HTTP request */
    double close_timeout_s;      /* for the client's close frame after ours */
    double drain_timeout_s;      /* graceful shutdown: longest wait for queued requests */
    const uint8_t *metadata;     /* msgpack sent on connect (copied) */
    size_t metadata_len;
    request_queue *queue;        /* where requests go (not owned) */
    int verbose;                 /* 1: log every request */
} ws_server_params;

typedef struct ws_server ws_server;

typedef struct {
    uint64_t connections, requests, responses, errors, dropped, health_checks, rejected_http;
} ws_server_stats;

/* Bind and listen. Returns 0, or -1 with a message in err. */
int ws_server_create(const ws_server_params *p, ws_server **out, char *err, size_t n_err);
int ws_server_port(const ws_server *s);
/* The socket thread's body: returns once shut down (after draining unless immediate). */
void ws_server_run(ws_server *s);
/* From any thread (not a signal handler): stop accepting, answer what was already received,
 * close every connection with 1001, return from ws_server_run. immediate: skip the answers. */
void ws_server_shutdown(ws_server *s, int immediate);

enum { WS_REPLY_BINARY = 0, WS_REPLY_ERROR = 1 };
/* The engine's answer to a request of conn_id; takes ownership of data (malloc'ed). */
void ws_server_reply(ws_server *s, uint64_t conn_id, int kind, uint8_t *data, size_t len);
void ws_server_get_stats(ws_server *s, ws_server_stats *out);
void ws_server_free(ws_server *s);

double ws_now(void); /* monotonic seconds */
#endif
