/* Custom kernels of the CUDA backend and their CPU twins (see kernels.h). */
#include "backends/cuda/kernels.h"

#include <cuda_bf16.h>
#include <math.h>
#include <string.h>

#include "util/bf16.h"

typedef __nv_bfloat16 bf16;

#define LAUNCH_RET() return cudaGetLastError()

static __device__ __forceinline__ float ld_bf(const uint16_t *p, long long i) {
    return __bfloat162float(reinterpret_cast<const bf16 *>(p)[i]);
}
static __device__ __forceinline__ void st_bf(uint16_t *p, long long i, float v) {
    reinterpret_cast<bf16 *>(p)[i] = __float2bfloat16_rn(v);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Deterministic block sum (fixed tree); all threads get the result. red: >= 33 floats. */
static __device__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        float t = lane < nw ? red[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) red[32] = t;
    }
    __syncthreads();
    return red[32];
}

static __device__ __forceinline__ float gelu_tanh(float x) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * x * (1.f + tanhf(k0 * (x + k1 * x * x * x)));
}
static float gelu_tanh_h(float x) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * x * (1.f + tanhf(k0 * (x + k1 * x * x * x)));
}

/* ---------------- LayerNorm ---------------- */
#define NORM_THREADS 256

__global__ void k_layernorm(const float *x, const float *g, const float *b, uint16_t *y, int w, float eps) {
    extern __shared__ float row[];
    __shared__ float red[33];
    long long r = blockIdx.x;
    const float *xr = x + r * w;
    float s = 0.f;
    for (int i = threadIdx.x; i < w; i += blockDim.x) {
        float v = xr[i];
        row[i] = v;
        s += v;
    }
    float mu = block_sum(s, red) / (float)w;
    float q = 0.f;
    for (int i = threadIdx.x; i < w; i += blockDim.x) {
        float d = row[i] - mu;
        q += d * d;
    }
    float var = block_sum(q, red) / (float)w;
    float rs = rsqrtf(var + eps);
    for (int i = threadIdx.x; i < w; i += blockDim.x) st_bf(y, r * w + i, (row[i] - mu) * rs * g[i] + b[i]);
}

cudaError_t cuk_layernorm(cudaStream_t st, const float *x, const float *g, const float *b, uint16_t *y,
                          int rows, int w, float eps) {
    if (rows <= 0) return cudaSuccess;
    k_layernorm<<<rows, NORM_THREADS, (size_t)w * sizeof(float), st>>>(x, g, b, y, w, eps);
    LAUNCH_RET();
}

void cuk_layernorm_ref(const float *x, const float *g, const float *b, uint16_t *y, int rows, int w, float eps) {
    for (int r = 0; r < rows; r++) {
        double s = 0, q = 0;
        for (int i = 0; i < w; i++) s += x[(size_t)r * w + i];
        double mu = s / w;
        for (int i = 0; i < w; i++) {
            double d = x[(size_t)r * w + i] - mu;
            q += d * d;
        }
        double rs = 1.0 / sqrt(q / w + eps);
        for (int i = 0; i < w; i++)
            y[(size_t)r * w + i] = f32_to_bf16((float)((x[(size_t)r * w + i] - mu) * rs * g[i] + b[i]));
    }
}

/* ---------------- RMSNorm (1+w) ---------------- */
template <int YDT>
__global__ void k_rmsnorm(const float *x, const float *wt, void *y, int width, float eps) {
    extern __shared__ float row[];
    __shared__ float red[33];
    long long r = blockIdx.x;
    const float *xr = x + r * width;
    float q = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = xr[i];
        row[i] = v;
        q += v * v;
    }
    float rs = rsqrtf(block_sum(q, red) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = row[i] * rs * (1.f + wt[i]);
        if (YDT == CUK_BF16) st_bf((uint16_t *)y, r * width + i, v);
        else ((float *)y)[r * width + i] = v;
    }
}

cudaError_t cuk_rmsnorm(cudaStream_t st, const float *x, const float *w, void *y, int ydt, int rows,
                        int width, float eps) {
    if (rows <= 0) return cudaSuccess;
    size_t sm = (size_t)width * sizeof(float);
    if (ydt == CUK_BF16) k_rmsnorm<CUK_BF16><<<rows, NORM_THREADS, sm, st>>>(x, w, y, width, eps);
    else k_rmsnorm<CUK_F32><<<rows, NORM_THREADS, sm, st>>>(x, w, y, width, eps);
    LAUNCH_RET();
}

void cuk_rmsnorm_ref(const float *x, const float *w, void *y, int ydt, int rows, int width, float eps) {
    for (int r = 0; r < rows; r++) {
        double q = 0;
        for (int i = 0; i < width; i++) {
            double v = x[(size_t)r * width + i];
            q += v * v;
        }
        double rs = 1.0 / sqrt(q / width + eps);
        for (int i = 0; i < width; i++) {
            float v = (float)(x[(size_t)r * width + i] * rs * (1.0 + w[i]));
            if (ydt == CUK_BF16) ((uint16_t *)y)[(size_t)r * width + i] = f32_to_bf16(v);
            else ((float *)y)[(size_t)r * width + i] = v;
        }
    }
}

/* ---------------- RoPE + KV scatter ---------------- */
__global__ void k_rope_qkv(const uint16_t *qkv, const float *cs, const float *sn, int pos0, int nh, int hd,
                           uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    int t = blockIdx.x, half = hd / 2, pos = pos0 + t;
    const long long ld = (long long)(nh + 2) * hd;
    const uint16_t *row = qkv + (long long)t * ld;
    const float *c = cs + (long long)pos * half, *s = sn + (long long)pos * half;
    int nq = qr ? nh : 0;
    /* q heads then the k head */
    for (int idx = threadIdx.x; idx < (nq + 1) * half; idx += blockDim.x) {
        int n = idx / half, i = idx - n * half;
        int head = qr ? n : nh; /* when q is skipped only the k head (index nh) is done */
        const uint16_t *u = row + (long long)head * hd;
        float a = ld_bf(u, i), b = ld_bf(u, i + half);
        float o0 = a * c[i] - b * s[i], o1 = b * c[i] + a * s[i];
        if (head < nh) {
            uint16_t *dst = qr + ((long long)t * nh + head) * hd;
            st_bf(dst, i, o0);
            st_bf(dst, i + half, o1);
        } else {
            uint16_t *dst = kc + (long long)pos * hd;
            st_bf(dst, i, o0);
            st_bf(dst, i + half, o1);
        }
    }
    const uint16_t *v = row + (long long)(nh + 1) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) vc[(long long)pos * hd + i] = v[i];
}

