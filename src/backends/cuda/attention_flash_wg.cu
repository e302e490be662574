/*
 * Flash attention with wgmma for head dim 256 (the Gemma prefill: 8 query heads x P tokens over one shared
 * K/V head) and 72 (SigLIP: 3 cameras x 16 heads x 256 tokens), reached through cuk_flash_attn (kernels.h)
 * as variant CUK_FLASH_WG; the backend's default for both. Same contract and CPU twin (cuk_flash_attn_ref)
 * as the mma.sync kernel of attention_flash.cu, whose ncu profile (ldmatrix-bound: every warp re-reads each
 * K/V chunk) motivated this one: wgmma reads its operands from shared memory once per warpgroup.
 *
 * Design. One warpgroup (128 threads) per CTA owns 64 query rows of one (batch, head) and loops over 64-key
 * chunks. Q and, per ring stage, K and V (64 rows each) sit in shared memory as 64-wide column blocks of
 * 128-byte rows with the 128-byte swizzle (wgmma.cuh), loaded by cp.async (zero-filled past R and S):
 * hd 256 as four blocks, each thread moving a fixed column chunk (one add per row); hd 72 as two blocks
 * (columns 72-79 zero for the fifth Q K^T k-step, the rest unread). K and V of a chunk are separate groups.
 * Per iteration c the tensor cores run O += P_c V_c (4 wgmma m64n{256,72}k16, P from registers, V an
 * MN-major B: the transpose bit) and S = Q K_{c+1}^T (wgmma m64n64k16 per 16-wide k-step) back to back,
 * one wait; then the online softmax of chunk c + 1 in f32 in the exp2 domain (row max over the quad by
 * shuffles, keys >= S masked, O rescaled only when a row max grew), P re-packed in registers as the next A
 * operand. O is hd/2 registers per thread; at the end O / l is written as bf16 pairs. hd 256: 3-stage ring,
 * one CTA per SM; hd 72: 2 stages, two CTAs per SM. Deterministic (fixed order everywhere).
 *
 * Measured (dev/cuda/attention_flash.cu, H100, graph replay, L2-warm; bench/results/2026-11-25-h100-v28-*,
 * -v31-*): P = 788: 25.2-27.0 us vs 39.5-39.8 us for the mma.sync kernel; P = 531: 18.7 vs 29.4 us; SigLIP
 * (hd 72): 10.1 vs 10.7 us. ncu (P = 788): one warp per scheduler, ~25 % tensor-pipe use; the serial part
 * of each chunk (waits, barriers, softmax) is what is left, and only 99 CTAs exist at P = 788 (a second
 * warpgroup per CTA splitting the head dim, exchanging the partial S through shared memory, measured
 * slower: 33.2 us).
 */
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/wgmma.cuh"

#define FW_ROWS 64
#define FW_KC 64

/* a head dim HD (256: Gemma; 72: SigLIP) as 64-wide column blocks, 16-wide k-steps, 16-byte chunks per row */
template <int HD> struct FwDim {
    static constexpr int NBLK = (HD + 63) / 64, KST = (HD + 15) / 16, CPR = 2 * KST;
    static constexpr int TILE = 64 * NBLK * 128; /* bytes of one 64-row tile */
};

struct FwParams {
    const bf16 *q, *k, *v;
    bf16 *o;
    long long ldq, ldk, ldv, ldo;
    long long qbs, kbs, vbs, obs, qhs, khs, vhs, ohs;
    int nh, R, S;
    float sl2; /* scale * log2(e) */
};

/* rows [0, 64) of a (rows, 256) bf16 matrix (row pitch ld) into the swizzled tile at dst; rows >= nvalid zero.
 * Thread t (of 128) always moves column chunk t % 32 (16 bytes) of rows t / 32 + 4 j, so the shared offsets
 * are compile-time steps and the global address one add per row (the kernel is issue-bound: one warp per
 * scheduler) */
