/* pi0 policy server: the engine thread and the server's lifetime (socket thread: ws_server.c). */
#define _GNU_SOURCE
#include "server/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"
#include "server/msgpack_numpy.h"
#include "server/request_queue.h"
#include "server/ws_server.h"
#include "util/error.h"

struct pi0_server {
    pi0_server_backend b;
    pi0_server_params p;
    request_queue q;
    int q_ready;
    ws_server *ws;
    pthread_t io, engine;
    int io_started, engine_started, joined;
    atomic_int running;
    uint64_t random_base;
    atomic_uint_fast64_t random_counter;
};

pi0_server_params pi0_server_default_params(void) {
    pi0_server_params p = {0};
    p.host = "0.0.0.0";
    p.port = 8000;
    p.max_message = 64u << 20;
    p.max_connections = 256;
    p.drain_timeout_s = 60;
    p.handshake_timeout_s = 10;
    p.close_timeout_s = 5;
    return p;
}

int pi0_server_parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || s[0] == '-') return -1;
    unsigned long long mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') mul = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') mul = 1ull << 30, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v == 0 || v > (1ull << 40) / mul) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

/* ---- the policy backend --------------------------------------------------------------------- */

static pi0_status policy_infer(void *user, const pi0_obs_item *items, int n_items, const float *noise, int noise_rows,
                               int noise_cols, uint64_t seed, pi0_server_result *out) {
    pi0_policy *p = user;
    if (noise) {
        int horizon = 0, dims = 0;
        pi0_policy_shape(p, &horizon, &dims);
        const int action_dim = pi0_model_config(pi0_policy_model(p))->action_dim;
        if (noise_rows != horizon || noise_cols != action_dim)
            return pi0_fail(PI0_ERR_INVALID_ARG, "key '%s' has shape [%d, %d], expected [%d, %d] (horizon, model action dim)",
                            PI0_SERVER_NOISE_KEY, noise_rows, noise_cols, horizon, action_dim);
    }
    pi0_policy_result r;
    PI0_TRY(pi0_policy_infer(p, items, n_items, noise, seed, &r));
    out->actions = r.actions;
    out->horizon = r.horizon;
    out->action_dims = r.action_dims;
    out->policy_infer_ms = r.infer_ms;
    return PI0_OK;
}

void pi0_server_backend_policy(pi0_policy *p, pi0_server_backend *out) {
    out->user = p;
    out->metadata_json = pi0_policy_metadata_json(p);
    out->infer = policy_infer;
}

/* ---- engine thread ------------------------------------------------------------------------------ */

/* Text frames must be UTF-8 (a client fails the connection otherwise); messages may quote client
 * bytes and be cut anywhere: replace every invalid or truncated sequence with '?'. */