cudaError_t cuk_rope_qkv(cudaStream_t st, const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T,
                         int nh, int hd, uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    if (T <= 0) return cudaSuccess;
    k_rope_qkv<<<T, 256, 0, st>>>(qkv, cs, sn, pos0, nh, hd, qr, kc, vc);
    LAUNCH_RET();
}

void cuk_rope_qkv_ref(const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T, int nh, int hd,
                      uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    int half = hd / 2;
    for (int t = 0; t < T; t++) {
        int pos = pos0 + t;
        const uint16_t *row = qkv + (size_t)t * (nh + 2) * hd;
        for (int head = qr ? 0 : nh; head <= nh; head++) {
            const uint16_t *u = row + (size_t)head * hd;
            uint16_t *dst = head < nh ? qr + ((size_t)t * nh + head) * hd : kc + (size_t)pos * hd;
            for (int i = 0; i < half; i++) {
                float c = cs[(size_t)pos * half + i], s = sn[(size_t)pos * half + i];
                float a = bf16_to_f32(u[i]), b = bf16_to_f32(u[i + half]);
                dst[i] = f32_to_bf16(a * c - b * s);
                dst[i + half] = f32_to_bf16(b * c + a * s);
            }
        }
        memcpy(vc + (size_t)pos * hd, row + (size_t)(nh + 1) * hd, (size_t)hd * 2);
    }
}

/* ---------------- softmax ---------------- */
/* rows r < rows_lim see only the first n_lim columns (the rest of their row is written as 0) */
__global__ void k_softmax(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n, int rows_lim, int n_lim) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int nn = r < rows_lim ? n_lim : n;
    const float *lr = l + (long long)r * ld_l;
    float m = -INFINITY;
    for (int i = lane; i < nn; i += 32) m = fmaxf(m, lr[i]);
    m = warp_max(m);
    float s = 0.f;
    for (int i = lane; i < nn; i += 32) s += __expf(lr[i] - m);
    s = warp_sum(s);
    float inv = 1.f / s;
    uint16_t *pr = p + (long long)r * ld_p;
    for (int i = lane; i < nn; i += 32) st_bf(pr, i, __expf(lr[i] - m) * inv);
    for (int i = nn + lane; i < n; i += 32) pr[i] = 0;
}

/* one pass over the logits: a warp keeps its row (n <= 32 * NPL) in registers */
template <int NPL>
__global__ void k_softmax_reg(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n, int rows_lim,
                              int n_lim) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int nn = r < rows_lim ? n_lim : n;
    const float *lr = l + (long long)r * ld_l;
    float v[NPL];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        v[j] = i < nn ? lr[i] : -INFINITY;
        m = fmaxf(m, v[j]);
    }
    m = warp_max(m);
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        v[j] = i < nn ? __expf(v[j] - m) : 0.f;
        s += v[j];
    }
    s = warp_sum(s);
    float inv = 1.f / s;
    uint16_t *pr = p + (long long)r * ld_p;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        if (i < n) st_bf(pr, i, v[j] * inv); /* v = 0 for [nn, n) */
    }
}

cudaError_t cuk_softmax_lim(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n,
                            int rows_lim, int n_lim) {
    if (rows <= 0) return cudaSuccess;
    int wpb = 8;
    unsigned blocks = (unsigned)((rows + wpb - 1) / wpb);
    if (n <= 256) k_softmax_reg<8><<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    else if (n <= 1024) k_softmax_reg<32><<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    else k_softmax<<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    LAUNCH_RET();
}

cudaError_t cuk_softmax(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    return cuk_softmax_lim(st, l, ld_l, p, ld_p, rows, n, 0, n);
}

void cuk_softmax_ref(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        const float *lr = l + (size_t)r * ld_l;
        float m = -INFINITY;
        for (int i = 0; i < n; i++) m = lr[i] > m ? lr[i] : m;
        double s = 0;
        for (int i = 0; i < n; i++) s += exp((double)lr[i] - m);
        for (int i = 0; i < n; i++) p[(size_t)r * ld_p + i] = f32_to_bf16((float)(exp((double)lr[i] - m) / s));
    }
}

/* ---------------- GeGLU ---------------- */
__global__ void k_geglu(const uint16_t *in, uint16_t *out, long long total, int F) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long t = idx / F, f = idx - t * F;
        const uint16_t *row = in + t * 2 * F;
        st_bf(out, idx, gelu_tanh(ld_bf(row, f)) * ld_bf(row, F + f));
    }
}
/* vectorised: F % 8 == 0, 8 bf16 per thread */
__global__ void k_geglu8(const uint4 *in, uint4 *out, long long total8, int F8) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total8;
         idx += (long long)gridDim.x * blockDim.x) {
        long long t = idx / F8, f = idx - t * F8;
        uint4 g = in[t * 2 * F8 + f], u = in[t * 2 * F8 + F8 + f];
        const bf16 *gb = reinterpret_cast<const bf16 *>(&g), *ub = reinterpret_cast<const bf16 *>(&u);
        uint4 o;
        bf16 *ob = reinterpret_cast<bf16 *>(&o);
#pragma unroll
        for (int j = 0; j < 8; j++) ob[j] = __float2bfloat16_rn(gelu_tanh(__bfloat162float(gb[j])) * __bfloat162float(ub[j]));
        out[idx] = o;
    }
}

cudaError_t cuk_geglu(cudaStream_t st, const uint16_t *in, uint16_t *out, int T, int F) {
    if (T <= 0) return cudaSuccess;
    if (F % 8 == 0 && ((uintptr_t)in & 15) == 0 && ((uintptr_t)out & 15) == 0) {
        long long total8 = (long long)T * F / 8;
        long long blocks = (total8 + 255) / 256;
        if (blocks > 132 * 16) blocks = 132 * 16;
        k_geglu8<<<(unsigned)blocks, 256, 0, st>>>((const uint4 *)in, (uint4 *)out, total8, F / 8);
    } else {
        long long total = (long long)T * F;
        long long blocks = (total + 255) / 256;
        if (blocks > 132 * 16) blocks = 132 * 16;
        k_geglu<<<(unsigned)blocks, 256, 0, st>>>(in, out, total, F);
    }
    LAUNCH_RET();
}

void cuk_geglu_ref(const uint16_t *in, uint16_t *out, int T, int F) {
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            float g = bf16_to_f32(in[(size_t)t * 2 * F + f]), u = bf16_to_f32(in[(size_t)t * 2 * F + F + f]);
            out[(size_t)t * F + f] = f32_to_bf16(gelu_tanh_h(g) * u);
        }
}

