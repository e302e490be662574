/* Expert attention: all query heads of few tokens over one shared K/V head (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"
#include <mma.h>
using namespace nvcuda;

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
