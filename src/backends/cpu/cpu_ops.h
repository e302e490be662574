/*
 * CPU reference ops, fp32 compute over BF16 or F32 weights. Row-major activations:
 * x (T, C) means T tokens of C features. Linear weights are PyTorch (out, in).
 */
#ifndef PI0_CPU_OPS_H
#define PI0_CPU_OPS_H
#include "model/weights.h"

typedef struct {
    int n_threads;
    float *wbuf;       /* scratch for one weight converted to f32 */
    size_t wbuf_size;  /* in floats */
} cpu_ctx;

/* y (T, out) = x (T, in) . W^T + b  (b may be NULL or have data NULL). */
pi0_status cpu_linear(cpu_ctx *c, const float *x, int T, const pi0_tensor *W, const pi0_tensor *b, float *y);
/* y += x (n,) */
void cpu_add(float *y, const float *x, size_t n);
/* LayerNorm over C with gain g and bias b, eps 1e-6, biased variance. */
void cpu_layernorm(const float *x, int T, int C, const pi0_tensor *g, const pi0_tensor *b, float *y);
/* Gemma RMSNorm: y = x / sqrt(mean(x^2) + 1e-6) * (1 + w). */
void cpu_rmsnorm(const float *x, int T, int C, const pi0_tensor *w, float *y);
float cpu_gelu_tanh(float x);
void cpu_gelu_inplace(float *x, size_t n);
/* x (T, heads*hd): rotate each head at positions pos[t] (split halves, base 10000). */
void cpu_rope(float *x, int T, int heads, int hd, const int *pos);
/*
 * Multi-head attention, fp32 softmax. q (T, H*hd), k/v (S, KV*hd); query head n uses kv head
 * n / (H/KV). Query t sees keys [0, nkeys[t]) (nkeys NULL: all S). out (T, H*hd).
 * scores: scratch of T*S floats.
 */
pi0_status cpu_attention(cpu_ctx *c, const float *q, const float *k, const float *v, int T, int S, int H, int KV, int hd,
                   float scale, const int *nkeys, float *scores, float *out);
/* C (M, N) = A (M, K) . B^T (N, K) [+ C if accumulate]; all f32 row-major. */
void cpu_gemm_nt(cpu_ctx *c, const float *A, const float *B, float *C, int M, int N, int K, int accumulate);
#endif