/* ---------------- im2col ---------------- */
__global__ void k_im2col(const float *img, uint16_t *out, int S, int p, int ldo, long long total) {
    int g = S / p, K = 3 * p * p;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long row = idx / ldo;
        int col = (int)(idx - row * ldo);
        float v = 0.f;
        if (col < K) {
            int cam = (int)(row / (g * g)), tok = (int)(row % (g * g));
            int pr = tok / g, pc = tok % g;
            int c = col / (p * p), rem = col % (p * p), kh = rem / p, kw = rem % p;
            v = img[(((long long)cam * S + pr * p + kh) * S + pc * p + kw) * 3 + c];
        }
        st_bf(out, idx, v);
    }
}

cudaError_t cuk_im2col(cudaStream_t st, const float *img, uint16_t *out, int ncam, int S, int p, int ldo) {
    int g = S / p;
    long long total = (long long)ncam * g * g * ldo;
    if (total <= 0) return cudaSuccess;
    long long blocks = (total + 255) / 256;
    if (blocks > 132 * 32) blocks = 132 * 32;
    k_im2col<<<(unsigned)blocks, 256, 0, st>>>(img, out, S, p, ldo, total);
    LAUNCH_RET();
}

void cuk_im2col_ref(const float *img, uint16_t *out, int ncam, int S, int p, int ldo) {
    int g = S / p, K = 3 * p * p;
    for (long long row = 0; row < (long long)ncam * g * g; row++)
        for (int col = 0; col < ldo; col++) {
            float v = 0.f;
            if (col < K) {
                int cam = (int)(row / (g * g)), tok = (int)(row % (g * g));
                int pr = tok / g, pc = tok % g;
                int c = col / (p * p), rem = col % (p * p), kh = rem / p, kw = rem % p;
                v = img[(((long long)cam * S + pr * p + kh) * S + pc * p + kw) * 3 + c];
            }
            out[row * ldo + col] = f32_to_bf16(v);
        }
}

/* ---------------- position add ---------------- */
__global__ void k_add_pos(const float *in, const float *pos, float *out, int np, int w, long long total) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx / w;
        int c = (int)(idx - r * w);
        out[idx] = in[idx] + pos[(r % np) * w + c];
    }
}

cudaError_t cuk_add_pos(cudaStream_t st, const float *in, const float *pos, float *out, int rows, int np, int w) {
    long long total = (long long)rows * w;
    if (total <= 0) return cudaSuccess;
    long long blocks = (total + 255) / 256;
    if (blocks > 132 * 32) blocks = 132 * 32;
    k_add_pos<<<(unsigned)blocks, 256, 0, st>>>(in, pos, out, np, w, total);
    LAUNCH_RET();
}

void cuk_add_pos_ref(const float *in, const float *pos, float *out, int rows, int np, int w) {
    for (long long r = 0; r < rows; r++)
        for (int c = 0; c < w; c++) out[r * w + c] = in[r * w + c] + pos[(r % np) * w + c];
}

/* ---------------- embedding ---------------- */
__global__ void k_embed(const int32_t *tok, const uint16_t *table, float *out, int d, float scale) {
    int i = blockIdx.x;
    const uint16_t *src = table + (long long)tok[i] * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) out[(long long)i * d + c] = ld_bf(src, c) * scale;
}

cudaError_t cuk_embed(cudaStream_t st, const int32_t *tok, const uint16_t *table, float *out, int n, int d,
                      float scale) {
    if (n <= 0) return cudaSuccess;
    k_embed<<<n, 256, 0, st>>>(tok, table, out, d, scale);
    LAUNCH_RET();
}

void cuk_embed_ref(const int32_t *tok, const uint16_t *table, float *out, int n, int d, float scale) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++)
            out[(size_t)i * d + c] = bf16_to_f32(table[(size_t)tok[i] * d + c]) * scale;
}

/* ---------------- small f32 matmul ---------------- */
__global__ void k_small_mm(int M, int N, int K, const float *A, long long sam, long long sak, const float *B,
                           long long sbk, long long sbn, const float *bias, const float *add, int act, void *C,
                           int cdt, int ldc) {
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)M * N) return;
    int m = (int)(idx / N), n = (int)(idx - (long long)m * N);
    float s = 0.f;
    for (int k = 0; k < K; k++) s = fmaf(A[m * sam + k * sak], B[k * sbk + n * sbn], s);
    if (bias) s += bias[n];
    if (add) s += add[n];
    if (act == 1) s = s / (1.f + expf(-s));
    if (cdt == CUK_BF16) st_bf((uint16_t *)C, (long long)m * ldc + n, s);
    else ((float *)C)[(long long)m * ldc + n] = s;
}

cudaError_t cuk_small_mm(cudaStream_t st, int M, int N, int K, const float *A, long long sam, long long sak,
                         const float *B, long long sbk, long long sbn, const float *bias, const float *add, int act,
                         void *C, int cdt, int ldc) {
    long long total = (long long)M * N;
    if (total <= 0) return cudaSuccess;
    k_small_mm<<<(unsigned)((total + 127) / 128), 128, 0, st>>>(M, N, K, A, sam, sak, B, sbk, sbn, bias, add, act, C,
                                                                cdt, ldc);
    LAUNCH_RET();
}

void cuk_small_mm_ref(int M, int N, int K, const float *A, long long sam, long long sak, const float *B,
                      long long sbk, long long sbn, const float *bias, const float *add, int act, void *C, int cdt,
                      int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[m * sam + k * sak] * B[k * sbk + n * sbn];
            if (bias) s += bias[n];
            if (add) s += add[n];
            if (act == 1) s = s / (1.0 + exp(-s));
            if (cdt == CUK_BF16) ((uint16_t *)C)[(size_t)m * ldc + n] = f32_to_bf16((float)s);
            else ((float *)C)[(size_t)m * ldc + n] = (float)s;
        }
}

/* ---------------- Euler ---------------- */
__global__ void k_euler(float *x, const float *v, float dt, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] + dt * v[i];
}
cudaError_t cuk_euler(cudaStream_t st, float *x, const float *v, float dt, int n) {
    if (n <= 0) return cudaSuccess;
    k_euler<<<(n + 255) / 256, 256, 0, st>>>(x, v, dt, n);
    LAUNCH_RET();
}

