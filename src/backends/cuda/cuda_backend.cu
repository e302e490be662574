/*
 * CUDA backend (Issue #3): whole inference on one GPU, bf16 weights and GEMM operands,
 * f32 accumulation, f32 residual streams / norms / softmax / flow state.
 *
 *   weights  : one device arena; fused [q;k;v] and [gate;up]; norm gains, biases of
 *              f32-output GEMMs, pos-emb and the five pi0 heads in f32.
 *   session  : every activation buffer preallocated; one stream; one cuBLASLt context.
 *   infer    : inputs -> static buffers, replay one CUDA graph (ViT -> prefill -> state
 *              token -> all denoise steps), actions out. Graph keyed on
 *              (#valid cameras, #valid tokens); re-captured when the key changes.
 *
 * Exact shortcuts (SPEC §13.3): compacted prefix, masked cameras skipped, state-token
 * K/V computed once per inference, per-step time biases precomputed with the
 * action_in_proj folded into action_time_mlp_in, dead tail of the last prefill layer
 * (and of the state pass) skipped. With compaction no attention needs a mask.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "model/config.h"
#include "model/model.h"
#include "model/pi0_math.h"
#include "model/tensor_table.h"
#include "util/error.h"
}
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"

#define CU(call)                                                                                           \
    do {                                                                                                   \
        cudaError_t _e = (call);                                                                           \
        if (_e != cudaSuccess)                                                                             \
            return pi0_fail(PI0_ERR_BACKEND, "%s failed: %s (%s)", #call, cudaGetErrorName(_e), cudaGetErrorString(_e)); \
    } while (0)

typedef uint16_t bf;
static const float kEps = 1e-6f;

/* ------------------------------------------------------------------ model */

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    bf *qkv_w, *qkv_b; /* (3W, W), (3W) */
    bf *o_w;
    float *o_b;
    bf *fc1_w, *fc1_b;
    bf *fc2_w;
    float *fc2_b;
} dvit;

typedef struct {
    float *attn_norm, *ffn_norm;
    bf *qkv_w;  /* ((nh+2)*hd, D) */
    bf *o_w;    /* (D, nh*hd) */
    bf *gu_w;   /* (2F, D) */
    bf *down_w; /* (D, F) */
    /* expert only, made by the first session that needs them (PI0_EXP_XPART; else NULL): o_w and down_w rewritten for
     * the few-token GEMM's unreduced split-K (CUK_SK_PARTIAL, cuk_skinny_pack layout, tiles cmodel.xo_* / xd_*) */
    bf *o_wp, *down_wp;
} dgemma;

typedef struct {
    const pi0_tensor *t; /* field of the pi0_weights the layout was built from */
    void *d;
    int dt;              /* CUK_F32 / CUK_BF16 */
    long long rows, cols, ld;
    int filled;
} place;

typedef struct {
    int dev;
    char *arena;
    size_t arena_bytes;
    place *pl;
    int npl, capl;
    int patch_k, patch_ld; /* 3*p*p and its padded pitch */
    bf *patch_w;
    float *patch_b, *pos_emb;
    dvit *vit;
    float *post_w, *post_b;
    bf *proj_w;
    float *proj_b;
    bf *embed;
    dgemma *llm, *exp;
    float *exp_norm;
    float *state_w, *state_b, *ain_w, *ain_b, *atm_in_w, *atm_in_b, *atm_out_w, *atm_out_b, *aout_w, *aout_b;
    float *fold_w, *fold_b; /* (De, A): atm_in[:, :De] @ ain_w ; (De): atm_in[:, :De] @ ain_b + atm_in_b */
    int xo_bn, xo_cs, xd_bn, xd_cs; /* packed tiles of the expert's o_wp / down_wp (0: the shape does not fit) */
    char *packed;                   /* the arena of o_wp / down_wp (NULL until pack_expert) */
} cmodel;

typedef struct {
    char *base;
    size_t off;
    cmodel *cm;
    int record;
    int failed;
} layout;

static void *lalloc(layout *L, size_t bytes) {
    size_t o = (L->off + 255) & ~(size_t)255;
    L->off = o + bytes;
    return (void *)((uintptr_t)L->base + o);
}

static void lput(layout *L, const pi0_tensor *t, void *d, int dt, long long rows, long long cols, long long ld) {
    if (!L->record || L->failed) return;
    cmodel *cm = L->cm;
    if (cm->npl == cm->capl) {
        int cap = cm->capl ? 2 * cm->capl : 1024;
        place *np = (place *)realloc(cm->pl, (size_t)cap * sizeof *np);
        if (!np) {
            L->failed = 1;
            return;
        }
        cm->pl = np;
        cm->capl = cap;
    }
    place *p = &cm->pl[cm->npl++];
    p->t = t;
    p->d = d;
    p->dt = dt;
    p->rows = rows;
    p->cols = cols;
    p->ld = ld;
    p->filled = 0;
}

static size_t esz(int dt) { return dt == CUK_BF16 ? 2 : 4; }

/* A tensor of its own: (rows, cols) contiguous. */
static void *lone(layout *L, const pi0_tensor *t, int dt, long long rows, long long cols) {
    void *d = lalloc(L, (size_t)(rows * cols) * esz(dt));
    lput(L, t, d, dt, rows, cols, cols);
    return d;
}

/* Build (or size, when L->base == 0) the device layout for the weights struct w. */
static void build_layout(cmodel *cm, const pi0_config *c, const pi0_weights *w, layout *L) {
    const long long W = c->vit_width, M = c->vit_mlp, p = c->patch_size, np = pi0_config_num_patches(c);
    const long long D = c->llm_width, F = c->llm_mlp, De = c->exp_width, Fe = c->exp_mlp, A = c->action_dim;
    const long long hd = c->head_dim, nh = c->num_heads, qd = nh * hd;
    cm->patch_k = (int)(3 * p * p);
    cm->patch_ld = (cm->patch_k + 7) & ~7;
    cm->patch_w = (bf *)lalloc(L, (size_t)(W * cm->patch_ld) * 2);
    lput(L, &w->patch_w, cm->patch_w, CUK_BF16, W, cm->patch_k, cm->patch_ld);
    cm->patch_b = (float *)lone(L, &w->patch_b, CUK_F32, 1, W);
    cm->pos_emb = (float *)lone(L, &w->pos_emb, CUK_F32, np, W);
    for (int i = 0; i < c->vit_depth; i++) {
        dvit *v = &cm->vit[i];
        const pi0_vit_layer *s = &w->vit[i];
        v->ln1_w = (float *)lone(L, &s->ln1_w, CUK_F32, 1, W);
        v->ln1_b = (float *)lone(L, &s->ln1_b, CUK_F32, 1, W);
        v->qkv_w = (bf *)lalloc(L, (size_t)(3 * W * W) * 2);
        lput(L, &s->q_w, v->qkv_w, CUK_BF16, W, W, W);
        lput(L, &s->k_w, v->qkv_w + W * W, CUK_BF16, W, W, W);
        lput(L, &s->v_w, v->qkv_w + 2 * W * W, CUK_BF16, W, W, W);
        v->qkv_b = (bf *)lalloc(L, (size_t)(3 * W) * 2);
        lput(L, &s->q_b, v->qkv_b, CUK_BF16, 1, W, W);
        lput(L, &s->k_b, v->qkv_b + W, CUK_BF16, 1, W, W);
        lput(L, &s->v_b, v->qkv_b + 2 * W, CUK_BF16, 1, W, W);
        v->o_w = (bf *)lone(L, &s->o_w, CUK_BF16, W, W);
        v->o_b = (float *)lone(L, &s->o_b, CUK_F32, 1, W);
        v->ln2_w = (float *)lone(L, &s->ln2_w, CUK_F32, 1, W);
        v->ln2_b = (float *)lone(L, &s->ln2_b, CUK_F32, 1, W);
        v->fc1_w = (bf *)lone(L, &s->fc1_w, CUK_BF16, M, W);
        v->fc1_b = (bf *)lone(L, &s->fc1_b, CUK_BF16, 1, M);
        v->fc2_w = (bf *)lone(L, &s->fc2_w, CUK_BF16, W, M);
        v->fc2_b = (float *)lone(L, &s->fc2_b, CUK_F32, 1, W);
    }
    cm->post_w = (float *)lone(L, &w->post_ln_w, CUK_F32, 1, W);
    cm->post_b = (float *)lone(L, &w->post_ln_b, CUK_F32, 1, W);
    cm->proj_w = (bf *)lone(L, &w->proj_w, CUK_BF16, D, W);
    cm->proj_b = (float *)lone(L, &w->proj_b, CUK_F32, 1, D);
    cm->embed = (bf *)lone(L, &w->embed, CUK_BF16, c->vocab_size, D);
    for (int e = 0; e < 2; e++) {
        const long long Dx = e ? De : D, Fx = e ? Fe : F;
        for (int i = 0; i < c->llm_depth; i++) {
            dgemma *g = e ? &cm->exp[i] : &cm->llm[i];
            const pi0_gemma_layer *s = e ? &w->exp[i] : &w->llm[i];
            g->attn_norm = (float *)lone(L, &s->attn_norm, CUK_F32, 1, Dx);
            g->ffn_norm = (float *)lone(L, &s->ffn_norm, CUK_F32, 1, Dx);
            g->qkv_w = (bf *)lalloc(L, (size_t)((qd + 2 * hd) * Dx) * 2);
            lput(L, &s->q_w, g->qkv_w, CUK_BF16, qd, Dx, Dx);
            lput(L, &s->k_w, g->qkv_w + qd * Dx, CUK_BF16, hd, Dx, Dx);
            lput(L, &s->v_w, g->qkv_w + (qd + hd) * Dx, CUK_BF16, hd, Dx, Dx);
            g->o_w = (bf *)lone(L, &s->o_w, CUK_BF16, Dx, qd);
            g->gu_w = (bf *)lalloc(L, (size_t)(2 * Fx * Dx) * 2);
            lput(L, &s->gate_w, g->gu_w, CUK_BF16, Fx, Dx, Dx);
            lput(L, &s->up_w, g->gu_w + Fx * Dx, CUK_BF16, Fx, Dx, Dx);
            g->down_w = (bf *)lone(L, &s->down_w, CUK_BF16, Dx, Fx);
        }
    }
    cm->exp_norm = (float *)lone(L, &w->exp_norm, CUK_F32, 1, De);
    cm->state_w = (float *)lone(L, &w->state_w, CUK_F32, De, A);
    cm->state_b = (float *)lone(L, &w->state_b, CUK_F32, 1, De);
    cm->ain_w = (float *)lone(L, &w->ain_w, CUK_F32, De, A);
    cm->ain_b = (float *)lone(L, &w->ain_b, CUK_F32, 1, De);
    cm->atm_in_w = (float *)lone(L, &w->atm_in_w, CUK_F32, De, 2 * De);
    cm->atm_in_b = (float *)lone(L, &w->atm_in_b, CUK_F32, 1, De);
    cm->atm_out_w = (float *)lone(L, &w->atm_out_w, CUK_F32, De, De);
    cm->atm_out_b = (float *)lone(L, &w->atm_out_b, CUK_F32, 1, De);
    cm->aout_w = (float *)lone(L, &w->aout_w, CUK_F32, A, De);
    cm->aout_b = (float *)lone(L, &w->aout_b, CUK_F32, 1, A);
    cm->fold_w = (float *)lalloc(L, (size_t)(De * A) * 4);
    cm->fold_b = (float *)lalloc(L, (size_t)De * 4);
}

