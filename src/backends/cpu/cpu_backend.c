/*
 * CPU backend: the executable reference. fp32 compute everywhere (weights upcast from
 * BF16 per GEMM), no bf16 rounding of activations. Follows SPEC §3-7 step by step:
 * SigLIP per valid camera -> compacted prefix (valid patches, then real tokens) ->
 * Gemma-2B prefill keeping post-RoPE K/V -> num_steps Euler steps of the action expert
 * over [state token, action tokens]. The state token is recomputed every step (as openpi).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/cpu/cpu_ops.h"
#include "model/config.h"
#include "model/model.h"
#include "model/pi0_math.h"
#include "util/error.h"
#include "util/threads.h"

typedef struct {
    cpu_ctx ctx;
    int P;          /* valid prefix length after prefill; -1 before */
    int rows;       /* rows per layer in the K/V cache: max prefix + 1 + horizon */
    float *kcache;  /* (L, rows, KV*hd) */
    float *vcache;  /* (L, rows, KV*hd) */
} cpu_session;

/* Per-call scratch: every buffer of a stage, freed together. */
typedef struct {
    void *p[24];
    int n, failed;
} scratch;

static float *sc_alloc(scratch *s, size_t n) {
    if (s->n == (int)(sizeof s->p / sizeof s->p[0])) {
        s->failed = 1;
        return NULL;
    }
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) s->failed = 1;
    s->p[s->n++] = p;
    return p;
}

