/* LayerNorm (SigLIP) and Gemma RMSNorm (1+w): one CTA per row, statistics in f32 (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

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

/* The register-style row kernels (k_layernorm4, k_rmsnorm4): rows of n4 float4s on th threads (a multiple of 32, at
 * most NORM_THREADS) x nv float4s each; false when the row does not fit (n4 > 4 NORM_THREADS). */
static bool row4_shape(int n4, int *th, int *nv) {
    if (n4 > 4 * NORM_THREADS) return false;
    *th = n4 < NORM_THREADS ? (n4 + 31) / 32 * 32 : NORM_THREADS;
    *nv = (n4 + *th - 1) / *th;
    return true;
}

/* As k_rmsnorm4: the row, g and b in registers as float4s, all loaded before the first reduction. */
template <int NV>
__global__ void __launch_bounds__(256) k_layernorm4(const float *x, const float *g, const float *b, uint16_t *y, int w,
                                                    float eps) {
    __shared__ float red[33];
    const long long r = blockIdx.x;
    const int n4 = w >> 2;
    const float4 *xr = reinterpret_cast<const float4 *>(x + r * w), *g4 = reinterpret_cast<const float4 *>(g),
                 *b4 = reinterpret_cast<const float4 *>(b);
    float4 xv[NV], gv[NV], bv[NV];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < n4) {
            gv[j] = __ldg(g4 + i);
            bv[j] = __ldg(b4 + i);
            xv[j] = xr[i];
            s += xv[j].x + xv[j].y + xv[j].z + xv[j].w;
        }
    }
    const float mu = block_sum(s, red) / (float)w;
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < NV; j++)
        if (threadIdx.x + j * blockDim.x < n4) {
            const float d0 = xv[j].x - mu, d1 = xv[j].y - mu, d2 = xv[j].z - mu, d3 = xv[j].w - mu;
            q += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
        }
    const float rs = rsqrtf(block_sum(q, red) / (float)w + eps);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i >= n4) continue;
        st_bf4(y, r * n4 + i, (xv[j].x - mu) * rs * gv[j].x + bv[j].x, (xv[j].y - mu) * rs * gv[j].y + bv[j].y,
               (xv[j].z - mu) * rs * gv[j].z + bv[j].z, (xv[j].w - mu) * rs * gv[j].w + bv[j].w);
    }
}

cudaError_t cuk_layernorm(cudaStream_t st, const float *x, const float *g, const float *b, uint16_t *y,
                          int rows, int w, float eps) {
    if (rows <= 0) return cudaSuccess;
    int th, nv;
    if (w % 4 == 0 && row4_shape(w / 4, &th, &nv) && (((uintptr_t)x | (uintptr_t)g | (uintptr_t)b) & 15) == 0 &&
        ((uintptr_t)y & 7) == 0) {
        if (nv == 1) k_layernorm4<1><<<rows, th, 0, st>>>(x, g, b, y, w, eps);
        if (nv == 2) k_layernorm4<2><<<rows, th, 0, st>>>(x, g, b, y, w, eps);
        if (nv == 3) k_layernorm4<3><<<rows, th, 0, st>>>(x, g, b, y, w, eps);
        if (nv == 4) k_layernorm4<4><<<rows, th, 0, st>>>(x, g, b, y, w, eps);
        LAUNCH_RET();
    }
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
/* one CTA of NORM_THREADS per row, a row of shared memory, the PDL attribute in at[0] when pdl */
static cudaLaunchConfig_t norm_cfg(cudaStream_t st, int rows, int width, int pdl, cudaLaunchAttribute *at) {
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = dim3((unsigned)rows);
    cfg.blockDim = dim3(NORM_THREADS);
    cfg.dynamicSmemBytes = (size_t)width * sizeof(float);
    cfg.stream = st;
    cfg.attrs = at;
    pdl_attr(at, &cfg.numAttrs, pdl);
    return cfg;
}

/* The scalar row kernel of cuk_rmsnorm and cuk_rmsnorm_acc (rows k_rmsnorm4 does not take): np > 0 (the consumer of an
 * unreduced few-token GEMM, CUK_SK_PARTIAL): the np partials of a row are summed in rank order and added to the
 * residual row once (x is updated: it is the residual stream); np == 0: x is only read. Then the row is normalised. */
template <int YDT>
__global__ void k_rmsnorm(float *x, const float *part, int np, long long pstride, int ldp, const float *wt, void *y,
                          int width, float eps) {
    extern __shared__ float row[];
    __shared__ float red[33];
    long long r = blockIdx.x;
    float *xr = x + r * width;
    const float *pr = part + (np > 0 ? r * ldp : 0);
    pdl_trigger();
    pdl_wait();
    float q = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = xr[i];
        if (np > 0) {
            float s = pr[i];
            for (int c = 1; c < np; c++) s += pr[c * pstride + i];
            v += s;
            xr[i] = v;
        }
        row[i] = v;
        q += v * v;
    }
    float rs = rsqrtf(block_sum(q, red) / (float)width + eps); /* its barrier also publishes row[] */
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = row[i] * rs * (1.f + wt[i]);
        if (YDT == CUK_BF16) st_bf((uint16_t *)y, r * width + i, v);
        else ((float *)y)[r * width + i] = v;
    }
}

