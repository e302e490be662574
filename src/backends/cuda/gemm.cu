/* cuBLASLt GEMMs with a plan cache (see gemm.h). */
#include "backends/cuda/gemm.h"

#include <cublasLt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "util/error.h"
}

typedef struct {
    int m, n, k, lda, ldb, ldc, opA, opB, ta, tb, tc, epi, beta_nz, batch;
    long long sA, sB, sC;
    int alA, alB, alC, alBias;
} gemm_key;

typedef struct {
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct pi0_gemm_ctx {
    cublasLtHandle_t h;
    void *ws;
    size_t ws_size;
    void *scratch; /* autotuning output buffer (NULL: take the heuristic's first algorithm) */
    size_t scratch_size;
    int tune_min_n; /* tune only GEMMs of at least this many tokens (columns n) */
    cudaStream_t st;
    const void *tune_A, *tune_B, *tune_bias; /* operands of the call being planned */
    int force;                               /* >= 0: take this candidate index (measurement only) */
    int ncand_last;                          /* candidates the last plan had (with force >= 0) */
    gemm_plan *plans;
    int n, cap;
};

/*
 * Process-wide cache of timed algorithm choices, so every session (and the eager and
 * graph paths) uses the same algorithm for a shape: results are bitwise identical
 * across sessions of one process.
 */
typedef struct {
    gemm_key key;
    cublasLtMatmulAlgo_t algo;
} tuned_entry;
static pthread_mutex_t g_tuned_mu = PTHREAD_MUTEX_INITIALIZER;
static tuned_entry *g_tuned;
static int g_ntuned, g_captuned;

static int tuned_lookup(const gemm_key *k, cublasLtMatmulAlgo_t *algo) {
    int found = 0;
    pthread_mutex_lock(&g_tuned_mu);
    for (int i = 0; i < g_ntuned; i++)
        if (!memcmp(&g_tuned[i].key, k, sizeof *k)) {
            *algo = g_tuned[i].algo;
            found = 1;
            break;
        }
    pthread_mutex_unlock(&g_tuned_mu);
    return found;
}

static void tuned_store(const gemm_key *k, const cublasLtMatmulAlgo_t *algo) {
    pthread_mutex_lock(&g_tuned_mu);
    if (g_ntuned == g_captuned) {
        int cap = g_captuned ? 2 * g_captuned : 128;
        tuned_entry *nt = (tuned_entry *)realloc(g_tuned, (size_t)cap * sizeof *nt);
        if (!nt) {
            pthread_mutex_unlock(&g_tuned_mu);
            return;
        }
        g_tuned = nt;
        g_captuned = cap;
    }
    g_tuned[g_ntuned].key = *k;
    g_tuned[g_ntuned].algo = *algo;
    g_ntuned++;
    pthread_mutex_unlock(&g_tuned_mu);
}

int pi0_gemm_ctx_force_candidate(pi0_gemm_ctx *g, int idx) {
    g->force = idx;
    return g->ncand_last;
}

void pi0_gemm_ctx_set_tuning(pi0_gemm_ctx *g, void *scratch, size_t bytes, int min_n) {
    g->scratch = scratch;
    g->scratch_size = bytes;
    g->tune_min_n = min_n;
}

#define LT_CHECK(call)                                                                                   \
    do {                                                                                                 \
        cublasStatus_t _s = (call);                                                                      \
        if (_s != CUBLAS_STATUS_SUCCESS)                                                                 \
            return pi0_fail(PI0_ERR_BACKEND, "%s failed: %s (%d)", #call, cublasLtGetStatusName(_s), (int)_s); \
    } while (0)

pi0_status pi0_gemm_ctx_create(pi0_gemm_ctx **out, void *workspace, size_t ws_size) {
    pi0_gemm_ctx *g = (pi0_gemm_ctx *)calloc(1, sizeof *g);
    if (!g) return pi0_fail(PI0_ERR_OOM, "gemm context allocation failed");
    cublasStatus_t s = cublasLtCreate(&g->h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return pi0_fail(PI0_ERR_BACKEND, "cublasLtCreate failed: %s", cublasLtGetStatusName(s));
    }
    g->ws = workspace;
    g->ws_size = ws_size;
    g->force = -1;
    *out = g;
    return PI0_OK;
}

void pi0_gemm_ctx_free(pi0_gemm_ctx *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        cublasLtMatmulDescDestroy(g->plans[i].op);
        cublasLtMatrixLayoutDestroy(g->plans[i].la);
        cublasLtMatrixLayoutDestroy(g->plans[i].lb);
        cublasLtMatrixLayoutDestroy(g->plans[i].lc);
    }
    free(g->plans);
    cublasLtDestroy(g->h);
    free(g);
}

static int align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % al)) al >>= 1;
    return al;
}