static void cmodel_free(cmodel *cm) {
    if (!cm) return;
    if (cm->arena) cudaFree(cm->arena);
    if (cm->packed) cudaFree(cm->packed);
    free(cm->pl);
    free(cm->vit);
    free(cm->llm);
    free(cm->exp);
    free(cm);
}

static void cu_model_free(pi0_model *m) {
    cmodel_free((cmodel *)m->backend);
    m->backend = NULL;
}

/* Tiles of an unreduced split-K expert projection (N, K): 64 x 8 slices, else the automatic choice, else 0, 0. */
static void partial_tiles(int N, int K, int *bn, int *cs) {
    *bn = 64;
    *cs = 8;
    if (cuk_skinny_packed_tiles(N, K, CUK_SK_PARTIAL, 0, 0, bn, cs)) return;
    *bn = *cs = 0;
    cuk_skinny_packed_tiles(N, K, CUK_SK_PARTIAL, 0, 0, bn, cs);
}

/* Allocate cm, size and allocate the arena, record placements for w. */
static pi0_status cmodel_alloc(pi0_model *m, const pi0_weights *w, cmodel **out) {
    const pi0_config *c = &m->cfg;
    if (c->num_kv_heads != 1)
        return pi0_fail(PI0_ERR_UNSUPPORTED, "CUDA backend: num_kv_heads = %d (only 1 is supported)", c->num_kv_heads);
    if (c->num_heads * c->head_dim <= 0 || c->head_dim % 16 || c->head_dim > 256)
        return pi0_fail(PI0_ERR_UNSUPPORTED, "CUDA backend: head_dim %d (needs a multiple of 16, <= 256)", c->head_dim);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0)
        return pi0_fail(PI0_ERR_UNSUPPORTED, "CUDA backend: no CUDA device found");
    if (m->device < 0 || m->device >= n)
        return pi0_fail(PI0_ERR_INVALID_ARG, "CUDA device %d does not exist (%d found)", m->device, n);
    CU(cudaSetDevice(m->device));
    cmodel *cm = (cmodel *)calloc(1, sizeof *cm);
    if (!cm) return pi0_fail(PI0_ERR_OOM, "out of memory");
    cm->dev = m->device;
    cm->vit = (dvit *)calloc((size_t)c->vit_depth, sizeof *cm->vit);
    cm->llm = (dgemma *)calloc((size_t)c->llm_depth, sizeof *cm->llm);
    cm->exp = (dgemma *)calloc((size_t)c->llm_depth, sizeof *cm->exp);
    m->backend = cm; /* freed by model_free on failure */
    if (!cm->vit || !cm->llm || !cm->exp) return pi0_fail(PI0_ERR_OOM, "out of memory");
    /* the expert's o / down projections as unreduced split-K GEMMs: 64-row tiles x 8 K slices (128 CTAs; the
     * playground's best for both shapes, bench/NOTES.md item 26), else the automatic tiles (small configs) */
    partial_tiles(c->exp_width, c->num_heads * c->head_dim, &cm->xo_bn, &cm->xo_cs);
    partial_tiles(c->exp_width, c->exp_mlp, &cm->xd_bn, &cm->xd_cs);
    layout L = {0};
    L.cm = cm;
    build_layout(cm, c, w, &L);
    cm->arena_bytes = L.off;
    cudaError_t e = cudaMalloc((void **)&cm->arena, cm->arena_bytes);
    if (e != cudaSuccess) {
        cm->arena = NULL;
        return pi0_fail(PI0_ERR_OOM, "cudaMalloc of the %.2f GB weight arena failed: %s", cm->arena_bytes / 1e9,
                        cudaGetErrorString(e));
    }
    CU(cudaMemset(cm->arena, 0, cm->arena_bytes));
    layout L2 = {0};
    L2.cm = cm;
    L2.base = cm->arena;
    L2.record = 1;
    build_layout(cm, c, w, &L2);
    if (L2.failed) return pi0_fail(PI0_ERR_OOM, "out of memory");
    *out = cm;
    return PI0_OK;
}

/* Precompute the folded action-input weights (SPEC §6.3). */
static pi0_status fold_heads(cmodel *cm, const pi0_config *c) {
    const int De = c->exp_width, A = c->action_dim;
    /* fold_w[o][a] = sum_j atm_in_w[o][j] * ain_w[j][a] */
    CU(cuk_small_mm(0, De, A, De, cm->atm_in_w, 2 * De, 1, cm->ain_w, A, 1, NULL, NULL, 0, cm->fold_w, CUK_F32, A));
    /* fold_b[o] = sum_j ain_b[j] * atm_in_w[o][j] + atm_in_b[o] */
    CU(cuk_small_mm(0, 1, De, De, cm->ain_b, 0, 1, cm->atm_in_w, 1, 2 * De, cm->atm_in_b, NULL, 0, cm->fold_b, CUK_F32,
                    De));
    CU(cudaDeviceSynchronize());
    return PI0_OK;
}

/* The packed copies of the expert's o / down weights, derived once from the uploaded ones by the first session that
 * runs PI0_EXP_XPART (sessions of one model are made one after another; the model is read-only afterwards). */
static pi0_status pack_expert(cmodel *cm, const pi0_config *c) {
    const int qd = c->num_heads * c->head_dim, De = c->exp_width, Fe = c->exp_mlp, L = c->llm_depth;
    if (cm->packed || !cm->xo_bn || !cm->xd_bn) return PI0_OK;
    const size_t no = cuk_skinny_packed_elems(De, qd, CUK_SK_PARTIAL, 0, 0, cm->xo_bn, cm->xo_cs),
                 nd = cuk_skinny_packed_elems(De, Fe, CUK_SK_PARTIAL, 0, 0, cm->xd_bn, cm->xd_cs);
    const size_t bo = (no * 2 + 255) & ~(size_t)255, bd = (nd * 2 + 255) & ~(size_t)255;
    char *p = NULL;
    cudaError_t e = cudaMalloc((void **)&p, (size_t)L * (bo + bd));
    if (e != cudaSuccess)
        return pi0_fail(PI0_ERR_OOM, "cudaMalloc of %.1f MB of packed expert weights failed: %s",
                        (double)L * (bo + bd) / 1e6, cudaGetErrorString(e));
    for (int l = 0; l < L && e == cudaSuccess; l++) {
        dgemma *g = &cm->exp[l];
        g->o_wp = (bf *)(p + (size_t)l * (bo + bd));
        g->down_wp = (bf *)(p + (size_t)l * (bo + bd) + bo);
        e = cuk_skinny_pack(0, g->o_w, De, qd, CUK_SK_PARTIAL, 0, 0, cm->xo_bn, cm->xo_cs, g->o_wp);
        if (e == cudaSuccess)
            e = cuk_skinny_pack(0, g->down_w, De, Fe, CUK_SK_PARTIAL, 0, 0, cm->xd_bn, cm->xd_cs, g->down_wp);
    }
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        for (int l = 0; l < L; l++) cm->exp[l].o_wp = cm->exp[l].down_wp = NULL;
        cudaFree(p);
        return pi0_fail(PI0_ERR_BACKEND, "packing the expert weights failed: %s", cudaGetErrorString(e));
    }
    cm->packed = p;
    return PI0_OK;
}

static pi0_status upload_all(pi0_model *m, cmodel *cm) {
    const size_t stage_bytes = 64u << 20;
    void *stage = NULL;
    CU(cudaMalloc(&stage, stage_bytes));
    pi0_status st = PI0_OK;
    for (int i = 0; i < cm->npl && st == PI0_OK; i++) {
        place *p = &cm->pl[i];
        const pi0_tensor *t = p->t;
        long long n = p->rows * p->cols;
        if (!t->data) {
            st = pi0_fail(PI0_ERR_TENSOR, "CUDA upload: a weight tensor (%lld elements) has no host data", n);
            break;
        }
        if (pi0_tensor_numel(t) != n) {
            st = pi0_fail(PI0_ERR_TENSOR, "CUDA upload: tensor has %lld elements, expected %lld",
                          (long long)pi0_tensor_numel(t), n);
            break;
        }
        int sdt;
        if (t->dtype == PI0_DT_BF16) sdt = CUK_BF16;
        else if (t->dtype == PI0_DT_F32) sdt = CUK_F32;
        else {
            st = pi0_fail(PI0_ERR_TENSOR, "CUDA upload: weight dtype %s is not F32 or BF16", pi0_dtype_name(t->dtype));
            break;
        }
        long long chunk = (long long)(stage_bytes / esz(sdt));
        for (long long i0 = 0; i0 < n && st == PI0_OK; i0 += chunk) {
            long long cnt = n - i0 < chunk ? n - i0 : chunk;
            cudaError_t e = cudaMemcpy(stage, (const char *)t->data + i0 * esz(sdt), (size_t)cnt * esz(sdt),
                                       cudaMemcpyHostToDevice);
            if (e == cudaSuccess) e = cuk_convert(0, stage, sdt, p->d, p->dt, i0, cnt, p->cols, p->ld);
            if (e == cudaSuccess) e = cudaStreamSynchronize(0);
            if (e != cudaSuccess)
                st = pi0_fail(PI0_ERR_BACKEND, "CUDA upload: cudaMemcpy/cuk_convert failed: %s", cudaGetErrorString(e));
        }
        p->filled = 1;
    }
    cudaFree(stage);
    return st;
}

static pi0_status cu_model_init(pi0_model *m) {
    cmodel *cm = NULL;
    PI0_TRY(cmodel_alloc(m, &m->w, &cm));
    PI0_TRY(upload_all(m, cm));
    return fold_heads(cm, &m->cfg);
}

static pi0_status cu_model_init_random(pi0_model *m, uint64_t seed) {
    const pi0_config *c = &m->cfg;
    pi0_weights ws;
    if (pi0_weights_build(&ws, c)) return pi0_fail(PI0_ERR_OOM, "out of memory");
    cmodel *cm = NULL;
    pi0_status st = cmodel_alloc(m, &ws, &cm);
    pi0_tensor_spec *specs = NULL;
    int n = 0;
    if (st == PI0_OK && pi0_tensor_table(c, &ws, &specs, &n)) st = pi0_fail(PI0_ERR_OOM, "tensor table: out of memory");
    for (int i = 0; i < n && st == PI0_OK; i++) {
        const pi0_tensor_spec *sp = &specs[i];
        if (!sp->dst || sp->dst == &ws.llm_norm) continue; /* unused at inference: expert lm_head, LLM final norm */
        place *p = NULL;
        for (int j = 0; j < cm->npl; j++)
            if (cm->pl[j].t == sp->dst) {
                p = &cm->pl[j];
                break;
            }
        if (!p) {
            st = pi0_fail(PI0_ERR_BACKEND, "CUDA random init: no device placement for %s", sp->name);
            break;
        }
        long long numel = pi0_spec_numel(sp);
        if (numel != p->rows * p->cols) {
            st = pi0_fail(PI0_ERR_BACKEND, "CUDA random init: %s has %lld elements, placement %lld", sp->name, numel,
                          p->rows * p->cols);
            break;
        }
        cudaError_t e = cuk_random(0, p->d, p->dt, numel, p->cols, p->ld, pi0_spec_seed(seed, sp->name), sp->mean, sp->std);
        if (e != cudaSuccess) st = pi0_fail(PI0_ERR_BACKEND, "cuk_random(%s) failed: %s", sp->name, cudaGetErrorString(e));
        p->filled = 1;
    }
    for (int j = 0; j < cm->npl && st == PI0_OK; j++)
        if (!cm->pl[j].filled) st = pi0_fail(PI0_ERR_BACKEND, "CUDA random init: placement %d was not generated", j);
    free(specs);
    pi0_weights_free(&ws);
    if (st == PI0_OK) {
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) st = pi0_fail(PI0_ERR_BACKEND, "random weight generation: %s", cudaGetErrorString(e));
    }
    if (st == PI0_OK) st = fold_heads(cm, c);
    /* host views stay shape-only (data NULL): the weights live on the GPU */
    return st;
}