static void sc_free(scratch *s) {
    for (int i = 0; i < s->n; i++) free(s->p[i]);
    s->n = 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static pi0_status cpu_model_init(pi0_model *m) { return PI0_OK; }

static pi0_status cpu_session_init(pi0_session *s) {
    const pi0_config *c = &s->model->cfg;
    cpu_session *cs = calloc(1, sizeof *cs);
    if (!cs) return pi0_fail(PI0_ERR_OOM, "out of memory");
    cs->ctx.n_threads = s->model->n_threads > 0 ? s->model->n_threads : pi0_num_cores();
    cs->P = -1;
    cs->rows = PI0_NUM_CAMERAS * pi0_config_num_patches(c) + s->max_tokens + 1 + s->horizon;
    size_t n = (size_t)c->llm_depth * cs->rows * c->num_kv_heads * c->head_dim;
    cs->kcache = calloc(n, sizeof(float));
    cs->vcache = calloc(n, sizeof(float));
    if (!cs->kcache || !cs->vcache) {
        free(cs->kcache);
        free(cs->vcache);
        free(cs);
        return pi0_fail(PI0_ERR_OOM, "cannot allocate the KV cache (%zu floats)", 2 * n);
    }
    s->backend = cs;
    return PI0_OK;
}

static void cpu_session_free(pi0_session *s) {
    cpu_session *cs = s->backend;
    if (!cs) return;
    free(cs->kcache);
    free(cs->vcache);
    free(cs->ctx.wbuf);
    free(cs);
    s->backend = NULL;
}

/* ------------------------------------------------------------------ SigLIP */

static pi0_status cpu_vit(pi0_session *s, const float *image, float *out) {
    const pi0_config *c = &s->model->cfg;
    const pi0_weights *w = &s->model->w;
    cpu_ctx *ctx = &((cpu_session *)s->backend)->ctx;
    const int p = c->patch_size, g = c->image_size / p, N = g * g, W = c->vit_width, M = c->vit_mlp;
    const int H = c->vit_heads, hd = W / H, K = 3 * p * p;
    scratch sc = {0};
    float *patches = sc_alloc(&sc, (size_t)N * K), *x = sc_alloc(&sc, (size_t)N * W), *h = sc_alloc(&sc, (size_t)N * W);
    float *q = sc_alloc(&sc, (size_t)N * W), *k = sc_alloc(&sc, (size_t)N * W), *v = sc_alloc(&sc, (size_t)N * W);
    float *att = sc_alloc(&sc, (size_t)N * W), *mlp = sc_alloc(&sc, (size_t)N * M), *scores = sc_alloc(&sc, (size_t)N * N);
    float *pos = sc_alloc(&sc, (size_t)N * W);
    pi0_status st = sc.failed ? pi0_fail(PI0_ERR_OOM, "out of memory in the ViT") : PI0_OK;
    /* Patch vectors in (c, kh, kw) order, matching the OIHW conv kernel. */
    for (int r = 0; st == PI0_OK && r < g; r++)
        for (int cc = 0; cc < g; cc++) {
            float *pv = patches + (size_t)(r * g + cc) * K;
            for (int ch = 0; ch < 3; ch++)
                for (int kh = 0; kh < p; kh++)
                    for (int kw = 0; kw < p; kw++)
                        pv[(ch * p + kh) * p + kw] = image[((size_t)(r * p + kh) * c->image_size + (cc * p + kw)) * 3 + ch];
        }
    if (st == PI0_OK) st = cpu_linear(ctx, patches, N, &w->patch_w, &w->patch_b, x);
    if (st == PI0_OK) {
        pi0_tensor_to_f32(&w->pos_emb, 0, (size_t)N * W, pos);
        cpu_add(x, pos, (size_t)N * W);
    }
    for (int l = 0; st == PI0_OK && l < c->vit_depth; l++) {
        const pi0_vit_layer *L = &w->vit[l];
        cpu_layernorm(x, N, W, &L->ln1_w, &L->ln1_b, h);
        st = cpu_linear(ctx, h, N, &L->q_w, &L->q_b, q);
        if (st == PI0_OK) st = cpu_linear(ctx, h, N, &L->k_w, &L->k_b, k);
        if (st == PI0_OK) st = cpu_linear(ctx, h, N, &L->v_w, &L->v_b, v);
        if (st == PI0_OK) st = cpu_attention(ctx, q, k, v, N, N, H, H, hd, 1.0f / sqrtf((float)hd), NULL, scores, att);
        if (st == PI0_OK) st = cpu_linear(ctx, att, N, &L->o_w, &L->o_b, h);
        if (st != PI0_OK) break;
        cpu_add(x, h, (size_t)N * W);
        cpu_layernorm(x, N, W, &L->ln2_w, &L->ln2_b, h);
        st = cpu_linear(ctx, h, N, &L->fc1_w, &L->fc1_b, mlp);
        if (st != PI0_OK) break;
        cpu_gelu_inplace(mlp, (size_t)N * M);
        st = cpu_linear(ctx, mlp, N, &L->fc2_w, &L->fc2_b, h);
        if (st == PI0_OK) cpu_add(x, h, (size_t)N * W);
    }
    if (st == PI0_OK) {
        cpu_layernorm(x, N, W, &w->post_ln_w, &w->post_ln_b, h);
        st = cpu_linear(ctx, h, N, &w->proj_w, &w->proj_b, out);
    }
    sc_free(&sc);
    return st;
}

/* ------------------------------------------------------------------ Gemma */

typedef struct {
    float *h, *q, *att, *o, *gate, *up, *scores;
} gemma_bufs;

static pi0_status alloc_gemma_bufs(scratch *sc, gemma_bufs *b, const pi0_config *c, int T, int S, int D, int F) {
    int qd = c->num_heads * c->head_dim;
    b->h = sc_alloc(sc, (size_t)T * D);
    b->q = sc_alloc(sc, (size_t)T * qd);
    b->att = sc_alloc(sc, (size_t)T * qd);
    b->o = sc_alloc(sc, (size_t)T * D);
    b->gate = sc_alloc(sc, (size_t)T * F);
    b->up = sc_alloc(sc, (size_t)T * F);
    b->scores = sc_alloc(sc, (size_t)T * S);
    return sc->failed ? pi0_fail(PI0_ERR_OOM, "out of memory for %d tokens", T) : PI0_OK;
}

/*
 * One Gemma layer over T tokens of width D (SPEC §5.1). Their K/V are written to rows
 * [kv_row, kv_row + T) of this layer's cache; queries attend to cache rows [0, nkeys[t]).
 * kv_only: stop after the K/V (the prefill's dead tail, SPEC §5.4).
 */
static pi0_status gemma_layer(cpu_session *cs, const pi0_config *c, const pi0_gemma_layer *L, gemma_bufs *b, float *x,
                              int T, int D, int F, const int *pos, float *kc, float *vc, int kv_row, int S,
                              const int *nkeys, int kv_only) {
    const int KVD = c->num_kv_heads * c->head_dim;
    cpu_ctx *ctx = &cs->ctx;
    cpu_rmsnorm(x, T, D, &L->attn_norm, b->h);
    PI0_TRY(cpu_linear(ctx, b->h, T, &L->k_w, NULL, kc + (size_t)kv_row * KVD));
    PI0_TRY(cpu_linear(ctx, b->h, T, &L->v_w, NULL, vc + (size_t)kv_row * KVD));
    cpu_rope(kc + (size_t)kv_row * KVD, T, c->num_kv_heads, c->head_dim, pos);
    if (kv_only) return PI0_OK;
    PI0_TRY(cpu_linear(ctx, b->h, T, &L->q_w, NULL, b->q));
    cpu_rope(b->q, T, c->num_heads, c->head_dim, pos);
    PI0_TRY(cpu_attention(ctx, b->q, kc, vc, T, S, c->num_heads, c->num_kv_heads, c->head_dim,
                          1.0f / sqrtf((float)c->head_dim), nkeys, b->scores, b->att));
    PI0_TRY(cpu_linear(ctx, b->att, T, &L->o_w, NULL, b->o));
    cpu_add(x, b->o, (size_t)T * D);
    cpu_rmsnorm(x, T, D, &L->ffn_norm, b->h);
    PI0_TRY(cpu_linear(ctx, b->h, T, &L->gate_w, NULL, b->gate));
    PI0_TRY(cpu_linear(ctx, b->h, T, &L->up_w, NULL, b->up));
    for (size_t i = 0; i < (size_t)T * F; i++) b->gate[i] = cpu_gelu_tanh(b->gate[i]) * b->up[i];
    PI0_TRY(cpu_linear(ctx, b->gate, T, &L->down_w, NULL, b->o));
    cpu_add(x, b->o, (size_t)T * D);
    return PI0_OK;
}

static float *layer_cache(const cpu_session *cs, const pi0_config *c, float *base, int l) {
    return base + (size_t)l * cs->rows * c->num_kv_heads * c->head_dim;
}

static pi0_status prefill(pi0_session *s, const pi0_observation *obs, double *vit_ms) {
    const pi0_config *c = &s->model->cfg;
    const pi0_weights *w = &s->model->w;
    cpu_session *cs = s->backend;
    const int N = pi0_config_num_patches(c), D = c->llm_width, P = pi0_prefix_len(c, obs);
    scratch sc = {0};
    float *x = sc_alloc(&sc, (size_t)P * D);
    int *pos = malloc((size_t)P * sizeof *pos);
    gemma_bufs b;
    pi0_status st = alloc_gemma_bufs(&sc, &b, c, P, P, D, c->llm_mlp);
    if (st == PI0_OK && !pos) st = pi0_fail(PI0_ERR_OOM, "out of memory");
    cs->P = -1;
    /* Compacted prefix: valid cameras in slot order, then real tokens (SPEC §4.5). */
    int row = 0;
    double t0 = now_ms();
    for (int k = 0; st == PI0_OK && k < PI0_NUM_CAMERAS; k++)
        if (obs->image_mask[k]) {
            st = cpu_vit(s, obs->images[k], x + (size_t)row * D);
            row += N;
        }
    if (vit_ms) *vit_ms = now_ms() - t0;
    const float scale = (float)sqrt((double)D);
    for (int i = 0; st == PI0_OK && i < obs->n_tokens; i++)
        if (obs->token_mask[i]) {
            float *e = x + (size_t)row++ * D;
            pi0_tensor_to_f32(&w->embed, (size_t)obs->tokens[i] * D, (size_t)D, e);
            for (int d = 0; d < D; d++) e[d] *= scale;
        }
    for (int i = 0; pos && i < P; i++) pos[i] = i;
    for (int l = 0; st == PI0_OK && l < c->llm_depth; l++)
        st = gemma_layer(cs, c, &w->llm[l], &b, x, P, D, c->llm_mlp, pos, layer_cache(cs, c, cs->kcache, l),
                         layer_cache(cs, c, cs->vcache, l), 0, P, NULL, l == c->llm_depth - 1);
    if (st == PI0_OK) cs->P = P;
    free(pos);
    sc_free(&sc);
    return st;
}

static pi0_status cpu_prefill(pi0_session *s, const pi0_observation *obs, int *prefix_len) {
    PI0_TRY(prefill(s, obs, NULL));
    *prefix_len = ((cpu_session *)s->backend)->P;
    return PI0_OK;
}

static pi0_status cpu_kv(pi0_session *s, int layer, float *k, float *v) {
    const pi0_config *c = &s->model->cfg;
    cpu_session *cs = s->backend;
    if (cs->P < 0) return pi0_fail(PI0_ERR_INVALID_ARG, "no prefix: run the prefill first");
    size_t n = (size_t)cs->P * c->num_kv_heads * c->head_dim;
    memcpy(k, layer_cache(cs, c, cs->kcache, layer), n * sizeof *k);
    memcpy(v, layer_cache(cs, c, cs->vcache, layer), n * sizeof *v);
    return PI0_OK;
}

/* ------------------------------------------------------------------ suffix */

/* Suffix tokens [state token; action tokens] (SPEC §6.1-6.3) into e (1+H, De). */
static pi0_status embed_suffix(pi0_session *s, scratch *sc, const float *state, const float *xt, float t, float *e) {
    const pi0_config *c = &s->model->cfg;
    const pi0_weights *w = &s->model->w;
    cpu_ctx *ctx = &((cpu_session *)s->backend)->ctx;
    const int H = s->horizon, De = c->exp_width;
    float *u = sc_alloc(sc, (size_t)H * 2 * De), *a = sc_alloc(sc, (size_t)H * De), *hmid = sc_alloc(sc, (size_t)H * De);
    float *temb = sc_alloc(sc, (size_t)De);
    if (sc->failed) return pi0_fail(PI0_ERR_OOM, "out of memory");
    PI0_TRY(cpu_linear(ctx, state, 1, &w->state_w, &w->state_b, e));
    PI0_TRY(cpu_linear(ctx, xt, H, &w->ain_w, &w->ain_b, a));
    pi0_time_embedding(t, De, temb);
    for (int i = 0; i < H; i++) {
        memcpy(u + (size_t)i * 2 * De, a + (size_t)i * De, (size_t)De * sizeof *u);
        memcpy(u + (size_t)i * 2 * De + De, temb, (size_t)De * sizeof *u);
    }
    PI0_TRY(cpu_linear(ctx, u, H, &w->atm_in_w, &w->atm_in_b, hmid));
    for (size_t i = 0; i < (size_t)H * De; i++) hmid[i] = hmid[i] / (1.0f + expf(-hmid[i])); /* silu */
    return cpu_linear(ctx, hmid, H, &w->atm_out_w, &w->atm_out_b, e + De);
}

static pi0_status cpu_velocity(pi0_session *s, const float *state, const float *xt, float t, float *vout) {
    const pi0_config *c = &s->model->cfg;
    const pi0_weights *w = &s->model->w;
    cpu_session *cs = s->backend;
    if (cs->P < 0) return pi0_fail(PI0_ERR_INVALID_ARG, "no prefix: run the prefill first");
    const int H = s->horizon, T = 1 + H, De = c->exp_width, P = cs->P, S = P + T;
    scratch sc = {0};
    float *x = sc_alloc(&sc, (size_t)T * De), *y = sc_alloc(&sc, (size_t)T * De);
    int *pos = malloc((size_t)T * sizeof *pos), *nkeys = malloc((size_t)T * sizeof *nkeys);
    gemma_bufs b;
    pi0_status st = alloc_gemma_bufs(&sc, &b, c, T, S, De, c->exp_mlp);
    if (st == PI0_OK && (!pos || !nkeys)) st = pi0_fail(PI0_ERR_OOM, "out of memory");
    if (st == PI0_OK) st = embed_suffix(s, &sc, state, xt, t, x);
    /* Mask (SPEC §6.4): the state token sees the prefix and itself; actions see everything. */
    for (int j = 0; st == PI0_OK && j < T; j++) {
        pos[j] = P + j;
        nkeys[j] = j == 0 ? P + 1 : S;
    }
    for (int l = 0; st == PI0_OK && l < c->llm_depth; l++)
        st = gemma_layer(cs, c, &w->exp[l], &b, x, T, De, c->exp_mlp, pos, layer_cache(cs, c, cs->kcache, l),
                         layer_cache(cs, c, cs->vcache, l), P, S, nkeys, 0);
    if (st == PI0_OK) {
        cpu_rmsnorm(x + De, H, De, &w->exp_norm, y);
        st = cpu_linear(&cs->ctx, y, H, &w->aout_w, &w->aout_b, vout);
    }
    free(pos);
    free(nkeys);
    sc_free(&sc);
    return st;
}

static pi0_status cpu_infer(pi0_session *s, const pi0_observation *obs, const float *noise, float *actions,
                            pi0_timing *timing) {
    const pi0_config *c = &s->model->cfg;
    const size_t n = (size_t)s->horizon * c->action_dim;
    double t0 = now_ms(), vit_ms = 0;
    PI0_TRY(prefill(s, obs, &vit_ms));
    double t1 = now_ms();
    float *v = malloc(n * sizeof *v), *ts = malloc((size_t)s->num_steps * sizeof *ts);
    pi0_status st = v && ts ? PI0_OK : pi0_fail(PI0_ERR_OOM, "out of memory");
    if (st == PI0_OK) {
        memcpy(actions, noise, n * sizeof *actions);
        pi0_time_schedule(s->num_steps, ts);
    }
    const float dt = pi0_step_dt(s->num_steps);
    for (int k = 0; st == PI0_OK && k < s->num_steps; k++) {
        st = cpu_velocity(s, obs->state, actions, ts[k], v);
        for (size_t i = 0; st == PI0_OK && i < n; i++) actions[i] += dt * v[i];
    }
    double t2 = now_ms();
    free(v);
    free(ts);
    timing->vit_ms = vit_ms;
    timing->prefill_ms = t1 - t0 - vit_ms;
    timing->diffusion_ms = t2 - t1;
    timing->total_ms = t2 - t0;
    return st;
}

const pi0_backend_ops pi0_cpu_backend = {
    .name = "cpu",
    .model_init = cpu_model_init,
    .model_init_random = NULL,
    .model_free = NULL,
    .session_init = cpu_session_init,
    .session_free = cpu_session_free,
    .infer = cpu_infer,
    .vit = cpu_vit,
    .prefill = cpu_prefill,
    .kv = cpu_kv,
    .velocity = cpu_velocity,
};
