/*
 * pi0_server_fake: the real server (src/server: sockets, wslay, msgpack, queue, drain) in front
 * of a fake policy, so the protocol tests run in milliseconds and without a model.
 *
 *   pi0_server_fake [--host H] [--port N] [--noise-seed N] [--max-message SIZE]
 *                   [--max-connections N] [--metadata JSON] [--drain-timeout S] [-v]
 *
 * The fake policy answers actions of shape (2, 4), float64:
 *   row 0: [number of observation items, seed mod 1e6, noise[0][0] or -1, sum of the array "x"]
 *   row 1: [ms slept ("delay_ms"), ndim of "x" or -1, dtype of "x" (pi0_elem_type) or -1,
 *           length of the string "prompt" or -1]
 * Observation keys it understands: "delay_ms" (number: sleep that long, the engine is busy),
 * "fail" (any value: the call fails with "fake failure requested: <prompt>").
 * Prints "pi0 serve: listening on ws://H:PORT" on stdout; SIGTERM/SIGINT drain and exit 0.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/log.h"
#include "server/serve.h"
#include "util/error.h"

static double g_actions[8];
static volatile sig_atomic_t g_signals;

static void on_signal(int sig) {
    (void)sig;
    g_signals = g_signals + 1;
}

static double item_number(const pi0_obs_item *it, size_t i) {
    const char *d = it->data;
    switch (it->dtype) {
    case PI0_ELEM_U8:
    case PI0_ELEM_BOOL: return ((const uint8_t *)d)[i];
    case PI0_ELEM_I32: {
        int32_t v;
        memcpy(&v, d + 4 * i, 4);
        return v;
    }
    case PI0_ELEM_I64: {
        int64_t v;
        memcpy(&v, d + 8 * i, 8);
        return (double)v;
    }
    case PI0_ELEM_F32: {
        float v;
        memcpy(&v, d + 4 * i, 4);
        return v;
    }
    case PI0_ELEM_F64: {
        double v;
        memcpy(&v, d + 8 * i, 8);
        return v;
    }
    }
    return 0;
}

static pi0_status fake_infer(void *user, const pi0_obs_item *items, int n, const float *noise, int rows, int cols,
                             uint64_t seed, pi0_server_result *out) {
    (void)user;
    double slept = 0, sum_x = 0, ndim_x = -1, dtype_x = -1, prompt_len = -1;
    const char *prompt = "";
    int fail = 0;
    for (int i = 0; i < n; i++) {
        const pi0_obs_item *it = &items[i];
        if (!strcmp(it->key, "fail")) fail = 1;
        if (!strcmp(it->key, "prompt") && it->kind == PI0_VALUE_STRING) prompt = it->str, prompt_len = (double)strlen(it->str);
        if (!strcmp(it->key, "delay_ms") && it->kind == PI0_VALUE_ARRAY && it->ndim == 0) slept = item_number(it, 0);
        if (!strcmp(it->key, "x") && it->kind == PI0_VALUE_ARRAY) {
            size_t numel = 1;
            for (int k = 0; k < it->ndim; k++) numel *= (size_t)it->shape[k];
            for (size_t k = 0; k < numel; k++) sum_x += item_number(it, k);
            ndim_x = it->ndim;
            dtype_x = it->dtype;
        }
    }
    if (slept > 0) {
        if (slept > 10000) slept = 10000;
        struct timespec ts = {(time_t)(slept / 1000), (long)(slept - 1000 * (double)(time_t)(slept / 1000)) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (fail) return pi0_fail(PI0_ERR_INVALID_ARG, "fake failure requested: %s", prompt);
    if (noise && cols != 4) return pi0_fail(PI0_ERR_INVALID_ARG, "noise must be (2, 4)");
    if (noise && rows != 2) return pi0_fail(PI0_ERR_INVALID_ARG, "noise must be (2, 4)");
    double a[8] = {n, (double)(seed % 1000000), noise ? noise[0] : -1, sum_x, slept, ndim_x, dtype_x, prompt_len};
    memcpy(g_actions, a, sizeof a);
    out->actions = g_actions;
    out->horizon = 2;
    out->action_dims = 4;
    out->policy_infer_ms = 0.125;
    return PI0_OK;
}

int main(int argc, char **argv) {
    pi0_server_params sp = pi0_server_default_params();
    pi0_server_backend b = {NULL, "{}", fake_infer};
    sp.port = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && (i++, 1))
        if (OPT("--host")) sp.host = v;
        else if (OPT("--port")) sp.port = atoi(v);
        else if (OPT("--noise-seed")) sp.fixed_noise_seed = 1, sp.noise_seed = strtoull(v, NULL, 10);
        else if (OPT("--max-message")) {
            if (pi0_server_parse_size(v, &sp.max_message)) return fprintf(stderr, "bad --max-message\n"), 2;
        } else if (OPT("--max-connections")) sp.max_connections = atoi(v);
        else if (OPT("--metadata")) b.metadata_json = v;
        else if (OPT("--drain-timeout")) sp.drain_timeout_s = atof(v);
        else if (OPT("--close-timeout")) sp.close_timeout_s = atof(v);
        else if (OPT("--handshake-timeout")) sp.handshake_timeout_s = atof(v);
        else if (!strcmp(a, "-v")) sp.verbose = 1, srv_log_set_level(SRV_DEBUG);
        else return fprintf(stderr, "pi0_server_fake: unknown option %s\n", a), 2;
#undef OPT
    }
    pi0_server_install_signals(on_signal);
    pi0_server *srv;
    pi0_status st = pi0_server_start(&b, &sp, &srv);
    if (st != PI0_OK) return fprintf(stderr, "error: %s: %s\n", pi0_status_name(st), pi0_last_error()), 1;
    printf("pi0 serve: listening on ws://%s:%d\n", sp.host, pi0_server_port(srv));
    fflush(stdout);
    int handled = 0;
    while (pi0_server_running(srv)) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int got = g_signals;
        if (got != handled) pi0_server_shutdown(srv, (handled = got) > 1);
    }
    pi0_server_wait(srv);
    pi0_server_stats s;
    pi0_server_get_stats(srv, &s);
    fprintf(stderr, "pi0_server_fake: stopped: %llu connections, %llu requests, %llu responses, %llu errors, %llu dropped\n",
            (unsigned long long)s.connections, (unsigned long long)s.requests, (unsigned long long)s.responses,
            (unsigned long long)s.errors, (unsigned long long)s.dropped);
    pi0_server_free(srv);
    return 0;
}