template <int HD>
static __device__ __forceinline__ void fw_load(unsigned dst, const bf16 *src, long long ld, int nvalid, int tid) {
    if constexpr (HD != 256) { /* SigLIP: 72 columns as 10 chunks (the 10th zero), the rest of block 1 unread */
        constexpr int CPR = FwDim<HD>::CPR;
#pragma unroll
        for (int i = tid; i < 64 * CPR; i += 128) {
            const int r = i / CPR, c = i - r * CPR;
            const bool v = r < nvalid && c * 8 < HD;
            cp_async16_zfill_s(dst + (unsigned)(c >> 3) * 8192u + (unsigned)r * 128u + (unsigned)(((c & 7) ^ (r & 7)) << 4),
                    v ? (const void *)(src + (long long)r * ld + c * 8) : (const void *)src, v);
        }
        return;
    }
    constexpr int RS = 4; /* rows per step */
    const int c = tid & 31, rt = tid >> 5, cc = c & 7;
    const unsigned d0 = dst + (unsigned)(c >> 3) * 8192u + (unsigned)rt * 128u;
    const char *g = reinterpret_cast<const char *>(src + (long long)rt * ld + c * 8);
    const long long gstep = (long long)RS * ld * 2;
    if (nvalid >= 64) {
#pragma unroll
        for (int j = 0; j < 64 / RS; j++) {
            const int r = rt + RS * j;
            cp_async16_zfill_s(d0 + (unsigned)(RS * j * 128) + (unsigned)((cc ^ (r & 7)) << 4), g + j * gstep, true);
        }
    } else {
#pragma unroll
        for (int j = 0; j < 64 / RS; j++) {
            const int r = rt + RS * j;
            const bool v = r < nvalid;
            cp_async16_zfill_s(d0 + (unsigned)(RS * j * 128) + (unsigned)((cc ^ (r & 7)) << 4), v ? g + j * gstep : (const char *)src,
                    v);
        }
    }
}

/* online softmax of one chunk's S (keys >= kv masked): P into the A fragments pa, running max m (log2
 * units) and partial row sums l of rows lane/4 (a) and lane/4 + 8 (b) updated, O rescaled */
template <int NO>
static __device__ __forceinline__ void fw_softmax(float (&s)[32], uint32_t (&pa)[4][4], float (&acc)[NO], int kv,
                                                  int lane, float sl2, float &m_a, float &m_b, float &l_a, float &l_b) {
    const int cb = 2 * (lane & 3); /* the thread's columns: 8 j + cb + {0, 1} */
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (8 * j + cb >= kv) s[4 * j] = s[4 * j + 2] = -INFINITY;
        if (8 * j + cb + 1 >= kv) s[4 * j + 1] = s[4 * j + 3] = -INFINITY;
        mx_a = fmaxf(mx_a, fmaxf(s[4 * j], s[4 * j + 1]));
        mx_b = fmaxf(mx_b, fmaxf(s[4 * j + 2], s[4 * j + 3]));
    }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    const float mn_a = fmaxf(m_a, mx_a * sl2), mn_b = fmaxf(m_b, mx_b * sl2);
    const float al_a = exp2f(m_a - mn_a), al_b = exp2f(m_b - mn_b);
    m_a = mn_a;
    m_b = mn_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float p0 = exp2f(fmaf(s[4 * j], sl2, -mn_a)), p1 = exp2f(fmaf(s[4 * j + 1], sl2, -mn_a));
        const float p2 = exp2f(fmaf(s[4 * j + 2], sl2, -mn_b)), p3 = exp2f(fmaf(s[4 * j + 3], sl2, -mn_b));
        sum_a += p0 + p1;
        sum_b += p2 + p3;
        /* key block j = 2 kk + (j & 1): A fragment regs {0, 1} (keys 0-7 of the 16) or {2, 3} (keys 8-15) */
        pa[j >> 1][(j & 1) * 2] = pack_bf16x2(p0, p1);
        pa[j >> 1][(j & 1) * 2 + 1] = pack_bf16x2(p2, p3);
    }
    l_a = l_a * al_a + sum_a;
    l_b = l_b * al_b + sum_b;
    if (al_a != 1.f || al_b != 1.f) { /* the row max grew: once or twice per row after the first chunks */
#pragma unroll
        for (int j = 0; j < NO / 4; j++) {
            acc[4 * j] *= al_a;
            acc[4 * j + 1] *= al_a;
            acc[4 * j + 2] *= al_b;
            acc[4 * j + 3] *= al_b;
        }
    }
}