/* ---------------- conversion / random init ---------------- */
__global__ void k_convert(const void *src, int sdt, void *dst, int ddt, long long i0, long long n, long long cols,
                          long long ld) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x) {
        long long i = i0 + j;
        float v = sdt == CUK_BF16 ? ld_bf((const uint16_t *)src, j) : ((const float *)src)[j];
        long long o = (i / cols) * ld + i % cols;
        if (ddt == CUK_BF16) st_bf((uint16_t *)dst, o, v);
        else ((float *)dst)[o] = v;
    }
}

cudaError_t cuk_convert(cudaStream_t st, const void *src, int sdt, void *dst, int ddt, long long i0, long long n,
                        long long cols, long long ld) {
    if (n <= 0) return cudaSuccess;
    long long blocks = (n + 255) / 256;
    if (blocks > 132 * 64) blocks = 132 * 64;
    k_convert<<<(unsigned)blocks, 256, 0, st>>>(src, sdt, dst, ddt, i0, n, cols, ld);
    LAUNCH_RET();
}

/* Bit-exact port of tensor_table.c mix64 / pi0_random_value (no FMA contraction). */
static __device__ __forceinline__ uint64_t d_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static __device__ float d_random_value(uint64_t seed, uint64_t i, float mean, float std) {
    uint64_t j = i >> 1;
    uint64_t a = d_mix64(seed + 2 * j), b = d_mix64(seed + 2 * j + 1);
    double u1 = __dmul_rn(__dadd_rn((double)(a >> 11), 1.0), (1.0 / 9007199254740993.0));
    double u2 = __dmul_rn((double)(b >> 11), (1.0 / 9007199254740992.0));
    double r = sqrt(__dmul_rn(-2.0, log(u1))), th = __dmul_rn(6.283185307179586, u2);
    double z = (i & 1) ? __dmul_rn(r, sin(th)) : __dmul_rn(r, cos(th));
    return (float)__dadd_rn((double)mean, __dmul_rn((double)std, z));
}

__global__ void k_random(void *dst, int ddt, long long n, long long cols, long long ld, uint64_t seed, float mean,
                         float std) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        /* the host generator stores every tensor in bf16: round to bf16 also for f32 destinations */
        float v = __bfloat162float(__float2bfloat16_rn(d_random_value(seed, (uint64_t)i, mean, std)));
        long long o = (i / cols) * ld + i % cols;
        if (ddt == CUK_BF16) st_bf((uint16_t *)dst, o, v);
        else ((float *)dst)[o] = v;
    }
}

cudaError_t cuk_random(cudaStream_t st, void *dst, int ddt, long long n, long long cols, long long ld,
                       uint64_t tensor_seed, float mean, float std) {
    if (n <= 0) return cudaSuccess;
    long long blocks = (n + 255) / 256;
    if (blocks > 132 * 64) blocks = 132 * 64;
    k_random<<<(unsigned)blocks, 256, 0, st>>>(dst, ddt, n, cols, ld, tensor_seed, mean, std);
    LAUNCH_RET();
}

/* ---------------- fused MQA attention (WMMA) ---------------- */
#include <mma.h>
using namespace nvcuda;

#define ATT_ROWS 16
#define ATT_KC 64 /* keys per chunk: 4 warps x 16 */

/*
 * grid (tiles, nsplit), 128 threads. smem: Q (16 x hd bf16), S (16 x 64 f32), P (16 x 64 bf16),
 * O (16 x hd f32), Ot (16 x hd f32), m/l/alpha (16 each).
 */
__global__ void __launch_bounds__(128) k_attention(const bf16 *__restrict__ q, int R, const bf16 *__restrict__ k,
                                                   const bf16 *__restrict__ v, int S, int hd, float scale,
                                                   int keys_per_split, bf16 *__restrict__ out, float *__restrict__ part) {
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem;                                    /* 16*hd */
    float *Ss = (float *)(smem + ATT_ROWS * hd * 2);            /* 16*64 */
    bf16 *Ps = (bf16 *)(Ss + ATT_ROWS * ATT_KC);                /* 16*64 */
    float *Os = (float *)(Ps + ATT_ROWS * ATT_KC);              /* 16*hd */
    float *Ot = Os + ATT_ROWS * hd;                             /* 16*hd */
    float *ms = Ot + ATT_ROWS * hd, *ls = ms + ATT_ROWS, *as = ls + ATT_ROWS;
    bf16 *Ks = (bf16 *)(as + 32);                                /* 64*hd, 128-byte aligned */
    bf16 *Vs = Ks + ATT_KC * hd;                                 /* 64*hd */
    const int tid = threadIdx.x, warp = tid >> 5;
    const int r0 = blockIdx.x * ATT_ROWS, split = blockIdx.y, nsplit = gridDim.y;
    const int k_begin = split * keys_per_split;
    const int k_end = min(S, k_begin + keys_per_split);
    for (int i = tid; i < ATT_ROWS * hd; i += 128) {
        int r = i / hd;
        Qs[i] = r0 + r < R ? q[(long long)(r0 + r) * hd + (i - r * hd)] : __float2bfloat16(0.f);
        Os[i] = 0.f;
    }
    if (tid < ATT_ROWS) {
        ms[tid] = -INFINITY;
        ls[tid] = 0.f;
    }
    __syncthreads();
    const int nct = hd / 16; /* column tiles of O */
    for (int c0 = k_begin; c0 < k_end; c0 += ATT_KC) {
        /* stage the K and V chunk in shared memory (16-byte coalesced loads; rows past S are padding) */
        {
            const int n16 = ATT_KC * hd / 8;
            const uint4 *kg = (const uint4 *)(k + (long long)c0 * hd), *vg = (const uint4 *)(v + (long long)c0 * hd);
            uint4 *kd = (uint4 *)Ks, *vd = (uint4 *)Vs;
            for (int i = tid; i < n16; i += 128) {
                kd[i] = kg[i];
                vd[i] = vg[i];
            }
        }
        __syncthreads();
        /* S = Q K^T for this warp's 16 keys */
        {
            int kb = c0 + warp * 16;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.f);
            if (kb < k_end) {
                for (int kk = 0; kk < hd; kk += 16) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                    wmma::load_matrix_sync(fa, Qs + kk, hd);
                    wmma::load_matrix_sync(fb, Ks + (kb - c0) * hd + kk, hd);
                    wmma::mma_sync(acc, fa, fb, acc);
                }
            }
            wmma::store_matrix_sync(Ss + warp * 16, acc, ATT_KC, wmma::mem_row_major);
        }
        __syncthreads();
        /* online softmax: 8 threads per row, 8 columns each */
        {
            int r = tid >> 3, cb = (tid & 7) * 8;
            float sv[8], mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int key = c0 + cb + j;
                sv[j] = key < k_end ? Ss[r * ATT_KC + cb + j] * scale : -INFINITY;
                mx = fmaxf(mx, sv[j]);
            }
            for (int o = 1; o < 8; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float m_old = ms[r], m_new = fmaxf(m_old, mx);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float p = sv[j] == -INFINITY ? 0.f : __expf(sv[j] - m_new);
                bf16 pb = __float2bfloat16_rn(p);
                Ps[r * ATT_KC + cb + j] = pb;
                sum += __bfloat162float(pb);
            }
            for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp();
            if ((tid & 7) == 0) {
                float alpha = m_old == -INFINITY ? 0.f : __expf(m_old - m_new);
                ms[r] = m_new;
                ls[r] = ls[r] * alpha + sum;
                as[r] = alpha;
            }
        }
        __syncthreads();
        /* Ot = P V for this warp's column tiles */
        for (int ct = warp; ct < nct; ct += 4) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.f);
            for (int kk = 0; kk < ATT_KC; kk += 16) {
                if (c0 + kk >= k_end) break;
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, Ps + kk, ATT_KC);
                wmma::load_matrix_sync(fb, Vs + kk * hd + ct * 16, hd);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Ot + ct * 16, acc, hd, wmma::mem_row_major);
        }
        __syncthreads();
        for (int i = tid; i < ATT_ROWS * hd; i += 128) {
            int r = i / hd;
            Os[i] = Os[i] * as[r] + Ot[i];
        }
        __syncthreads();
    }
    if (nsplit == 1) {
        for (int i = tid; i < ATT_ROWS * hd; i += 128) {
            int r = i / hd;
            if (r0 + r < R) out[(long long)(r0 + r) * hd + (i - r * hd)] = __float2bfloat16_rn(Os[i] / ls[r]);
        }
    } else {
        float *po = part + (long long)split * R * hd;
        float *pm = part + (long long)nsplit * R * hd + (long long)split * R;
        float *pl = pm + (long long)nsplit * R;
        for (int i = tid; i < ATT_ROWS * hd; i += 128) {
            int r = i / hd;
            if (r0 + r < R) po[(long long)(r0 + r) * hd + (i - r * hd)] = Os[i];
        }
        if (tid < ATT_ROWS && r0 + tid < R) {
            pm[r0 + tid] = ms[tid];
            pl[r0 + tid] = ls[tid];
        }
    }
}

