/*
 * Per-kernel tests of the CUDA backend against their CPU twins (src/backends/cuda/kernels.h)
 * and of the cuBLASLt wrapper against a double-precision loop. Fresh random inputs per run
 * (seed printed; PI0_TEST_SEED reproduces); outputs NaN-poisoned before each launch.
 * Exit 77 without a GPU.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

extern "C" {
#include "model/tensor_table.h"
#include "util/bf16.h"
}
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"

static int g_fail = 0;
static uint64_t rs;
static double ur(void) {
    rs ^= rs >> 12; rs ^= rs << 25; rs ^= rs >> 27;
    return (double)((rs * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}
static float nr(void) { return (float)(sqrt(-2 * log(ur() + 1e-300)) * cos(6.283185307179586 * ur())); }

#define CK(x)                                                                                         \
    do {                                                                                              \
        cudaError_t _e = (x);                                                                         \
        if (_e != cudaSuccess) {                                                                      \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(_e));        \
            exit(1);                                                                                  \
        }                                                                                             \
    } while (0)

template <typename T> static T *dalloc(size_t n) {
    T *p;
    CK(cudaMalloc((void **)&p, n * sizeof(T) + 16));
    CK(cudaMemset(p, 0xff, n * sizeof(T) + 16)); /* NaN poison for f32 and bf16 */
    return p;
}
template <typename T> static void up(T *d, const T *h, size_t n) { CK(cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice)); }
template <typename T> static void down(T *h, const T *d, size_t n) {
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost));
}

static double rel(const double *a, const double *b, size_t n, int *bad) {
    double num = 0, den = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) (*bad)++;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}
static void report(const char *name, const double *g, const double *c, size_t n, double tol) {
    int bad;
    double r = rel(g, c, n, &bad);
    int ok = !bad && r <= tol;
    printf("  %-34s rel_l2 %.2e %s\n", name, r, ok ? "ok" : "FAIL");
    if (!ok) g_fail = 1;
}
static void cmp_bf(const char *name, const uint16_t *g, const uint16_t *c, size_t n, double tol) {
    double *a = (double *)malloc(n * 8), *b = (double *)malloc(n * 8);
    for (size_t i = 0; i < n; i++) { a[i] = bf16_to_f32(g[i]); b[i] = bf16_to_f32(c[i]); }
    report(name, a, b, n, tol);
    free(a); free(b);
}
static void cmp_f(const char *name, const float *g, const float *c, size_t n, double tol) {
    double *a = (double *)malloc(n * 8), *b = (double *)malloc(n * 8);
    for (size_t i = 0; i < n; i++) { a[i] = g[i]; b[i] = c[i]; }
    report(name, a, b, n, tol);
    free(a); free(b);
}
static uint16_t *rand_bf(size_t n, float sc) {
    uint16_t *p = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++) p[i] = f32_to_bf16(sc * nr());
    return p;
}
static float *rand_f(size_t n, float sc, float off) {
    float *p = (float *)malloc(n * 4);
    for (size_t i = 0; i < n; i++) p[i] = off + sc * nr();
    return p;
}

static void test_norms(int rows, int w) {
    float *x = rand_f((size_t)rows * w, 3.f, 0.5f), *g = rand_f(w, 0.1f, 1.f), *b = rand_f(w, 0.1f, 0.f);
    uint16_t *yc = (uint16_t *)malloc((size_t)rows * w * 2), *yg = (uint16_t *)malloc((size_t)rows * w * 2);
    float *x_d = dalloc<float>((size_t)rows * w), *g_d = dalloc<float>(w), *b_d = dalloc<float>(w);
    uint16_t *y_d = dalloc<uint16_t>((size_t)rows * w);
    float *yf_d = dalloc<float>((size_t)rows * w);
    up(x_d, x, (size_t)rows * w); up(g_d, g, w); up(b_d, b, w);
    CK(cuk_layernorm(0, x_d, g_d, b_d, y_d, rows, w, 1e-6f));
    down(yg, y_d, (size_t)rows * w);
    cuk_layernorm_ref(x, g, b, yc, rows, w, 1e-6f);
    char nm[64];
    snprintf(nm, sizeof nm, "layernorm %dx%d", rows, w);
    cmp_bf(nm, yg, yc, (size_t)rows * w, 8e-3);
    CK(cudaMemset(y_d, 0xff, (size_t)rows * w * 2));
    CK(cuk_rmsnorm(0, x_d, g_d, y_d, CUK_BF16, rows, w, 1e-6f));
    down(yg, y_d, (size_t)rows * w);
    cuk_rmsnorm_ref(x, g, yc, CUK_BF16, rows, w, 1e-6f);
    snprintf(nm, sizeof nm, "rmsnorm bf16 %dx%d", rows, w);
    cmp_bf(nm, yg, yc, (size_t)rows * w, 8e-3);
    float *fg = (float *)malloc((size_t)rows * w * 4), *fc = (float *)malloc((size_t)rows * w * 4);
    CK(cuk_rmsnorm(0, x_d, g_d, yf_d, CUK_F32, rows, w, 1e-6f));
    down(fg, yf_d, (size_t)rows * w);
    cuk_rmsnorm_ref(x, g, fc, CUK_F32, rows, w, 1e-6f);
    snprintf(nm, sizeof nm, "rmsnorm f32 %dx%d", rows, w);
    cmp_f(nm, fg, fc, (size_t)rows * w, 1e-5);
    cudaFree(x_d); cudaFree(g_d); cudaFree(b_d); cudaFree(y_d); cudaFree(yf_d);
    free(x); free(g); free(b); free(yc); free(yg); free(fg); free(fc);
}

/* off: qkv at an element offset (4: 8-byte aligned rows, the scalar kernel) */
static void test_rope(int T, int nh, int hd, int pos0, int off = 0) {
    int half = hd / 2, maxpos = pos0 + T;
    size_t nq = (size_t)T * (nh + 2) * hd;
    uint16_t *qkv = rand_bf(nq, 1.f);
    float *cs = (float *)malloc((size_t)maxpos * half * 4), *sn = (float *)malloc((size_t)maxpos * half * 4);
    for (int p = 0; p < maxpos; p++)
        for (int i = 0; i < half; i++) {
            double a = p * pow(10000.0, -2.0 * i / hd);
            cs[p * half + i] = (float)cos(a);
            sn[p * half + i] = (float)sin(a);
        }
    size_t nqr = (size_t)T * nh * hd, nkv = (size_t)maxpos * hd;
    uint16_t *qr_c = (uint16_t *)calloc(nqr, 2), *k_c = (uint16_t *)calloc(nkv, 2), *v_c = (uint16_t *)calloc(nkv, 2);
    uint16_t *qr_g = (uint16_t *)calloc(nqr, 2), *k_g = (uint16_t *)calloc(nkv, 2), *v_g = (uint16_t *)calloc(nkv, 2);
    uint16_t *qkv_d = dalloc<uint16_t>(nq + 8), *qr_d = dalloc<uint16_t>(nqr), *k_d = dalloc<uint16_t>(nkv), *v_d = dalloc<uint16_t>(nkv);
    float *cs_d = dalloc<float>((size_t)maxpos * half), *sn_d = dalloc<float>((size_t)maxpos * half);
    up(qkv_d + off, qkv, nq); up(cs_d, cs, (size_t)maxpos * half); up(sn_d, sn, (size_t)maxpos * half);
    CK(cudaMemset(k_d, 0, nkv * 2)); CK(cudaMemset(v_d, 0, nkv * 2));
    CK(cuk_rope_qkv(0, qkv_d + off, cs_d, sn_d, pos0, T, nh, hd, qr_d, k_d, v_d));
    down(qr_g, qr_d, nqr); down(k_g, k_d, nkv); down(v_g, v_d, nkv);
    cuk_rope_qkv_ref(qkv, cs, sn, pos0, T, nh, hd, qr_c, k_c, v_c);
    char nm[64];
    snprintf(nm, sizeof nm, "rope q T=%d nh=%d hd=%d%s", T, nh, hd, off % 8 ? " scalar" : "");
    cmp_bf(nm, qr_g, qr_c, nqr, 1e-3); /* fma contraction may flip a bf16 rounding */
    cmp_bf("rope k", k_g + (size_t)pos0 * hd, k_c + (size_t)pos0 * hd, (size_t)T * hd, 1e-3);
    cmp_bf("rope v (copy)", v_g + (size_t)pos0 * hd, v_c + (size_t)pos0 * hd, (size_t)T * hd, 0);
    cudaFree(qkv_d); cudaFree(qr_d); cudaFree(k_d); cudaFree(v_d); cudaFree(cs_d); cudaFree(sn_d);
    free(qkv); free(cs); free(sn); free(qr_c); free(k_c); free(v_c); free(qr_g); free(k_g); free(v_g);
}

