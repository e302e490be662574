/* CPU reference ops (see cpu_ops.h). GEMMs go to CBLAS when built with it. */
#include "backends/cpu/cpu_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/threads.h"
#ifdef PI0_HAVE_CBLAS
#include <cblas.h>
#endif

#ifndef PI0_HAVE_CBLAS
typedef struct {
    const float *A, *B;
    float *C;
    int N, K, accumulate;
} gemm_job;

static void gemm_rows(void *ctx, int begin, int end) {
    const gemm_job *j = ctx;
    for (int m = begin; m < end; m++) {
        const float *a = j->A + (size_t)m * j->K;
        float *c = j->C + (size_t)m * j->N;
        for (int n = 0; n < j->N; n++) {
            const float *b = j->B + (size_t)n * j->K;
            float acc = 0.f;
            for (int k = 0; k < j->K; k++) acc += a[k] * b[k];
            c[n] = j->accumulate ? c[n] + acc : acc;
        }
    }
}
#endif

void cpu_gemm_nt(cpu_ctx *c, const float *A, const float *B, float *C, int M, int N, int K, int accumulate) {
#ifdef PI0_HAVE_CBLAS
    (void)c;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, accumulate ? 1.0f : 0.0f, C, N);
#else
    gemm_job j = {A, B, C, N, K, accumulate};
    pi0_parallel_for(M, c->n_threads, gemm_rows, &j);
#endif
}

typedef struct {
    const pi0_tensor *t;
    float *dst;
    size_t chunk, n;
} convert_job;

static void convert_chunks(void *ctx, int begin, int end) {
    const convert_job *j = ctx;
    for (int i = begin; i < end; i++) {
        size_t off = (size_t)i * j->chunk, n = j->n - off < j->chunk ? j->n - off : j->chunk;
        pi0_tensor_to_f32(j->t, off, n, j->dst + off);
    }
}

/* f32 view of a weight: the data itself when F32, else converted into the scratch buffer. */
static const float *weight_f32(cpu_ctx *c, const pi0_tensor *W, pi0_status *st) {
    if (W->dtype == PI0_DT_F32) return W->data;
    size_t n = (size_t)pi0_tensor_numel(W);
    if (n > c->wbuf_size) {
        float *nb = realloc(c->wbuf, n * sizeof(float));
        if (!nb) {
            *st = pi0_fail(PI0_ERR_OOM, "cannot allocate %zu floats of weight scratch", n);
            return NULL;
        }
        c->wbuf = nb;
        c->wbuf_size = n;
    }
    convert_job j = {W, c->wbuf, 1 << 18, n};
    pi0_parallel_for((int)((n + j.chunk - 1) / j.chunk), c->n_threads, convert_chunks, &j);
    return c->wbuf;
}

pi0_status cpu_linear(cpu_ctx *c, const float *x, int T, const pi0_tensor *W, const pi0_tensor *b, float *y) {
    int out = (int)W->shape[0], in = (int)(pi0_tensor_numel(W) / W->shape[0]);
    pi0_status st = PI0_OK;
    const float *w = weight_f32(c, W, &st);
    if (!w) return st;
    if (b && b->data) {
        float *bias = malloc((size_t)out * sizeof *bias);
        if (!bias) return pi0_fail(PI0_ERR_OOM, "out of memory");
        pi0_tensor_to_f32(b, 0, (size_t)out, bias);
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * out, bias, (size_t)out * sizeof *bias);
        free(bias);
        cpu_gemm_nt(c, x, w, y, T, out, in, 1);
    } else {
        cpu_gemm_nt(c, x, w, y, T, out, in, 0);
    }
    return PI0_OK;
}

void cpu_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static float param(const pi0_tensor *t, int i) {
    float v;
    pi0_tensor_to_f32(t, (size_t)i, 1, &v);
    return v;
}