/* ------------------------------------------------------------------ session */

typedef struct {
    cudaStream_t st;
    pi0_gemm_ctx *g;
    /* ViT attention: one forked stream (and cuBLASLt context/workspace) per camera */
    cudaStream_t vst[PI0_NUM_CAMERAS];
    pi0_gemm_ctx *vg[PI0_NUM_CAMERAS];
    cudaEvent_t ev_fork, ev_join[PI0_NUM_CAMERAS];
    void *vws[PI0_NUM_CAMERAS];
    cudaEvent_t ev[4];
    char *buf;
    size_t buf_bytes;
    int np, Pmax, Smax, H, steps, maxtok, img_elems;
    /* ViT */
    float *img;      /* (3, S, S, 3) */
    bf *patches;     /* (3*np, patch_ld) */
    float *pf32;     /* (3*np, W) patch embedding */
    float *vx;       /* (3*np, W) residual */
    bf *vh, *vqkv, *vo, *vmlp;
    /* attention scratch */
    float *logits;
    bf *probs;
    /* Gemma (prefix and expert share the scratch) */
    float *x;        /* (Pmax, D) prefix residual */
    float *xe;       /* (H, De) expert residual */
    bf *h, *qkv, *qr, *o, *ffn, *act;
    bf *kc, *vc;     /* (L, Srows, hd): Srows = Smax rounded up for the attention kernel's 64-key chunks */
    int Srows;
    float *apart;    /* split-key attention partials */
    float *xpart;    /* (cs, T, De) the expert o / down product waiting for the next RMSNorm to add it to the residual:
                      * cuBLASLt's f32 product as one partial (resid_in_norm, the default) or cs split-K partials (xpart_on) */
    int resid_in_norm; /* expert o / down: cuBLASLt f32 product into xpart (one partial) added by the next norm */
    int xpart_on;    /* expert o / down as CUK_SK_PARTIAL GEMMs summed into the residual by the next RMSNorm */
    int l2_kv;       /* K/V cache in a persisting L2 access-policy window (PI0_EXP_L2_KV): kvwin on every kernel */
    cudaAccessPolicyWindow kvwin;
    unsigned skip;   /* timing diagnostics: ops left out (bit i: op i of PI0_EXP_SKIP_SHIFT's list) of skip_stage */
    int skip_stage;  /* 0 expert, 1 prefill, 2 ViT */
    int vit_chains;  /* ViT: one chain of layers per camera on its own stream (PI0_EXP_VIT_CHAINS) */
    int xpend, xpend_T; /* partials (count, their T) waiting in xpart to be added to the expert residual xe */
    int skinny;      /* cuk_skinny_linear for T <= 64 (expert, state token); opt-in: PI0_CUDA_SKINNY=1 */
    int pdl;         /* CUK_PDL or 0: programmatic dependent launch along the expert chain (PI0_EXP_PDL) */
    size_t apart_floats;
    int gemm_attn;   /* 1: cuBLASLt QK^T + softmax + PV (default); 0: fused kernel (PI0_CUDA_FUSED_ATTN=1) */
    int mqa_attn;    /* expert (T <= 64) attention through cuk_attention_mqa (default; off: PI0_EXP_EXPERT_GEMM_ATTN) */
    int mqa_merge;   /* CUK_MQA_MERGE_COL4 (default) or CUK_MQA_MERGE_ROW (PI0_EXP_MQA_MERGE_ROW) */
    int mqa_rows;    /* cuk_attention_mqa tile_rows: CUK_MQA_FLASH_K32 (default), another CUK_MQA_FLASH_*, 32 or 64 (v13) */
    int flash_attn;  /* ViT and prefill (T > 64) attention through cuk_flash_attn (default; off: PI0_EXP_NO_FLASH_ATTN) */
    int flash_variant; /* ViT, prefill: CUK_FLASH_WG (default) or 0 (the mma.sync kernel, PI0_EXP_FLASH_MMA) */
    float *rope_c, *rope_s; /* (Smax, hd/2) */
    /* suffix / flow */
    float *xa, *vel, *hs, *yf, *state;
    int32_t *tok;
    float *ctab, *ctmp, *temb; /* (steps, De), (De), (steps+1, De) */
    float *outf;     /* f32 staging for stage outputs */
    void *tune;      /* GEMM autotuning scratch */
    /* PI0_CUDA_OPTIME=1: per-op event timing in profiled (eager) runs, printed at session end */
    int optime, nmark, nruns_opt;
    cudaEvent_t *mev;
    const char **mtag, **mop;
    int nb;
    const char *btag[128], *bop[128];
    double bms[128];
    long bcnt[128];
    size_t tune_bytes;
    size_t outf_elems;
    /* pinned host staging */
    float *h_img, *h_state, *h_noise, *h_act;
    int32_t *h_tok;
    /* state */
    int P;           /* prefix length after prefill, -1 before */
    cudaGraphExec_t exec;
    int g_nv, g_ntxt;
} csess;

static size_t round8(size_t x) { return (x + 7) & ~(size_t)7; }

static void optime_report(csess *s);
static void csess_free(csess *s) {
    if (!s) return;
    if (s->optime) {
        optime_report(s);
        for (int i = 0; i < 4096; i++)
            if (s->mev && s->mev[i]) cudaEventDestroy(s->mev[i]);
        free(s->mev);
        free(s->mtag);
        free(s->mop);
    }
    if (s->exec) cudaGraphExecDestroy(s->exec);
    if (s->l2_kv) { /* give the device-wide persisting L2 set-aside back */
        cudaCtxResetPersistingL2Cache();
        cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 0);
    }
    pi0_gemm_ctx_free(s->g);
    for (int c = 0; c < PI0_NUM_CAMERAS; c++) {
        pi0_gemm_ctx_free(s->vg[c]);
        if (s->vst[c]) cudaStreamDestroy(s->vst[c]);
        if (s->ev_join[c]) cudaEventDestroy(s->ev_join[c]);
    }
    if (s->ev_fork) cudaEventDestroy(s->ev_fork);
    for (int i = 0; i < 4; i++)
        if (s->ev[i]) cudaEventDestroy(s->ev[i]);
    if (s->st) cudaStreamDestroy(s->st);
    if (s->buf) cudaFree(s->buf);
    if (s->h_img) cudaFreeHost(s->h_img);
    if (s->h_state) cudaFreeHost(s->h_state);
    if (s->h_noise) cudaFreeHost(s->h_noise);
    if (s->h_act) cudaFreeHost(s->h_act);
    if (s->h_tok) cudaFreeHost(s->h_tok);
    free(s);
}

static void cu_session_free(pi0_session *ss) {
    csess *s = (csess *)ss->backend;
    if (s) {
        cudaSetDevice(((cmodel *)ss->model->backend)->dev);
        csess_free(s);
    }
    ss->backend = NULL;
}

typedef struct {
    size_t off;
    char *base;
} salloc;
static void *sa(salloc *a, size_t bytes) {
    size_t o = (a->off + 255) & ~(size_t)255;
    a->off = o + bytes;
    return (void *)((uintptr_t)a->base + o);
}

static void carve(csess *s, const pi0_config *c, cmodel *cm, salloc *a) {
    const size_t W = c->vit_width, M = c->vit_mlp, D = c->llm_width, De = c->exp_width;
    const size_t F = c->llm_mlp, Fe = c->exp_mlp, hd = c->head_dim, nh = c->num_heads, A = c->action_dim;
    const size_t np = s->np, V = 3 * np, H = (size_t)s->H + 1 /* + the state token */, L = c->llm_depth;
    const size_t R = (size_t)s->Pmax > H ? (size_t)s->Pmax : H;
    const size_t Dm = D > De ? D : De, Fm = F > Fe ? F : Fe;
    s->img = (float *)sa(a, (size_t)s->img_elems * 3 * 4);
    s->patches = (bf *)sa(a, V * cm->patch_ld * 2);
    s->pf32 = (float *)sa(a, V * W * 4);
    s->vx = (float *)sa(a, V * W * 4);
    s->vh = (bf *)sa(a, V * W * 2);
    s->vqkv = (bf *)sa(a, V * 3 * W * 2);
    s->vo = (bf *)sa(a, V * W * 2);
    s->vmlp = (bf *)sa(a, V * M * 2);
    size_t lg = 3 * (size_t)c->vit_heads * np * round8(np);
    size_t lp = (size_t)s->Pmax * nh * round8(s->Pmax);
    size_t le = H * nh * round8(s->Smax);
    size_t l1 = nh * round8(s->Smax);
    if (lp > lg) lg = lp;
    if (le > lg) lg = le;
    if (l1 > lg) lg = l1;
    s->logits = (float *)sa(a, lg * 4);
    s->probs = (bf *)sa(a, lg * 2);
    s->x = (float *)sa(a, (size_t)s->Pmax * D * 4);
    s->xe = (float *)sa(a, H * De * 4);
    s->h = (bf *)sa(a, R * Dm * 2);
    s->qkv = (bf *)sa(a, R * (nh + 2) * hd * 2);
    s->qr = (bf *)sa(a, R * nh * hd * 2);
    s->o = (bf *)sa(a, R * nh * hd * 2);
    s->ffn = (bf *)sa(a, R * 2 * Fm * 2);
    s->act = (bf *)sa(a, R * Fm * 2);
    s->Srows = (int)(((size_t)s->Smax + 63) / 64 * 64 + 64);
    s->kc = (bf *)sa(a, L * s->Srows * hd * 2);
    s->vc = (bf *)sa(a, L * s->Srows * hd * 2);
    s->apart_floats = (H > nh ? H : nh) * nh * (hd + 2) * 16;
    {   /* cuk_attention_mqa: one partial per 64-key chunk for the H (+ state) expert tokens */
        size_t mq = (size_t)(s->Srows / 64) * H * nh * (hd + 2);
        if (mq > s->apart_floats) s->apart_floats = mq;
    }
    s->apart = (float *)sa(a, s->apart_floats * 4);
    {
        const size_t xcs = cm->xo_cs > cm->xd_cs ? cm->xo_cs : cm->xd_cs;
        s->xpart = (float *)sa(a, (xcs > 0 ? xcs : 1) * H * De * 4);
    }
    s->rope_c = (float *)sa(a, (size_t)s->Smax * hd / 2 * 4);
    s->rope_s = (float *)sa(a, (size_t)s->Smax * hd / 2 * 4);
    s->xa = (float *)sa(a, H * A * 4);
    s->vel = (float *)sa(a, H * A * 4);
    s->hs = (float *)sa(a, H * De * 4);
    s->yf = (float *)sa(a, H * De * 4);
    s->state = (float *)sa(a, A * 4);
    s->tok = (int32_t *)sa(a, (size_t)(s->maxtok > 0 ? s->maxtok : 1) * 4);
    s->ctab = (float *)sa(a, (size_t)s->steps * De * 4);
    s->ctmp = (float *)sa(a, De * 4);
    s->temb = (float *)sa(a, (size_t)(s->steps + 1) * De * 4);
    /* autotuning scratch: the largest GEMM output */
    size_t tb = R * 2 * Fm * 2;
    if (lg * 4 > tb) tb = lg * 4;
    if (V * M * 2 > tb) tb = V * M * 2;
    if (V * 3 * W * 2 > tb) tb = V * 3 * W * 2;
    if ((size_t)s->Pmax * D * 4 > tb) tb = (size_t)s->Pmax * D * 4;
    if (V * W * 4 > tb) tb = V * W * 4;
    s->tune_bytes = tb;
    s->tune = sa(a, tb);
    size_t of = np * D;
    if ((size_t)s->Pmax * hd > of) of = (size_t)s->Pmax * hd;
    s->outf_elems = of;
    s->outf = (float *)sa(a, of * 4);
}

