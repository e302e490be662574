/*
 * `pi0 bench`: latency of sample_actions, laid out as the reference benchmark's two tables:
 * E2E (median / p10 / p90 / min over runs, Hz) and per stage (ViT, LLM prefill, Diffusion,
 * per step) with achieved TFLOP/s and weight GB/s. Without -m it uses built-in random
 * weights (made on the GPU when the CUDA backend is used).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

typedef struct {
    double vit_gflop, prefill_gflop, step_gflop;
    double vit_gb, prefill_gb, step_gb; /* weight bytes read (bf16) */
} bench_floor;

/* Matmul FLOPs (SPEC §13.2) and bf16 weight bytes for one configuration. */
static bench_floor floors(const pi0_config *c, int cams, int P, int H) {
    bench_floor f;
    const double N = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    const double W = c->vit_width, M = c->vit_mlp, D = c->llm_width, F = c->llm_mlp, De = c->exp_width, Fe = c->exp_mlp;
    const double q = (double)c->num_heads * c->head_dim, kv = (double)c->num_kv_heads * c->head_dim;
    double vit_block = N * (4 * W * W + 2 * W * M) + 2 * N * N * W;
    double per_img = N * 3 * c->patch_size * c->patch_size * W + c->vit_depth * vit_block + N * W * D;
    f.vit_gflop = 2 * cams * per_img / 1e9;
    double llm_layer = P * (D * q + 2 * D * kv + q * D + 3 * D * F) + 2.0 * c->num_heads * P * P * c->head_dim;
    f.prefill_gflop = 2 * c->llm_depth * llm_layer / 1e9;
    double T = 1 + H, S = P + T;
    double exp_layer = T * (De * q + 2 * De * kv + q * De + 3 * De * Fe) + 2.0 * c->num_heads * T * S * c->head_dim;
    f.step_gflop = 2 * (c->llm_depth * exp_layer + H * (c->action_dim * De + 2 * De * De + De * De + De * c->action_dim)) / 1e9;
    f.vit_gb = 2 * (c->vit_depth * (4 * W * W + 2 * W * M) + W * D) / 1e9;
    f.prefill_gb = 2 * c->llm_depth * (D * q + 2 * D * kv + q * D + 3 * D * F) / 1e9;
    f.step_gb = 2 * c->llm_depth * (De * q + 2 * De * kv + q * De + 3 * De * Fe) / 1e9;
    return f;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p) {
    int i = (int)(p * (n - 1) + 0.5);
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Opt-in CUDA variants for measurement runs (tools/gpu-check.sh): PI0_CUDA_TUNE=1,
 * PI0_CUDA_FUSED_ATTN=1, PI0_CUDA_SKINNY=1, PI0_CUDA_OPTIME=1, PI0_CUDA_EXPERT_GEMM_ATTN=1,
 * PI0_CUDA_MQA_MERGE_ROW=1, PI0_CUDA_MQA_ROWS64=1, PI0_CUDA_MQA_V13=1, PI0_CUDA_NO_FLASH_ATTN=1,
 * PI0_CUDA_PDL=1, PI0_CUDA_NO_TUNE=1, PI0_CUDA_FLASH_MMA=1, PI0_CUDA_XPART=1,
 * PI0_CUDA_VIT_CHAINS=1, PI0_CUDA_L2_KV=1, PI0_CUDA_MQA_PUSH2=1, PI0_CUDA_RESID_EPILOGUE=1, PI0_CUDA_MQA_K64=1,
 * PI0_CUDA_MQA_F32=1;
 * PI0_CUDA_SKIP=<mask> and
 * PI0_CUDA_SKIP_STAGE=exp|llm|vit (timing diagnostics). Read here, not in the library. */
static const struct {
    const char *var;
    unsigned bit;
} k_variants[] = {{"PI0_CUDA_TUNE", PI0_EXP_GEMM_TUNE},
             {"PI0_CUDA_FUSED_ATTN", PI0_EXP_FUSED_ATTN},
             {"PI0_CUDA_SKINNY", PI0_EXP_SKINNY_GEMM},
             {"PI0_CUDA_OPTIME", PI0_EXP_OP_TIMES},
             {"PI0_CUDA_EXPERT_GEMM_ATTN", PI0_EXP_EXPERT_GEMM_ATTN},
             {"PI0_CUDA_MQA_MERGE_ROW", PI0_EXP_MQA_MERGE_ROW},
             {"PI0_CUDA_MQA_ROWS64", PI0_EXP_MQA_ROWS64},
             {"PI0_CUDA_MQA_V13", PI0_EXP_MQA_V13},
             {"PI0_CUDA_NO_FLASH_ATTN", PI0_EXP_NO_FLASH_ATTN},
             {"PI0_CUDA_PDL", PI0_EXP_PDL},
             {"PI0_CUDA_NO_TUNE", PI0_EXP_NO_TUNE},
             {"PI0_CUDA_FLASH_MMA", PI0_EXP_FLASH_MMA},
             {"PI0_CUDA_XPART", PI0_EXP_XPART},
             {"PI0_CUDA_VIT_CHAINS", PI0_EXP_VIT_CHAINS},
             {"PI0_CUDA_L2_KV", PI0_EXP_L2_KV},
             {"PI0_CUDA_MQA_PUSH2", PI0_EXP_MQA_PUSH2},
             {"PI0_CUDA_RESID_EPILOGUE", PI0_EXP_RESID_EPILOGUE},
             {"PI0_CUDA_MQA_K64", PI0_EXP_MQA_K64},
             {"PI0_CUDA_MQA_F32", PI0_EXP_MQA_F32}};
#define N_VARIANTS (sizeof k_variants / sizeof k_variants[0])

static unsigned experimental_from_env(void) {
    unsigned bits = 0;
    for (size_t i = 0; i < N_VARIANTS; i++) {
        const char *v = getenv(k_variants[i].var);
        if (v && atoi(v)) bits |= k_variants[i].bit;
    }
    /* PI0_CUDA_SKIP=<mask of expert ops left out>: timing diagnostics (include/pi0.h, PI0_EXP_SKIP_SHIFT) */
    const char *sk = getenv("PI0_CUDA_SKIP");
    if (sk && strtoul(sk, NULL, 0)) {
        bits |= (unsigned)(strtoul(sk, NULL, 0) & 0x1ffu) << PI0_EXP_SKIP_SHIFT;
        const char *stg = getenv("PI0_CUDA_SKIP_STAGE"); /* exp (default), llm, vit */
        const unsigned sv = stg && !strcmp(stg, "llm") ? 1u : stg && !strcmp(stg, "vit") ? 2u : 0u;
        bits |= sv << PI0_EXP_SKIP_STAGE_SHIFT;
        fprintf(stderr, "pi0 bench: PI0_CUDA_SKIP=%s (%s): ops left out for timing, the actions are wrong\n", sk,
                sv == 1 ? "prefill" : sv == 2 ? "ViT" : "expert");
    }
    return bits;
}

/* PI0_CUDA_AB=<variant name, e.g. PI0_CUDA_MQA_F32> or SKIP=<mask> (the ops of PI0_CUDA_SKIP left out in B; the
 * expert's unless PI0_CUDA_SKIP_STAGE and PI0_CUDA_SKIP are set): a second session with that toggled, the two run in
 * alternating blocks of AB_BLOCK inferences (A B, then B A) so that both see the same clocks and machine state over
 * time; the first inference of each block is dropped (the switch between the two sessions' buffers costs it extra).
 * Prints both medians and the median of the per-block differences (B block median - A block median).
 * Returns 0 when unset, the bits otherwise (~0u: unknown name). */
#define AB_BLOCK 6
static unsigned ab_bit_from_env(void) {
    const char *v = getenv("PI0_CUDA_AB");
    if (!v || !*v) return 0;
    if (!strncmp(v, "SKIP=", 5)) { /* SKIP=<mask>: B leaves those ops out (timing diagnostics, PI0_CUDA_SKIP) */
        const unsigned mask = (unsigned)strtoul(v + 5, NULL, 0) & 0x1ffu;
        return mask ? mask << PI0_EXP_SKIP_SHIFT : ~0u;
    }
    for (size_t i = 0; i < N_VARIANTS; i++)
        if (!strcmp(v, k_variants[i].var)) return k_variants[i].bit;
    return ~0u;
}

static pi0_status ab_compare(pi0_model *m, const pi0_session_params *spa, unsigned bit, const pi0_observation *obs,
                             float *actions, int runs, int warmup) {
    pi0_session_params spb = *spa;
    spb.experimental ^= bit;
    pi0_session *s[2] = {NULL, NULL};
    double *t = malloc((size_t)runs * 3 * sizeof(double));
    pi0_status st = t ? pi0_session_create(m, spa, &s[0]) : PI0_ERR_OOM;
    if (st == PI0_OK) st = pi0_session_create(m, &spb, &s[1]);
    pi0_timing tm;
    for (int i = 0; st == PI0_OK && i < 2 * warmup; i++) st = pi0_infer(s[i & 1], obs, actions, &tm);
    const int nb = (runs + AB_BLOCK - 2) / (AB_BLOCK - 1), kept = AB_BLOCK - 1; /* blocks per session */
    double *all = malloc((size_t)nb * kept * 2 * sizeof(double)), blk[AB_BLOCK];
    if (st == PI0_OK && !all) st = PI0_ERR_OOM;
    for (int b = 0; st == PI0_OK && b < nb; b++)
        for (int j = 0; st == PI0_OK && j < 2; j++) {
            const int w = (b + j) & 1; /* A B, then B A: neither always goes first */
            for (int r = 0; st == PI0_OK && r < AB_BLOCK; r++) {
                st = pi0_infer(s[w], obs, actions, &tm);
                if (r) all[((size_t)w * nb + b) * kept + r - 1] = blk[r - 1] = tm.total_ms;
            }
            qsort(blk, (size_t)kept, sizeof(double), cmp_double);
            t[w * runs + b] = pct(blk, kept, 0.5); /* nb <= runs */
        }
    if (st == PI0_OK) {
        const int n = nb;
        for (int i = 0; i < n; i++) t[2 * runs + i] = t[runs + i] - t[i];
        qsort(t + 2 * runs, (size_t)n, sizeof(double), cmp_double);
        for (int w = 0; w < 2; w++) qsort(all + (size_t)w * nb * kept, (size_t)nb * kept, sizeof(double), cmp_double);
        printf("A/B in alternating blocks (%d blocks of %d, first of each dropped; %s toggled in B): A median %.3f ms, "
               "B median %.3f ms, median of block differences (B - A) %+.3f ms (p10 %+.3f, p90 %+.3f)\n\n",
               n, AB_BLOCK, getenv("PI0_CUDA_AB"), pct(all, nb * kept, 0.5), pct(all + (size_t)nb * kept, nb * kept, 0.5),
               pct(t + 2 * runs, n, 0.5), pct(t + 2 * runs, n, 0.1), pct(t + 2 * runs, n, 0.9));
    }
    free(all);
    free(t);
    pi0_session_free(s[0]);
    pi0_session_free(s[1]);
    return st;
}

static int usage(void) {
    fprintf(stderr, "usage: pi0 bench [-m MODEL] [--config full|tiny] [--backend auto|cpu|cuda] [--horizon H] [--steps N]\n"
                    "                 [--cameras 1-3] [--prompt-len L] [--max-len 48] [--runs N] [--warmup N]\n"
                    "                 [--stage-runs N] [--seed N] [--threads N] [--reference] [--json]\n"
                    "                 [--peak-tflops 798] [--peak-tbs 3.0]   (GPU floors, H100 defaults)\n");
    return 2;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *config = "full";
    pi0_model_params mp = pi0_model_default_params();
    int horizon = 50, steps = 10, cams = 3, prompt_len = 20, max_len = 48, runs = -1, warmup = -1, stage_runs = -1;
    int json = 0, reference = 0;
    /* ceilings measured on the lent H100 (bf16 GEMM on random data, device copy): the floors */
    double peak_tflops = 798.0, peak_tbs = 3.0;
    uint64_t seed = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-m") && has) model = argv[++i];
        else if (!strcmp(a, "--config") && has) config = argv[++i];
        else if (!strcmp(a, "--horizon") && has) horizon = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && has) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--cameras") && has) cams = atoi(argv[++i]);
        else if (!strcmp(a, "--prompt-len") && has) prompt_len = atoi(argv[++i]);
        else if (!strcmp(a, "--max-len") && has) max_len = atoi(argv[++i]);
        else if (!strcmp(a, "--runs") && has) runs = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--stage-runs") && has) stage_runs = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && has) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--threads") && has) mp.n_threads = atoi(argv[++i]);
        else if (!strcmp(a, "--peak-tflops") && has) peak_tflops = atof(argv[++i]);
        else if (!strcmp(a, "--peak-tbs") && has) peak_tbs = atof(argv[++i]);
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--reference")) reference = 1;
        else if (!strcmp(a, "--backend") && has) {
            if (cli_parse_backend(argv[++i], &mp.backend)) return usage();
        } else return usage();
    }
    if (reference) { /* the reference benchmark: horizon 10, third camera masked, 20-token prompt */
        horizon = 10;
        cams = 2;
        prompt_len = 20;
    }
    if (cams < 1 || cams > 3 || horizon < 1 || steps < 1 || prompt_len < 0 || prompt_len > max_len ||
        !(peak_tflops > 0) || !(peak_tbs > 0))
        return usage();
    mp.progress = cli_progress;
    mp.progress_user = model ? "load" : "random weights";
    pi0_model *m;
    pi0_status st;
    if (model) {
        st = pi0_model_load(model, &mp, &m);
    } else {
        pi0_config cfg;
        st = pi0_config_by_name(config, &cfg);
        if (st == PI0_OK) st = pi0_model_random(&cfg, seed, &mp, &m);
    }
    if (st != PI0_OK) return cli_error("bench", st);
    const pi0_config *c = pi0_model_config(m);
    const int gpu = pi0_model_backend(m) == PI0_BACKEND_CUDA;
    if (runs < 0) runs = gpu ? 200 : 2;
    if (warmup < 0) warmup = gpu ? 20 : 0;
    if (stage_runs < 0) stage_runs = gpu ? 50 : 1;
    if (runs < 1) runs = 1;
    if (stage_runs < 1) stage_runs = 1;

    cli_obs o;
    if (cli_obs_random(c, seed, cams, prompt_len, max_len, &o)) {
        pi0_model_free(m);
        return cli_error("bench", PI0_ERR_OOM);
    }
    pi0_session_params sp = pi0_session_default_params();
    sp.experimental = experimental_from_env();
    const unsigned ab = ab_bit_from_env();
    if (ab == ~0u) {
        fprintf(stderr, "pi0 bench: PI0_CUDA_AB=%s is neither a variant name (PI0_CUDA_*, see tools/cli_bench.c) nor "
                        "SKIP=<nonzero mask>\n",
                getenv("PI0_CUDA_AB"));
        pi0_model_free(m);
        cli_obs_free(&o);
        return 2;
    }
    sp.action_horizon = horizon;
    sp.num_steps = steps;
    sp.max_token_len = max_len;
    pi0_session *s = NULL, *sprof = NULL;
    float *actions = malloc((size_t)horizon * c->action_dim * sizeof(float));
    double *e2e = malloc((size_t)runs * sizeof(double)), *sv = malloc((size_t)stage_runs * 4 * sizeof(double));
    st = actions && e2e && sv ? PI0_OK : PI0_ERR_OOM;
    if (st == PI0_OK && ab && gpu) st = ab_compare(m, &sp, ab, &o.obs, actions, runs, warmup); /* its sessions freed */
    if (st == PI0_OK) st = pi0_session_create(m, &sp, &s);
    pi0_timing t;
    for (int i = 0; st == PI0_OK && i < warmup; i++) st = pi0_infer(s, &o.obs, actions, &t);
    for (int i = 0; st == PI0_OK && i < runs; i++) {
        st = pi0_infer(s, &o.obs, actions, &t);
        e2e[i] = t.total_ms;
    }
    sp.profile_stages = 1;
    if (st == PI0_OK) st = pi0_session_create(m, &sp, &sprof);
    for (int i = 0; st == PI0_OK && i < stage_runs + (gpu ? 3 : 0); i++) {
        st = pi0_infer(sprof, &o.obs, actions, &t);
        int j = i - (gpu ? 3 : 0); /* GPU: first runs are warm-up */
        if (j >= 0) {
            sv[j] = t.vit_ms;
            sv[stage_runs + j] = t.prefill_ms;
            sv[2 * stage_runs + j] = t.diffusion_ms;
            sv[3 * stage_runs + j] = t.total_ms;
        }
    }
    int rc = 0;
    if (st != PI0_OK) {
        rc = cli_error("bench", st);
    } else {
        qsort(e2e, (size_t)runs, sizeof(double), cmp_double);
        for (int k = 0; k < 4; k++) qsort(sv + k * stage_runs, (size_t)stage_runs, sizeof(double), cmp_double);
        int P = cams * (c->image_size / c->patch_size) * (c->image_size / c->patch_size) + prompt_len;
        bench_floor f = floors(c, cams, P, horizon);
        double med = pct(e2e, runs, 0.5), vit = pct(sv, stage_runs, 0.5), pre = pct(sv + stage_runs, stage_runs, 0.5),
               dif = pct(sv + 2 * stage_runs, stage_runs, 0.5);
        const char *be = gpu ? "cuda" : "cpu";
        if (json) {
            printf("{\"backend\":\"%s\",\"config\":\"%s\",\"horizon\":%d,\"steps\":%d,\"cameras\":%d,\"prompt_len\":%d,"
                   "\"max_len\":%d,\"prefix_len\":%d,\"runs\":%d,\"e2e_ms\":{\"median\":%.4f,\"p10\":%.4f,\"p90\":%.4f,"
                   "\"min\":%.4f},\"hz\":%.2f,\"stages_ms\":{\"vit\":%.4f,\"prefill\":%.4f,\"diffusion\":%.4f,"
                   "\"per_step\":%.4f}}\n",
                   be, model ? model : config, horizon, steps, cams, prompt_len, max_len, P, runs, med, pct(e2e, runs, 0.1),
                   pct(e2e, runs, 0.9), e2e[0], 1000.0 / med, vit, pre, dif, dif / steps);
        } else {
            printf("pi0 bench: backend %s, weights %s, batch 1, %d camera(s), horizon %d, %d steps, %d/%d prompt tokens "
                   "(prefix %d tokens)\n\n",
                   be, model ? model : (gpu ? "random (made on the GPU)" : "random"), cams, horizon, steps, prompt_len,
                   max_len, P);
            printf("E2E latency (%d runs after %d warm-up)\n", runs, warmup);
            printf("| %-8s | %10s | %10s | %10s | %10s | %8s |\n", "backend", "median ms", "p10 ms", "p90 ms", "min ms", "Hz");
            printf("|----------|------------|------------|------------|------------|----------|\n");
            printf("| %-8s | %10.3f | %10.3f | %10.3f | %10.3f | %8.1f |\n\n", be, med, pct(e2e, runs, 0.1),
                   pct(e2e, runs, 0.9), e2e[0], 1000.0 / med);
            printf("Per stage (median of %d profiled runs)", stage_runs);
            if (gpu) printf("; floor = max(GFLOP / %.0f TFLOP/s, weight GB / %.2f TB/s)", peak_tflops, peak_tbs);
            printf("\n| %-22s | %10s | %9s | %9s | %8s | %8s |%s\n", "stage", "ms", "GFLOP", "TFLOP/s", "GB", "GB/s",
                   gpu ? "  floor ms | x floor |" : "");
            printf("|------------------------|------------|-----------|-----------|----------|----------|%s\n",
                   gpu ? "-----------|---------|" : "");
            struct {
                const char *name;
                double ms, gflop, gb;
            } rows[4] = {{"ViT", vit, f.vit_gflop, f.vit_gb * (cams ? 1 : 0)},
                         {"LLM prefill", pre, f.prefill_gflop, f.prefill_gb},
                         {"Diffusion", dif, f.step_gflop * steps, f.step_gb * steps},
                         {"per step", dif / steps, f.step_gflop, f.step_gb}};
            char label[32];
            for (int r = 0; r < 4; r++) {
                snprintf(label, sizeof label, r == 2 ? "%s (%d steps)" : "%s", rows[r].name, steps);
                printf("| %-22s | %10.3f | %9.1f | %9.3f | %8.3f | %8.1f |", label, rows[r].ms, rows[r].gflop,
                       rows[r].gflop / rows[r].ms /* GFLOP per ms = TFLOP/s */, rows[r].gb, rows[r].gb / rows[r].ms * 1e3);
                if (gpu) { /* GFLOP / (TFLOP/s) and GB / (TB/s) are both milliseconds */
                    double fl = rows[r].gflop / peak_tflops, fb = rows[r].gb / peak_tbs, floor = fl > fb ? fl : fb;
                    printf(" %9.3f | %7.1f |", floor, rows[r].ms / floor);
                }
                printf("\n");
            }
        }
    }
    free(actions);
    free(e2e);
    free(sv);
    cli_obs_free(&o);
    pi0_session_free(s);
    pi0_session_free(sprof);
    pi0_model_free(m);
    return rc;
}