void cpu_layernorm(const float *x, int T, int C, const pi0_tensor *g, const pi0_tensor *b, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * C;
        double mu = 0, var = 0;
        for (int i = 0; i < C; i++) mu += r[i];
        mu /= C;
        for (int i = 0; i < C; i++) var += (r[i] - mu) * (r[i] - mu);
        var /= C;
        float inv = (float)(1.0 / sqrt(var + 1e-6));
        for (int i = 0; i < C; i++) y[(size_t)t * C + i] = (float)(r[i] - mu) * inv * param(g, i) + param(b, i);
    }
}

void cpu_rmsnorm(const float *x, int T, int C, const pi0_tensor *w, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * C;
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)r[i] * r[i];
        float inv = (float)(1.0 / sqrt(ss / C + 1e-6));
        for (int i = 0; i < C; i++) y[(size_t)t * C + i] = r[i] * inv * (1.0f + param(w, i));
    }
}

float cpu_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

void cpu_gelu_inplace(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = cpu_gelu_tanh(x[i]);
}

void cpu_rope(float *x, int T, int heads, int hd, const int *pos) {
    int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)pos[t] * pow(10000.0, -2.0 * i / hd);
            float cs = (float)cos(a), sn = (float)sin(a);
            for (int h = 0; h < heads; h++) {
                float *u = x + (size_t)t * heads * hd + (size_t)h * hd;
                float x0 = u[i], x1 = u[i + half];
                u[i] = x0 * cs - x1 * sn;
                u[i + half] = x1 * cs + x0 * sn;
            }
        }
}

pi0_status cpu_attention(cpu_ctx *c, const float *q, const float *k, const float *v, int T, int S, int H, int KV, int hd,
                   float scale, const int *nkeys, float *scores, float *out) {
    int group = H / KV;
    float *qh = malloc((size_t)T * hd * sizeof *qh), *kh = malloc((size_t)S * hd * sizeof *kh),
          *vt = malloc((size_t)S * hd * sizeof *vt), *oh = malloc((size_t)T * hd * sizeof *oh);
    if (!qh || !kh || !vt || !oh) {
        free(qh);
        free(kh);
        free(vt);
        free(oh);
        return pi0_fail(PI0_ERR_OOM, "out of memory in attention (T=%d, S=%d)", T, S);
    }
    for (int n = 0; n < H; n++) {
        int g = n / group;
        for (int t = 0; t < T; t++)
            for (int d = 0; d < hd; d++) qh[(size_t)t * hd + d] = q[(size_t)t * H * hd + (size_t)n * hd + d] * scale;
        for (int s = 0; s < S; s++)
            for (int d = 0; d < hd; d++) {
                kh[(size_t)s * hd + d] = k[(size_t)s * KV * hd + (size_t)g * hd + d];
                vt[(size_t)d * S + s] = v[(size_t)s * KV * hd + (size_t)g * hd + d]; /* V^T (hd, S) */
            }
        cpu_gemm_nt(c, qh, kh, scores, T, S, hd, 0);
        for (int t = 0; t < T; t++) {
            float *r = scores + (size_t)t * S;
            int lim = nkeys ? nkeys[t] : S;
            float mx = -INFINITY;
            for (int s = 0; s < lim; s++) mx = r[s] > mx ? r[s] : mx;
            double sum = 0;
            for (int s = 0; s < lim; s++) {
                r[s] = expf(r[s] - mx);
                sum += r[s];
            }
            float inv = (float)(1.0 / sum);
            for (int s = 0; s < lim; s++) r[s] *= inv;
            for (int s = lim; s < S; s++) r[s] = 0.f;
        }
        cpu_gemm_nt(c, scores, vt, oh, T, hd, S, 0);
        for (int t = 0; t < T; t++)
            memcpy(out + (size_t)t * H * hd + (size_t)n * hd, oh + (size_t)t * hd, (size_t)hd * sizeof *oh);
    }
    free(qh);
    free(kh);
    free(vt);
    free(oh);
    return PI0_OK;
}