#define HOSTALLOC(p, n)                                                                                 \
    do {                                                                                                \
        cudaError_t _e = cudaMallocHost((void **)&(p), (n));                                            \
        if (_e != cudaSuccess) {                                                                        \
            csess_free(s);                                                                              \
            return pi0_fail(PI0_ERR_OOM, "cudaMallocHost(%zu) failed: %s", (size_t)(n), cudaGetErrorString(_e)); \
        }                                                                                               \
    } while (0)

#define SCU(call)                                                                                         \
    do {                                                                                                  \
        cudaError_t _e = (call);                                                                          \
        if (_e != cudaSuccess) {                                                                          \
            csess_free(s);                                                                                \
            return pi0_fail(PI0_ERR_BACKEND, "%s failed: %s", #call, cudaGetErrorString(_e));             \
        }                                                                                                 \
    } while (0)

static pi0_status cu_session_init(pi0_session *ss) {
    const pi0_config *c = &ss->model->cfg;
    cmodel *cm = (cmodel *)ss->model->backend;
    CU(cudaSetDevice(cm->dev));
    csess *s = (csess *)calloc(1, sizeof *s);
    if (!s) return pi0_fail(PI0_ERR_OOM, "out of memory");
    s->P = -1;
    s->g_nv = s->g_ntxt = -1;
    s->np = pi0_config_num_patches(c);
    s->maxtok = ss->max_tokens;
    s->Pmax = PI0_NUM_CAMERAS * s->np + s->maxtok;
    s->H = ss->horizon;
    s->steps = ss->num_steps;
    s->Smax = s->Pmax + 1 + s->H;
    s->img_elems = c->image_size * c->image_size * 3;
    SCU(cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking));
    for (int i = 0; i < 4; i++) SCU(cudaEventCreate(&s->ev[i]));
    SCU(cudaEventCreateWithFlags(&s->ev_fork, cudaEventDisableTiming));
    for (int c = 0; c < PI0_NUM_CAMERAS; c++) {
        SCU(cudaStreamCreateWithFlags(&s->vst[c], cudaStreamNonBlocking));
        SCU(cudaEventCreateWithFlags(&s->ev_join[c], cudaEventDisableTiming));
    }
    salloc a = {0, NULL};
    carve(s, c, cm, &a);
    const size_t ws_bytes = 32u << 20, vws_bytes = 4u << 20;
    size_t total = a.off + 256 + ws_bytes + PI0_NUM_CAMERAS * (vws_bytes + 256);
    cudaError_t e = cudaMalloc((void **)&s->buf, total);
    if (e != cudaSuccess) {
        s->buf = NULL;
        csess_free(s);
        return pi0_fail(PI0_ERR_OOM, "cudaMalloc of %.1f MB session buffers failed: %s", total / 1e6, cudaGetErrorString(e));
    }
    s->buf_bytes = total;
    SCU(cudaMemset(s->buf, 0, total));
    salloc b = {0, s->buf};
    carve(s, c, cm, &b);
    void *ws = sa(&b, ws_bytes);
    pi0_status pst = pi0_gemm_ctx_create(&s->g, ws, ws_bytes);
    for (int c = 0; c < PI0_NUM_CAMERAS && pst == PI0_OK; c++) {
        s->vws[c] = sa(&b, vws_bytes);
        pst = pi0_gemm_ctx_create(&s->vg[c], s->vws[c], vws_bytes);
    }
    if (pst != PI0_OK) {
        csess_free(s);
        return pst;
    }
    /* timing-based algorithm choice for the compute-bound GEMMs (ViT, prefill: >= 256 tokens), where the
     * heuristic's tiles leave SMs idle (N = 1152 / 2048 outputs: 54-112 tiles on 132 SMs). Few-token
     * GEMMs keep the heuristic: timed back to back their weights sit in L2 and the tuner prefers
     * algorithms that lose once the weights stream from DRAM (21.6 vs 21.0 ms E2E, bench/NOTES.md);
     * PI0_EXP_GEMM_TUNE tunes those too, PI0_EXP_NO_TUNE none. */
    if (!(ss->experimental & PI0_EXP_NO_TUNE))
        pi0_gemm_ctx_set_tuning(s->g, s->tune, s->tune_bytes, (ss->experimental & PI0_EXP_GEMM_TUNE) ? 0 : 256);
    /* attention: cuBLASLt QK^T -> softmax -> PV by default; the fused WMMA kernel (cuk_attention) is
     * correct but measured slower on the H100 (bench/NOTES.md), so it is opt-in: PI0_EXP_FUSED_ATTN */
    s->gemm_attn = !(ss->experimental & PI0_EXP_FUSED_ATTN);
    /* the hand-written skinny GEMM is correct but measured slower than cuBLASLt (bench/NOTES.md): opt-in */
    s->skinny = (ss->experimental & PI0_EXP_SKINNY_GEMM) != 0;
    /* expert attention: the fused MQA kernel (one K/V chunk per CTA for all 8 heads x T tokens) measured
     * E2E 19.46 vs 20.42 ms against cuBLASLt QK^T + softmax + PV (bench/NOTES.md, v13c): default */
    s->mqa_attn = !(ss->experimental & PI0_EXP_EXPERT_GEMM_ATTN);
    s->mqa_merge = (ss->experimental & PI0_EXP_MQA_MERGE_ROW) ? CUK_MQA_MERGE_ROW : CUK_MQA_MERGE_COL4;
    /* v2 one-launch flash kernel (key splits merged inside a thread-block cluster): 10.9 vs 15.8 us per call
     * (R = 408, S = 839) and 7.4 vs 11.0 us (R = 88, S = 311) against the v13 32-row path in the same playground
     * run (bench/results/2026-11-24-h100-mqa-v2-playground.txt); v13: 32-row CTAs (2 per SM, 182 CTAs) measured
     * E2E 19.31 vs 19.69 ms with 64 (v13d); the splits' partials merged from bf16: E2E -0.26 ms against f32 in
     * interleaved A/B blocks, and with them 32-key chunks (16 splits) -0.17 ms against 64 (bench/NOTES.md item 38) */
    s->mqa_rows = (ss->experimental & PI0_EXP_MQA_ROWS64)  ? 64
                  : (ss->experimental & PI0_EXP_MQA_V13)   ? 32
                  : (ss->experimental & PI0_EXP_MQA_PUSH2) ? CUK_MQA_FLASH_PUSH2
                  : (ss->experimental & PI0_EXP_MQA_F32)   ? CUK_MQA_FLASH_F32
                  : (ss->experimental & PI0_EXP_MQA_K64)   ? CUK_MQA_FLASH
                                                           : CUK_MQA_FLASH_K32;
    /* fused flash attention for the ViT (all cameras x heads in one launch) and the prefill
     * (dev/cuda/attention_flash.cu, bench/results/2026-11-24-h100-flash-attn-playground.txt);
     * shapes it does not take fall back to cuBLASLt QK^T + softmax + PV */
    s->flash_attn = !(ss->experimental & PI0_EXP_NO_FLASH_ATTN);
    /* ViT (hd 72) and prefill (hd 256): the wgmma kernel; prefill alone: E2E 17.36 vs 17.52 ms with the mma.sync
     * one (bench/NOTES.md item 23) */
    s->flash_variant = (ss->experimental & PI0_EXP_FLASH_MMA) ? 0 : CUK_FLASH_WG;
    /* programmatic dependent launch along the expert's kernel chain (RMSNorm, streaming GEMM, MQA attention):
     * each kernel starts streaming its weights while its predecessor still runs */
    s->pdl = (ss->experimental & PI0_EXP_PDL) ? CUK_PDL : 0;
    /* the expert's o / down projections as unreduced split-K GEMMs summed by the next RMSNorm: faster per call
     * eagerly, but E2E 17.53 vs 17.28 ms in the graph (bench/NOTES.md item 27): opt-in */
    s->xpart_on = (ss->experimental & PI0_EXP_XPART) != 0;
    if (s->xpart_on) {
        pi0_status pst2 = pack_expert(cm, c);
        if (pst2 != PI0_OK) {
            csess_free(s);
            return pst2;
        }
    }
    /* the expert's o / down residual added by the next RMSNorm from cuBLASLt's f32 product (beta 0): E2E -0.04 and
     * -0.07 ms against the beta = 1 epilogue in interleaved A/B blocks (bench/NOTES.md items 34, 38); the opt-in XPART
     * and SKINNY paths keep their own residual handling */
    s->resid_in_norm = !(ss->experimental & PI0_EXP_RESID_EPILOGUE) && !s->xpart_on && !s->skinny;
    s->vit_chains = (ss->experimental & PI0_EXP_VIT_CHAINS) != 0;
    s->skip = (ss->experimental >> PI0_EXP_SKIP_SHIFT) & 0x1ffu;
    s->skip_stage = (int)((ss->experimental >> PI0_EXP_SKIP_STAGE_SHIFT) & 3u);
    if (ss->experimental & PI0_EXP_L2_KV) {
        /* the expert streams 0.62 GB of weights per step through the 50 MB L2, evicting the 16 MB K/V cache it
         * attends to in every layer; a persisting window keeps the K/V lines */
        int maxp = 0, maxw = 0;
        SCU(cudaDeviceGetAttribute(&maxp, cudaDevAttrMaxPersistingL2CacheSize, cm->dev));
        SCU(cudaDeviceGetAttribute(&maxw, cudaDevAttrMaxAccessPolicyWindowSize, cm->dev));
        const size_t kvb = (size_t)c->llm_depth * s->Srows * c->head_dim * 2 * 2; /* kc and vc are adjacent */
        size_t win = kvb < (size_t)maxw ? kvb : (size_t)maxw, pers = win < (size_t)maxp ? win : (size_t)maxp;
        if (win > 0 && pers > 0) {
            SCU(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, pers));
            s->kvwin.base_ptr = s->kc;
            s->kvwin.num_bytes = win;
            s->kvwin.hitRatio = (float)pers / (float)win;
            s->kvwin.hitProp = cudaAccessPropertyPersisting;
            s->kvwin.missProp = cudaAccessPropertyStreaming;
            cudaStreamAttrValue v;
            memset(&v, 0, sizeof v);
            v.accessPolicyWindow = s->kvwin;
            SCU(cudaStreamSetAttribute(s->st, cudaStreamAttributeAccessPolicyWindow, &v));
            s->l2_kv = 1;
        }
    }
    if (s->vit_chains && !(ss->experimental & PI0_EXP_NO_TUNE)) /* the chains' 256-token GEMMs are tuned too */
        for (int c = 0; c < PI0_NUM_CAMERAS; c++) pi0_gemm_ctx_set_tuning(s->vg[c], s->tune, s->tune_bytes, 256);
    if ((ss->experimental & PI0_EXP_OP_TIMES) && ss->profile_stages) {
        s->optime = 1;
        s->mev = (cudaEvent_t *)calloc(4096, sizeof(cudaEvent_t));
        s->mtag = (const char **)calloc(4096, sizeof(char *));
        s->mop = (const char **)calloc(4096, sizeof(char *));
        if (!s->mev || !s->mtag || !s->mop) {
            csess_free(s);
            return pi0_fail(PI0_ERR_OOM, "out of memory");
        }
        for (int i = 0; i < 4096; i++) SCU(cudaEventCreate(&s->mev[i]));
    }
    const int A = c->action_dim, De = c->exp_width, hd = c->head_dim, half = hd / 2;
    HOSTALLOC(s->h_img, (size_t)s->img_elems * 3 * 4);
    HOSTALLOC(s->h_state, (size_t)A * 4);
    HOSTALLOC(s->h_noise, (size_t)s->H * A * 4);
    HOSTALLOC(s->h_act, (size_t)s->H * A * 4);
    HOSTALLOC(s->h_tok, (size_t)(s->maxtok > 0 ? s->maxtok : 1) * 4);
    /* RoPE tables (double -> f32) */
    size_t nr = (size_t)s->Smax * half;
    float *tc = (float *)malloc(nr * 4), *ts = (float *)malloc(nr * 4);
    float *temb = (float *)malloc((size_t)s->steps * De * 4), *times = (float *)malloc((size_t)s->steps * 4);
    if (!tc || !ts || !temb || !times) {
        free(tc); free(ts); free(temb); free(times);
        csess_free(s);
        return pi0_fail(PI0_ERR_OOM, "out of memory");
    }
    for (int p = 0; p < s->Smax; p++)
        for (int i = 0; i < half; i++) {
            double ang = (double)p * pi0_rope_inv_freq(i, hd);
            tc[(size_t)p * half + i] = (float)cos(ang);
            ts[(size_t)p * half + i] = (float)sin(ang);
        }
    pi0_time_schedule(s->steps, times);
    for (int k = 0; k < s->steps; k++) pi0_time_embedding(times[k], De, temb + (size_t)k * De);
    e = cudaMemcpy(s->rope_c, tc, nr * 4, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(s->rope_s, ts, nr * 4, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(s->temb, temb, (size_t)s->steps * De * 4, cudaMemcpyHostToDevice);
    free(tc); free(ts); free(temb); free(times);
    SCU(e);
    /* per-step time biases c_k = fold_b + atm_in_w[:, De:] @ temb_k */
    for (int k = 0; k < s->steps; k++)
        SCU(cuk_small_mm(s->st, 1, De, De, s->temb + (size_t)k * De, 0, 1, cm->atm_in_w + De, 1, 2 * De, cm->fold_b,
                         NULL, 0, s->ctab + (size_t)k * De, CUK_F32, De));
    SCU(cudaStreamSynchronize(s->st));
    ss->backend = s;
    return PI0_OK;
}

/* ------------------------------------------------------------------ forward pieces */

typedef struct {
    const pi0_config *c;
    cmodel *cm;
    csess *s;
    cudaStream_t st;
} fctx;

static void mark(fctx *f, const char *tag, const char *op) {
    csess *s = f->s;
    if (!s->optime || s->nmark >= 4096) return;
    cudaStreamCaptureStatus cs;
    if (cudaStreamIsCapturing(f->st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return;
    cudaEventRecord(s->mev[s->nmark], f->st);
    s->mtag[s->nmark] = tag;
    s->mop[s->nmark] = op;
    s->nmark++;
}

/* after a synchronised profiled run: fold the marks into per-(tag, op) buckets */
static void optime_collect(csess *s) {
    for (int i = 1; i < s->nmark; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, s->mev[i - 1], s->mev[i]) != cudaSuccess) continue;
        int b = 0;
        for (; b < s->nb; b++)
            if (!strcmp(s->btag[b], s->mtag[i]) && !strcmp(s->bop[b], s->mop[i])) break;
        if (b == s->nb) {
            if (s->nb == 128) continue;
            s->btag[b] = s->mtag[i];
            s->bop[b] = s->mop[i];
            s->bms[b] = 0;
            s->bcnt[b] = 0;
            s->nb++;
        }
        s->bms[b] += ms;
        s->bcnt[b]++;
    }
    s->nmark = 0;
    s->nruns_opt++;
}

static void optime_report(csess *s) {
    if (!s->nruns_opt) return;
    pi0_log(PI0_LOG_INFO, "PI0_CUDA_OPTIME: per-op device time, mean over %d profiled runs", s->nruns_opt);
    pi0_log(PI0_LOG_INFO, "  %-8s %-12s %10s %8s %10s", "stage", "op", "ms/run", "calls", "us/call");
    for (int b = 0; b < s->nb; b++)
        pi0_log(PI0_LOG_INFO, "  %-8s %-12s %10.4f %8ld %10.2f", s->btag[b], s->bop[b], s->bms[b] / s->nruns_opt,
                s->bcnt[b] / s->nruns_opt, 1e3 * s->bms[b] / (double)(s->bcnt[b] ? s->bcnt[b] : 1));
}

/*
 * The SigLIP layers over cameras [cam0, cam0 + ncam) (their rows of the ViT scratch) on stream st with GEMM context g.
 * chain: st is one of several concurrent per-camera chains (the unfused attention fallback then stays on st).
 */
static pi0_status vit_layers(fctx *f, cudaStream_t st, pi0_gemm_ctx *g, int cam0, int ncam, int chain) {
    const pi0_config *c = f->c;
    cmodel *cm = f->cm;
    csess *s = f->s;
    const int W = c->vit_width, M = c->vit_mlp, np = s->np, T = ncam * np, nhv = c->vit_heads, vhd = W / nhv;
    const int ldl = (int)round8(np);
    const size_t r0 = (size_t)cam0 * np;
    float *vx = s->vx + r0 * W;
    bf *vh = s->vh + r0 * W, *vqkv = s->vqkv + r0 * 3 * W, *vo = s->vo + r0 * W, *vmlp = s->vmlp + r0 * M;
    const float scale = 1.f / sqrtf((float)vhd);
    const unsigned skip = s->skip_stage == 2 ? s->skip : 0; /* timing diagnostics */
#define SKIPPED(op) ((skip >> (op)) & 1u)
    for (int l = 0; l < c->vit_depth; l++) {
        const dvit *v = &cm->vit[l];
        if (!SKIPPED(0)) CU(cuk_layernorm(st, vx, v->ln1_w, v->ln1_b, vh, T, W, kEps));
        mark(f, "vit", "ln");
        if (!SKIPPED(1))
            PI0_TRY(pi0_linear(g, st, T, 3 * W, W, vh, W, GEMM_BF16, v->qkv_w, W, GEMM_BF16, vqkv, 3 * W, GEMM_BF16,
                               0.f, GEMM_EPI_BIAS, v->qkv_b));
        mark(f, "vit", "qkv");
        /* attention: all cameras x heads in one fused flash-attention launch; fallback (shape not taken, or
         * PI0_EXP_NO_FLASH_ATTN): each camera's cuBLASLt QK^T + softmax + PV on its own forked stream (in a
         * per-camera chain: on the chain's stream) */
        cudaError_t fe = SKIPPED(2) ? cudaSuccess : cudaErrorInvalidValue;
        if (s->flash_attn && !SKIPPED(2)) {
            fe = cuk_flash_attn_vit(st, vqkv, ncam, np, nhv, vhd, scale, vo, s->flash_variant);
            if (fe != cudaSuccess && fe != cudaErrorInvalidValue)
                return pi0_fail(PI0_ERR_BACKEND, "cuk_flash_attn_vit(ncam=%d hd=%d) failed: %s", ncam, vhd,
                                cudaGetErrorString(fe));
        }
        if (fe != cudaSuccess && !chain) CU(cudaEventRecord(s->ev_fork, st));
        for (int cam = 0; cam < ncam && fe != cudaSuccess; cam++) {
            cudaStream_t cs = chain ? st : s->vst[cam];
            pi0_gemm_ctx *cg = chain ? g : s->vg[cam];
            if (!chain) CU(cudaStreamWaitEvent(cs, s->ev_fork, 0));
            const bf *base = vqkv + (size_t)cam * np * 3 * W;
            float *lg = s->logits + (size_t)(cam0 + cam) * nhv * np * ldl;
            bf *pr = s->probs + (size_t)(cam0 + cam) * nhv * np * ldl;
            pi0_gemm_args a;
            memset(&a, 0, sizeof a);
            a.m = np; a.n = np; a.k = vhd;
            a.A = base + W; a.lda = 3 * W; a.opA = 1; a.ta = GEMM_BF16;
            a.B = base; a.ldb = 3 * W; a.opB = 0; a.tb = GEMM_BF16;
            a.C = lg; a.ldc = ldl; a.tc = GEMM_F32;
            a.alpha = scale; a.beta = 0.f;
            a.batch = nhv; a.sA = vhd; a.sB = vhd; a.sC = (long long)np * ldl;
            PI0_TRY(pi0_gemm(cg, cs, &a));
            CU(cuk_softmax(cs, lg, ldl, pr, ldl, nhv * np, np));
            memset(&a, 0, sizeof a);
            a.m = vhd; a.n = np; a.k = np;
            a.A = base + 2 * W; a.lda = 3 * W; a.opA = 0; a.ta = GEMM_BF16;
            a.B = pr; a.ldb = ldl; a.opB = 0; a.tb = GEMM_BF16;
            a.C = vo + (size_t)cam * np * W; a.ldc = W; a.tc = GEMM_BF16;
            a.alpha = 1.f; a.beta = 0.f;
            a.batch = nhv; a.sA = vhd; a.sB = (long long)np * ldl; a.sC = vhd;
            PI0_TRY(pi0_gemm(cg, cs, &a));
            if (!chain) CU(cudaEventRecord(s->ev_join[cam], cs));
        }
        for (int cam = 0; cam < ncam && fe != cudaSuccess && !chain; cam++) CU(cudaStreamWaitEvent(st, s->ev_join[cam], 0));
        mark(f, "vit", "attn");
        if (!SKIPPED(3))
            PI0_TRY(pi0_linear(g, st, T, W, W, vo, W, GEMM_BF16, v->o_w, W, GEMM_BF16, vx, W, GEMM_F32, 1.f,
                               GEMM_EPI_BIAS, v->o_b));
        mark(f, "vit", "attn_pv_o");
        if (!SKIPPED(4)) CU(cuk_layernorm(st, vx, v->ln2_w, v->ln2_b, vh, T, W, kEps));
        mark(f, "vit", "ln");
        if (!SKIPPED(5))
            PI0_TRY(pi0_linear(g, st, T, M, W, vh, W, GEMM_BF16, v->fc1_w, W, GEMM_BF16, vmlp, M, GEMM_BF16, 0.f,
                               GEMM_EPI_GELU_BIAS, v->fc1_b));
        mark(f, "vit", "fc1");
        if (!SKIPPED(6))
            PI0_TRY(pi0_linear(g, st, T, W, M, vmlp, M, GEMM_BF16, v->fc2_w, M, GEMM_BF16, vx, W, GEMM_F32, 1.f,
                               GEMM_EPI_BIAS, v->fc2_b));
        mark(f, "vit", "fc2");
    }
#undef SKIPPED
    return PI0_OK;
}

static pi0_status vit_forward(fctx *f, int ncam, float *xout) {
    const pi0_config *c = f->c;
    cmodel *cm = f->cm;
    csess *s = f->s;
    cudaStream_t st = f->st;
    const int W = c->vit_width, np = s->np, T = ncam * np;
    const int D = c->llm_width;
    if (ncam <= 0) return PI0_OK;
    CU(cuk_im2col(st, s->img, s->patches, ncam, c->image_size, c->patch_size, cm->patch_ld));
    mark(f, "vit", "im2col");
    PI0_TRY(pi0_linear(s->g, st, T, W, cm->patch_ld, s->patches, cm->patch_ld, GEMM_BF16, cm->patch_w, cm->patch_ld,
                       GEMM_BF16, s->pf32, W, GEMM_F32, 0.f, GEMM_EPI_BIAS, cm->patch_b));
    mark(f, "vit", "patch_gemm");
    CU(cuk_add_pos(st, s->pf32, cm->pos_emb, s->vx, T, np, W));
    mark(f, "vit", "add_pos");
    if (s->vit_chains && ncam > 1) {
        /* one chain per camera on its own stream (captured as parallel graph branches) */
        CU(cudaEventRecord(s->ev_fork, st));
        for (int cam = 0; cam < ncam; cam++) {
            CU(cudaStreamWaitEvent(s->vst[cam], s->ev_fork, 0));
            PI0_TRY(vit_layers(f, s->vst[cam], s->vg[cam], cam, 1, 1));
            CU(cudaEventRecord(s->ev_join[cam], s->vst[cam]));
        }
        for (int cam = 0; cam < ncam; cam++) CU(cudaStreamWaitEvent(st, s->ev_join[cam], 0));
    } else {
        PI0_TRY(vit_layers(f, st, s->g, 0, ncam, 0));
    }
    CU(cuk_layernorm(st, s->vx, cm->post_w, cm->post_b, s->vh, T, W, kEps));
    PI0_TRY(pi0_linear(s->g, st, T, D, W, s->vh, W, GEMM_BF16, cm->proj_w, W, GEMM_BF16, xout, D, GEMM_F32, 0.f,
                       GEMM_EPI_BIAS, cm->proj_b));
    mark(f, "vit", "post_proj");
    return PI0_OK;
}

/* Few-token linear through the skinny GEMM; *done = 0 when the shape is not supported there. */
static pi0_status skinny(fctx *f, int T, const bf *X, int ldx, const bf *W, int N, int K, int mode, void *out, int ldo,
                         int *done) {
    csess *s = f->s;
    *done = 0;
    if (!s->skinny || T > 64) return PI0_OK;
    cudaError_t e = cuk_skinny_linear(f->st, X, ldx, T, W, N, K, mode | s->pdl, out, ldo);
    if (e == cudaErrorInvalidValue) return PI0_OK;
    if (e != cudaSuccess)
        return pi0_fail(PI0_ERR_BACKEND, "cuk_skinny_linear(T=%d N=%d K=%d) failed: %s", T, N, K, cudaGetErrorString(e));
    *done = 1;
    return PI0_OK;
}

/* RMSNorm of rows [row0, row0 + rows) of the residual x into y; when the expert's last projection left its split-K
 * partials unreduced (s->xpend), they are added to those rows of x first (and consumed). */
static pi0_status rms_norm(fctx *f, float *x, const float *w, void *y, int ydt, int row0, int rows, int D) {
    csess *s = f->s;
    float *xr = x + (size_t)row0 * D;
    if (s->xpend && x == s->xe) {
        CU(cuk_rmsnorm_acc(f->st, xr, s->xpart + (size_t)row0 * D, s->xpend, (long long)s->xpend_T * D, D, w, y, ydt,
                           rows, D, kEps));
        s->xpend = 0;
        return PI0_OK;
    }
    CU(cuk_rmsnorm(f->st, xr, w, y, ydt, rows, D, kEps));
    return PI0_OK;
}

/* Expert projection X (T, K) -> residual x (T, D) as unreduced split-K partials left for the next rms_norm (xpart_on:
 * our packed-weight GEMM; resid_in_norm: cuBLASLt's f32 product as one partial); *done = 0 when not taken (not the
 * expert, both switched off, or the packed kernel does not take the shape). */
static pi0_status xpart_linear(fctx *f, int expert, int T, const bf *X, int K, const bf *Wp, const bf *Wraw, int bn,
                               int cs, int D, int *done) {
    csess *s = f->s;
    *done = 0;
    if (!expert) return PI0_OK;
    if (s->resid_in_norm && !s->xpend) { /* the product alone, as one f32 "partial" */
        PI0_TRY(pi0_linear(s->g, f->st, T, D, K, X, K, GEMM_BF16, Wraw, K, GEMM_BF16, s->xpart, D, GEMM_F32, 0.f,
                           GEMM_EPI_NONE, NULL));
        s->xpend = 1;
        s->xpend_T = T;
        *done = 1;
        return PI0_OK;
    }
    if (!s->xpart_on || !Wp || T > 64 || s->xpend) return PI0_OK;
    cudaError_t e = cuk_skinny_linear_cfg(f->st, X, K, T, Wp, D, K, CUK_SK_PARTIAL | CUK_SK_PACKED | s->pdl, s->xpart,
                                          D, bn, cs, 0);
    if (e == cudaErrorInvalidValue) return PI0_OK;
    if (e != cudaSuccess)
        return pi0_fail(PI0_ERR_BACKEND, "cuk_skinny_linear(partial, T=%d N=%d K=%d) failed: %s", T, D, K,
                        cudaGetErrorString(e));
    s->xpend = cs;
    s->xpend_T = T;
    *done = 1;
    return PI0_OK;
}

/* One Gemma layer over T tokens at positions pos0.. (keys: cache rows [0, pos0+T)). */
/* state_rows > 0: the first token is the state token, which sees only keys [0, pos0 + 1). */
static pi0_status gemma_layer(fctx *f, const dgemma *Lw, int layer, int D, int F, float *x, int T, int pos0,
                              int kv_only, int state_rows) {
    const pi0_config *c = f->c;
    csess *s = f->s;
    cudaStream_t st = f->st;
    const int nh = c->num_heads, hd = c->head_dim, qd = nh * hd, qkvd = (nh + 2) * hd;
    bf *Kc = s->kc + (size_t)layer * s->Srows * hd, *Vc = s->vc + (size_t)layer * s->Srows * hd;
    if (T <= 0) return PI0_OK;
    const char *tag = D == c->llm_width ? "llm" : T == 1 ? "state" : "exp";
    /* the few-token chain (norms, streaming GEMMs, MQA attention) may run under PDL */
    const int pdl = T <= 64 ? s->pdl : 0;
    const int xo_bn = f->cm->xo_bn, xo_cs = f->cm->xo_cs, xd_bn = f->cm->xd_bn, xd_cs = f->cm->xd_cs;
    /* timing diagnostics (PI0_EXP_SKIP_SHIFT): expert ops left out of the chain */
    const int expert = T <= 64 && D != c->llm_width;
    const unsigned skip = (s->skip_stage == 0 && expert) || (s->skip_stage == 1 && D == c->llm_width) ? s->skip : 0;
#define SKIPPED(op) ((skip >> (op)) & 1u)
    if (!SKIPPED(0)) PI0_TRY(rms_norm(f, x, Lw->attn_norm, s->h, CUK_BF16 | pdl, 0, T, D));
    mark(f, tag, "norm");
    int done = 0;
    if (kv_only) {
        PI0_TRY(skinny(f, T, s->h, D, Lw->qkv_w + (size_t)qd * D, 2 * hd, D, CUK_SK_BF16, s->qkv + qd, qkvd, &done));
        if (!done)
            PI0_TRY(pi0_linear(s->g, st, T, 2 * hd, D, s->h, D, GEMM_BF16, Lw->qkv_w + (size_t)qd * D, D, GEMM_BF16,
                               s->qkv + qd, qkvd, GEMM_BF16, 0.f, GEMM_EPI_NONE, NULL));
        CU(cuk_rope_qkv(st, s->qkv, s->rope_c, s->rope_s, pos0, T, nh, hd, NULL, Kc, Vc));
        mark(f, tag, "kv_only");
        return PI0_OK;
    }
    /* few tokens: QKV GEMM, RoPE and the K/V scatter in one streaming-GEMM launch when the shape fits */
    cudaError_t qe = cudaErrorInvalidValue;
    if (s->skinny && T <= 64) {
        qe = cuk_skinny_qkv_rope(st, s->h, D, T, Lw->qkv_w, D, s->rope_c, s->rope_s, pos0, nh, hd, s->qr, Kc, Vc,
                                 pdl);
        if (qe != cudaSuccess && qe != cudaErrorInvalidValue)
            return pi0_fail(PI0_ERR_BACKEND, "cuk_skinny_qkv_rope(T=%d K=%d) failed: %s", T, D, cudaGetErrorString(qe));
    }
    if (qe == cudaSuccess) {
        mark(f, tag, "qkv_rope");
    } else {
        PI0_TRY(skinny(f, T, s->h, D, Lw->qkv_w, qkvd, D, CUK_SK_BF16, s->qkv, qkvd, &done));
        if (!done && !SKIPPED(1))
            PI0_TRY(pi0_linear(s->g, st, T, qkvd, D, s->h, D, GEMM_BF16, Lw->qkv_w, D, GEMM_BF16, s->qkv, qkvd,
                               GEMM_BF16, 0.f, GEMM_EPI_NONE, NULL));
        mark(f, tag, "qkv");
        if (!SKIPPED(2)) CU(cuk_rope_qkv(st, s->qkv, s->rope_c, s->rope_s, pos0, T, nh, hd, s->qr, Kc, Vc));
        mark(f, tag, "rope");
    }
    const int S = pos0 + T, Sld = (int)round8(S);
    int mqa_done = SKIPPED(3);
    if (!mqa_done && s->gemm_attn && s->mqa_attn && T <= 64) {
        cudaError_t e = cuk_attention_mqa(st, s->qr, T * nh, Kc, Vc, S, hd, 1.f / sqrtf((float)hd), state_rows,
                                          pos0 + 1, s->o, s->apart, s->apart_floats, s->mqa_merge,
                                          s->mqa_rows | pdl);
        if (e != cudaSuccess && e != cudaErrorInvalidValue)
            return pi0_fail(PI0_ERR_BACKEND, "cuk_attention_mqa(R=%d S=%d) failed: %s", T * nh, S, cudaGetErrorString(e));
        mqa_done = e == cudaSuccess;
        if (mqa_done) mark(f, tag, "attn_mqa");
    }
    /* prefill (T > 64, no state row): fused flash attention, the nh x T query rows share the one K/V head */
    if (!mqa_done && s->gemm_attn && s->flash_attn && T > 64 && !state_rows) {
        cudaError_t e = cuk_flash_attn_mqa(st, s->qr, T * nh, Kc, Vc, S, hd, 1.f / sqrtf((float)hd), s->o,
                                           s->flash_variant);
        if (e != cudaSuccess && e != cudaErrorInvalidValue)
            return pi0_fail(PI0_ERR_BACKEND, "cuk_flash_attn_mqa(R=%d S=%d) failed: %s", T * nh, S, cudaGetErrorString(e));
        mqa_done = e == cudaSuccess;
        if (mqa_done) mark(f, tag, "attn_flash");
    }
    if (mqa_done) {
    } else if (!s->gemm_attn) {
        if (state_rows) return pi0_fail(PI0_ERR_BACKEND, "fused attention cannot mask the state token");
        CU(cuk_attention(st, s->qr, T * nh, Kc, Vc, S, hd, 1.f / sqrtf((float)hd), s->o, s->apart, s->apart_floats, 0));
        mark(f, tag, "attn");
    } else {
    pi0_gemm_args a;
    memset(&a, 0, sizeof a);
    a.m = S; a.n = T * nh; a.k = hd;
    a.A = Kc; a.lda = hd; a.opA = 1; a.ta = GEMM_BF16;
    a.B = s->qr; a.ldb = hd; a.opB = 0; a.tb = GEMM_BF16;
    a.C = s->logits; a.ldc = Sld; a.tc = GEMM_F32;
    a.alpha = 1.f / sqrtf((float)hd); a.beta = 0.f; a.batch = 1;
    PI0_TRY(pi0_gemm(s->g, st, &a));
    CU(cuk_softmax_lim(st, s->logits, Sld, s->probs, Sld, T * nh, S, state_rows, pos0 + 1));
    mark(f, tag, "attn_qk_sm");
    memset(&a, 0, sizeof a);
    a.m = hd; a.n = T * nh; a.k = S;
    a.A = Vc; a.lda = hd; a.opA = 0; a.ta = GEMM_BF16;
    a.B = s->probs; a.ldb = Sld; a.opB = 0; a.tb = GEMM_BF16;
    a.C = s->o; a.ldc = hd; a.tc = GEMM_BF16;
    a.alpha = 1.f; a.beta = 0.f; a.batch = 1;
    PI0_TRY(pi0_gemm(s->g, st, &a));
    }
    done = SKIPPED(4);
    if (!done) PI0_TRY(xpart_linear(f, expert, T, s->o, qd, Lw->o_wp, Lw->o_w, xo_bn, xo_cs, D, &done));
    if (!done) PI0_TRY(skinny(f, T, s->o, qd, Lw->o_w, D, qd, CUK_SK_RESID, x, D, &done));
    if (!done)
        PI0_TRY(pi0_linear(s->g, st, T, D, qd, s->o, qd, GEMM_BF16, Lw->o_w, qd, GEMM_BF16, x, D, GEMM_F32, 1.f,
                           GEMM_EPI_NONE, NULL));
    mark(f, tag, "attn_pv_o");
    if (!SKIPPED(5)) PI0_TRY(rms_norm(f, x, Lw->ffn_norm, s->h, CUK_BF16 | pdl, 0, T, D));
    mark(f, tag, "norm");
    PI0_TRY(skinny(f, T, s->h, D, Lw->gu_w, 2 * F, D, CUK_SK_GEGLU, s->act, F, &done));
    if (!done) {
        if (!SKIPPED(6))
            PI0_TRY(pi0_linear(s->g, st, T, 2 * F, D, s->h, D, GEMM_BF16, Lw->gu_w, D, GEMM_BF16, s->ffn, 2 * F,
                               GEMM_BF16, 0.f, GEMM_EPI_NONE, NULL));
        mark(f, tag, "gate_up");
        if (!SKIPPED(7)) CU(cuk_geglu(st, s->ffn, s->act, T, F));
    }
    mark(f, tag, "gate_up_geglu");
    done = SKIPPED(8);
    if (!done) PI0_TRY(xpart_linear(f, expert, T, s->act, F, Lw->down_wp, Lw->down_w, xd_bn, xd_cs, D, &done));
    if (!done) PI0_TRY(skinny(f, T, s->act, F, Lw->down_w, D, F, CUK_SK_RESID, x, D, &done));
    if (!done)
        PI0_TRY(pi0_linear(s->g, st, T, D, F, s->act, F, GEMM_BF16, Lw->down_w, F, GEMM_BF16, x, D, GEMM_F32, 1.f,
                           GEMM_EPI_NONE, NULL));
    mark(f, tag, "down");
#undef SKIPPED
    return PI0_OK;
}

/* Prefix embedding (images already in x rows [0, nv*np)) + Gemma-2B prefill. */
static pi0_status prefill_forward(fctx *f, int nv, int ntxt) {
    const pi0_config *c = f->c;
    csess *s = f->s;
    const int D = c->llm_width, P = nv * s->np + ntxt;
    CU(cuk_embed(f->st, s->tok, f->cm->embed, s->x + (size_t)nv * s->np * D, ntxt, D, (float)sqrt((double)D)));
    mark(f, "llm", "embed");
    for (int l = 0; l < c->llm_depth; l++)
        PI0_TRY(gemma_layer(f, &f->cm->llm[l], l, D, c->llm_mlp, s->x, P, 0, l == c->llm_depth - 1, 0));
    return PI0_OK;
}

/* State token: its K/V at cache row P of every layer (computed once per inference). */
static pi0_status state_forward(fctx *f, int P) {
    const pi0_config *c = f->c;
    csess *s = f->s;
    cmodel *cm = f->cm;
    const int De = c->exp_width, A = c->action_dim;
    s->xpend = 0; /* xe is rewritten */
    CU(cuk_small_mm(f->st, 1, De, A, s->state, 0, 1, cm->state_w, 1, A, cm->state_b, NULL, 0, s->xe, CUK_F32, De));
    for (int l = 0; l < c->llm_depth; l++)
        PI0_TRY(gemma_layer(f, &cm->exp[l], l, De, c->exp_mlp, s->xe, 1, P, l == c->llm_depth - 1, 0));
    return PI0_OK;
}

/*
 * One velocity evaluation of the H action tokens (time bias cvec); optional Euler update of xa.
 * with_state: the state token rides along as token 0 (it sees the prefix and itself only), which
 * writes its K/V at cache row P for the following steps; otherwise its K/V must already be there.
 */
static pi0_status step_forward(fctx *f, int P, const float *cvec, int euler, float dt, int with_state) {
    const pi0_config *c = f->c;
    csess *s = f->s;
    cmodel *cm = f->cm;
    const int De = c->exp_width, A = c->action_dim, H = s->H;
    float *xact = with_state ? s->xe + De : s->xe;
    s->xpend = 0; /* xe is rewritten */
    if (with_state)
        CU(cuk_small_mm(f->st, 1, De, A, s->state, 0, 1, cm->state_w, 1, A, cm->state_b, NULL, 0, s->xe, CUK_F32, De));
    CU(cuk_small_mm(f->st, H, De, A, s->xa, A, 1, cm->fold_w, 1, A, NULL, cvec, 1, s->hs, CUK_F32, De));
    PI0_TRY(pi0_linear(s->g, f->st, H, De, De, s->hs, De, GEMM_F32, cm->atm_out_w, De, GEMM_F32, xact, De, GEMM_F32,
                       0.f, GEMM_EPI_BIAS, cm->atm_out_b));
    mark(f, "exp", "suffix_in");
    for (int l = 0; l < c->llm_depth; l++)
        PI0_TRY(gemma_layer(f, &cm->exp[l], l, De, c->exp_mlp, s->xe, H + with_state, with_state ? P : P + 1, 0,
                            with_state ? c->num_heads : 0));
    PI0_TRY(rms_norm(f, s->xe, cm->exp_norm, s->yf, CUK_F32, with_state ? 1 : 0, H, De));
    PI0_TRY(pi0_linear(s->g, f->st, H, A, De, s->yf, De, GEMM_F32, cm->aout_w, De, GEMM_F32, s->vel, A, GEMM_F32, 0.f,
                       GEMM_EPI_BIAS, cm->aout_b));
    mark(f, "exp", "head_out");
    if (euler) CU(cuk_euler(f->st, s->xa, s->vel, dt, H * A));
    return PI0_OK;
}

/* Everything of one inference on f->st; ev (4 events) recorded between stages when non-NULL. */
static pi0_status run_all(fctx *f, int nv, int ntxt, cudaEvent_t *ev) {
    csess *s = f->s;
    const int P = nv * s->np + ntxt;
    const float dt = pi0_step_dt(s->steps);
    if (ev) CU(cudaEventRecord(ev[0], f->st));
    if (ev) {
        s->nmark = 0;
        mark(f, "-", "start");
    }
    PI0_TRY(vit_forward(f, nv, s->x));
    if (ev) CU(cudaEventRecord(ev[1], f->st));
    PI0_TRY(prefill_forward(f, nv, ntxt));
    if (ev) CU(cudaEventRecord(ev[2], f->st));
    /* GEMM attention: the state token joins the first step (its K/V then stay cached);
     * fused attention (no per-row key limit): a separate one-token pass first */
    const int fold_state = s->gemm_attn;
    if (!fold_state) PI0_TRY(state_forward(f, P));
    for (int k = 0; k < s->steps; k++)
        PI0_TRY(step_forward(f, P, s->ctab + (size_t)k * f->c->exp_width, 1, dt, fold_state && k == 0));
    if (ev) CU(cudaEventRecord(ev[3], f->st));
    return PI0_OK;
}

static void make_fctx(pi0_session *ss, fctx *f) {
    f->c = &ss->model->cfg;
    f->cm = (cmodel *)ss->model->backend;
    f->s = (csess *)ss->backend;
    f->st = f->s->st;
}

/* Compact the observation into the pinned staging buffers and upload (async). */
static pi0_status stage_obs(fctx *f, const pi0_observation *obs, int *nv_out, int *ntxt_out) {
    csess *s = f->s;
    int nv = 0, ntxt = 0;
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        if (!obs->image_mask[k]) continue;
        if (!obs->images[k]) return pi0_fail(PI0_ERR_INVALID_ARG, "image %d is NULL but its mask is set", k);
        memcpy(s->h_img + (size_t)nv * s->img_elems, obs->images[k], (size_t)s->img_elems * 4);
        nv++;
    }
    if (obs->n_tokens > s->maxtok)
        return pi0_fail(PI0_ERR_INVALID_ARG, "prompt has %d tokens, more than max_token_len %d", obs->n_tokens, s->maxtok);
    for (int i = 0; i < obs->n_tokens; i++) {
        if (obs->token_mask && !obs->token_mask[i]) continue;
        int t = obs->tokens[i];
        if (t < 0 || t >= f->c->vocab_size)
            return pi0_fail(PI0_ERR_INVALID_ARG, "token %d at position %d is outside the vocabulary", t, i);
        s->h_tok[ntxt++] = t;
    }
    if (nv) CU(cudaMemcpyAsync(s->img, s->h_img, (size_t)nv * s->img_elems * 4, cudaMemcpyHostToDevice, f->st));
    if (ntxt) CU(cudaMemcpyAsync(s->tok, s->h_tok, (size_t)ntxt * 4, cudaMemcpyHostToDevice, f->st));
    *nv_out = nv;
    *ntxt_out = ntxt;
    return PI0_OK;
}

