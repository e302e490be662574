/*
 * pi0 policy server (`pi0 serve`, SPEC §11): an openpi-compatible websocket server in front of a
 * pi0_policy. Two threads: the socket thread (ws_server.c: every connection, never blocks) and
 * the engine thread (decodes a request, runs the policy, encodes the answer). Requests of all
 * connections queue for the engine in arrival order, one outstanding per connection.
 *
 * In-process use (tests, embedding):
 *
 *     pi0_server_backend b;
 *     pi0_server_backend_policy(policy, &b);          // or your own infer callback
 *     pi0_server_params sp = pi0_server_default_params();
 *     sp.host = "127.0.0.1"; sp.port = 0;             // any free port
 *     pi0_server *srv;
 *     if (pi0_server_start(&b, &sp, &srv) != PI0_OK) ... pi0_last_error() ...
 *     printf("port %d\n", pi0_server_port(srv));
 *     ...
 *     pi0_server_shutdown(srv, 0);                    // graceful: answers what was received
 *     pi0_server_wait(srv);
 *     pi0_server_free(srv);
 *
 * Noise: request k of a connection (k = 0, 1, ...) is sampled with noise seed
 * noise_seed + k when fixed_noise_seed is set, else with a fresh random seed. A request may
 * instead carry its own noise as the top-level key "noise": a (horizon, 32) float32/float64
 * array in the model's normalized action space (removed before the policy sees the observation).
 */
#ifndef PI0_SERVER_SERVE_H
#define PI0_SERVER_SERVE_H
#include <stddef.h>
#include <stdint.h>

#include "pi0_policy.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PI0_SERVER_NOISE_KEY "noise"

typedef struct {
    const char *host;         /* bind address (default "0.0.0.0", as openpi) */
    int port;                 /* default 8000; 0: any free port */
    size_t max_message;       /* largest request in bytes (default 64 MiB) */
    int max_connections;      /* default 256 */
    int fixed_noise_seed;     /* 1: request k of a connection uses noise_seed + k */
    uint64_t noise_seed;
    double drain_timeout_s;   /* graceful shutdown: longest wait for queued requests (default 60) */
    double handshake_timeout_s, close_timeout_s; /* defaults 10, 5 */
    int verbose;              /* log every request */
} pi0_server_params;
pi0_server_params pi0_server_default_params(void);

typedef struct {
    const double *actions; /* (horizon, action_dims), valid until the next infer call */
    int horizon, action_dims;
    double policy_infer_ms; /* openpi policy_timing.infer_ms (model call only) */
} pi0_server_result;

/* What the engine thread calls. infer returns PI0_OK or a status with pi0_last_error() set.
 * noise is NULL or (noise_rows, noise_cols) floats; the backend checks the shape before use. */
typedef struct {
    void *user;
    const char *metadata_json; /* sent (as msgpack) on connect; NULL: "{}" */
    pi0_status (*infer)(void *user, const pi0_obs_item *items, int n_items, const float *noise, int noise_rows,
                        int noise_cols, uint64_t seed, pi0_server_result *out);
} pi0_server_backend;

/* A backend running pi0_policy_infer on p (p must outlive the server). */
void pi0_server_backend_policy(pi0_policy *p, pi0_server_backend *out);

typedef struct pi0_server pi0_server;

/* Bind, listen and start both threads. */
pi0_status pi0_server_start(const pi0_server_backend *backend, const pi0_server_params *params, pi0_server **out);
int pi0_server_port(const pi0_server *s);
/* Any thread: graceful (answers every request already received, then closes connections with
 * 1001) or immediate. Returns at once; pi0_server_wait() waits for the end. */
void pi0_server_shutdown(pi0_server *s, int immediate);
/* 1 while the socket thread runs. */
int pi0_server_running(const pi0_server *s);
void pi0_server_wait(pi0_server *s);
void pi0_server_free(pi0_server *s); /* shuts down immediately if still running */

typedef struct {
    uint64_t connections, requests, responses, errors, dropped, health_checks, rejected_http;
} pi0_server_stats;
void pi0_server_get_stats(pi0_server *s, pi0_server_stats *out);

/* Parse a size with an optional K/M/G suffix (binary units). Returns 0 or -1. */
int pi0_server_parse_size(const char *s, size_t *out);
/* For a server's main(): SIGTERM/SIGINT go to handler (a handler, not a blocked mask: threads
 * that libraries start before main, e.g. OpenBLAS's, would otherwise take the default action and
 * kill the process; the server's own threads block all signals); SIGPIPE is ignored. */
void pi0_server_install_signals(void (*handler)(int));

#ifdef __cplusplus
}
#endif
#endif