/* S = Q K^T of one chunk: KST k-steps of 16 over the 64-wide column blocks */
template <int KST>
static __device__ __forceinline__ void fw_qk(float (&s)[32], unsigned Qs, unsigned Kst) {
#pragma unroll
    for (int kk = 0; kk < KST; kk++) {
        const unsigned off = (unsigned)(kk >> 2) * 8192u + (unsigned)(kk & 3) * 32u;
        wg_mma_n64(s, wg_desc(Qs + off), wg_desc(Kst + off), kk > 0);
    }
}

/* ST-stage K/V ring; per iteration c the tensor cores run P_c V_c and then Q K_{c+1}^T back to back (one
 * wait), and the softmax of chunk c + 1 follows */
template <int HD, int ST>
__global__ void __launch_bounds__(128, HD == 256 ? 1 : 2) k_flash_wg(FwParams p) {
    constexpr int TILE = FwDim<HD>::TILE, KST = FwDim<HD>::KST, NO = HD / 2;
    extern __shared__ unsigned char fw_raw[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int bh = blockIdx.y, b = bh / p.nh, h = bh - b * p.nh, r0 = blockIdx.x * FW_ROWS;
    const bf16 *q = p.q + b * p.qbs + h * p.qhs, *k = p.k + b * p.kbs + h * p.khs, *v = p.v + b * p.vbs + h * p.vhs;
    bf16 *o = p.o + b * p.obs + h * p.ohs;
    const unsigned base = ((unsigned)__cvta_generic_to_shared(fw_raw) + 1023u) & ~1023u;
    const unsigned Qs = base;
    auto Ks = [&](int c) { return base + (unsigned)TILE * (1u + 2u * (unsigned)(c % ST)); };
    auto Vs = [&](int c) { return base + (unsigned)TILE * (2u + 2u * (unsigned)(c % ST)); };
    const int S = p.S, nch = (S + FW_KC - 1) / FW_KC;
    /* chunk c's K and V as two cp.async groups (empty past the last chunk: the group count stays uniform) */
    auto load_kv = [&](int c) {
        if (c < nch) fw_load<HD>(Ks(c), k + (long long)c * FW_KC * p.ldk, p.ldk, S - c * FW_KC, tid);
        cp_async_commit();
        if (c < nch) fw_load<HD>(Vs(c), v + (long long)c * FW_KC * p.ldv, p.ldv, S - c * FW_KC, tid);
        cp_async_commit();
    };

    fw_load<HD>(Qs, q + (long long)r0 * p.ldq, p.ldq, p.R - r0, tid);
    cp_async_commit();
#pragma unroll
    for (int c = 0; c < ST; c++) load_kv(c);
    float acc[NO];
#pragma unroll
    for (int i = 0; i < NO; i++) acc[i] = 0.f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;
    const float sl2 = p.sl2;
    float s[32];
    uint32_t pa[4][4];
    cp_async_wait<2 * ST - 1>(); /* Q and K_0 */
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    wg_fence();
    fw_qk<KST>(s, Qs, Ks(0));
    wg_commit();
    wg_wait0();
    fw_softmax<NO>(s, pa, acc, S, lane, sl2, m_a, m_b, l_a, l_b);
    for (int c = 0; c < nch; c++) {
        cp_async_wait<2 * ST - 3>(); /* V_c and K_c+1 (pending: V_c+1 and the chunks after) */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            const uint64_t dv = wg_desc_mn(Vs(c) + (unsigned)kk * 2048u, 8192u);
            if constexpr (HD == 256) wg_mma_rs_n256_tb(acc, pa[kk], dv, 1);
            else wg_mma_rs_n72_tb(acc, pa[kk], dv, 1);
        }
        if (c + 1 < nch) fw_qk<KST>(s, Qs, Ks(c + 1));
        wg_commit();
        wg_wait0();
        __syncthreads(); /* K_c and V_c are read: refill their stage */
        load_kv(c + ST);
        if (c + 1 < nch) fw_softmax<NO>(s, pa, acc, S - (c + 1) * FW_KC, lane, sl2, m_a, m_b, l_a, l_b);
    }
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float ia = 1.f / l_a, ib = 1.f / l_b;
    const int ra = r0 + warp * 16 + (lane >> 2), rb = ra + 8, cb = 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < HD / 8; j++) {
        if (ra < p.R)
            *reinterpret_cast<uint32_t *>(o + (long long)ra * p.ldo + 8 * j + cb) = pack_bf16x2(acc[4 * j] * ia, acc[4 * j + 1] * ia);
        if (rb < p.R)
            *reinterpret_cast<uint32_t *>(o + (long long)rb * p.ldo + 8 * j + cb) =
                pack_bf16x2(acc[4 * j + 2] * ib, acc[4 * j + 3] * ib);
    }
}

