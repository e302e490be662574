/* Fused WMMA flash attention (experimental: PI0_EXP_FUSED_ATTN) (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

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