static pi0_status upload_state_noise(fctx *f, const float *state, const float *noise) {
    csess *s = f->s;
    const int A = f->c->action_dim;
    if (state) {
        memcpy(s->h_state, state, (size_t)A * 4);
        CU(cudaMemcpyAsync(s->state, s->h_state, (size_t)A * 4, cudaMemcpyHostToDevice, f->st));
    }
    if (noise) {
        memcpy(s->h_noise, noise, (size_t)s->H * A * 4);
        CU(cudaMemcpyAsync(s->xa, s->h_noise, (size_t)s->H * A * 4, cudaMemcpyHostToDevice, f->st));
    }
    return PI0_OK;
}

static pi0_status capture(fctx *f, int nv, int ntxt) {
    csess *s = f->s;
    if (s->exec) {
        cudaGraphExecDestroy(s->exec);
        s->exec = NULL;
    }
    s->g_nv = s->g_ntxt = -1;
    CU(cudaStreamBeginCapture(f->st, cudaStreamCaptureModeThreadLocal));
    pi0_status pst = run_all(f, nv, ntxt, NULL);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(f->st, &graph);
    if (pst != PI0_OK) {
        if (graph) cudaGraphDestroy(graph);
        return pst;
    }
    if (e != cudaSuccess) {
        if (graph) cudaGraphDestroy(graph);
        return pi0_fail(PI0_ERR_BACKEND, "cudaStreamEndCapture failed: %s", cudaGetErrorString(e));
    }
    if (s->l2_kv) { /* the window on every kernel node (captured launches need not inherit the stream's) */
        size_t nn = 0;
        e = cudaGraphGetNodes(graph, NULL, &nn);
        cudaGraphNode_t *nodes = e == cudaSuccess && nn ? (cudaGraphNode_t *)malloc(nn * sizeof *nodes) : NULL;
        if (nodes && cudaGraphGetNodes(graph, nodes, &nn) == cudaSuccess) {
            cudaKernelNodeAttrValue v;
            memset(&v, 0, sizeof v);
            v.accessPolicyWindow = s->kvwin;
            for (size_t i = 0; i < nn && e == cudaSuccess; i++) {
                cudaGraphNodeType t;
                if (cudaGraphNodeGetType(nodes[i], &t) == cudaSuccess && t == cudaGraphNodeTypeKernel)
                    e = cudaGraphKernelNodeSetAttribute(nodes[i], cudaKernelNodeAttributeAccessPolicyWindow, &v);
            }
        }
        free(nodes);
        if (e != cudaSuccess) {
            cudaGraphDestroy(graph);
            return pi0_fail(PI0_ERR_BACKEND, "setting the L2 window on the graph's kernels failed: %s",
                            cudaGetErrorString(e));
        }
    }
    e = cudaGraphInstantiate(&s->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        s->exec = NULL;
        return pi0_fail(PI0_ERR_BACKEND, "cudaGraphInstantiate failed: %s", cudaGetErrorString(e));
    }
    s->g_nv = nv;
    s->g_ntxt = ntxt;
    return PI0_OK;
}