__global__ void k_attention_merge(const float *part, int R, int hd, int nsplit, bf16 *out) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)R * hd) return;
    int r = (int)(i / hd);
    const float *pm = part + (long long)nsplit * R * hd, *pl = pm + (long long)nsplit * R;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, pm[(long long)s * R + r]);
    float num = 0.f, den = 0.f;
    for (int s = 0; s < nsplit; s++) {
        float m = pm[(long long)s * R + r];
        float w = m == -INFINITY ? 0.f : __expf(m - M);
        num += w * part[(long long)s * R * hd + i];
        den += w * pl[(long long)s * R + r];
    }
    out[i] = __float2bfloat16_rn(num / den);
}

cudaError_t cuk_attention(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                          int hd, float scale, uint16_t *out, float *part, size_t part_floats, int nsplit) {
    if (R <= 0 || S <= 0) return cudaSuccess;
    if (hd % 16 || hd > 256) return cudaErrorInvalidValue;
    int tiles = (R + ATT_ROWS - 1) / ATT_ROWS, chunks = (S + ATT_KC - 1) / ATT_KC;
    if (nsplit <= 0) {
        nsplit = (264 + tiles - 1) / tiles;
        if (nsplit > chunks) nsplit = chunks;
        if (nsplit > 32) nsplit = 32;
    }
    if (nsplit < 1) nsplit = 1;
    while (nsplit > 1 && (!part || (size_t)nsplit * R * (hd + 2) > part_floats)) nsplit--;
    int cps = (chunks + nsplit - 1) / nsplit; /* chunks per split */
    nsplit = (chunks + cps - 1) / cps;
    size_t sm = (size_t)ATT_ROWS * hd * 2 + ATT_ROWS * ATT_KC * 4 + ATT_ROWS * ATT_KC * 2 + 2 * (size_t)ATT_ROWS * hd * 4 +
                64 * 4 + 2 * (size_t)ATT_KC * hd * 2;
    static int attr_set = 0;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, 128 * 1024);
        if (e != cudaSuccess) return e;
        attr_set = 1;
    }
    dim3 grid(tiles, nsplit);
    k_attention<<<grid, 128, sm, st>>>((const bf16 *)q, R, (const bf16 *)k, (const bf16 *)v, S, hd, scale,
                                       cps * ATT_KC, (bf16 *)out, part);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || nsplit == 1) return e;
    long long n = (long long)R * hd;
    k_attention_merge<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(part, R, hd, nsplit, (bf16 *)out);
    LAUNCH_RET();
}

void cuk_attention_ref(const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S, int hd, float scale,
                       uint16_t *out) {
    double *p = (double *)malloc((size_t)S * sizeof(double));
    for (int r = 0; r < R; r++) {
        double mx = -1e300, sum = 0;
        for (int j = 0; j < S; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++) d += (double)bf16_to_f32(q[(size_t)r * hd + c]) * bf16_to_f32(k[(size_t)j * hd + c]);
            p[j] = d * scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int j = 0; j < S; j++) sum += (p[j] = exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
            double o = 0;
            for (int j = 0; j < S; j++) o += p[j] * bf16_to_f32(v[(size_t)j * hd + c]);
            out[(size_t)r * hd + c] = f32_to_bf16((float)(o / sum));
        }
    }
    free(p);
}

/* ---------------- skinny GEMM (T <= 64) ---------------- */
static __device__ __forceinline__ void mma_bf16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                      uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/*
 * Weight-streaming GEMM for few tokens. CTA = 8 warps = 128 output features (16 per warp) x all
 * T tokens x one K chunk of KC. The chunk of X (T x KC) is staged once per CTA in shared memory,
 * each warp streams its 16 x KC weight tile with 16-byte cp.async into shared memory and feeds
 * the tensor cores with ldmatrix (A) and 32-bit LDS (B). Partial sums (split, T, N) f32 are
 * reduced in a fixed order by k_skinny_reduce, which applies the epilogue.
 */
#define SK_WARPS 8
#define SK_PAD 8

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem));
}
static __device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
}
static __device__ __forceinline__ void ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                                   const void *smem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(sa));
}