/* Latency-bound rows (the expert's 51): the row and the weights in registers as float4s, every global load issued
 * before the one reduction (the weights first: they do not depend on the previous kernel), no shared-memory row.
 * NP > 0 (cuk_rmsnorm_acc): the NP split-K partials of the row (part[c][r] at part + c pstride + r ldp) are loaded
 * with it, summed in rank order and added to the row, which is written back (x is the residual stream). */
template <int YDT, int NV, int NP>
__global__ void __launch_bounds__(256) k_rmsnorm4(float *x, const float *part, long long pstride, int ldp,
                                                  const float *wt, void *y, int width, float eps) {
    __shared__ float red[33];
    const long long r = blockIdx.x;
    const int n4 = width >> 2;
    float4 *xr = reinterpret_cast<float4 *>(x + r * width);
    const float4 *w4 = reinterpret_cast<const float4 *>(wt);
    float4 xv[NV], wv[NV];
    pdl_trigger();
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < n4) wv[j] = __ldg(w4 + i);
    }
    pdl_wait();
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i >= n4) continue;
        float4 p[NP > 0 ? NP : 1];
#pragma unroll
        for (int c = 0; c < NP; c++) p[c] = reinterpret_cast<const float4 *>(part + r * ldp + c * pstride)[i];
        xv[j] = xr[i];
        if (NP > 0) {
            float4 sm = p[0];
#pragma unroll
            for (int c = 1; c < NP; c++) sm.x += p[c].x, sm.y += p[c].y, sm.z += p[c].z, sm.w += p[c].w;
            xv[j].x += sm.x, xv[j].y += sm.y, xv[j].z += sm.z, xv[j].w += sm.w;
            xr[i] = xv[j];
        }
        q += xv[j].x * xv[j].x + xv[j].y * xv[j].y + xv[j].z * xv[j].z + xv[j].w * xv[j].w;
    }
    const float rs = rsqrtf(block_sum(q, red) / (float)width + eps);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i >= n4) continue;
        const float o0 = xv[j].x * rs * (1.f + wv[j].x), o1 = xv[j].y * rs * (1.f + wv[j].y);
        const float o2 = xv[j].z * rs * (1.f + wv[j].z), o3 = xv[j].w * rs * (1.f + wv[j].w);
        if (YDT == CUK_BF16) st_bf4((uint16_t *)y, r * n4 + i, o0, o1, o2, o3);
        else reinterpret_cast<float4 *>(y)[r * n4 + i] = make_float4(o0, o1, o2, o3);
    }
}

/* k_rmsnorm4<YDT, nv, NP> on cfg (its block size set here); cudaErrorInvalidValue when nv is not 1..4 */
template <int YDT, int NP>
static cudaError_t rmsnorm4_launch(cudaLaunchConfig_t *cfg, int th, int nv, float *x, const float *part,
                                   long long pstride, int ldp, const float *w, void *y, int width, float eps) {
    cfg->blockDim = dim3((unsigned)th);
    cfg->dynamicSmemBytes = 0;
    switch (nv) {
    case 1: return cudaLaunchKernelEx(cfg, k_rmsnorm4<YDT, 1, NP>, x, part, pstride, ldp, w, y, width, eps);
    case 2: return cudaLaunchKernelEx(cfg, k_rmsnorm4<YDT, 2, NP>, x, part, pstride, ldp, w, y, width, eps);
    case 3: return cudaLaunchKernelEx(cfg, k_rmsnorm4<YDT, 3, NP>, x, part, pstride, ldp, w, y, width, eps);
    case 4: return cudaLaunchKernelEx(cfg, k_rmsnorm4<YDT, 4, NP>, x, part, pstride, ldp, w, y, width, eps);
    default: return cudaErrorInvalidValue;
    }
}