static void test_softmax(int rows, int n) {
    int ld = (n + 7) & ~7;
    float *l = rand_f((size_t)rows * ld, 4.f, 0.f);
    uint16_t *pc = (uint16_t *)malloc((size_t)rows * ld * 2), *pg = (uint16_t *)malloc((size_t)rows * ld * 2);
    memset(pc, 0, (size_t)rows * ld * 2);
    float *l_d = dalloc<float>((size_t)rows * ld);
    uint16_t *p_d = dalloc<uint16_t>((size_t)rows * ld);
    up(l_d, l, (size_t)rows * ld);
    CK(cuk_softmax(0, l_d, ld, p_d, ld, rows, n));
    down(pg, p_d, (size_t)rows * ld);
    cuk_softmax_ref(l, ld, pc, ld, rows, n);
    /* compare the n valid columns of each row */
    uint16_t *a = (uint16_t *)malloc((size_t)rows * n * 2), *b = (uint16_t *)malloc((size_t)rows * n * 2);
    for (int r = 0; r < rows; r++) {
        memcpy(a + (size_t)r * n, pg + (size_t)r * ld, (size_t)n * 2);
        memcpy(b + (size_t)r * n, pc + (size_t)r * ld, (size_t)n * 2);
    }
    char nm[64];
    snprintf(nm, sizeof nm, "softmax %dx%d", rows, n);
    cmp_bf(nm, a, b, (size_t)rows * n, 8e-3);
    cudaFree(l_d); cudaFree(p_d); free(l); free(pc); free(pg); free(a); free(b);
}

static void test_geglu(int T, int F) {
    uint16_t *in = rand_bf((size_t)T * 2 * F, 2.f);
    uint16_t *oc = (uint16_t *)malloc((size_t)T * F * 2), *og = (uint16_t *)malloc((size_t)T * F * 2);
    uint16_t *in_d = dalloc<uint16_t>((size_t)T * 2 * F), *o_d = dalloc<uint16_t>((size_t)T * F);
    up(in_d, in, (size_t)T * 2 * F);
    CK(cuk_geglu(0, in_d, o_d, T, F));
    down(og, o_d, (size_t)T * F);
    cuk_geglu_ref(in, oc, T, F);
    char nm[64];
    snprintf(nm, sizeof nm, "geglu %dx%d", T, F);
    cmp_bf(nm, og, oc, (size_t)T * F, 8e-3);
    cudaFree(in_d); cudaFree(o_d); free(in); free(oc); free(og);
}

static void test_misc(void) {
    /* im2col + add_pos + embed */
    int S = 224, p = 14, ldo = 592, ncam = 2, g = S / p, np = g * g, w = 40;
    size_t ni = (size_t)ncam * S * S * 3, no = (size_t)ncam * np * ldo;
    float *img = rand_f(ni, 0.5f, 0.f);
    uint16_t *oc = (uint16_t *)malloc(no * 2), *og = (uint16_t *)malloc(no * 2);
    float *img_d = dalloc<float>(ni);
    uint16_t *o_d = dalloc<uint16_t>(no);
    up(img_d, img, ni);
    CK(cuk_im2col(0, img_d, o_d, ncam, S, p, ldo));
    down(og, o_d, no);
    cuk_im2col_ref(img, oc, ncam, S, p, ldo);
    cmp_bf("im2col (exact)", og, oc, no, 0);
    size_t nx = (size_t)ncam * np * w;
    float *in = rand_f(nx, 1.f, 0.f), *pos = rand_f((size_t)np * w, 1.f, 0.f);
    float *pc = (float *)malloc(nx * 4), *pg = (float *)malloc(nx * 4);
    float *in_d = dalloc<float>(nx), *pos_d = dalloc<float>((size_t)np * w), *out_d = dalloc<float>(nx);
    up(in_d, in, nx); up(pos_d, pos, (size_t)np * w);
    CK(cuk_add_pos(0, in_d, pos_d, out_d, ncam * np, np, w));
    down(pg, out_d, nx);
    cuk_add_pos_ref(in, pos, pc, ncam * np, np, w);
    cmp_f("add_pos (exact)", pg, pc, nx, 0);
    int V = 1000, d = 64, n = 17;
    uint16_t *tab = rand_bf((size_t)V * d, 0.1f);
    int32_t tok[17];
    for (int i = 0; i < n; i++) tok[i] = (int32_t)(ur() * V) % V;
    float *ec = (float *)malloc((size_t)n * d * 4), *eg = (float *)malloc((size_t)n * d * 4);
    uint16_t *tab_d = dalloc<uint16_t>((size_t)V * d);
    int32_t *tok_d = dalloc<int32_t>(n);
    float *e_d = dalloc<float>((size_t)n * d);
    up(tab_d, tab, (size_t)V * d); up(tok_d, tok, n);
    CK(cuk_embed(0, tok_d, tab_d, e_d, n, d, 8.f));
    down(eg, e_d, (size_t)n * d);
    cuk_embed_ref(tok, tab, ec, n, d, 8.f);
    cmp_f("embed (exact)", eg, ec, (size_t)n * d, 0);
    /* small_mm with silu, strided B (W^T) and add vector */
    int M = 7, N = 33, K = 19;
    float *A = rand_f((size_t)M * K, 1, 0), *B = rand_f((size_t)N * K, 1, 0), *bias = rand_f(N, 1, 0), *add = rand_f(N, 1, 0);
    float *cc = (float *)malloc((size_t)M * N * 4), *cg = (float *)malloc((size_t)M * N * 4);
    float *A_d = dalloc<float>((size_t)M * K), *B_d = dalloc<float>((size_t)N * K), *bi_d = dalloc<float>(N), *ad_d = dalloc<float>(N), *C_d = dalloc<float>((size_t)M * N);
    up(A_d, A, (size_t)M * K); up(B_d, B, (size_t)N * K); up(bi_d, bias, N); up(ad_d, add, N);
    CK(cuk_small_mm(0, M, N, K, A_d, K, 1, B_d, 1, K, bi_d, ad_d, 1, C_d, CUK_F32, N));
    down(cg, C_d, (size_t)M * N);
    cuk_small_mm_ref(M, N, K, A, K, 1, B, 1, K, bias, add, 1, cc, CUK_F32, N);
    cmp_f("small_mm silu", cg, cc, (size_t)M * N, 1e-5);
    /* random generator: bit-exact port (bf16-rounded) */
    long long rn = 1 << 20;
    uint64_t ts = pi0_spec_seed(1234, "some.tensor");
    float *r_d = dalloc<float>(rn), *rg = (float *)malloc(rn * 4);
    CK(cuk_random(0, r_d, CUK_F32, rn, rn, rn, ts, 0.1f, 0.5f));
    down(rg, r_d, rn);
    long long mism = 0;
    for (long long i = 0; i < rn; i++) {
        float ref = bf16_to_f32(f32_to_bf16(pi0_random_value(ts, (uint64_t)i, 0.1f, 0.5f)));
        if (memcmp(&ref, &rg[i], 4)) mism++;
    }
    printf("  %-34s %lld / %lld mismatches %s\n", "random (bf16 values, bitwise)", mism, rn, mism ? "FAIL" : "ok");
    if (mism) g_fail = 1;
    cudaFree(img_d); cudaFree(o_d); cudaFree(in_d); cudaFree(pos_d); cudaFree(out_d); cudaFree(tab_d); cudaFree(tok_d);
    cudaFree(e_d); cudaFree(A_d); cudaFree(B_d); cudaFree(bi_d); cudaFree(ad_d); cudaFree(C_d); cudaFree(r_d);
    free(img); free(oc); free(og); free(in); free(pos); free(pc); free(pg); free(tab); free(ec); free(eg);
    free(A); free(B); free(bias); free(add); free(cc); free(cg); free(rg);
}