static void utf8_sanitize(char *t) {
    unsigned char *s = (unsigned char *)t;
    size_t i = 0, n = strlen(t);
    while (i < n) {
        unsigned char c = s[i];
        int k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        uint32_t cp = k == 1 ? c & 0x1f : k == 2 ? c & 0x0f : c & 0x07;
        int ok = k >= 0 && i + (size_t)k < n;
        for (int j = 1; ok && j <= k; j++) {
            ok = (s[i + j] & 0xc0) == 0x80;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (ok && k > 0)
            ok = !((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
                   (cp >= 0xd800 && cp <= 0xdfff));
        if (!ok) {
            s[i++] = '?';
            continue;
        }
        i += (size_t)k + 1;
    }
}

static void reply_error(pi0_server *s, const pi0_request *r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_error(pi0_server *s, const pi0_request *r, const char *fmt, ...) {
    char *text = malloc(2048);
    if (!text) return ws_server_reply(s->ws, r->conn_id, WS_REPLY_ERROR, NULL, 0);
    int n = snprintf(text, 2048, "pi0 serve: request %llu failed: ", (unsigned long long)r->seq);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, 2048 - (size_t)n, fmt, ap);
    va_end(ap);
    utf8_sanitize(text);
    ws_server_reply(s->ws, r->conn_id, WS_REPLY_ERROR, (uint8_t *)text, strlen(text) + 1);
}

/* The optional per-request noise: a (rows, cols) f32/f64 array -> floats (malloc'ed). */
static int take_noise(const pi0_obs_item *it, float **noise, int *rows, int *cols, char *err, size_t n_err) {
    if (it->kind != PI0_VALUE_ARRAY || it->ndim != 2 || (it->dtype != PI0_ELEM_F32 && it->dtype != PI0_ELEM_F64)) {
        snprintf(err, n_err, "key '%s' must be a 2-d float32 or float64 array (horizon, action_dim)", PI0_SERVER_NOISE_KEY);
        return -1;
    }
    if (it->shape[0] <= 0 || it->shape[1] <= 0 || it->shape[0] > 1 << 16 || it->shape[1] > 1 << 12) {
        snprintf(err, n_err, "key '%s' has shape [%lld, %lld]", PI0_SERVER_NOISE_KEY, (long long)it->shape[0],
                 (long long)it->shape[1]);
        return -1;
    }
    size_t n = (size_t)(it->shape[0] * it->shape[1]);
    float *f = malloc(n * sizeof *f);
    if (!f) return snprintf(err, n_err, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        if (it->dtype == PI0_ELEM_F32) memcpy(&f[i], (const char *)it->data + 4 * i, 4);
        else {
            double d;
            memcpy(&d, (const char *)it->data + 8 * i, 8);
            f[i] = (float)d;
        }
    }
    *noise = f;
    *rows = (int)it->shape[0];
    *cols = (int)it->shape[1];
    return 0;
}

static void handle(pi0_server *s, const pi0_request *r) {
    char err[1024];
    mpn_obs obs;
    if (mpn_decode(r->data, r->len, &obs, err, sizeof err)) {
        reply_error(s, r, "invalid request: %s", err);
        return;
    }
    float *noise = NULL;
    int rows = 0, cols = 0;
    const pi0_obs_item *nz = mpn_find(&obs, PI0_SERVER_NOISE_KEY);
    if (nz) {
        if (take_noise(nz, &noise, &rows, &cols, err, sizeof err)) {
            mpn_obs_free(&obs);
            reply_error(s, r, "invalid request: %s", err);
            return;
        }
        mpn_remove(&obs, PI0_SERVER_NOISE_KEY);
    }
    uint64_t seed = s->p.fixed_noise_seed
                        ? s->p.noise_seed + r->seq
                        : s->random_base + 0x9e3779b97f4a7c15ull * (uint64_t)atomic_fetch_add(&s->random_counter, 1);
    pi0_server_result res = {0};
    pi0_clear_error();
    double t0 = ws_now();
    pi0_status st = s->b.infer(s->b.user, obs.items, obs.n_items, noise, rows, cols, seed, &res);
    double server_ms = (ws_now() - t0) * 1e3;
    free(noise);
    mpn_obs_free(&obs);
    if (st != PI0_OK) {
        reply_error(s, r, "%s: %s", pi0_status_name(st), pi0_last_error());
        return;
    }
    uint8_t *out;
    size_t len;
    if (mpn_encode_response(res.actions, res.horizon, res.action_dims, res.policy_infer_ms, server_ms, r->has_prev_total,
                            r->prev_total_ms, &out, &len)) {
        reply_error(s, r, "out of memory encoding the response");
        return;
    }
    if (s->p.verbose)
        srv_log(SRV_DEBUG, "connection %llu request %llu: %.2f ms (model %.2f ms)", (unsigned long long)r->conn_id,
                (unsigned long long)r->seq, server_ms, res.policy_infer_ms);
    ws_server_reply(s->ws, r->conn_id, WS_REPLY_BINARY, out, len);
}

static void *engine_main(void *arg) {
    pi0_server *s = arg;
    for (;;) {
        pi0_request *r = rq_pop(&s->q);
        if (!r) break;
        handle(s, r);
        pi0_request_free(r);
        rq_done(&s->q);
    }
    return NULL;
}

static void *io_main(void *arg) {
    pi0_server *s = arg;
    ws_server_run(s->ws);
    atomic_store(&s->running, 0);
    return NULL;
}

/* ---- lifetime ------------------------------------------------------------------------------------ */

static uint64_t random_seed64(void) {
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
        close(fd);
    }
    if (!v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 32;
    }
    return v;
}

pi0_status pi0_server_start(const pi0_server_backend *backend, const pi0_server_params *params, pi0_server **out) {
    *out = NULL;
    if (!backend || !backend->infer || !params) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_server_start: NULL argument");
    pi0_server *s = calloc(1, sizeof *s);
    if (!s) return pi0_fail(PI0_ERR_OOM, "out of memory");
    s->b = *backend;
    s->p = *params;
    s->random_base = random_seed64();
    atomic_init(&s->random_counter, 0);
    if (rq_init(&s->q)) {
        free(s);
        return pi0_fail(PI0_ERR_OOM, "cannot create the request queue");
    }
    s->q_ready = 1;
    char err[512];
    uint8_t *meta;
    size_t meta_len;
    if (mpn_json_to_msgpack(backend->metadata_json ? backend->metadata_json : "{}", &meta, &meta_len, err, sizeof err)) {
        pi0_server_free(s);
        return pi0_fail(PI0_ERR_FORMAT, "policy metadata: %s", err);
    }
    ws_server_params wp = {
        .host = s->p.host,
        .port = s->p.port,
        .max_message = s->p.max_message,
        .max_connections = s->p.max_connections,
        .handshake_timeout_s = s->p.handshake_timeout_s,
        .close_timeout_s = s->p.close_timeout_s,
        .drain_timeout_s = s->p.drain_timeout_s,
        .metadata = meta,
        .metadata_len = meta_len,
        .queue = &s->q,
        .verbose = s->p.verbose,
    };
    int rc = ws_server_create(&wp, &s->ws, err, sizeof err);
    free(meta);
    if (rc) {
        pi0_server_free(s);
        return pi0_fail(PI0_ERR_IO, "%s", err);
    }
    /* The server's threads block the asynchronous signals (they inherit the mask): SIGTERM and
     * SIGINT are the embedding program's business, and no syscall of theirs gets EINTR.
     * (Synchronous ones such as SIGSEGV stay deliverable, e.g. to ASan's handler.) */
    sigset_t async, old;
    sigemptyset(&async);
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&async, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &async, &old);
    int e1 = pthread_create(&s->engine, NULL, engine_main, s);
    if (!e1) {
        s->engine_started = 1;
        atomic_store(&s->running, 1);
    }
    int e2 = e1 ? 0 : pthread_create(&s->io, NULL, io_main, s);
    if (!e1 && !e2) s->io_started = 1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e1 || e2) {
        atomic_store(&s->running, 0);
        pi0_server_free(s);
        return pi0_fail(PI0_ERR_BACKEND, "cannot start the server threads");
    }
    *out = s;
    return PI0_OK;
}

