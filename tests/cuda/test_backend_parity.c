/*
 * CUDA backend vs CPU backend through the public API (tiny config by default).
 * Same seed -> same random weights on both backends; fresh random inputs per run
 * (seed printed; PI0_TEST_SEED=N reproduces). Every stage is compared by relative L2:
 * vit, K/V of every layer, velocity, actions (two camera sets, so the graph is
 * re-captured), plus bitwise determinism of the GPU actions and graph == eager.
 * GPU outputs are NaN-filled before every call. Exit 77 when no GPU.
 *
 * Env: PI0_TEST_CONFIG=tiny|full (default tiny), PI0_TEST_CKPT=FILE (load a checkpoint on both backends
 *      instead of random weights: the CUDA upload / F32->BF16 path), PI0_TEST_HORIZON, PI0_TEST_CAMS (1-3),
 *      PI0_TEST_TOL (default 1e-2), PI0_TEST_QUICK=1 (full config: vit + kv layer 0 + velocity + actions).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "pi0.h"

static int g_fail = 0;
static double g_tol = 1e-2;

static uint64_t rng_state;
static double urand(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand(void) {
    double u1 = urand() + 1e-300, u2 = urand();
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static void nan_fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

static double rel_l2(const float *a, const float *ref, size_t n, int *nonfinite) {
    double num = 0, den = 0;
    *nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) (*nonfinite)++;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

static void check(const char *what, const float *gpu, const float *cpu, size_t n, double tol) {
    int nf;
    double r = rel_l2(gpu, cpu, n, &nf);
    int ok = nf == 0 && r <= tol;
    printf("  %-28s rel_l2 = %.3e %s%s\n", what, r, ok ? "ok" : "FAIL", nf ? " (non-finite values)" : "");
    if (!ok) g_fail = 1;
}

#define TRY(call)                                                                                   \
    do {                                                                                            \
        pi0_status _s = (call);                                                                     \
        if (_s != PI0_OK) {                                                                         \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call, pi0_status_name(_s), \
                    pi0_last_error());                                                              \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const char *cfgname = getenv("PI0_TEST_CONFIG") ? getenv("PI0_TEST_CONFIG") : "tiny";
    uint64_t seed = getenv("PI0_TEST_SEED") ? strtoull(getenv("PI0_TEST_SEED"), NULL, 10) : (uint64_t)time(NULL);
    if (getenv("PI0_TEST_TOL")) g_tol = atof(getenv("PI0_TEST_TOL"));
    int quick = getenv("PI0_TEST_QUICK") && atoi(getenv("PI0_TEST_QUICK"));
    printf("test_backend_parity: config %s, seed %llu (PI0_TEST_SEED to reproduce), tol %.1e\n", cfgname,
           (unsigned long long)seed, g_tol);
    rng_state = seed * 2654435761ull + 0x9E3779B97F4A7C15ull;

    pi0_config cfg;
    TRY(pi0_config_by_name(cfgname, &cfg));
    pi0_model_params pc = pi0_model_default_params(), pg = pi0_model_default_params();
    pc.backend = PI0_BACKEND_CPU;
    pg.backend = PI0_BACKEND_CUDA;
    pi0_model *mc, *mg;
    double t0 = now_s();
    const char *ckpt = getenv("PI0_TEST_CKPT"); /* a checkpoint file: exercises the upload path */
    if (ckpt) {
        TRY(pi0_model_load(ckpt, &pg, &mg));
        TRY(pi0_model_load(ckpt, &pc, &mc));
        cfg = *pi0_model_config(mg);
        printf("  checkpoint %s\n", ckpt);
    } else {
        TRY(pi0_model_random(&cfg, seed, &pg, &mg));
        TRY(pi0_model_random(&cfg, seed, &pc, &mc));
    }
    double t1 = now_s();
    printf("  weights: %.2f s (GPU + CPU)\n", t1 - t0);
    if (pi0_model_backend(mg) != PI0_BACKEND_CUDA || pi0_model_backend(mc) != PI0_BACKEND_CPU) {
        printf("FAIL: wrong backends\n");
        return 1;
    }

    pi0_session_params sp = pi0_session_default_params();
    if (getenv("PI0_TEST_HORIZON")) sp.action_horizon = atoi(getenv("PI0_TEST_HORIZON"));
    /* PI0_TEST_EXP=<bits>: opt-in CUDA variants (PI0_EXP_*) for the GPU sessions (the CPU backend ignores them) */
    if (getenv("PI0_TEST_EXP")) sp.experimental = (unsigned)strtoul(getenv("PI0_TEST_EXP"), NULL, 0);
    pi0_session *sc, *sg, *sgp;
    TRY(pi0_session_create(mc, &sp, &sc));
    TRY(pi0_session_create(mg, &sp, &sg));
    pi0_session_params spp = sp;
    spp.profile_stages = 1;
    TRY(pi0_session_create(mg, &spp, &sgp));
    const int H = sp.action_horizon ? sp.action_horizon : cfg.action_horizon, A = cfg.action_dim;
    const int np = (cfg.image_size / cfg.patch_size) * (cfg.image_size / cfg.patch_size);
    const size_t img_n = (size_t)cfg.image_size * cfg.image_size * 3;

    /* random observation */
    float *imgs[3];
    for (int k = 0; k < 3; k++) {
        imgs[k] = malloc(img_n * sizeof(float));
        for (size_t i = 0; i < img_n; i++) imgs[k][i] = (float)(2 * urand() - 1);
    }
    int ntok = cfg.max_token_len < 24 ? cfg.max_token_len : 24;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)ntok);
    uint8_t *tmask = malloc((size_t)ntok);
    for (int i = 0; i < ntok; i++) {
        tok[i] = (int32_t)(urand() * cfg.vocab_size) % cfg.vocab_size;
        tmask[i] = i < 18 ? 1 : 0; /* 18 real tokens, then padding */
    }
    tmask[5] = 0;                  /* and a hole */
    float *state = malloc(sizeof(float) * A), *noise = malloc(sizeof(float) * (size_t)H * A);
    for (int i = 0; i < A; i++) state[i] = nrand();
    for (int i = 0; i < H * A; i++) noise[i] = nrand();
    int cams = getenv("PI0_TEST_CAMS") ? atoi(getenv("PI0_TEST_CAMS")) : 2;
    pi0_observation obs;
    memset(&obs, 0, sizeof obs);
    for (int k = 0; k < 3; k++) {
        obs.images[k] = imgs[k];
        obs.image_mask[k] = 0;
    }
    /* cameras: base + (right wrist if 2) -- a masked slot in the middle exercises the compaction */
    obs.image_mask[0] = 1;
    if (cams >= 2) obs.image_mask[2] = 1;
    if (cams >= 3) obs.image_mask[1] = 1;
    obs.tokens = tok;
    obs.token_mask = tmask;
    obs.n_tokens = ntok;
    obs.state = state;
    obs.noise = noise;

    /* 1. ViT */
    size_t vn = (size_t)np * cfg.llm_width;
    float *vc = malloc(vn * 4), *vg = malloc(vn * 4);
    TRY(pi0_stage_vit(sc, imgs[1], vc));
    nan_fill(vg, vn);
    TRY(pi0_stage_vit(sg, imgs[1], vg));
    check("vit (image 1)", vg, vc, vn, g_tol);

    /* 2. prefill + K/V */
    int Pc = 0, Pg = 0;
    t0 = now_s();
    TRY(pi0_stage_prefill(sc, &obs, &Pc));
    t1 = now_s();
    TRY(pi0_stage_prefill(sg, &obs, &Pg));
    printf("  prefix length CPU %d GPU %d (CPU prefill %.2f s)\n", Pc, Pg, t1 - t0);
    if (Pc != Pg) {
        printf("FAIL: prefix lengths differ\n");
        return 1;
    }
    size_t kn = (size_t)Pc * cfg.num_kv_heads * cfg.head_dim;
    float *kc = malloc(kn * 4), *vvc = malloc(kn * 4), *kg = malloc(kn * 4), *vvg = malloc(kn * 4);
    for (int l = 0; l < cfg.llm_depth; l++) {
        if (quick && l != 0 && l != cfg.llm_depth - 1) continue;
        TRY(pi0_stage_kv(sc, l, kc, vvc));
        nan_fill(kg, kn);
        nan_fill(vvg, kn);
        TRY(pi0_stage_kv(sg, l, kg, vvg));
        char name[64];
        snprintf(name, sizeof name, "K layer %d", l);
        check(name, kg, kc, kn, g_tol);
        snprintf(name, sizeof name, "V layer %d", l);
        check(name, vvg, vvc, kn, g_tol);
    }

    /* 3. velocity at t = 1 (x = noise) and t = 0.4 (another x) */
    size_t an = (size_t)H * A;
    float *velc = malloc(an * 4), *velg = malloc(an * 4), *x2 = malloc(an * 4);
    for (size_t i = 0; i < an; i++) x2[i] = 0.5f * nrand();
    TRY(pi0_stage_velocity(sc, state, noise, 1.0f, velc));
    nan_fill(velg, an);
    TRY(pi0_stage_velocity(sg, state, noise, 1.0f, velg));
    check("velocity t=1", velg, velc, an, g_tol);
    TRY(pi0_stage_velocity(sc, state, x2, 0.4f, velc));
    nan_fill(velg, an);
    TRY(pi0_stage_velocity(sg, state, x2, 0.4f, velg));
    check("velocity t=0.4", velg, velc, an, g_tol);

    /* 4. actions (graph), determinism, graph == eager */
    float *ac = malloc(an * 4), *ag = malloc(an * 4), *ag2 = malloc(an * 4), *agp = malloc(an * 4);
    pi0_timing tm;
    t0 = now_s();
    TRY(pi0_infer(sc, &obs, ac, &tm));
    t1 = now_s();
    printf("  CPU infer %.2f s\n", t1 - t0);
    nan_fill(ag, an);
    TRY(pi0_infer(sg, &obs, ag, &tm));
    check("actions", ag, ac, an, g_tol);
    nan_fill(ag2, an);
    TRY(pi0_infer(sg, &obs, ag2, &tm));
    int same = !memcmp(ag, ag2, an * 4);
    printf("  %-28s %s\n", "deterministic (bitwise)", same ? "ok" : "FAIL");
    if (!same) g_fail = 1;
    nan_fill(agp, an);
    TRY(pi0_infer(sgp, &obs, agp, &tm));
    same = !memcmp(ag, agp, an * 4);
    printf("  %-28s %s (profile: vit %.3f prefill %.3f diffusion %.3f total %.3f ms)\n", "graph == eager (bitwise)",
           same ? "ok" : "FAIL", tm.vit_ms, tm.prefill_ms, tm.diffusion_ms, tm.total_ms);
    if (!same) g_fail = 1;

    /* 5. another shape key: all three cameras, fewer tokens -> re-capture */
    if (!quick) {
        obs.image_mask[0] = obs.image_mask[1] = obs.image_mask[2] = 1;
        obs.n_tokens = 7;
        for (size_t i = 0; i < an; i++) noise[i] = nrand();
        TRY(pi0_infer(sc, &obs, ac, &tm));
        nan_fill(ag, an);
        TRY(pi0_infer(sg, &obs, ag, &tm));
        check("actions (3 cams, 6 tokens)", ag, ac, an, g_tol);
        /* back to the first key */
        obs.image_mask[1] = 0;
        obs.n_tokens = ntok;
        TRY(pi0_infer(sc, &obs, ac, &tm));
        nan_fill(ag, an);
        TRY(pi0_infer(sg, &obs, ag, &tm));
        check("actions (key changed back)", ag, ac, an, g_tol);
    }

    pi0_session_free(sc);
    pi0_session_free(sg);
    pi0_session_free(sgp);
    pi0_model_free(mc);
    pi0_model_free(mg);
    printf("test_backend_parity: %s\n", g_fail ? "FAILED" : "passed");
    return g_fail;
}