static int fold_align(int al, long long ld, long long stride, int t) {
    long long es = t == GEMM_BF16 ? 2 : 4;
    long long v[2] = {ld * es, stride * es};
    for (int i = 0; i < 2; i++)
        if (v[i])
            while (al > 1 && (v[i] % al)) al >>= 1;
    return al;
}

static cudaDataType_t dtype(int t) { return t == GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static pi0_status make_layout(cublasLtMatrixLayout_t *l, int t, int rows, int cols, int ld, int batch,
                              long long stride) {
    LT_CHECK(cublasLtMatrixLayoutCreate(l, dtype(t), rows, cols, ld));
    if (batch > 1) {
        int32_t b = batch;
        int64_t s = stride;
        LT_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b));
        LT_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
    return PI0_OK;
}

static pi0_status build_plan(pi0_gemm_ctx *g, const gemm_key *k, gemm_plan *p) {
    memset(p, 0, sizeof *p);
    p->key = *k;
    LT_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t oa = k->opA ? CUBLAS_OP_T : CUBLAS_OP_N, ob = k->opB ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
    if (k->epi != GEMM_EPI_NONE) {
        cublasLtEpilogue_t e = k->epi == GEMM_EPI_BIAS ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
        int32_t bt = (int32_t)dtype(k->tc);
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    PI0_TRY(make_layout(&p->la, k->ta, k->opA ? k->k : k->m, k->opA ? k->m : k->k, k->lda, k->batch, k->sA));
    PI0_TRY(make_layout(&p->lb, k->tb, k->opB ? k->n : k->k, k->opB ? k->k : k->n, k->ldb, k->batch, k->sB));
    PI0_TRY(make_layout(&p->lc, k->tc, k->m, k->n, k->ldc, k->batch, k->sC));

    cublasLtMatmulPreference_t pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = g->ws_size;
    uint32_t al[4] = {(uint32_t)k->alA, (uint32_t)k->alB, (uint32_t)k->alC, (uint32_t)k->alC};
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], 4);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulPreferenceDestroy(pref);
        return pi0_fail(PI0_ERR_BACKEND, "cublasLtMatmulPreferenceSetAttribute failed: %s", cublasLtGetStatusName(s));
    }
    cublasLtMatmulHeuristicResult_t res[24];
    int nres = 0;
    s = cublasLtMatmulAlgoGetHeuristic(g->h, p->op, p->la, p->lb, p->lc, p->lc, pref, 24, res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || nres == 0)
        return pi0_fail(PI0_ERR_BACKEND,
                        "cublasLtMatmulAlgoGetHeuristic found no algorithm (%s) for m=%d n=%d k=%d lda=%d ldb=%d "
                        "ldc=%d opA=%d opB=%d types=%d/%d/%d epi=%d batch=%d",
                        cublasLtGetStatusName(s), k->m, k->n, k->k, k->lda, k->ldb, k->ldc, k->opA, k->opB, k->ta,
                        k->tb, k->tc, k->epi, k->batch);
    int pick = -1;
    for (int i = 0; i < nres; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) {
            pick = i;
            break;
        }
    if (pick < 0) return pi0_fail(PI0_ERR_BACKEND, "cuBLASLt heuristic returned no usable algorithm (m=%d n=%d k=%d)", k->m, k->n, k->k);
    p->algo = res[pick].algo;
    if (g->force < 0 && tuned_lookup(k, &p->algo)) return PI0_OK;
    /* time the candidates into the scratch buffer (never while a graph is being captured) */
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    size_t es = k->tc == GEMM_BF16 ? 2 : 4;
    size_t need = ((size_t)(k->batch - 1) * (size_t)k->sC + (size_t)k->ldc * k->n) * es;
    if (g->force < 0 && (!g->scratch || need > g->scratch_size || k->n < g->tune_min_n ||
                         cudaStreamIsCapturing(g->st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone))
        return PI0_OK;
    /*
     * Candidates: the heuristic's answers plus split-K variants of its first four (the heuristic
     * rarely offers split-K for few-token GEMMs, which then run on too few CTAs). The split-K
     * reduction goes through the workspace in the compute type: deterministic.
     */
    cublasLtMatmulAlgo_t cand[24 + 4 * 6];
    int ncand = 0;
    for (int i = 0; i < nres; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= g->ws_size) cand[ncand++] = res[i].algo;
    const uint32_t splits[6] = {2, 3, 4, 8, 16, 32};
    for (int i = 0; i < nres && i < 4; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        for (int j = 0; j < 6; j++) {
            cublasLtMatmulAlgo_t al = res[i].algo;
            uint32_t sk = splits[j], scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            if ((uint32_t)k->k < sk * 32) continue;
            if (cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk) !=
                    CUBLAS_STATUS_SUCCESS ||
                cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                     sizeof scheme) != CUBLAS_STATUS_SUCCESS)
                continue;
            cublasLtMatmulHeuristicResult_t chk;
            memset(&chk, 0, sizeof chk);
            if (cublasLtMatmulAlgoCheck(g->h, p->op, p->la, p->lb, p->lc, p->lc, &al, &chk) != CUBLAS_STATUS_SUCCESS ||
                chk.state != CUBLAS_STATUS_SUCCESS || chk.workspaceSize > g->ws_size)
                continue;
            cand[ncand++] = al;
        }
    }
    if (g->force >= 0) {
        g->ncand_last = ncand;
        if (g->force < ncand) p->algo = cand[g->force];
        return PI0_OK;
    }
    if (ncand < 2) return PI0_OK;
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess) return PI0_OK;
    if (cudaEventCreate(&e1) != cudaSuccess) {
        cudaEventDestroy(e0);
        return PI0_OK;
    }
    float best = 1e30f;
    int besti = -1;
    const float one = 1.f, zero = 0.f;
    for (int i = 0; i < ncand; i++) {
        const void *A = g->tune_A, *B = g->tune_B, *bias = g->tune_bias;
        if (k->epi != GEMM_EPI_NONE)
            cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
        cublasStatus_t r = CUBLAS_STATUS_SUCCESS;
        for (int it = 0; it < 2 && r == CUBLAS_STATUS_SUCCESS; it++) /* warm-up */
            r = cublasLtMatmul(g->h, p->op, &one, A, p->la, B, p->lb, &zero, g->scratch, p->lc, g->scratch, p->lc,
                               &cand[i], g->ws, g->ws_size, g->st);
        if (r != CUBLAS_STATUS_SUCCESS) continue;
        cudaEventRecord(e0, g->st);
        for (int it = 0; it < 5; it++)
            cublasLtMatmul(g->h, p->op, &one, A, p->la, B, p->lb, &zero, g->scratch, p->lc, g->scratch, p->lc,
                           &cand[i], g->ws, g->ws_size, g->st);
        cudaEventRecord(e1, g->st);
        float ms = 0;
        if (cudaEventSynchronize(e1) != cudaSuccess || cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) continue;
        if (ms < best) {
            best = ms;
            besti = i;
        }
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError(); /* a failed candidate must not leak a sticky launch error */
    if (besti >= 0) p->algo = cand[besti];
    tuned_store(k, &p->algo);
    return PI0_OK;
}