int pi0_server_port(const pi0_server *s) { return ws_server_port(s->ws); }

void pi0_server_shutdown(pi0_server *s, int immediate) {
    if (s && s->ws) ws_server_shutdown(s->ws, immediate);
}

int pi0_server_running(const pi0_server *s) { return atomic_load(&((pi0_server *)s)->running); }

void pi0_server_wait(pi0_server *s) {
    if (!s || s->joined) return;
    if (s->io_started) pthread_join(s->io, NULL);
    if (s->q_ready) rq_close(&s->q);
    if (s->engine_started) pthread_join(s->engine, NULL);
    s->joined = 1;
}

void pi0_server_free(pi0_server *s) {
    if (!s) return;
    if (s->io_started && !s->joined) pi0_server_shutdown(s, 1);
    if (s->engine_started && !s->joined) pi0_server_wait(s);
    ws_server_free(s->ws);
    if (s->q_ready) rq_destroy(&s->q);
    free(s);
}

void pi0_server_get_stats(pi0_server *s, pi0_server_stats *out) {
    ws_server_stats w;
    ws_server_get_stats(s->ws, &w);
    *out = (pi0_server_stats){w.connections, w.requests, w.responses, w.errors, w.dropped, w.health_checks, w.rejected_http};
}

void pi0_server_install_signals(void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
