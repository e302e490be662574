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

__global__ void k_layernorm(const uint16_t *x, const float *g, const float *b, uint16_t *y, int w, float eps) {
    extern __shared__ float row[];
    __shared__ float red[33];
    long long r = blockIdx.x;
    const uint16_t *xr = x + r * w;
    float s = 0.f;
    for (int i = threadIdx.x; i < w; i += blockDim.x) {
        float v = ld_bf(xr, i);
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

cudaError_t cuk_layernorm(cudaStream_t st, const uint16_t *x, const float *g, const float *b, uint16_t *y,
                          int rows, int w, float eps) {
    if (rows <= 0) return cudaSuccess;
    k_layernorm<<<rows, NORM_THREADS, (size_t)w * sizeof(float), st>>>(x, g, b, y, w, eps);
    LAUNCH_RET();
}

void cuk_layernorm_ref(const uint16_t *x, const float *g, const float *b, uint16_t *y, int rows, int w, float eps) {
    for (int r = 0; r < rows; r++) {
        double s = 0, q = 0;
        for (int i = 0; i < w; i++) s += bf16_to_f32(x[(size_t)r * w + i]);
        double mu = s / w;
        for (int i = 0; i < w; i++) {
            double d = bf16_to_f32(x[(size_t)r * w + i]) - mu;
            q += d * d;
        }
        double rs = 1.0 / sqrt(q / w + eps);
        for (int i = 0; i < w; i++)
            y[(size_t)r * w + i] = f32_to_bf16((float)((bf16_to_f32(x[(size_t)r * w + i]) - mu) * rs * g[i] + b[i]));
    }
}

/* ---------------- RMSNorm (1+w) ---------------- */
template <int YDT>
__global__ void k_rmsnorm(const uint16_t *x, const float *wt, void *y, int width, float eps) {
    extern __shared__ float row[];
    __shared__ float red[33];
    long long r = blockIdx.x;
    const uint16_t *xr = x + r * width;
    float q = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = ld_bf(xr, i);
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

cudaError_t cuk_rmsnorm(cudaStream_t st, const uint16_t *x, const float *w, void *y, int ydt, int rows,
                        int width, float eps) {
    if (rows <= 0) return cudaSuccess;
    size_t sm = (size_t)width * sizeof(float);
    if (ydt == CUK_BF16) k_rmsnorm<CUK_BF16><<<rows, NORM_THREADS, sm, st>>>(x, w, y, width, eps);
    else k_rmsnorm<CUK_F32><<<rows, NORM_THREADS, sm, st>>>(x, w, y, width, eps);
    LAUNCH_RET();
}

void cuk_rmsnorm_ref(const uint16_t *x, const float *w, void *y, int ydt, int rows, int width, float eps) {
    for (int r = 0; r < rows; r++) {
        double q = 0;
        for (int i = 0; i < width; i++) {
            double v = bf16_to_f32(x[(size_t)r * width + i]);
            q += v * v;
        }
        double rs = 1.0 / sqrt(q / width + eps);
        for (int i = 0; i < width; i++) {
            float v = (float)(bf16_to_f32(x[(size_t)r * width + i]) * rs * (1.0 + w[i]));
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
__global__ void k_softmax(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float *lr = l + (long long)r * ld_l;
    float m = -INFINITY;
    for (int i = lane; i < n; i += 32) m = fmaxf(m, lr[i]);
    m = warp_max(m);
    float s = 0.f;
    for (int i = lane; i < n; i += 32) s += __expf(lr[i] - m);
    s = warp_sum(s);
    float inv = 1.f / s;
    uint16_t *pr = p + (long long)r * ld_p;
    for (int i = lane; i < n; i += 32) st_bf(pr, i, __expf(lr[i] - m) * inv);
}

cudaError_t cuk_softmax(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    if (rows <= 0) return cudaSuccess;
    int wpb = 8;
    k_softmax<<<(rows + wpb - 1) / wpb, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n);
    LAUNCH_RET();
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
__global__ void k_add_pos(const float *in, const float *pos, uint16_t *out, int np, int w, long long total) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx / w;
        int c = (int)(idx - r * w);
        st_bf(out, idx, in[idx] + pos[(r % np) * w + c]);
    }
}

cudaError_t cuk_add_pos(cudaStream_t st, const float *in, const float *pos, uint16_t *out, int rows, int np, int w) {
    long long total = (long long)rows * w;
    if (total <= 0) return cudaSuccess;
    long long blocks = (total + 255) / 256;
    if (blocks > 132 * 32) blocks = 132 * 32;
    k_add_pos<<<(unsigned)blocks, 256, 0, st>>>(in, pos, out, np, w, total);
    LAUNCH_RET();
}

void cuk_add_pos_ref(const float *in, const float *pos, uint16_t *out, int rows, int np, int w) {
    for (long long r = 0; r < rows; r++)
        for (int c = 0; c < w; c++) out[r * w + c] = f32_to_bf16(in[r * w + c] + pos[(r % np) * w + c]);
}

/* ---------------- embedding ---------------- */
__global__ void k_embed(const int32_t *tok, const uint16_t *table, uint16_t *out, int d, float scale) {
    int i = blockIdx.x;
    const uint16_t *src = table + (long long)tok[i] * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) st_bf(out, (long long)i * d + c, ld_bf(src, c) * scale);
}

cudaError_t cuk_embed(cudaStream_t st, const int32_t *tok, const uint16_t *table, uint16_t *out, int n, int d,
                      float scale) {
    if (n <= 0) return cudaSuccess;
    k_embed<<<n, 256, 0, st>>>(tok, table, out, d, scale);
    LAUNCH_RET();
}

void cuk_embed_ref(const int32_t *tok, const uint16_t *table, uint16_t *out, int n, int d, float scale) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++)
            out[(size_t)i * d + c] = f32_to_bf16(bf16_to_f32(table[(size_t)tok[i] * d + c]) * scale);
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
        float v = d_random_value(seed, (uint64_t)i, mean, std);
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