static void test_attention(int R, int S, int hd, int nsplit) {
    int Sp = (S + 63) / 64 * 64;
    uint16_t *q = rand_bf((size_t)R * hd, 1.f), *k = rand_bf((size_t)Sp * hd, 1.f), *v = rand_bf((size_t)Sp * hd, 1.f);
    uint16_t *oc = (uint16_t *)malloc((size_t)R * hd * 2), *og = (uint16_t *)malloc((size_t)R * hd * 2);
    uint16_t *q_d = dalloc<uint16_t>((size_t)R * hd), *k_d = dalloc<uint16_t>((size_t)Sp * hd), *v_d = dalloc<uint16_t>((size_t)Sp * hd);
    uint16_t *o_d = dalloc<uint16_t>((size_t)R * hd);
    size_t pf = (size_t)32 * R * (hd + 2);
    float *part = dalloc<float>(pf);
    up(q_d, q, (size_t)R * hd); up(k_d, k, (size_t)Sp * hd); up(v_d, v, (size_t)Sp * hd);
    float scale = 1.f / sqrtf((float)hd);
    CK(cuk_attention(0, q_d, R, k_d, v_d, S, hd, scale, o_d, part, pf, nsplit));
    down(og, o_d, (size_t)R * hd);
    cuk_attention_ref(q, R, k, v, S, hd, scale, oc);
    char nm[80];
    snprintf(nm, sizeof nm, "attention R=%d S=%d hd=%d split=%d", R, S, hd, nsplit);
    cmp_bf(nm, og, oc, (size_t)R * hd, 1e-2);
    /* determinism */
    uint16_t *og2 = (uint16_t *)malloc((size_t)R * hd * 2);
    CK(cudaMemset(o_d, 0xff, (size_t)R * hd * 2));
    CK(cuk_attention(0, q_d, R, k_d, v_d, S, hd, scale, o_d, part, pf, nsplit));
    down(og2, o_d, (size_t)R * hd);
    if (memcmp(og, og2, (size_t)R * hd * 2)) { printf("  attention not deterministic: FAIL\n"); g_fail = 1; }
    cudaFree(q_d); cudaFree(k_d); cudaFree(v_d); cudaFree(o_d); cudaFree(part);
    free(q); free(k); free(v); free(oc); free(og); free(og2);
}

/* MQA attention for few query rows (state-row key limit; K/V allocated with exactly S rows) */
static void test_attn_mqa(int R, int S, int hd, int rows_lim, int n_lim, int merge = CUK_MQA_MERGE_COL4,
                          int tile_rows = 64) {
    uint16_t *q = rand_bf((size_t)R * hd, 1.f), *k = rand_bf((size_t)S * hd, 1.f), *v = rand_bf((size_t)S * hd, 1.f);
    uint16_t *oc = (uint16_t *)malloc((size_t)R * hd * 2), *og = (uint16_t *)malloc((size_t)R * hd * 2);
    uint16_t *og2 = (uint16_t *)malloc((size_t)R * hd * 2);
    uint16_t *q_d = dalloc<uint16_t>((size_t)R * hd), *k_d = dalloc<uint16_t>((size_t)S * hd), *v_d = dalloc<uint16_t>((size_t)S * hd);
    uint16_t *o_d = dalloc<uint16_t>((size_t)R * hd);
    size_t pf = (size_t)((S + 63) / 64) * R * (hd + 2);
    float *part = dalloc<float>(pf);
    up(q_d, q, (size_t)R * hd); up(k_d, k, (size_t)S * hd); up(v_d, v, (size_t)S * hd);
    float scale = 1.f / sqrtf((float)hd);
    CK(cudaMemset(o_d, 0xff, (size_t)R * hd * 2)); /* NaN poison */
    CK(cudaMemset(part, 0xff, pf * 4));
    CK(cuk_attention_mqa(0, q_d, R, k_d, v_d, S, hd, scale, rows_lim, n_lim, o_d, part, pf, merge, tile_rows));
    CK(cudaDeviceSynchronize());
    down(og, o_d, (size_t)R * hd);
    cuk_attention_lim_ref(q, R, k, v, S, hd, scale, rows_lim, n_lim, oc);
    char nm[96];
    snprintf(nm, sizeof nm, "attn_mqa%s%s R=%d S=%d hd=%d lim=%d/%d", merge ? "(row)" : "",
             tile_rows == 32                    ? "(32)"
             : tile_rows == CUK_MQA_FLASH       ? "(flash)"
             : tile_rows == CUK_MQA_FLASH_PUSH  ? "(push)"
             : tile_rows == CUK_MQA_FLASH_PUSH2 ? "(push2)"
             : tile_rows == CUK_MQA_FLASH_K32   ? "(k32)"
             : tile_rows == CUK_MQA_FLASH_F32   ? "(f32)"
                                                : "",
             R, S, hd, rows_lim, n_lim);
    cmp_bf(nm, og, oc, (size_t)R * hd, 1e-2);
    CK(cudaMemset(o_d, 0xff, (size_t)R * hd * 2));
    CK(cuk_attention_mqa(0, q_d, R, k_d, v_d, S, hd, scale, rows_lim, n_lim, o_d, part, pf, merge, tile_rows));
    down(og2, o_d, (size_t)R * hd);
    if (memcmp(og, og2, (size_t)R * hd * 2)) { printf("  attn_mqa not deterministic: FAIL\n"); g_fail = 1; }
    cudaFree(q_d); cudaFree(k_d); cudaFree(v_d); cudaFree(o_d); cudaFree(part);
    free(q); free(k); free(v); free(oc); free(og); free(og2);
}

/* Fused flash attention (cuk_flash_attn) vs its CPU twin. vit: nb cameras of R tokens, q/k/v interleaved
 * as the fused QKV GEMM writes them (row = [q | k | v], head h at columns h*hd), out (nb*R, nh*hd);
 * else MQA (prefill): R = tokens x heads query rows over one K/V head of S rows. */
static void test_flash(int vit, int nb, int nh, int R, int S, int hd, int variant = 0) {
    cuk_flash_args a;
    memset(&a, 0, sizeof a);
    size_t nin, no;
    const long long W = (long long)nh * hd;
    if (vit) {
        nin = (size_t)nb * R * 3 * W;
        no = (size_t)nb * R * W;
        a.ldq = a.ldk = a.ldv = 3 * W; a.ldo = W;
        a.q_bs = a.k_bs = a.v_bs = (long long)R * 3 * W; a.o_bs = (long long)R * W;
        a.q_hs = a.k_hs = a.v_hs = a.o_hs = hd;
        a.nb = nb; a.nh = nh; a.R = R; a.S = R;
    } else {
        nin = (size_t)(R + 2 * S) * hd;
        no = (size_t)R * hd;
        a.ldq = a.ldk = a.ldv = a.ldo = hd;
        a.nb = 1; a.nh = 1; a.R = R; a.S = S;
    }
    a.hd = hd; a.scale = 1.f / sqrtf((float)hd); a.variant = variant;
    uint16_t *in = rand_bf(nin, 1.f), *oc = (uint16_t *)calloc(no, 2), *og = (uint16_t *)malloc(no * 2);
    uint16_t *og2 = (uint16_t *)malloc(no * 2);
    uint16_t *in_d = dalloc<uint16_t>(nin), *o_d = dalloc<uint16_t>(no);
    up(in_d, in, nin);
    cuk_flash_args h = a, d = a;
    const long long ko = vit ? W : (long long)R * hd, vo = vit ? 2 * W : (long long)(R + S) * hd;
    h.q = in; h.k = in + ko; h.v = in + vo; h.o = oc;
    d.q = in_d; d.k = in_d + ko; d.v = in_d + vo; d.o = o_d;
    char nm[96];
    snprintf(nm, sizeof nm, "flash %s nb=%d nh=%d R=%d S=%d hd=%d v%d", vit ? "vit" : "mqa", nb, nh, R, S, hd, variant);
    CK(cudaMemset(o_d, 0xff, no * 2)); /* NaN poison */
    cudaError_t e = cuk_flash_attn(0, &d);
    if (e != cudaSuccess) {
        printf("  %-34s launch: %s FAIL\n", nm, cudaGetErrorString(e));
        g_fail = 1;
    } else {
        down(og, o_d, no);
        cuk_flash_attn_ref(&h);
        cmp_bf(nm, og, oc, no, 1e-2);
        CK(cudaMemset(o_d, 0xff, no * 2));
        CK(cuk_flash_attn(0, &d));
        down(og2, o_d, no);
        if (memcmp(og, og2, no * 2)) { printf("  flash attention not deterministic: FAIL\n"); g_fail = 1; }
        /* the backend's launchers on the same data */
        CK(cudaMemset(o_d, 0xff, no * 2));
        const int lv = variant == CUK_FLASH_WG ? variant : 0; /* the launchers' variants */
        if (vit) CK(cuk_flash_attn_vit(0, in_d, nb, R, nh, hd, a.scale, o_d, lv));
        else
            CK(cuk_flash_attn_mqa(0, in_d, R, in_d + ko, in_d + vo, S, hd, a.scale, o_d, lv));
        down(og2, o_d, no);
        if ((variant == 0 || variant == CUK_FLASH_WG) && memcmp(og, og2, no * 2)) {
            printf("  flash launcher != cuk_flash_attn: FAIL\n");
            g_fail = 1;
        }
    }
    cudaFree(in_d); cudaFree(o_d);
    free(in); free(oc); free(og); free(og2);
}