template <int NT>
__global__ void __launch_bounds__(SK_WARPS * 32) k_skinny(const uint16_t *__restrict__ X, int ldx, int T,
                                                          const uint16_t *__restrict__ W, int N, int K, int KC,
                                                          float *__restrict__ part) {
    extern __shared__ __align__(16) unsigned char sk_smem[];
    const int ld = KC + SK_PAD; /* smem row pitch in bf16 elements */
    bf16 *Xs = (bf16 *)sk_smem;                        /* NT*8 rows */
    bf16 *Ws = Xs + NT * 8 * ld;                       /* SK_WARPS * 16 rows */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tg = lane & 3;
    const int n_cta = blockIdx.x * (SK_WARPS * 16), split = blockIdx.y, k0 = split * KC;
    const int kc = min(KC, K - k0); /* multiple of 16 */
    const int v16 = kc / 8;         /* 16-byte vectors per row */
    /* X chunk: rows < T copied, rows [T, NT*8) zeroed */
    for (int i = tid; i < NT * 8 * v16; i += SK_WARPS * 32) {
        int r = i / v16, c = i - r * v16;
        bf16 *dst = Xs + r * ld + c * 8;
        if (r < T) cp_async16(dst, X + (long long)r * ldx + k0 + c * 8);
        else *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
    /* this warp's 16 weight rows */
    const int n0 = n_cta + warp * 16;
    bf16 *Wsw = Ws + warp * 16 * ld;
    if (n0 < N)
        for (int i = lane; i < 16 * v16; i += 32) {
            int r = i / v16, c = i - r * v16;
            cp_async16(Wsw + r * ld + c * 8, W + (long long)(n0 + r) * K + k0 + c * 8);
        }
    cp_async_wait_all();
    __syncthreads();
    if (n0 >= N) return;
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
    for (int kk = 0; kk < kc; kk += 16) {
        uint32_t a0, a1, a2, a3;
        ldmatrix_x4(a0, a1, a2, a3, Wsw + arow * ld + kk + acol);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const bf16 *xb = Xs + (nt * 8 + g) * ld + kk + tg * 2;
            uint32_t b0 = *(const uint32_t *)xb, b1 = *(const uint32_t *)(xb + 8);
            mma_bf16_16816(acc[nt], a0, a1, a2, a3, b0, b1);
        }
    }
    float *p = part + (long long)split * T * N;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int t0 = nt * 8 + tg * 2;
        if (t0 < T) {
            p[(long long)t0 * N + n0 + g] = acc[nt][0];
            p[(long long)t0 * N + n0 + g + 8] = acc[nt][2];
        }
        if (t0 + 1 < T) {
            p[(long long)(t0 + 1) * N + n0 + g] = acc[nt][1];
            p[(long long)(t0 + 1) * N + n0 + g + 8] = acc[nt][3];
        }
    }
}

__global__ void k_skinny_reduce(const float *__restrict__ part, int nsplit, int T, int N, int mode, void *out, int ldo) {
    const int No = mode == CUK_SK_GEGLU ? N / 2 : N;
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)T * No) return;
    int t = (int)(idx / No), n = (int)(idx - (long long)t * No);
    const long long sstride = (long long)T * N;
    const float *p = part + (long long)t * N + n;
    float s = 0.f;
    for (int i = 0; i < nsplit; i++) s += p[i * sstride];
    if (mode == CUK_SK_GEGLU) {
        float u = 0.f;
        for (int i = 0; i < nsplit; i++) u += p[i * sstride + No];
        float gb = __bfloat162float(__float2bfloat16_rn(s)), ub = __bfloat162float(__float2bfloat16_rn(u));
        st_bf((uint16_t *)out, (long long)t * ldo + n, gelu_tanh(gb) * ub);
    } else if (mode == CUK_SK_RESID) {
        float *o = (float *)out + (long long)t * ldo + n;
        *o = *o + s;
    } else {
        st_bf((uint16_t *)out, (long long)t * ldo + n, s);
    }
}

static int sk_attr[9];

cudaError_t cuk_skinny_linear(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                              int mode, void *out, int ldo, float *part, size_t part_floats) {
    if (T <= 0) return cudaSuccess;
    if (T > 64 || N % 16 || K % 16 || (ldx % 8) || ((uintptr_t)X & 15) || ((uintptr_t)W & 15) || !part ||
        (mode == CUK_SK_GEGLU && (N / 2) % 16))
        return cudaErrorInvalidValue;
    const int NT = (T + 7) / 8;
    const int ctas_n = (N + SK_WARPS * 16 - 1) / (SK_WARPS * 16);
    /* K chunk: aim at >= ~2 CTAs per SM, chunks of 128..512 */
    int KC = 512;
    while (KC > 128 && (long long)ctas_n * ((K + KC - 1) / KC) < 264) KC /= 2;
    if (KC > K) KC = K;
    int nsplit = (K + KC - 1) / KC;
    while ((size_t)nsplit * T * N > part_floats) {
        if (KC >= K) return cudaErrorInvalidValue;
        KC *= 2;
        nsplit = (K + KC - 1) / KC;
    }
    size_t smem = (size_t)(NT * 8 + SK_WARPS * 16) * (KC + SK_PAD) * 2;
    if (smem > 200 * 1024) return cudaErrorInvalidValue;
    dim3 grid(ctas_n, nsplit);
    cudaError_t e = cudaSuccess;
#define SK_CASE(n)                                                                                             \
    case n:                                                                                                    \
        if (!sk_attr[n]) {                                                                                     \
            e = cudaFuncSetAttribute(k_skinny<n>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);    \
            if (e != cudaSuccess) return e;                                                                    \
            sk_attr[n] = 1;                                                                                    \
        }                                                                                                      \
        k_skinny<n><<<grid, SK_WARPS * 32, smem, st>>>(X, ldx, T, W, N, K, KC, part);                          \
        break;
    switch (NT) {
        SK_CASE(1) SK_CASE(2) SK_CASE(3) SK_CASE(4) SK_CASE(5) SK_CASE(6) SK_CASE(7) SK_CASE(8)
    default: return cudaErrorInvalidValue;
    }
#undef SK_CASE
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    long long no = (long long)T * (mode == CUK_SK_GEGLU ? N / 2 : N);
    k_skinny_reduce<<<(unsigned)((no + 255) / 256), 256, 0, st>>>(part, nsplit, T, N, mode, out, ldo);
    LAUNCH_RET();
}