static pi0_status cu_infer(pi0_session *ss, const pi0_observation *obs, const float *noise, float *actions,
                           pi0_timing *timing) {
    fctx f;
    make_fctx(ss, &f);
    csess *s = f.s;
    CU(cudaSetDevice(f.cm->dev));
    const int A = f.c->action_dim;
    int nv, ntxt;
    /* total_ms spans input upload, the graph replay and the actions download */
    CU(cudaEventRecord(s->ev[0], f.st));
    PI0_TRY(stage_obs(&f, obs, &nv, &ntxt));
    PI0_TRY(upload_state_noise(&f, obs->state, noise));
    s->P = -1;
    float ms[3] = {0, 0, 0}, tot = 0;
    if (ss->profile_stages) {
        PI0_TRY(run_all(&f, nv, ntxt, s->ev));
    } else {
        if (!s->exec || s->g_nv != nv || s->g_ntxt != ntxt) {
            /* warm-up run outside capture (plans, module loading), then capture */
            PI0_TRY(run_all(&f, nv, ntxt, NULL));
            CU(cudaStreamSynchronize(f.st));
            PI0_TRY(upload_state_noise(&f, NULL, noise));
            PI0_TRY(capture(&f, nv, ntxt));
            CU(cudaEventRecord(s->ev[0], f.st));
        }
        CU(cudaGraphLaunch(s->exec, f.st));
    }
    CU(cudaMemcpyAsync(s->h_act, s->xa, (size_t)s->H * A * 4, cudaMemcpyDeviceToHost, f.st));
    if (!ss->profile_stages) CU(cudaEventRecord(s->ev[3], f.st));
    CU(cudaStreamSynchronize(f.st));
    memcpy(actions, s->h_act, (size_t)s->H * A * 4);
    s->P = nv * s->np + ntxt;
    if (ss->profile_stages) {
        if (s->optime) optime_collect(s);
        CU(cudaEventElapsedTime(&ms[0], s->ev[0], s->ev[1]));
        CU(cudaEventElapsedTime(&ms[1], s->ev[1], s->ev[2]));
        CU(cudaEventElapsedTime(&ms[2], s->ev[2], s->ev[3]));
    }
    CU(cudaEventElapsedTime(&tot, s->ev[0], s->ev[3]));
    if (timing) {
        timing->vit_ms = ms[0];
        timing->prefill_ms = ms[1];
        timing->diffusion_ms = ms[2];
        timing->total_ms = tot;
    }
    return PI0_OK;
}