/* y (T, N) = X (T, K) W (N, K)^T in double, from bf16 operands: the reference of the streaming GEMM tests */
static double *gemm_ref_bf(const uint16_t *X, const uint16_t *W, int T, int N, int K) {
    double *y = (double *)malloc((size_t)T * N * 8);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double a = 0;
            for (int k = 0; k < K; k++) a += (double)bf16_to_f32(X[(size_t)t * K + k]) * bf16_to_f32(W[(size_t)n * K + k]);
            y[(size_t)t * N + n] = a;
        }
    return y;
}

static void test_skinny(int T, int N, int K, int mode, int nw = 0, int cs = 0, int mt = 0) {
    uint16_t *X = rand_bf((size_t)T * K, 1.f), *W = rand_bf((size_t)N * K, 1.f / sqrtf((float)K));
    int No = mode == CUK_SK_GEGLU ? N / 2 : N;
    float *R0 = rand_f((size_t)T * No, 1.f, 0.f);
    double *ref = (double *)malloc((size_t)T * No * 8), *got = (double *)malloc((size_t)T * No * 8);
    double *y = gemm_ref_bf(X, W, T, N, K);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < No; n++) {
            double v = y[(size_t)t * N + n];
            if (mode == CUK_SK_GEGLU) {
                double u = y[(size_t)t * N + n + No];
                v = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))) * u;
            } else if (mode == CUK_SK_RESID) v += R0[(size_t)t * No + n];
            ref[(size_t)t * No + n] = v;
        }
    uint16_t *X_d = dalloc<uint16_t>((size_t)T * K), *W_d = dalloc<uint16_t>((size_t)N * K);
    float *o_d = dalloc<float>((size_t)T * No);
    up(X_d, X, (size_t)T * K); up(W_d, W, (size_t)N * K);
    /* nw = 32 / 64 / 128 (BN; mt: warpgroups) or -1 (automatic tiles): the packed-weight kernel, on weights packed for that choice */
    const int packed = nw == 32 || nw == 64 || nw == 128 || nw < 0;
    if (nw < 0) nw = cs = 0;
    if (packed) {
        size_t pe = cuk_skinny_packed_elems(N, K, mode, 0, 0, nw, cs);
        if (!pe) {
            printf("  skinny T=%d N=%d K=%d mode %d bn %d cs %d: packing unsupported: FAIL\n", T, N, K, mode, nw, cs);
            g_fail = 1;
            return;
        }
        uint16_t *Wp_d = dalloc<uint16_t>(pe);
        CK(cudaMemset(Wp_d, 0xff, pe * 2));
        CK(cuk_skinny_pack(0, W_d, N, K, mode, 0, 0, nw, cs, Wp_d));
        cudaFree(W_d);
        W_d = Wp_d;
        mode |= CUK_SK_PACKED;
    }
    if ((mode & ~CUK_SK_PACKED) == CUK_SK_RESID) up(o_d, R0, (size_t)T * No);
    else CK(cudaMemset(o_d, 0xff, (size_t)T * No * 4)); /* NaN poison */
    cudaError_t le = cuk_skinny_linear_cfg(0, X_d, K, T, W_d, N, K, mode, o_d, No, nw, cs, mt);
    if (le == cudaErrorInvalidValue) {
        printf("  skinny T=%d N=%d K=%d mode %d nw %d cs %d: unsupported shape: FAIL\n", T, N, K, mode, nw, cs);
        g_fail = 1;
        return;
    }
    CK(le);
    CK(cudaDeviceSynchronize());
    size_t ob = (size_t)T * No * ((mode & ~CUK_SK_PACKED) == CUK_SK_RESID ? 4 : 2);
    unsigned char *first = (unsigned char *)malloc(ob), *again = (unsigned char *)malloc(ob);
    CK(cudaMemcpy(first, o_d, ob, cudaMemcpyDeviceToHost));
    if ((mode & ~CUK_SK_PACKED) == CUK_SK_RESID) {
        float *o = (float *)first;
        for (size_t i = 0; i < (size_t)T * No; i++) got[i] = o[i];
        up(o_d, R0, (size_t)T * No);
    } else {
        uint16_t *o = (uint16_t *)first;
        for (size_t i = 0; i < (size_t)T * No; i++) got[i] = bf16_to_f32(o[i]);
        CK(cudaMemset(o_d, 0xff, (size_t)T * No * 4));
    }
    CK(cuk_skinny_linear_cfg(0, X_d, K, T, W_d, N, K, mode, o_d, No, nw, cs, mt)); /* determinism */
    CK(cudaMemcpy(again, o_d, ob, cudaMemcpyDeviceToHost));
    if (memcmp(first, again, ob)) { printf("  skinny not deterministic: FAIL\n"); g_fail = 1; }
    free(first); free(again);
    char nm[80];
    snprintf(nm, sizeof nm, "skinny%s T=%d N=%d K=%d mode %d nw %d cs %d mt %d", packed ? " packed" : "", T, N, K,
             mode & ~CUK_SK_PACKED, nw, cs, mt);
    report(nm, got, ref, (size_t)T * No, (mode & ~CUK_SK_PACKED) == CUK_SK_RESID ? 1e-4 : 1e-2);
    cudaFree(X_d); cudaFree(W_d); cudaFree(o_d);
    free(X); free(W); free(R0); free(ref); free(got); free(y);
}