pi0_status pi0_gemm(pi0_gemm_ctx *g, cudaStream_t st, const pi0_gemm_args *a) {
    if (a->m <= 0 || a->n <= 0) return PI0_OK;
    gemm_key k;
    memset(&k, 0, sizeof k);
    k.m = a->m; k.n = a->n; k.k = a->k;
    k.lda = a->lda; k.ldb = a->ldb; k.ldc = a->ldc;
    k.opA = a->opA; k.opB = a->opB; k.ta = a->ta; k.tb = a->tb; k.tc = a->tc;
    k.epi = a->epi; k.beta_nz = a->beta != 0.f;
    k.batch = a->batch > 1 ? a->batch : 1;
    if (k.batch > 1) { k.sA = a->sA; k.sB = a->sB; k.sC = a->sC; }
    /* alignment the algorithm may assume: pointer, leading dimension and batch stride in bytes */
    k.alA = fold_align(align_of(a->A), a->lda, k.batch > 1 ? k.sA : 0, a->ta);
    k.alB = fold_align(align_of(a->B), a->ldb, k.batch > 1 ? k.sB : 0, a->tb);
    k.alC = fold_align(align_of(a->C), a->ldc, k.batch > 1 ? k.sC : 0, a->tc);
    k.alBias = a->epi ? align_of(a->bias) : 0;
    if (k.alBias && k.alBias < k.alC) k.alC = k.alBias; /* be conservative about the epilogue vector */
    gemm_plan *p = NULL;
    for (int i = 0; i < g->n; i++)
        if (!memcmp(&g->plans[i].key, &k, sizeof k)) {
            p = &g->plans[i];
            break;
        }
    if (!p) {
        if (g->n == g->cap) {
            int cap = g->cap ? 2 * g->cap : 64;
            gemm_plan *np = (gemm_plan *)realloc(g->plans, (size_t)cap * sizeof *np);
            if (!np) return pi0_fail(PI0_ERR_OOM, "gemm plan cache allocation failed");
            g->plans = np;
            g->cap = cap;
        }
        g->st = st;
        g->tune_A = a->A;
        g->tune_B = a->B;
        g->tune_bias = a->bias;
        PI0_TRY(build_plan(g, &k, &g->plans[g->n]));
        p = &g->plans[g->n++];
    }
    if (a->epi != GEMM_EPI_NONE)
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a->bias, sizeof a->bias));
    float alpha = a->alpha, beta = a->beta;
    LT_CHECK(cublasLtMatmul(g->h, p->op, &alpha, a->A, p->la, a->B, p->lb, &beta, a->C, p->lc, a->C, p->lc, &p->algo,
                            g->ws, g->ws_size, st));
    return PI0_OK;
}

pi0_status pi0_linear(pi0_gemm_ctx *g, cudaStream_t st, int T, int out, int in, const void *X, int ldx, int tx,
                      const void *W, int ldw, int tw, void *Y, int ldy, int ty, float beta, int epi,
                      const void *bias) {
    pi0_gemm_args a;
    memset(&a, 0, sizeof a);
    a.m = out; a.n = T; a.k = in;
    a.A = W; a.lda = ldw; a.opA = 1; a.ta = tw;
    a.B = X; a.ldb = ldx; a.opB = 0; a.tb = tx;
    a.C = Y; a.ldc = ldy; a.tc = ty;
    a.alpha = 1.f; a.beta = beta;
    a.epi = epi; a.bias = bias;
    a.batch = 1;
    return pi0_gemm(g, st, &a);
}