/* ------------------------------------------------------------------ stage entry points */

static pi0_status copy_out_f32(fctx *f, const void *src, int sdt, size_t n, float *dst) {
    csess *s = f->s;
    if (n > s->outf_elems) return pi0_fail(PI0_ERR_BACKEND, "output staging too small (%zu > %zu)", n, s->outf_elems);
    CU(cuk_convert(f->st, src, sdt, s->outf, CUK_F32, 0, (long long)n, (long long)n, (long long)n));
    CU(cudaMemcpyAsync(dst, s->outf, n * 4, cudaMemcpyDeviceToHost, f->st));
    CU(cudaStreamSynchronize(f->st));
    return PI0_OK;
}

static pi0_status cu_vit(pi0_session *ss, const float *image, float *out) {
    fctx f;
    make_fctx(ss, &f);
    csess *s = f.s;
    CU(cudaSetDevice(f.cm->dev));
    CU(cudaMemcpyAsync(s->img, image, (size_t)s->img_elems * 4, cudaMemcpyHostToDevice, f.st));
    /* uses the prefix residual as scratch; the K/V cache (and s->P) stay valid */
    PI0_TRY(vit_forward(&f, 1, s->x));
    return copy_out_f32(&f, s->x, CUK_F32, (size_t)s->np * f.c->llm_width, out);
}