/* ---------------- MQA attention for few query tokens (expert): one K/V chunk per CTA ---------------- */
/*
 * All query rows (T tokens x nh heads) share one K/V head. CTA (chunk, tile) = 64 keys x ROWS (64 or
 * 32) query rows, 8 warps: Q tile and K chunk staged by cp.async (one group), V chunk in a second group that
 * lands while S = Q K^T (WMMA, f32) and the chunk-local softmax run; then O = P V straight from
 * the accumulators into the f32 partials (unnormalised, with the chunk max m and sum l per row),
 * merged in a fixed order by k_mqa_merge4 / k_mqa_merge (deterministic). Keys past S are zero-filled.
 */
#define MQ_KC 64
#define MQ_SLD (MQ_KC + 4) /* f32 score pitch */
#define MQ_PLD (MQ_KC + 8) /* bf16 prob pitch */

static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <int ROWS> /* query rows per CTA: 64 or 32 */
__global__ void __launch_bounds__(256) k_attn_mqa(const bf16 *__restrict__ q, int R, const bf16 *__restrict__ k,
                                                  const bf16 *__restrict__ v, int S, int hd, float scale,
                                                  int rows_lim, int n_lim, float *__restrict__ part) {
    constexpr int RT = ROWS / 16;       /* 16-row tiles */
    constexpr int FQ = RT / 2;          /* 16-key score tiles per warp */
    constexpr int WPR = 8 / RT;         /* warps per row tile */
    constexpr int NCI = 16 / WPR;       /* O column tiles per warp (hd <= 256) */
    constexpr int TPR = 256 / ROWS;     /* softmax threads per row */
    constexpr int KPT = MQ_KC / TPR;    /* keys per softmax thread */
    extern __shared__ __align__(128) unsigned char smem[];
    const int ld = hd + 8; /* bf16 pitch of the Q/K/V tiles */
    bf16 *Qs = (bf16 *)smem;
    bf16 *Ks = Qs + ROWS * ld;
    bf16 *Vs = Ks + MQ_KC * ld;
    float *Ss = (float *)(Vs + MQ_KC * ld);
    bf16 *Ps = (bf16 *)(Ss + ROWS * MQ_SLD);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x, nsplit = gridDim.x, c0 = split * MQ_KC, r0 = blockIdx.y * ROWS;
    const int v8 = hd >> 3; /* 16-byte vectors per row */
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int i = tid; i < ROWS * v8; i += 256) {
        int r = i / v8, c = (i - r * v8) * 8;
        bf16 *d = Qs + r * ld + c;
        if (r0 + r < R) cp_async16(d, q + (long long)(r0 + r) * hd + c);
        else *(uint4 *)d = zero;
    }
    for (int i = tid; i < MQ_KC * v8; i += 256) {
        int r = i / v8, c = (i - r * v8) * 8;
        bf16 *dk = Ks + r * ld + c;
        if (c0 + r < S) cp_async16(dk, k + (long long)(c0 + r) * hd + c);
        else *(uint4 *)dk = zero;
    }
    cp_async_commit();
    for (int i = tid; i < MQ_KC * v8; i += 256) {
        int r = i / v8, c = (i - r * v8) * 8;
        bf16 *d = Vs + r * ld + c;
        if (c0 + r < S) cp_async16(d, v + (long long)(c0 + r) * hd + c);
        else *(uint4 *)d = zero;
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int rt = warp % RT; /* 16-row tile of this warp */
    {
        const int kt = (warp / RT) * FQ; /* FQ 16-key tiles */
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc[FQ];
#pragma unroll
        for (int j = 0; j < FQ; j++) wmma::fill_fragment(sc[j], 0.f);
        for (int kk = 0; kk < hd; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
            wmma::load_matrix_sync(fa, Qs + rt * 16 * ld + kk, ld);
#pragma unroll
            for (int j = 0; j < FQ; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fb, Ks + (kt + j) * 16 * ld + kk, ld);
                wmma::mma_sync(sc[j], fa, fb, sc[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < FQ; j++)
            wmma::store_matrix_sync(Ss + rt * 16 * MQ_SLD + (kt + j) * 16, sc[j], MQ_SLD, wmma::mem_row_major);
    }
    __syncthreads();
    /* chunk-local softmax: TPR threads per row, KPT keys each */
    {
        const int r = tid / TPR, cb = (tid % TPR) * KPT, gr = r0 + r;
        const int nn = gr < rows_lim ? n_lim : S;
        float sv[KPT], mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < KPT; j++) {
            sv[j] = c0 + cb + j < nn ? Ss[r * MQ_SLD + cb + j] * scale : -INFINITY;
            mx = fmaxf(mx, sv[j]);
        }
#pragma unroll
        for (int o = 1; o < TPR; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < KPT; j++) {
            float p = sv[j] == -INFINITY ? 0.f : __expf(sv[j] - mx);
            bf16 pb = __float2bfloat16_rn(p);
            Ps[r * MQ_PLD + cb + j] = pb;
            sum += __bfloat162float(pb);
        }
#pragma unroll
        for (int o = 1; o < TPR; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        if ((tid % TPR) == 0 && gr < R) {
            float *pm = part + (long long)nsplit * R * hd + (long long)split * R;
            pm[gr] = mx;
            pm[(long long)nsplit * R + gr] = sum;
        }
    }
    cp_async_wait<0>();
    __syncthreads();
    /* O = P V: this warp's 16 rows x column tiles warp / RT + WPR i */
    const int nct = hd >> 4;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NCI];
#pragma unroll
    for (int i = 0; i < NCI; i++) wmma::fill_fragment(acc[i], 0.f);
#pragma unroll
    for (int kk = 0; kk < MQ_KC; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, Ps + rt * 16 * MQ_PLD + kk, MQ_PLD);
#pragma unroll
        for (int i = 0; i < NCI; i++) {
            int ct = warp / RT + WPR * i;
            if (ct < nct) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, Vs + kk * ld + ct * 16, ld);
                wmma::mma_sync(acc[i], fa, fb, acc[i]);
            }
        }
    }
    const int row0 = r0 + rt * 16;
    if (row0 >= R) return;
    float *po = part + (long long)split * R * hd;
    if (row0 + 16 <= R) {
#pragma unroll
        for (int i = 0; i < NCI; i++) {
            int ct = warp / RT + WPR * i;
            if (ct < nct) wmma::store_matrix_sync(po + (long long)row0 * hd + ct * 16, acc[i], hd, wmma::mem_row_major);
        }
    } else {
        /* partial row tile (the last one): stage in the (no longer used) Q area, copy the valid rows */
        float *stg = (float *)smem; /* 16 x hd f32 <= the Q tile's bytes; Q is no longer read */
        const int nr = R - row0;
#pragma unroll
        for (int i = 0; i < NCI; i++) {
            int ct = warp / RT + WPR * i;
            if (ct < nct) {
                wmma::store_matrix_sync(stg + ct * 16, acc[i], hd, wmma::mem_row_major);
                __syncwarp();
                for (int e = lane; e < nr * 16; e += 32) {
                    int rr = e >> 4, cc = ct * 16 + (e & 15);
                    po[(long long)(row0 + rr) * hd + cc] = stg[rr * hd + cc];
                }
            }
        }
    }
}

