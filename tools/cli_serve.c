/* `pi0 serve`: an openpi-compatible websocket policy server (docs/SERVER.md, SPEC §11). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "pi0_policy.h"
#include "server/log.h"
#include "server/serve.h"

int cmd_serve(int argc, char **argv);

static volatile sig_atomic_t g_signals, g_last_signal;

static void on_signal(int sig) {
    g_last_signal = sig;
    g_signals = g_signals + 1;
}

static int serve_usage(void) {
    fprintf(stderr,
            "usage: pi0 serve (-m CHECKPOINT | --random tiny|full) --policy-config CONFIG [options]\n"
            "  -m, --checkpoint FILE  model.safetensors (openpi PyTorch layout)\n"
            "  --random tiny|full     random weights instead of a checkpoint (--seed N)\n"
            "  --policy-config FILE   policy config JSON (docs/POLICY.md)\n"
            "  --tokenizer FILE       SentencePiece model (overrides the config's)\n"
            "  --norm-stats FILE      norm_stats.json (overrides the config's)\n"
            "  --default-prompt TEXT  prompt for observations without one (as openpi's)\n"
            "  --host ADDR            bind address (default 0.0.0.0)\n"
            "  --port N               TCP port (default 8000; 0: any free port, printed at start)\n"
            "  --backend auto|cpu|cuda, --threads N\n"
            "  --noise-seed N         request k of a connection samples its noise with seed N+k\n"
            "                         (default: random); a request may also carry \"noise\" (H, 32)\n"
            "  --max-message SIZE     largest request accepted (default 64M)\n"
            "  --max-connections N    (default 256)\n"
            "  --drain-timeout S      on SIGTERM/SIGINT, longest wait for queued requests (default 60)\n"
            "  -v, --verbose          log every request\n");
    return 2;
}

int cmd_serve(int argc, char **argv) {
    pi0_policy_params pp = pi0_policy_default_params();
    pi0_server_params sp = pi0_server_default_params();
    const char *checkpoint = NULL, *random_config = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && (i++, 1))
        if (OPT("-m") || OPT("--checkpoint")) checkpoint = v;
        else if (OPT("--random")) random_config = v;
        else if (OPT("--seed")) pp.random_seed = strtoull(v, NULL, 10);
        else if (OPT("--policy-config")) pp.policy_config = v;
        else if (OPT("--tokenizer")) pp.tokenizer = v;
        else if (OPT("--norm-stats")) pp.norm_stats = v;
        else if (OPT("--default-prompt")) pp.default_prompt = v;
        else if (OPT("--host")) sp.host = v;
        else if (OPT("--port")) {
            char *end;
            long port = strtol(v, &end, 10);
            if (*end || port < 0 || port > 65535) return serve_usage();
            sp.port = (int)port;
        } else if (OPT("--backend")) {
            if (cli_parse_backend(v, &pp.model.backend)) return serve_usage();
        } else if (OPT("--threads")) pp.model.n_threads = atoi(v);
        else if (OPT("--noise-seed")) {
            sp.fixed_noise_seed = 1;
            sp.noise_seed = strtoull(v, NULL, 10);
        } else if (OPT("--max-message")) {
            if (pi0_server_parse_size(v, &sp.max_message)) return serve_usage();
        } else if (OPT("--max-connections")) sp.max_connections = atoi(v);
        else if (OPT("--drain-timeout")) sp.drain_timeout_s = atof(v);
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) sp.verbose = 1;
        else return serve_usage();
#undef OPT
    }
    if (!checkpoint == !random_config) return serve_usage();
    if (random_config && strcmp(random_config, "tiny") && strcmp(random_config, "full")) return serve_usage();
    pp.checkpoint = checkpoint;
    pp.random_config = random_config;
    if (sp.verbose) srv_log_set_level(SRV_DEBUG);

    pi0_server_install_signals(on_signal);

    pp.model.progress = cli_progress;
    pp.model.progress_user = "load";
    pi0_policy *policy = NULL;
    pi0_status st = pi0_policy_create(&pp, &policy);
    if (st != PI0_OK) return cli_error(checkpoint ? checkpoint : "policy", st);
    pi0_server_backend backend;
    pi0_server_backend_policy(policy, &backend);
    pi0_server *srv = NULL;
    st = pi0_server_start(&backend, &sp, &srv);
    if (st != PI0_OK) {
        pi0_policy_free(policy);
        return cli_error("serve", st);
    }
    printf("pi0 serve: listening on ws://%s:%d (health: http://%s:%d/healthz)\n", sp.host, pi0_server_port(srv), sp.host,
           pi0_server_port(srv));
    fflush(stdout);
    srv_log(SRV_INFO, "metadata %s", backend.metadata_json ? backend.metadata_json : "{}");

    int handled = 0;
    while (pi0_server_running(srv)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL); /* cut short by a signal */
        int got = g_signals;
        if (got == handled) continue;
        handled = got;
        srv_log(SRV_INFO, "%s: %s", g_last_signal == SIGTERM ? "SIGTERM" : "SIGINT",
                handled == 1 ? "finishing queued requests (again to stop now)" : "stopping now");
        pi0_server_shutdown(srv, handled > 1);
    }
    pi0_server_wait(srv);
    pi0_server_stats stats;
    pi0_server_get_stats(srv, &stats);
    srv_log(SRV_INFO, "stopped: %llu connections, %llu requests, %llu responses, %llu errors, %llu dropped",
            (unsigned long long)stats.connections, (unsigned long long)stats.requests,
            (unsigned long long)stats.responses, (unsigned long long)stats.errors, (unsigned long long)stats.dropped);
    pi0_server_free(srv);
    pi0_policy_free(policy);
    return 0;
}