static pi0_status cu_prefill(pi0_session *ss, const pi0_observation *obs, int *prefix_len) {
    fctx f;
    make_fctx(ss, &f);
    csess *s = f.s;
    CU(cudaSetDevice(f.cm->dev));
    int nv, ntxt;
    PI0_TRY(stage_obs(&f, obs, &nv, &ntxt));
    s->P = -1;
    PI0_TRY(vit_forward(&f, nv, s->x));
    PI0_TRY(prefill_forward(&f, nv, ntxt));
    CU(cudaStreamSynchronize(f.st));
    s->P = nv * s->np + ntxt;
    *prefix_len = s->P;
    return PI0_OK;
}

static pi0_status cu_kv(pi0_session *ss, int layer, float *k, float *v) {
    fctx f;
    make_fctx(ss, &f);
    csess *s = f.s;
    CU(cudaSetDevice(f.cm->dev));
    if (s->P < 0) return pi0_fail(PI0_ERR_INVALID_ARG, "no prefix: run the prefill first");
    const int hd = f.c->head_dim;
    size_t n = (size_t)s->P * hd;
    PI0_TRY(copy_out_f32(&f, s->kc + (size_t)layer * s->Srows * hd, CUK_BF16, n, k));
    PI0_TRY(copy_out_f32(&f, s->vc + (size_t)layer * s->Srows * hd, CUK_BF16, n, v));
    return PI0_OK;
}

static pi0_status cu_velocity(pi0_session *ss, const float *state, const float *x, float t, float *vout) {
    fctx f;
    make_fctx(ss, &f);
    csess *s = f.s;
    const pi0_config *c = f.c;
    CU(cudaSetDevice(f.cm->dev));
    if (s->P < 0) return pi0_fail(PI0_ERR_INVALID_ARG, "no prefix: run the prefill first");
    const int De = c->exp_width, A = c->action_dim;
    float *temb = (float *)malloc((size_t)De * 4);
    if (!temb) return pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_time_embedding(t, De, temb);
    float *slot = s->temb + (size_t)s->steps * De;
    cudaError_t e = cudaMemcpy(slot, temb, (size_t)De * 4, cudaMemcpyHostToDevice);
    free(temb);
    CU(e);
    PI0_TRY(upload_state_noise(&f, state, x));
    CU(cuk_small_mm(f.st, 1, De, De, slot, 0, 1, f.cm->atm_in_w + De, 1, 2 * De, f.cm->fold_b, NULL, 0, s->ctmp,
                    CUK_F32, De));
    if (!s->gemm_attn) PI0_TRY(state_forward(&f, s->P));
    PI0_TRY(step_forward(&f, s->P, s->ctmp, 0, 0.f, s->gemm_attn));
    CU(cudaMemcpyAsync(s->h_act, s->vel, (size_t)s->H * A * 4, cudaMemcpyDeviceToHost, f.st));
    CU(cudaStreamSynchronize(f.st));
    memcpy(vout, s->h_act, (size_t)s->H * A * 4);
    return PI0_OK;
}

extern "C" const pi0_backend_ops pi0_cuda_backend = {
    "cuda",
    cu_model_init,
    cu_model_init_random,
    cu_model_free,
    cu_session_init,
    cu_session_free,
    cu_infer,
    cu_vit,
    cu_prefill,
    cu_kv,
    cu_velocity,
};
