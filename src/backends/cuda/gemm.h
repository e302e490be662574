/*
 * cuBLASLt GEMM wrapper with a per-shape plan cache (descriptors + heuristic algo).
 * Column-major convention of cuBLAS: C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C (+ epilogue),
 * computed in place (D = C). A row-major (rows, cols) matrix is a column-major (cols, rows) one.
 */
#ifndef PI0_CUDA_GEMM_H
#define PI0_CUDA_GEMM_H
#include <stddef.h>
#include <cuda_runtime_api.h>

#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { GEMM_F32 = 0, GEMM_BF16 = 1 };
enum { GEMM_EPI_NONE = 0, GEMM_EPI_BIAS = 1, GEMM_EPI_GELU_BIAS = 2 };

typedef struct {
    int m, n, k;
    const void *A; int lda, opA, ta; /* opA: 0 = N, 1 = T; ta: GEMM_F32 / GEMM_BF16 */
    const void *B; int ldb, opB, tb;
    void *C; int ldc, tc;            /* output, also the beta input */
    float alpha, beta;
    int epi; const void *bias;       /* bias: length m, type tc */
    int batch; long long sA, sB, sC; /* strided batch (batch <= 1: none) */
} pi0_gemm_args;

typedef struct pi0_gemm_ctx pi0_gemm_ctx;

pi0_status pi0_gemm_ctx_create(pi0_gemm_ctx **out, void *workspace, size_t ws_size);
void pi0_gemm_ctx_free(pi0_gemm_ctx *g);
/* Enable timing-based algorithm choice when a plan is made for a GEMM of at least min_n tokens
 * (columns n): candidates write into scratch (must hold the largest output). Choices are shared
 * process-wide (same algo per shape). */
void pi0_gemm_ctx_set_tuning(pi0_gemm_ctx *g, void *scratch, size_t bytes, int min_n);
pi0_status pi0_gemm(pi0_gemm_ctx *g, cudaStream_t st, const pi0_gemm_args *a);
/* Measurement only (dev/cuda playgrounds): plans made from now on take candidate idx of the tuner's
 * list (heuristic answers, then split-K variants) instead of the heuristic's first; idx < 0 restores
 * the default. Returns the candidate count of the last plan made while forced. */
int pi0_gemm_ctx_force_candidate(pi0_gemm_ctx *g, int idx);

/*
 * Row-major linear layer: Y (T, out) [ldy] = X (T, in) [ldx] * W^T, W (out, in) [ldw]
 * (+ bias) (+ beta * Y). Types as pi0_gemm_args.
 */
pi0_status pi0_linear(pi0_gemm_ctx *g, cudaStream_t st, int T, int out, int in, const void *X, int ldx, int tx,
                      const void *W, int ldw, int tw, void *Y, int ldy, int ty, float beta, int epi,
                      const void *bias);

#ifdef __cplusplus
}
#endif
#endif