/* CUK_SK_PARTIAL: the cs unreduced split-K partials, summed here in rank order, vs the double GEMM */
static void test_skinny_partial(int T, int N, int K, int bn, int cs) {
    uint16_t *X = rand_bf((size_t)T * K, 1.f), *W = rand_bf((size_t)N * K, 1.f / sqrtf((float)K));
    double *ref = gemm_ref_bf(X, W, T, N, K), *got = (double *)calloc((size_t)T * N, 8);
    const size_t pe = cuk_skinny_packed_elems(N, K, CUK_SK_PARTIAL, 0, 0, bn, cs);
    if (!pe) { printf("  skinny partial T=%d N=%d K=%d: packing unsupported: FAIL\n", T, N, K); g_fail = 1; return; }
    uint16_t *X_d = dalloc<uint16_t>((size_t)T * K), *W_d = dalloc<uint16_t>((size_t)N * K), *Wp_d = dalloc<uint16_t>(pe);
    float *p_d = dalloc<float>((size_t)cs * T * N);
    up(X_d, X, (size_t)T * K); up(W_d, W, (size_t)N * K);
    CK(cudaMemset(p_d, 0xff, (size_t)cs * T * N * 4)); /* NaN poison */
    CK(cuk_skinny_pack(0, W_d, N, K, CUK_SK_PARTIAL, 0, 0, bn, cs, Wp_d));
    CK(cuk_skinny_linear_cfg(0, X_d, K, T, Wp_d, N, K, CUK_SK_PARTIAL | CUK_SK_PACKED, p_d, N, bn, cs, 0));
    float *p = (float *)malloc((size_t)cs * T * N * 4);
    CK(cudaMemcpy(p, p_d, (size_t)cs * T * N * 4, cudaMemcpyDeviceToHost));
    for (int q = 0; q < cs; q++)
        for (size_t i = 0; i < (size_t)T * N; i++) got[i] += p[(size_t)q * T * N + i];
    char nm[80];
    snprintf(nm, sizeof nm, "skinny partial T=%d N=%d K=%d bn %d cs %d", T, N, K, bn, cs);
    report(nm, got, ref, (size_t)T * N, 1e-4);
    cudaFree(X_d); cudaFree(W_d); cudaFree(Wp_d); cudaFree(p_d);
    free(X); free(W); free(ref); free(got); free(p);
}

/* the expert's o / down chain: partial GEMM (CUK_SK_PARTIAL) -> cuk_rmsnorm_acc (residual += partials, RMSNorm) vs
 * cuk_rmsnorm_acc_ref on the same partials (bitwise residual) and the double chain (x + X W^T, normed); rows
 * [r0, r0 + nr) of the T only, as the step's final norm skips the state row */
static void test_partial_norm(int T, int N, int K, int bn, int cs, int r0, int nr) {
    uint16_t *X = rand_bf((size_t)T * K, 1.f), *W = rand_bf((size_t)N * K, 1.f / sqrtf((float)K));
    float *x = rand_f((size_t)T * N, 1.f, 0.f), *g = rand_f(N, 0.1f, 0.f);
    const size_t pe = cuk_skinny_packed_elems(N, K, CUK_SK_PARTIAL, 0, 0, bn, cs);
    if (!pe) { printf("  partial norm T=%d N=%d K=%d: packing unsupported: FAIL\n", T, N, K); g_fail = 1; return; }
    uint16_t *X_d = dalloc<uint16_t>((size_t)T * K), *W_d = dalloc<uint16_t>((size_t)N * K), *Wp_d = dalloc<uint16_t>(pe);
    float *p_d = dalloc<float>((size_t)cs * T * N), *x_d = dalloc<float>((size_t)T * N), *g_d = dalloc<float>(N);
    uint16_t *y_d = dalloc<uint16_t>((size_t)T * N);
    up(X_d, X, (size_t)T * K); up(W_d, W, (size_t)N * K); up(x_d, x, (size_t)T * N); up(g_d, g, N);
    CK(cudaMemset(p_d, 0xff, (size_t)cs * T * N * 4)); /* NaN poison */
    CK(cudaMemset(y_d, 0xff, (size_t)T * N * 2));
    CK(cuk_skinny_pack(0, W_d, N, K, CUK_SK_PARTIAL, 0, 0, bn, cs, Wp_d));
    CK(cuk_skinny_linear_cfg(0, X_d, K, T, Wp_d, N, K, CUK_SK_PARTIAL | CUK_SK_PACKED, p_d, N, bn, cs, 0));
    CK(cuk_rmsnorm_acc(0, x_d + (size_t)r0 * N, p_d + (size_t)r0 * N, cs, (long long)T * N, N, g_d, y_d, CUK_BF16, nr,
                       N, 1e-6f));
    float *p = (float *)malloc((size_t)cs * T * N * 4), *xg = (float *)malloc((size_t)T * N * 4);
    float *xc = (float *)malloc((size_t)T * N * 4);
    uint16_t *yg = (uint16_t *)malloc((size_t)T * N * 2), *yc = (uint16_t *)malloc((size_t)T * N * 2);
    CK(cudaMemcpy(p, p_d, (size_t)cs * T * N * 4, cudaMemcpyDeviceToHost));
    down(xg, x_d, (size_t)T * N);
    down(yg, y_d, (size_t)nr * N);
    memcpy(xc, x, (size_t)T * N * 4);
    cuk_rmsnorm_acc_ref(xc + (size_t)r0 * N, p + (size_t)r0 * N, cs, (long long)T * N, N, g, yc, CUK_BF16, nr, N, 1e-6f);
    char nm[96];
    snprintf(nm, sizeof nm, "partial+norm T=%d N=%d K=%d rows %d..%d", T, N, K, r0, r0 + nr);
    if (memcmp(xg, xc, (size_t)T * N * 4)) { printf("  %s: residual differs from the twin: FAIL\n", nm); g_fail = 1; }
    cmp_bf(nm, yg, yc, (size_t)nr * N, 8e-3);
    /* against the double chain */
    double *ref = gemm_ref_bf(X, W, T, N, K), *yr = (double *)malloc((size_t)nr * N * 8), *yd = (double *)malloc((size_t)nr * N * 8);
    for (int r = 0; r < nr; r++) {
        double q = 0;
        for (int i = 0; i < N; i++) {
            const double v = x[(size_t)(r0 + r) * N + i] + ref[(size_t)(r0 + r) * N + i];
            q += v * v;
        }
        const double rs = 1.0 / sqrt(q / N + 1e-6);
        for (int i = 0; i < N; i++) {
            yr[(size_t)r * N + i] = (x[(size_t)(r0 + r) * N + i] + ref[(size_t)(r0 + r) * N + i]) * rs * (1.0 + g[i]);
            yd[(size_t)r * N + i] = bf16_to_f32(yg[(size_t)r * N + i]);
        }
    }
    snprintf(nm, sizeof nm, "partial+norm T=%d N=%d vs double", T, N);
    report(nm, yd, yr, (size_t)nr * N, 8e-3);
    cudaFree(X_d); cudaFree(W_d); cudaFree(Wp_d); cudaFree(p_d); cudaFree(x_d); cudaFree(g_d); cudaFree(y_d);
    free(X); free(W); free(x); free(g); free(p); free(xg); free(xc); free(yg); free(yc); free(ref); free(yr); free(yd);
}