/* fixed-order merge of the chunk partials: one warp per row, 8 columns per lane (float4 loads) */
__global__ void k_mqa_merge(const float *__restrict__ part, int R, int hd, int nsplit, bf16 *__restrict__ out) {
    const int lane = threadIdx.x & 31, r = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (r >= R) return;
    const float *pm = part + (long long)nsplit * R * hd, *pl = pm + (long long)nsplit * R;
    const float ml = lane < nsplit ? pm[(long long)lane * R + r] : -INFINITY;
    const float M = warp_max(ml);
    const float wl = ml == -INFINITY ? 0.f : __expf(ml - M);
    const float den = warp_sum(lane < nsplit ? wl * pl[(long long)lane * R + r] : 0.f);
    const float inv = 1.f / den;
    /* hd <= 256: lane owns columns [c, c + 8) when c < hd; every lane stays in the loop for the shuffle */
    const int c = lane * 8;
    const bool act = c < hd;
    float a[8];
#pragma unroll
    for (int j = 0; j < 8; j++) a[j] = 0.f;
#pragma unroll 4
    for (int sp = 0; sp < nsplit; sp++) {
        const float w = __shfl_sync(0xffffffffu, wl, sp);
        if (act) {
            const float4 *p = (const float4 *)(part + ((long long)sp * R + r) * hd + c);
            float4 x0 = p[0], x1 = p[1];
            a[0] += w * x0.x; a[1] += w * x0.y; a[2] += w * x0.z; a[3] += w * x0.w;
            a[4] += w * x1.x; a[5] += w * x1.y; a[6] += w * x1.z; a[7] += w * x1.w;
        }
    }
    if (act) {
        __align__(16) bf16 o[8];
#pragma unroll
        for (int j = 0; j < 8; j++) o[j] = __float2bfloat16_rn(a[j] * inv);
        *(uint4 *)(out + (long long)r * hd + c) = *(const uint4 *)o;
    }
}

/* the same merge, one thread per (row, 4 columns): R * hd / 4 threads, every load independent */
__global__ void k_mqa_merge4(const float *__restrict__ part, int R, int hd, int nsplit, bf16 *__restrict__ out) {
    const int h4 = hd >> 2;
    const long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= (long long)R * h4) return;
    const int r = (int)(t / h4), c = (int)(t - (long long)r * h4) * 4;
    const float *pm = part + (long long)nsplit * R * hd, *pl = pm + (long long)nsplit * R;
    float M = -INFINITY;
    for (int sp = 0; sp < nsplit; sp++) M = fmaxf(M, pm[(long long)sp * R + r]);
    float den = 0.f, a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll 4
    for (int sp = 0; sp < nsplit; sp++) {
        const float m = pm[(long long)sp * R + r];
        const float w = m == -INFINITY ? 0.f : __expf(m - M);
        den += w * pl[(long long)sp * R + r];
        const float4 x = *(const float4 *)(part + ((long long)sp * R + r) * hd + c);
        a0 += w * x.x; a1 += w * x.y; a2 += w * x.z; a3 += w * x.w;
    }
    const float inv = 1.f / den;
    __align__(8) bf16 o[4] = {__float2bfloat16_rn(a0 * inv), __float2bfloat16_rn(a1 * inv),
                              __float2bfloat16_rn(a2 * inv), __float2bfloat16_rn(a3 * inv)};
    *(uint2 *)(out + (long long)r * hd + c) = *(const uint2 *)o;
}

cudaError_t cuk_attention_mqa(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                              int hd, float scale, int rows_lim, int n_lim, uint16_t *out, float *part,
                              size_t part_floats, int merge, int tile_rows) {
    if (R <= 0 || S <= 0) return cudaSuccess;
    if (hd % 16 || hd > 256 || !part) return cudaErrorInvalidValue;
    const int rows = tile_rows == 32 ? 32 : 64;
    const int nsplit = (S + MQ_KC - 1) / MQ_KC, tiles = (R + rows - 1) / rows;
    if ((size_t)nsplit * R * (hd + 2) > part_floats || nsplit > 32) return cudaErrorInvalidValue;
    size_t sm = (size_t)(rows + 2 * MQ_KC) * (hd + 8) * 2 + rows * MQ_SLD * 4 + rows * MQ_PLD * 2;
    static int attr_set = 0;
    if (!attr_set) {
        size_t smax = (size_t)(64 + 2 * MQ_KC) * (256 + 8) * 2 + 64 * MQ_SLD * 4 + 64 * MQ_PLD * 2;
        cudaError_t e = cudaFuncSetAttribute(k_attn_mqa<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smax);
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(k_attn_mqa<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smax);
        if (e != cudaSuccess) return e;
        attr_set = 1;
    }
    dim3 grid(nsplit, tiles);
    if (rows == 32)
        k_attn_mqa<32><<<grid, 256, sm, st>>>((const bf16 *)q, R, (const bf16 *)k, (const bf16 *)v, S, hd, scale,
                                              rows_lim, n_lim, part);
    else
        k_attn_mqa<64><<<grid, 256, sm, st>>>((const bf16 *)q, R, (const bf16 *)k, (const bf16 *)v, S, hd, scale,
                                              rows_lim, n_lim, part);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (merge == CUK_MQA_MERGE_ROW) {
        k_mqa_merge<<<(unsigned)((R + 7) / 8), 256, 0, st>>>(part, R, hd, nsplit, (bf16 *)out);
    } else {
        long long n4 = (long long)R * (hd / 4);
        k_mqa_merge4<<<(unsigned)((n4 + 255) / 256), 256, 0, st>>>(part, R, hd, nsplit, (bf16 *)out);
    }
    LAUNCH_RET();
}

void cuk_attention_lim_ref(const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S, int hd, float scale,
                           int rows_lim, int n_lim, uint16_t *out) {
    for (int r = 0; r < R; r++) {
        int nn = r < rows_lim ? n_lim : S;
        cuk_attention_ref(q + (size_t)r * hd, 1, k, v, nn, hd, scale, out + (size_t)r * hd);
    }
}