cudaError_t cuk_rmsnorm(cudaStream_t st, const float *x, const float *w, void *y, int ydt, int rows,
                        int width, float eps) {
    if (rows <= 0) return cudaSuccess;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = norm_cfg(st, rows, width, ydt & CUK_PDL, at);
    ydt &= ~CUK_PDL;
    int th, nv;
    cudaError_t e;
    if (width % 4 == 0 && row4_shape(width / 4, &th, &nv) &&
        ((((uintptr_t)x | (uintptr_t)w | (uintptr_t)y) & 15) == 0)) {
        float *xm = const_cast<float *>(x); /* NP = 0: read only */
        e = ydt == CUK_BF16 ? rmsnorm4_launch<CUK_BF16, 0>(&cfg, th, nv, xm, NULL, 0, 0, w, y, width, eps)
                            : rmsnorm4_launch<CUK_F32, 0>(&cfg, th, nv, xm, NULL, 0, 0, w, y, width, eps);
    } else {
        float *xm = const_cast<float *>(x); /* np = 0: read only */
        e = ydt == CUK_BF16 ? cudaLaunchKernelEx(&cfg, k_rmsnorm<CUK_BF16>, xm, (const float *)NULL, 0, 0LL, 0, w, y,
                                                 width, eps)
                            : cudaLaunchKernelEx(&cfg, k_rmsnorm<CUK_F32>, xm, (const float *)NULL, 0, 0LL, 0, w, y,
                                                 width, eps);
    }
    if (e != cudaSuccess) return e;
    LAUNCH_RET();
}

template <int YDT>
static cudaError_t rmsnorm_acc_launch(cudaLaunchConfig_t *cfg, float *x, const float *part, int np, long long pstride,
                                      int ldp, const float *w, void *y, int width, float eps) {
    int th, nv;
    const bool v4 = width % 4 == 0 && row4_shape(width / 4, &th, &nv) && ldp % 4 == 0 && pstride % 4 == 0 &&
                    ((((uintptr_t)x | (uintptr_t)part | (uintptr_t)w | (uintptr_t)y) & 15) == 0);
    if (v4 && np == 1) return rmsnorm4_launch<YDT, 1>(cfg, th, nv, x, part, pstride, ldp, w, y, width, eps);
    if (v4 && np == 2) return rmsnorm4_launch<YDT, 2>(cfg, th, nv, x, part, pstride, ldp, w, y, width, eps);
    if (v4 && np == 4) return rmsnorm4_launch<YDT, 4>(cfg, th, nv, x, part, pstride, ldp, w, y, width, eps);
    if (v4 && np == 8) return rmsnorm4_launch<YDT, 8>(cfg, th, nv, x, part, pstride, ldp, w, y, width, eps);
    return cudaLaunchKernelEx(cfg, k_rmsnorm<YDT>, x, part, np, pstride, ldp, w, y, width, eps);
}

cudaError_t cuk_rmsnorm_acc(cudaStream_t st, float *x, const float *part, int np, long long pstride, int ldp,
                            const float *w, void *y, int ydt, int rows, int width, float eps) {
    if (rows <= 0) return cudaSuccess;
    if (np < 1 || !part) return cudaErrorInvalidValue;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = norm_cfg(st, rows, width, ydt & CUK_PDL, at);
    ydt &= ~CUK_PDL;
    cudaError_t e = ydt == CUK_BF16 ? rmsnorm_acc_launch<CUK_BF16>(&cfg, x, part, np, pstride, ldp, w, y, width, eps)
                                    : rmsnorm_acc_launch<CUK_F32>(&cfg, x, part, np, pstride, ldp, w, y, width, eps);
    if (e != cudaSuccess) return e;
    LAUNCH_RET();
}

void cuk_rmsnorm_acc_ref(float *x, const float *part, int np, long long pstride, int ldp, const float *w, void *y,
                         int ydt, int rows, int width, float eps) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < width; i++) {
            float s = part[(size_t)r * ldp + i];
            for (int c = 1; c < np; c++) s += part[(size_t)c * pstride + (size_t)r * ldp + i];
            x[(size_t)r * width + i] += s;
        }
    cuk_rmsnorm_ref(x, w, y, ydt, rows, width, eps);
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