/* fused QKV GEMM + RoPE + K/V scatter vs (double GEMM -> bf16 -> cuk_rope_qkv_ref) */
static void test_skinny_rope(int T, int nh, int hd, int K, int pos0, int packed = 0) {
    const int N = (nh + 2) * hd, half = hd / 2, S = pos0 + T;
    uint16_t *X = rand_bf((size_t)T * K, 1.f), *W = rand_bf((size_t)N * K, 1.f / sqrtf((float)K));
    float *cs = (float *)malloc((size_t)S * half * 4), *sn = (float *)malloc((size_t)S * half * 4);
    for (int p = 0; p < S; p++)
        for (int i = 0; i < half; i++) {
            double a = p / pow(10000.0, 2.0 * i / hd);
            cs[(size_t)p * half + i] = (float)cos(a);
            sn[(size_t)p * half + i] = (float)sin(a);
        }
    uint16_t *qkv = (uint16_t *)malloc((size_t)T * N * 2);
    double *y = gemm_ref_bf(X, W, T, N, K);
    for (size_t i = 0; i < (size_t)T * N; i++) qkv[i] = f32_to_bf16((float)y[i]);
    free(y);
    size_t nq = (size_t)T * nh * hd, nkv = (size_t)S * hd;
    uint16_t *qc = (uint16_t *)calloc(nq, 2), *kcc = (uint16_t *)calloc(nkv, 2), *vcc = (uint16_t *)calloc(nkv, 2);
    cuk_rope_qkv_ref(qkv, cs, sn, pos0, T, nh, hd, qc, kcc, vcc);
    uint16_t *X_d = dalloc<uint16_t>((size_t)T * K), *W_d = dalloc<uint16_t>((size_t)N * K);
    uint16_t *q_d = dalloc<uint16_t>(nq), *k_d = dalloc<uint16_t>(nkv), *v_d = dalloc<uint16_t>(nkv);
    float *cs_d = dalloc<float>((size_t)S * half), *sn_d = dalloc<float>((size_t)S * half);
    up(X_d, X, (size_t)T * K); up(W_d, W, (size_t)N * K); up(cs_d, cs, (size_t)S * half); up(sn_d, sn, (size_t)S * half);
    CK(cudaMemset(q_d, 0xff, nq * 2));
    CK(cudaMemset(k_d, 0, nkv * 2)); CK(cudaMemset(v_d, 0, nkv * 2));
    CK(cudaMemset(k_d + (size_t)pos0 * hd, 0xff, (size_t)T * hd * 2));
    CK(cudaMemset(v_d + (size_t)pos0 * hd, 0xff, (size_t)T * hd * 2));
    if (packed) {
        size_t pe = cuk_skinny_packed_elems(N, K, CUK_SK_ROPE, nh, hd, 0, 0);
        if (!pe) { printf("  skinny_qkv_rope packing unsupported: FAIL\n"); g_fail = 1; return; }
        uint16_t *Wp_d = dalloc<uint16_t>(pe);
        CK(cuk_skinny_pack(0, W_d, N, K, CUK_SK_ROPE, nh, hd, 0, 0, Wp_d));
        cudaFree(W_d);
        W_d = Wp_d;
    }
    CK(cuk_skinny_qkv_rope(0, X_d, K, T, W_d, K, cs_d, sn_d, pos0, nh, hd, q_d, k_d, v_d, packed ? CUK_SK_PACKED : 0));
    uint16_t *qg = (uint16_t *)malloc(nq * 2), *kg = (uint16_t *)malloc(nkv * 2), *vg = (uint16_t *)malloc(nkv * 2);
    down(qg, q_d, nq); down(kg, k_d, nkv); down(vg, v_d, nkv);
    char nm[96];
    snprintf(nm, sizeof nm, "skinny_qkv_rope%s T=%d nh=%d hd=%d K=%d pos0=%d: q", packed ? " packed" : "", T, nh, hd, K,
             pos0);
    cmp_bf(nm, qg, qc, nq, 1e-2);
    snprintf(nm, sizeof nm, "skinny_qkv_rope T=%d: k rows", T);
    cmp_bf(nm, kg + (size_t)pos0 * hd, kcc + (size_t)pos0 * hd, (size_t)T * hd, 1e-2);
    snprintf(nm, sizeof nm, "skinny_qkv_rope T=%d: v rows", T);
    cmp_bf(nm, vg + (size_t)pos0 * hd, vcc + (size_t)pos0 * hd, (size_t)T * hd, 1e-2);
    for (size_t i = 0; i < (size_t)pos0 * hd; i++)
        if (kg[i] || vg[i]) { printf("  skinny_qkv_rope wrote outside its cache rows: FAIL\n"); g_fail = 1; break; }
    cudaFree(X_d); cudaFree(W_d); cudaFree(q_d); cudaFree(k_d); cudaFree(v_d); cudaFree(cs_d); cudaFree(sn_d);
    free(X); free(W); free(cs); free(sn); free(qkv); free(qc); free(kcc); free(vcc); free(qg); free(kg); free(vg);
}

/*
 * The expert's few-token chain (RMSNorm -> streaming GEMM -> ... -> MQA attention) under programmatic
 * dependent launch (CUK_PDL) must give bitwise what the plain launches give: eagerly on a stream and
 * replayed from a captured graph (programmatic edges). Three rounds of norm, QKV + RoPE, attention,
 * o (+= x), norm, gate/up + GeGLU, down (+= x); the output is poisoned between runs.
 */
static void test_pdl_chain(int T, int D, int F, int nh, int hd, int P) {
    const int N = (nh + 2) * hd, S = P + T, half = hd / 2;
    float *x0 = rand_f((size_t)T * D, 1.f, 0.f), *nw = rand_f(D, 0.1f, 0.f);
    uint16_t *Wq = rand_bf((size_t)N * D, 1.f / sqrtf((float)D)), *Wo = rand_bf((size_t)D * nh * hd, 1.f / sqrtf((float)nh * hd));
    uint16_t *Wg = rand_bf((size_t)2 * F * D, 1.f / sqrtf((float)D)), *Wd = rand_bf((size_t)D * F, 1.f / sqrtf((float)F));
    uint16_t *kv = rand_bf((size_t)S * hd, 1.f);
    float *cs = (float *)malloc((size_t)S * half * 4), *sn = (float *)malloc((size_t)S * half * 4);
    for (size_t i = 0; i < (size_t)S * half; i++) { cs[i] = cosf(0.01f * i); sn[i] = sinf(0.01f * i); }
    float *x_d = dalloc<float>((size_t)T * D), *nw_d = dalloc<float>(D), *cs_d = dalloc<float>((size_t)S * half),
          *sn_d = dalloc<float>((size_t)S * half);
    uint16_t *Wq_d = dalloc<uint16_t>((size_t)N * D), *Wo_d = dalloc<uint16_t>((size_t)D * nh * hd),
             *Wg_d = dalloc<uint16_t>((size_t)2 * F * D), *Wd_d = dalloc<uint16_t>((size_t)D * F);
    uint16_t *h_d = dalloc<uint16_t>((size_t)T * D), *q_d = dalloc<uint16_t>((size_t)T * nh * hd),
             *o_d = dalloc<uint16_t>((size_t)T * nh * hd), *a_d = dalloc<uint16_t>((size_t)T * F),
             *k_d = dalloc<uint16_t>((size_t)S * hd), *v_d = dalloc<uint16_t>((size_t)S * hd);
    up(nw_d, nw, D); up(cs_d, cs, (size_t)S * half); up(sn_d, sn, (size_t)S * half);
    up(Wq_d, Wq, (size_t)N * D); up(Wo_d, Wo, (size_t)D * nh * hd); up(Wg_d, Wg, (size_t)2 * F * D); up(Wd_d, Wd, (size_t)D * F);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    auto chain = [&](int pdl) -> cudaError_t {
        cudaError_t e = cudaSuccess;
        for (int r = 0; r < 3 && e == cudaSuccess; r++) {
            if ((e = cuk_rmsnorm(st, x_d, nw_d, h_d, CUK_BF16 | pdl, T, D, 1e-6f))) break;
            if ((e = cuk_skinny_qkv_rope(st, h_d, D, T, Wq_d, D, cs_d, sn_d, P, nh, hd, q_d, k_d, v_d, pdl))) break;
            if ((e = cuk_attention_mqa(st, q_d, T * nh, k_d, v_d, S, hd, 1.f / sqrtf((float)hd), 0, 0, o_d, NULL, 0,
                                       CUK_MQA_MERGE_COL4, CUK_MQA_FLASH | pdl))) break;
            if ((e = cuk_skinny_linear(st, o_d, nh * hd, T, Wo_d, D, nh * hd, CUK_SK_RESID | pdl, x_d, D))) break;
            if ((e = cuk_rmsnorm(st, x_d, nw_d, h_d, CUK_BF16 | pdl, T, D, 1e-6f))) break;
            if ((e = cuk_skinny_linear(st, h_d, D, T, Wg_d, 2 * F, D, CUK_SK_GEGLU | pdl, a_d, F))) break;
            e = cuk_skinny_linear(st, a_d, F, T, Wd_d, D, F, CUK_SK_RESID | pdl, x_d, D);
        }
        return e;
    };
    auto reset = [&]() {
        up(x_d, x0, (size_t)T * D);
        up(k_d, kv, (size_t)S * hd); up(v_d, kv, (size_t)S * hd);
        CK(cudaMemset(h_d, 0xff, (size_t)T * D * 2)); CK(cudaMemset(q_d, 0xff, (size_t)T * nh * hd * 2));
        CK(cudaMemset(o_d, 0xff, (size_t)T * nh * hd * 2)); CK(cudaMemset(a_d, 0xff, (size_t)T * F * 2));
        CK(cudaDeviceSynchronize());
    };
    float *ref = (float *)malloc((size_t)T * D * 4), *got = (float *)malloc((size_t)T * D * 4);
    reset();
    CK(chain(0));
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(ref, x_d, (size_t)T * D * 4, cudaMemcpyDeviceToHost));
    int finite = 1;
    for (size_t i = 0; i < (size_t)T * D; i++) finite &= isfinite(ref[i]) ? 1 : 0;
    reset();
    CK(chain(CUK_PDL));
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(got, x_d, (size_t)T * D * 4, cudaMemcpyDeviceToHost));
    int eager_ok = !memcmp(ref, got, (size_t)T * D * 4);
    reset();
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    cudaError_t ce = chain(CUK_PDL);
    CK(cudaStreamEndCapture(st, &g));
    CK(ce);
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(got, x_d, (size_t)T * D * 4, cudaMemcpyDeviceToHost));
    int graph_ok = !memcmp(ref, got, (size_t)T * D * 4);
    printf("  pdl chain T=%d D=%d F=%d: finite %d, eager == plain %d, graph == plain %d: %s\n", T, D, F, finite,
           eager_ok, graph_ok, finite && eager_ok && graph_ok ? "ok" : "FAIL");
    if (!(finite && eager_ok && graph_ok)) g_fail = 1;
    cudaGraphExecDestroy(ge); cudaGraphDestroy(g); cudaStreamDestroy(st);
    cudaFree(x_d); cudaFree(nw_d); cudaFree(cs_d); cudaFree(sn_d); cudaFree(Wq_d); cudaFree(Wo_d); cudaFree(Wg_d);
    cudaFree(Wd_d); cudaFree(h_d); cudaFree(q_d); cudaFree(o_d); cudaFree(a_d); cudaFree(k_d); cudaFree(v_d);
    free(x0); free(nw); free(Wq); free(Wo); free(Wg); free(Wd); free(kv); free(cs); free(sn); free(ref); free(got);
}