template <int HD, int ST> static cudaError_t fw_launch(cudaStream_t st, const FwParams &p, int nbh) {
    constexpr int smem = 1024 + (1 + 2 * ST) * FwDim<HD>::TILE; /* Q + ST x (K, V), 1024-byte alignment slack */
    cudaError_t e = cudaFuncSetAttribute(k_flash_wg<HD, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((p.R + FW_ROWS - 1) / FW_ROWS), (unsigned)nbh);
    k_flash_wg<HD, ST><<<grid, 128, smem, st>>>(p);
    return cudaGetLastError();
}

/* cudaErrorInvalidValue unless hd is 256 or 72 and every pointer / offset allows 16-byte loads (caller falls back) */
extern "C" cudaError_t cuk_flash_attn_wg(cudaStream_t st, const cuk_flash_args *a) {
    if (!a || (a->hd != 256 && a->hd != 72) || a->R <= 0 || a->S <= 0 || a->nb <= 0 || a->nh <= 0 || (long long)a->nb * a->nh > 65535)
        return cudaErrorInvalidValue;
    const long long strides[12] = {a->ldq, a->ldk, a->ldv, a->ldo, a->q_bs, a->k_bs, a->v_bs, a->o_bs,
                                   a->q_hs, a->k_hs, a->v_hs, a->o_hs};
    for (int i = 0; i < 12; i++)
        if (strides[i] % 8) return cudaErrorInvalidValue;
    const void *ptrs[4] = {a->q, a->k, a->v, a->o};
    for (int i = 0; i < 4; i++)
        if (!ptrs[i] || ((uintptr_t)ptrs[i] & 15)) return cudaErrorInvalidValue;
    FwParams p;
    p.q = (const bf16 *)a->q; p.k = (const bf16 *)a->k; p.v = (const bf16 *)a->v; p.o = (bf16 *)a->o;
    p.ldq = a->ldq; p.ldk = a->ldk; p.ldv = a->ldv; p.ldo = a->ldo;
    p.qbs = a->q_bs; p.kbs = a->k_bs; p.vbs = a->v_bs; p.obs = a->o_bs;
    p.qhs = a->q_hs; p.khs = a->k_hs; p.vhs = a->v_hs; p.ohs = a->o_hs;
    p.nh = a->nh; p.R = a->R; p.S = a->S;
    p.sl2 = a->scale * 1.4426950408889634f;
    const int nbh = a->nb * a->nh;
    /* SigLIP (hd 72): 2-stage ring, 81 KB, two CTAs per SM (its 192 row tiles of 3 cameras x 16 heads) */
    return a->hd == 256 ? fw_launch<256, 3>(st, p, nbh) : fw_launch<72, 2>(st, p, nbh);
}