/* pi0_linear: Y (T, out) = X W^T + bias (+ beta Y), epilogues, bf16 / f32 outputs */
static void test_linear(pi0_gemm_ctx *g, int T, int out, int in, int epi, int ty, float beta) {
    uint16_t *X = rand_bf((size_t)T * in, 1.f), *W = rand_bf((size_t)out * in, 1.f / sqrtf((float)in));
    float *bias = rand_f(out, 0.5f, 0.f), *Y0 = rand_f((size_t)T * out, 1.f, 0.f);
    uint16_t *bias_bf = (uint16_t *)malloc((size_t)out * 2), *Y0b = (uint16_t *)malloc((size_t)T * out * 2);
    for (int i = 0; i < out; i++) bias_bf[i] = f32_to_bf16(bias[i]), bias[i] = bf16_to_f32(bias_bf[i]);
    for (int i = 0; i < T * out; i++) Y0b[i] = f32_to_bf16(Y0[i]), Y0[i] = bf16_to_f32(Y0b[i]);
    double *ref = (double *)malloc((size_t)T * out * 8), *got = (double *)malloc((size_t)T * out * 8);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int k = 0; k < in; k++) s += (double)bf16_to_f32(X[(size_t)t * in + k]) * bf16_to_f32(W[(size_t)o * in + k]);
            if (epi) s += bias[o];
            if (epi == GEMM_EPI_GELU_BIAS) s = 0.5 * s * (1 + tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
            s += beta * Y0[(size_t)t * out + o];
            ref[(size_t)t * out + o] = s;
        }
    uint16_t *X_d = dalloc<uint16_t>((size_t)T * in), *W_d = dalloc<uint16_t>((size_t)out * in);
    void *b_d = dalloc<float>(out), *Y_d = dalloc<float>((size_t)T * out);
    up(X_d, X, (size_t)T * in); up(W_d, W, (size_t)out * in);
    if (ty == GEMM_F32) { up((float *)b_d, bias, out); up((float *)Y_d, Y0, (size_t)T * out); }
    else { up((uint16_t *)b_d, bias_bf, out); up((uint16_t *)Y_d, Y0b, (size_t)T * out); }
    pi0_status st = pi0_linear(g, 0, T, out, in, X_d, in, GEMM_BF16, W_d, in, GEMM_BF16, Y_d, out, ty, beta, epi, epi ? b_d : NULL);
    if (st != PI0_OK) { printf("  pi0_linear failed: %s\n", pi0_last_error()); g_fail = 1; return; }
    if (ty == GEMM_F32) {
        float *y = (float *)malloc((size_t)T * out * 4);
        down(y, (float *)Y_d, (size_t)T * out);
        for (size_t i = 0; i < (size_t)T * out; i++) got[i] = y[i];
        free(y);
    } else {
        uint16_t *y = (uint16_t *)malloc((size_t)T * out * 2);
        down(y, (uint16_t *)Y_d, (size_t)T * out);
        for (size_t i = 0; i < (size_t)T * out; i++) got[i] = bf16_to_f32(y[i]);
        free(y);
    }
    char nm[80];
    snprintf(nm, sizeof nm, "linear %dx%dx%d epi%d %s beta%g", T, out, in, epi, ty == GEMM_F32 ? "f32" : "bf16", beta);
    report(nm, got, ref, (size_t)T * out, ty == GEMM_F32 ? 1e-4 : 8e-3);
    cudaFree(X_d); cudaFree(W_d); cudaFree(b_d); cudaFree(Y_d);
    free(X); free(W); free(bias); free(Y0); free(bias_bf); free(Y0b); free(ref); free(got);
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    uint64_t seed = getenv("PI0_TEST_SEED") ? strtoull(getenv("PI0_TEST_SEED"), NULL, 10) : (uint64_t)time(NULL);
    printf("test_kernels: seed %llu\n", (unsigned long long)seed);
    rs = seed * 2654435761ull + 12345;
    test_norms(37, 1152);
    test_norms(5, 48);
    test_norms(3, 2048);
    test_norms(51, 1024); /* the expert: float4 kernel, one float4 per thread */
    test_norms(50, 32);
    test_norms(4, 50); /* width % 4 != 0: the scalar kernels */
    test_rope(11, 8, 256, 530);
    test_rope(5, 2, 16, 3);
    test_rope(51, 8, 256, 789, 4);
    test_softmax(100, 531);
    test_softmax(33, 7);
    test_softmax(40, 256);
    test_softmax(9, 1500);
    test_geglu(13, 4096);
    test_geglu(3, 20);
    test_misc();
    test_skinny(50, 2560, 1024, CUK_SK_BF16);
    test_skinny(51, 8192, 1024, CUK_SK_GEGLU);
    test_skinny(50, 1024, 4096, CUK_SK_RESID);
    test_skinny(51, 1024, 2048, CUK_SK_RESID);
    test_skinny(1, 1024, 2048, CUK_SK_RESID);
    test_skinny(11, 2560, 1024, CUK_SK_BF16, 8, 1, 2);
    test_skinny(51, 1024, 2048, CUK_SK_RESID, 4, 8, 2);
    test_skinny(33, 1024, 4096, CUK_SK_RESID, 8, 8);
    test_skinny(50, 8192, 1024, CUK_SK_GEGLU, 4, 4);
    test_skinny(13, 64, 32, CUK_SK_BF16);     /* tiny config shapes: partial tiles */
    test_skinny(64, 128, 48, CUK_SK_GEGLU);
    test_skinny(22, 32, 64, CUK_SK_RESID, 4, 2);
    test_skinny(7, 48, 80, CUK_SK_BF16, 8, 1);
    test_skinny(51, 2560, 1024, CUK_SK_BF16, 128, 8);  /* packed-weight wgmma kernel (nw = BN; -1: auto) */
    test_skinny(51, 1024, 2048, CUK_SK_RESID, 64, 8);
    test_skinny(51, 8192, 1024, CUK_SK_GEGLU, 128, 2);
    test_skinny(50, 1024, 4096, CUK_SK_RESID, 64, 8);
    test_skinny(13, 192, 128, CUK_SK_GEGLU, 64, 1);
    test_skinny(1, 1024, 2048, CUK_SK_RESID, 128, 4);
    test_skinny(51, 2560, 1024, CUK_SK_BF16, -1);
    test_skinny(51, 1024, 2048, CUK_SK_RESID, -1);
    test_skinny(51, 8192, 1024, CUK_SK_GEGLU, -1);
    test_skinny(51, 1024, 4096, CUK_SK_RESID, -1);
    test_skinny(50, 64, 32, CUK_SK_BF16, -1); /* tiny config: K padded to 64, partial row tiles */
    test_skinny(51, 32, 64, CUK_SK_RESID, -1);
    test_skinny(51, 128, 32, CUK_SK_GEGLU, -1);
    test_skinny(33, 1008, 200, CUK_SK_RESID, 64, 2);
    test_skinny(51, 2560, 1024, CUK_SK_BF16, 32, 1);   /* one warpgroup of 32 rows, whole K, weight ring */
    test_skinny(51, 8192, 1024, CUK_SK_GEGLU, 64, 1, 2);
    test_skinny(50, 1024, 2048, CUK_SK_RESID, 64, 2, 1);
    test_skinny(51, 8192, 1024, CUK_SK_GEGLU, 128, 1); /* K slices padded to 64, partial row tile */
    test_skinny_partial(51, 1024, 4096, 64, 8);
    test_skinny_partial(50, 2560, 1024, 128, 4);
    test_skinny_partial(7, 96, 200, 64, 2);
    test_partial_norm(51, 1024, 2048, 64, 8, 0, 51); /* expert o -> norm */
    test_partial_norm(51, 1024, 4096, 64, 8, 1, 50); /* last down -> final norm, state row skipped */
    test_partial_norm(50, 32, 64, 128, 1, 0, 50);    /* tiny config (the automatic tiles) */
    test_skinny_rope(51, 8, 256, 1024, 788);
    test_skinny_rope(50, 8, 256, 1024, 789);
    test_skinny_rope(3, 2, 64, 128, 5);
    test_skinny_rope(51, 8, 256, 1024, 788, 1);
    test_skinny_rope(1, 8, 256, 1024, 840, 1);
    test_pdl_chain(51, 1024, 4096, 8, 256, 789);
    test_pdl_chain(11, 128, 256, 2, 64, 40);
    test_attention(400, 839, 256, 0);
    test_attention(8, 531, 256, 0);
    test_attention(600, 530, 256, 1);
    test_attention(37, 200, 256, 3);
    test_attention(100, 300, 16, 0);
    test_attention(5, 1, 16, 0);
    test_attn_mqa(408, 839, 256, 8, 790);  /* step 0: state token (8 head rows) + 50 actions */
    test_attn_mqa(400, 839, 256, 0, 0);     /* steps 1-9 */
    test_attn_mqa(88, 311, 256, 8, 263);    /* H = 10, partial row tile */
    test_attn_mqa(37, 200, 256, 0, 0);
    test_attn_mqa(22, 70, 16, 2, 60);       /* tiny config */
    test_attn_mqa(102, 580, 16, 2, 530);    /* tiny config, full prefix (9 chunks) */
    test_attn_mqa(5, 1, 16, 0, 0);
    test_attn_mqa(16, 2048, 256, 8, 2000); /* 32 chunks: the most the merge takes */
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_ROW);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_ROW);
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, 32);
    test_attn_mqa(88, 311, 256, 8, 263, CUK_MQA_MERGE_COL4, 32);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_COL4, 32);
    test_attn_mqa(5, 1, 16, 0, 0, CUK_MQA_MERGE_COL4, 32);
    /* the one-launch flash kernel (v2, CUK_MQA_FLASH) on every shape above */
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(400, 839, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(88, 311, 256, 8, 263, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(37, 200, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(22, 70, 16, 2, 60, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(5, 1, 16, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    test_attn_mqa(16, 2048, 256, 8, 2000, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH);
    /* the same with the partials pushed to the row owners (st.async) instead of pulled */
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH);
    test_attn_mqa(88, 311, 256, 8, 263, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH);
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH2);
    test_attn_mqa(400, 839, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH2);
    test_attn_mqa(88, 311, 256, 8, 263, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH2);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH2);
    test_attn_mqa(16, 2048, 256, 8, 2000, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_PUSH2);
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_K32);
    test_attn_mqa(400, 839, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_K32);
    test_attn_mqa(200, 70, 256, 8, 40, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_K32);
    test_attn_mqa(408, 839, 256, 8, 790, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_attn_mqa(400, 839, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_attn_mqa(88, 311, 256, 8, 263, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_attn_mqa(102, 580, 16, 2, 530, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_attn_mqa(37, 200, 256, 0, 0, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_attn_mqa(16, 2048, 256, 8, 2000, CUK_MQA_MERGE_COL4, CUK_MQA_FLASH_F32);
    test_flash(1, 3, 16, 256, 256, 72);      /* SigLIP ViT: 3 cameras x 16 heads, hd 72 (padded to 80) */
    test_flash(1, 1, 16, 256, 256, 72, 41);  /* other tile shapes */
    test_flash(1, 2, 16, 256, 256, 72, 44);
    test_flash(1, 3, 4, 256, 256, 12);       /* tiny config ViT (hd 12: element loads) */
    test_flash(1, 2, 3, 50, 50, 8);
    test_flash(0, 1, 1, 8 * 788, 788, 256);  /* prefill P = 788: 8 heads x P rows, one K/V head */
    test_flash(0, 1, 1, 8 * 531, 531, 256);  /* odd P */
    test_flash(0, 1, 1, 8 * 531, 531, 256, 42);
    test_flash(0, 1, 1, 8 * 300, 300, 256, 24);
    test_flash(0, 1, 1, 8 * 77, 77, 256, 41);
    test_flash(0, 1, 1, 8, 1, 256);
    test_flash(0, 1, 1, 8 * 300, 300, 256, 742); /* the 64-row shape the default takes when it needs fewer waves */
    /* the wgmma kernel (hd 256): prefill shapes, a partial last row tile / key chunk, one key, batched strides */
    test_flash(0, 1, 1, 8 * 788, 788, 256, CUK_FLASH_WG);
    test_flash(0, 1, 1, 8 * 531, 531, 256, CUK_FLASH_WG);
    test_flash(0, 1, 1, 8 * 77, 77, 256, CUK_FLASH_WG);
    test_flash(0, 1, 1, 8, 1, 256, CUK_FLASH_WG);
    test_flash(1, 2, 3, 100, 100, 256, CUK_FLASH_WG);
    test_flash(1, 3, 16, 256, 256, 72, CUK_FLASH_WG); /* SigLIP hd 72 (10 chunks per row, the 10th zero) */
    test_flash(1, 1, 16, 100, 100, 72, CUK_FLASH_WG); /* partial row tile and key chunk */
    test_flash(0, 1, 1, 8 * 77, 77, 72, CUK_FLASH_WG);
    test_flash(0, 1, 1, 2 * 530, 530, 16);   /* tiny config prefill (2 heads, hd 16) */
    test_flash(0, 1, 1, 2 * 67, 67, 16);
    test_flash(1, 1, 2, 100, 100, 128);      /* the other padded head dims (128, 64, 32) */
    test_flash(1, 2, 2, 70, 70, 40);
    test_flash(0, 1, 1, 2 * 90, 90, 24);
    void *ws;
    CK(cudaMalloc(&ws, 32 << 20));
    pi0_gemm_ctx *g;
    if (pi0_gemm_ctx_create(&g, ws, 32 << 20) != PI0_OK) { printf("gemm ctx: %s\n", pi0_last_error()); return 1; }
    test_linear(g, 50, 1024, 1024, GEMM_EPI_NONE, GEMM_BF16, 0.f);
    test_linear(g, 77, 4304, 1152, GEMM_EPI_GELU_BIAS, GEMM_BF16, 0.f);
    test_linear(g, 64, 1152, 1152, GEMM_EPI_BIAS, GEMM_F32, 1.f);
    test_linear(g, 9, 48, 96, GEMM_EPI_BIAS, GEMM_F32, 1.f);
    test_linear(g, 3, 20, 12, GEMM_EPI_NONE, GEMM_BF16, 0.f);
    pi0_gemm_ctx_free(g);
    cudaFree(ws);
    printf("test_kernels: %s\n", g_fail ? "FAILED" : "passed");
    return g_fail;
}
