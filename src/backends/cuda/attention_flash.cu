/*
 * Fused flash attention (FlashAttention-2 style) for the SigLIP ViT and the Gemma prefill
 * (launchers and CPU twin declared in kernels.h).
 *
 * Design. One kernel, templated on the padded head dim HDP (a multiple of 16 >= hd), the row warps RW,
 * the key groups NG, optimisation bits OPT and the K/V ring depth ST. A CTA owns ROWS = 16*RW query
 * rows of one (batch, head) and has RW*NG warps: warp w takes rows 16*(w % RW).. and, of each 64-key
 * chunk, the 64/NG keys of group g = w / RW (more warps per SM than the rows alone give: the prefill has
 * only 8*P/16 = 394 row tiles for 528 SM sub-partitions). The Q tile is staged once by cp.async; K/V
 * stream through an ST-stage cp.async ring of 64-key chunks with one barrier per chunk. Rows are padded
 * to HDP with zeros in shared memory (pitch HDP+8: ldmatrix is conflict-free), so hd = 72 runs as 80 and
 * hd = 12 as 16. Per warp and chunk: S = Q K^T by mma.sync m16n8k16 (bf16 in, f32 accumulate; A = Q by
 * ldmatrix, kept in registers when HDP <= 128; B = K rows by ldmatrix; fragments of the next k-step
 * loaded before the current mma), keys >= S masked to -inf, online softmax in f32 in the exp2 domain
 * (row max over the quad by shuffles; FA_LZ: the O rescale only when a row max grew by > 2^8), then the
 * S accumulator fragment is re-packed in registers (bf16) as the A operand of O += P V (B = V by
 * ldmatrix.trans): P never touches shared memory. At the end the NG key groups' (m, l, O) are merged
 * through shared memory in a fixed tree order (deterministic), O / l is staged in shared memory and
 * written with 16-byte stores. Everything is strided: the ViT reads Q/K/V straight out of the fused
 * QKV GEMM output (batch = camera, head = column block), the Gemma prefill treats its nh query heads x P
 * tokens as nh*P rows over the one shared K/V head (MQA). No mask. Rows whose 16-byte alignment or
 * hd % 8 do not allow cp.async are loaded element-wise (same kernel); hd > 256 or grid limits give
 * cudaErrorInvalidValue (the caller falls back).
 *
 * Measured on the H100 (dev/cuda/attention_flash.cu, bench/results/2026-11-24-h100-flash-attn-playground.txt,
 * CUDA-graph replay, L2-warm): ViT 3 cameras x 16 heads x 256 tokens, hd 72: 10.9 us (cuBLASLt QK^T +
 * softmax + PV on 3 forked streams: 21.7 us); prefill P = 788 (6304 rows x 788 keys, hd 256): 38.5 us
 * (old path 50.6 us), P = 531: 28.6 us (55.7 us). What limits it (ncu): latency with 3 warps per
 * scheduler (the 16 x 256 f32 O tile is 128 registers per thread) and shared-memory traffic (every warp
 * re-reads the K/V chunk through ldmatrix); the next step is wgmma (a warpgroup shares the K/V reads).
 */
#include "backends/cuda/cuda_common.cuh"

#define FA_KC 64 /* keys per chunk */

static __device__ __forceinline__ void fa_ldsm_x4_t(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                                    const void *smem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(sa));
}
static __device__ __forceinline__ void fa_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    mma_bf16_16816(c, a[0], a[1], a[2], a[3], b0, b1);
}

struct FaParams {
    const bf16 *q, *k, *v;
    bf16 *o;
    long long ldq, ldk, ldv, ldo;
    long long qbs, kbs, vbs, obs, qhs, khs, vhs, ohs;
    int nh, R, S, hd;
    float sl2; /* scale * log2(e) */
    int vec;   /* 16-byte cp.async loads and stores allowed */
};

template <int HDP, int RW, int NG, int ST> struct FaCfg { /* ST: K/V ring stages (2 or 3) */
    static constexpr int NT = 32 * RW * NG;
    static constexpr int ROWS = 16 * RW;
    static constexpr int LD = HDP + 8;
    static constexpr int NO = HDP / 8;
    static constexpr size_t main_bytes = (size_t)(ROWS + 2 * ST * FA_KC) * LD * 2;
    static constexpr size_t slot_floats = (size_t)NO * 128 + 128;
    static constexpr size_t merge_bytes = (size_t)ROWS * LD * 2 + (NG > 1 ? (size_t)(NG / 2) * RW * slot_floats * 4 : 0);
    static constexpr size_t smem = main_bytes > merge_bytes ? main_bytes : merge_bytes;
    static constexpr int MINB = HDP > 80 ? 1 : 512 / NT; /* <= 128 registers when HDP <= 80 */
};

/* rows [0, nrows) of a tile (pitch LD) from global rows (pitch ld); rows >= nvalid and columns >= hd
 * are zero. vec: 16-byte cp.async (hd % 8 == 0, 16-byte aligned rows), else element loads. */
template <int HDP, int NT>
static __device__ __forceinline__ void fa_load(bf16 *dst, const bf16 *src, long long ld, int nvalid, int nrows,
                                               int hd, int vec, int tid) {
    constexpr int C8 = HDP / 8, LD = HDP + 8;
    for (int i = tid; i < nrows * C8; i += NT) {
        const int r = i / C8, c = (i - r * C8) * 8;
        bf16 *d = dst + r * LD + c;
        if (r < nvalid && c < hd) {
            const bf16 *s = src + (long long)r * ld + c;
            if (vec) {
                cp_async16(d, s);
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) d[e] = c + e < hd ? s[e] : __float2bfloat16(0.f);
            }
        } else {
            *(uint4 *)d = make_uint4(0, 0, 0, 0);
        }
    }
}

/* OPT bits: FA_PF = fragments of the next k-step / V tile loaded before the current mma (software
 * pipelining; asm volatile keeps the written order), FA_RS = skip the O rescale when no row max of the
 * warp moved (warp vote), FA_DC = Q K^T accumulated in two independent chains (even / odd k-steps,
 * summed at the end: half the dependent-mma chain; with FA_PF only). */
enum { FA_PF = 1, FA_RS = 2, FA_DC = 4, FA_FL = 8, FA_LZ = 16 };
/* FA_FL: full K/V chunks of 16-byte-aligned rows through a lean cp.async loop (no per-element bounds,
 * pad columns zeroed once); FA_LZ: lazy rescale, the running max moves only when a row's new max
 * exceeds it by more than FA_TAU (log2 units): P <= 2^FA_TAU before the final O / l, no overflow in f32. */
#define FA_TAU 8.f
/* full chunk (NROWS rows), vec layout: one cp.async per 16 bytes of the hd columns; the pad columns
 * [hd, HDP) of the destination are zeroed once by the caller */
template <int HDP, int NT, int NROWS>
static __device__ __forceinline__ void fa_load_full(bf16 *dst, const bf16 *src, int ld, int hd, int tid) {
    constexpr int C8 = HDP / 8, LD = HDP + 8, TOT = NROWS * C8, IT = (TOT + NT - 1) / NT;
#pragma unroll
    for (int j = 0; j < IT; j++) {
        const int i = tid + j * NT;
        if (TOT % NT == 0 || i < TOT) {
            const int r = i / C8, c = (i - r * C8) * 8;
            if (c < hd) cp_async16(dst + r * LD + c, src + (long long)r * ld + c);
        }
    }
}

template <int HDP, int RW, int NG, int OPT, int ST>
__global__ void __launch_bounds__(FaCfg<HDP, RW, NG, ST>::NT, FaCfg<HDP, RW, NG, ST>::MINB) k_flash(const FaParams p) {
    typedef FaCfg<HDP, RW, NG, ST> C;
    constexpr int NT = C::NT, ROWS = C::ROWS, LD = C::LD, NO = C::NO;
    constexpr int KG = FA_KC / NG; /* keys per warp per chunk */
    constexpr int NS = KG / 8;     /* S n-tiles per warp */
    constexpr int KQ = HDP / 16;   /* k-steps of Q K^T */
    constexpr bool QREG = HDP <= 128;
    static_assert(HDP % 16 == 0 && KG % 16 == 0, "shape");
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem;
    bf16 *KVs = Qs + ROWS * LD; /* stage s: K at KVs + 2*s*KC*LD, V right after */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int rw = warp % RW, g = warp / RW;
    const int gid = lane >> 2, tq = lane & 3;
    const int bh = blockIdx.y, b = bh / p.nh, h = bh - b * p.nh;
    const int r0 = blockIdx.x * ROWS, R = p.R, S = p.S, hd = p.hd;
    const bf16 *q = p.q + b * p.qbs + h * p.qhs;
    const bf16 *k = p.k + b * p.kbs + h * p.khs;
    const bf16 *v = p.v + b * p.vbs + h * p.vhs;
    const int nch = (S + FA_KC - 1) / FA_KC;

    /* ring of ST stages, one barrier per chunk: chunk c + ST - 1 is issued right after the barrier that
     * follows chunk c's arrival (every warp is then done with chunk c - 1, whose stage it refills) */
    const bool fl = (OPT & FA_FL) && p.vec;
    if (fl && hd < HDP) { /* pad columns of every ring stage, once (the lean loads skip them) */
        constexpr int C8 = HDP / 8;
        for (int i = tid; i < 2 * ST * FA_KC * C8; i += NT) {
            const int r = i / C8, c = (i - r * C8) * 8;
            if (c >= hd) *(uint4 *)(KVs + r * LD + c) = make_uint4(0, 0, 0, 0);
        }
    }
    /* chunk cn into ring stage cn % ST */
    auto load_chunk = [&](int cn) {
        const int n0 = cn * FA_KC;
        bf16 *Kn = KVs + (cn % ST) * 2 * FA_KC * LD;
        if (fl && n0 + FA_KC <= S) {
            fa_load_full<HDP, NT, FA_KC>(Kn, k + (long long)n0 * p.ldk, (int)p.ldk, hd, tid);
            fa_load_full<HDP, NT, FA_KC>(Kn + FA_KC * LD, v + (long long)n0 * p.ldv, (int)p.ldv, hd, tid);
        } else {
            fa_load<HDP, NT>(Kn, k + (long long)n0 * p.ldk, p.ldk, S - n0, FA_KC, hd, p.vec, tid);
            fa_load<HDP, NT>(Kn + FA_KC * LD, v + (long long)n0 * p.ldv, p.ldv, S - n0, FA_KC, hd, p.vec, tid);
        }
    };
    if (fl && hd < HDP) __syncthreads(); /* pad zeros before any cp.async of the same rows (ordering only) */
    fa_load<HDP, NT>(Qs, q + (long long)r0 * p.ldq, p.ldq, R - r0, ROWS, hd, p.vec, tid);
#pragma unroll
    for (int c = 0; c < ST - 1; c++) {
        if (c < nch) load_chunk(c);
        cp_async_commit();
    }

    float o[NO][4];
#pragma unroll
    for (int i = 0; i < NO; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    uint32_t qf[QREG ? KQ : 1][4];
    const float sl2 = p.sl2;
    /* ldmatrix lane addressing */
    const int a_row = rw * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), a_col = (lane >> 4) * 8; /* Q (A) */
    const int b_key = (lane >> 4) * 8 + (lane & 7), b_col = ((lane >> 3) & 1) * 8;          /* K (B) */
    const int v_key = ((lane >> 3) & 1) * 8 + (lane & 7), v_col = (lane >> 4) * 8;          /* V (B, trans) */

    for (int c = 0; c < nch; c++) {
        cp_async_wait<ST - 2>(); /* chunk c (and the Q tile) landed for this thread */
        __syncthreads();          /* ... for all threads; all warps are past chunk c - 1 */
        {
            const int cn = c + ST - 1;
            if (cn < nch) load_chunk(cn);
            cp_async_commit(); /* possibly empty: keeps the group count uniform */
        }
        if (QREG && c == 0) {
#pragma unroll
            for (int kk = 0; kk < (QREG ? KQ : 0); kk++)
                ldmatrix_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], Qs + a_row * LD + kk * 16 + a_col);
        }
        const bf16 *Kc = KVs + (c % ST) * 2 * FA_KC * LD + g * KG * LD;
        const bf16 *Vc = Kc + FA_KC * LD;
        /* S = Q K^T over this warp's KG keys */
        constexpr bool DC = (OPT & FA_DC) && (OPT & FA_PF);
        float s[NS][4], s2[DC ? NS : 1][4];
#pragma unroll
        for (int i = 0; i < NS; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
        for (int i = 0; i < (DC ? NS : 1); i++) s2[i][0] = s2[i][1] = s2[i][2] = s2[i][3] = 0.f;
        if (OPT & FA_PF) {
            uint32_t qa[2][4], kb[2][NS / 2][4];
#pragma unroll
            for (int kk = 0; kk <= KQ; kk++) {
                if (kk < KQ) { /* fragments of k-step kk, then the mma of k-step kk - 1 */
                    const int u = kk & 1;
                    if (!QREG) ldmatrix_x4(qa[u][0], qa[u][1], qa[u][2], qa[u][3], Qs + a_row * LD + kk * 16 + a_col);
#pragma unroll
                    for (int j = 0; j < NS / 2; j++)
                        ldmatrix_x4(kb[u][j][0], kb[u][j][1], kb[u][j][2], kb[u][j][3],
                                    Kc + (j * 16 + b_key) * LD + kk * 16 + b_col);
                }
                if (kk > 0) {
                    const int u = (kk - 1) & 1;
                    const uint32_t *a = QREG ? qf[QREG ? kk - 1 : 0] : qa[u];
#pragma unroll
                    for (int j = 0; j < NS / 2; j++) {
                        if (DC && (kk & 1) == 0) { /* k-step kk - 1 odd */
                            fa_mma(s2[DC ? 2 * j : 0], a, kb[u][j][0], kb[u][j][1]);
                            fa_mma(s2[DC ? 2 * j + 1 : 0], a, kb[u][j][2], kb[u][j][3]);
                        } else {
                            fa_mma(s[2 * j], a, kb[u][j][0], kb[u][j][1]);
                            fa_mma(s[2 * j + 1], a, kb[u][j][2], kb[u][j][3]);
                        }
                    }
                }
            }
            if (DC) {
#pragma unroll
                for (int i = 0; i < NS; i++) {
                    s[i][0] += s2[DC ? i : 0][0]; s[i][1] += s2[DC ? i : 0][1];
                    s[i][2] += s2[DC ? i : 0][2]; s[i][3] += s2[DC ? i : 0][3];
                }
            }
        } else {
#pragma unroll
            for (int kk = 0; kk < KQ; kk++) {
                uint32_t a[4];
                if (QREG) {
                    a[0] = qf[QREG ? kk : 0][0]; a[1] = qf[QREG ? kk : 0][1];
                    a[2] = qf[QREG ? kk : 0][2]; a[3] = qf[QREG ? kk : 0][3];
                } else {
                    ldmatrix_x4(a[0], a[1], a[2], a[3], Qs + a_row * LD + kk * 16 + a_col);
                }
#pragma unroll
                for (int j = 0; j < NS / 2; j++) {
                    uint32_t b0, b1, b2, b3;
                    ldmatrix_x4(b0, b1, b2, b3, Kc + (j * 16 + b_key) * LD + kk * 16 + b_col);
                    fa_mma(s[2 * j], a, b0, b1);
                    fa_mma(s[2 * j + 1], a, b2, b3);
                }
            }
        }
        /* mask keys >= S (zero-filled rows of the last chunk) */
        const int kbase = c * FA_KC + g * KG;
        if (kbase + KG > S) {
#pragma unroll
            for (int i = 0; i < NS; i++) {
                const int kx = kbase + i * 8 + tq * 2;
                if (kx >= S) s[i][0] = s[i][2] = -INFINITY;
                if (kx + 1 >= S) s[i][1] = s[i][3] = -INFINITY;
            }
        }
        /* online softmax (rows gid and gid + 8 of the warp's tile) */
        float x0 = -INFINITY, x1 = -INFINITY;
#pragma unroll
        for (int i = 0; i < NS; i++) {
            x0 = fmaxf(x0, fmaxf(s[i][0], s[i][1]));
            x1 = fmaxf(x1, fmaxf(s[i][2], s[i][3]));
        }
        x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
        x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
        x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
        x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
        float u0, u1, al0 = 1.f, al1 = 1.f;
        bool moved = true;
        if (OPT & FA_LZ) {
            const float xs0 = x0 * sl2, xs1 = x1 * sl2;
            moved = __any_sync(0xffffffffu, xs0 > m0 + FA_TAU || xs1 > m1 + FA_TAU);
            if (moved) {
                const float n0 = fmaxf(m0, xs0), n1 = fmaxf(m1, xs1);
                u0 = n0 == -INFINITY ? 0.f : n0;
                u1 = n1 == -INFINITY ? 0.f : n1;
                al0 = exp2f(m0 - u0);
                al1 = exp2f(m1 - u1);
                m0 = n0;
                m1 = n1;
            } else {
                u0 = m0 == -INFINITY ? 0.f : m0;
                u1 = m1 == -INFINITY ? 0.f : m1;
            }
        } else {
            const float n0 = fmaxf(m0, x0 * sl2), n1 = fmaxf(m1, x1 * sl2);
            u0 = n0 == -INFINITY ? 0.f : n0;
            u1 = n1 == -INFINITY ? 0.f : n1;
            al0 = exp2f(m0 - u0);
            al1 = exp2f(m1 - u1);
            m0 = n0;
            m1 = n1;
        }
        float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
        for (int i = 0; i < NS; i++) {
            s[i][0] = exp2f(fmaf(s[i][0], sl2, -u0));
            s[i][1] = exp2f(fmaf(s[i][1], sl2, -u0));
            s[i][2] = exp2f(fmaf(s[i][2], sl2, -u1));
            s[i][3] = exp2f(fmaf(s[i][3], sl2, -u1));
            ps0 += s[i][0] + s[i][1];
            ps1 += s[i][2] + s[i][3];
        }
        l0 = l0 * al0 + ps0;
        l1 = l1 * al1 + ps1;
        if ((OPT & FA_LZ) ? moved : (!(OPT & FA_RS) || __any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f))) {
#pragma unroll
            for (int i = 0; i < NO; i++) {
                o[i][0] *= al0; o[i][1] *= al0;
                o[i][2] *= al1; o[i][3] *= al1;
            }
        }
        /* O += P V: the S fragment re-packed as the A operand */
        uint32_t pa[KG / 16][4];
#pragma unroll
        for (int j = 0; j < KG / 16; j++) {
            pa[j][0] = pack_bf16x2(s[2 * j][0], s[2 * j][1]);
            pa[j][1] = pack_bf16x2(s[2 * j][2], s[2 * j][3]);
            pa[j][2] = pack_bf16x2(s[2 * j + 1][0], s[2 * j + 1][1]);
            pa[j][3] = pack_bf16x2(s[2 * j + 1][2], s[2 * j + 1][3]);
        }
        if (OPT & FA_PF) {
            constexpr int ND = NO / 2, NV = (KG / 16) * ND; /* (key step, 16-column V tile) pairs */
            uint32_t vb[2][4];
#pragma unroll
            for (int t = 0; t <= NV; t++) {
                if (t < NV) {
                    const int j = t / ND, d = t % ND;
                    fa_ldsm_x4_t(vb[t & 1][0], vb[t & 1][1], vb[t & 1][2], vb[t & 1][3],
                                 Vc + (j * 16 + v_key) * LD + d * 16 + v_col);
                }
                if (t > 0) {
                    const int j = (t - 1) / ND, d = (t - 1) % ND, u = (t - 1) & 1;
                    fa_mma(o[2 * d], pa[j], vb[u][0], vb[u][1]);
                    fa_mma(o[2 * d + 1], pa[j], vb[u][2], vb[u][3]);
                }
            }
        } else {
#pragma unroll
            for (int j = 0; j < KG / 16; j++) {
#pragma unroll
                for (int d = 0; d < NO / 2; d++) {
                    uint32_t b0, b1, b2, b3;
                    fa_ldsm_x4_t(b0, b1, b2, b3, Vc + (j * 16 + v_key) * LD + d * 16 + v_col);
                    fa_mma(o[2 * d], pa[j], b0, b1);
                    fa_mma(o[2 * d + 1], pa[j], b2, b3);
                }
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);

    /* merge the key groups: fixed tree (g += g + half), through shared memory after the Q tile */
    if (NG > 1) {
        __syncthreads(); /* the slots overlay the K/V ring */
        float *slots = (float *)(smem + (size_t)ROWS * LD * 2);
#pragma unroll
        for (int half = NG / 2; half >= 1; half /= 2) {
            if (g >= half && g < 2 * half) {
                float *sl = slots + (size_t)((g - half) * RW + rw) * C::slot_floats;
#pragma unroll
                for (int i = 0; i < NO; i++)
                    ((float4 *)sl)[i * 32 + lane] = make_float4(o[i][0], o[i][1], o[i][2], o[i][3]);
                ((float4 *)sl)[NO * 32 + lane] = make_float4(m0, m1, l0, l1);
            }
            __syncthreads();
            if (g < half) {
                const float *sl = slots + (size_t)(g * RW + rw) * C::slot_floats;
                const float4 ml = ((const float4 *)sl)[NO * 32 + lane];
                const float M0 = fmaxf(m0, ml.x), M1 = fmaxf(m1, ml.y);
                const float U0 = M0 == -INFINITY ? 0.f : M0, U1 = M1 == -INFINITY ? 0.f : M1;
                const float fa0 = exp2f(m0 - U0), fb0 = exp2f(ml.x - U0);
                const float fa1 = exp2f(m1 - U1), fb1 = exp2f(ml.y - U1);
                m0 = M0;
                m1 = M1;
                l0 = l0 * fa0 + ml.z * fb0;
                l1 = l1 * fa1 + ml.w * fb1;
#pragma unroll
                for (int i = 0; i < NO; i++) {
                    const float4 t = ((const float4 *)sl)[i * 32 + lane];
                    o[i][0] = o[i][0] * fa0 + t.x * fb0;
                    o[i][1] = o[i][1] * fa0 + t.y * fb0;
                    o[i][2] = o[i][2] * fa1 + t.z * fb1;
                    o[i][3] = o[i][3] * fa1 + t.w * fb1;
                }
            }
            __syncthreads();
        }
    }
    if (g != 0) return;
    /* O / l -> bf16 */
    const float i0 = 1.f / l0, i1 = 1.f / l1;
    bf16 *out = p.o + b * p.obs + h * p.ohs;
    const int ra = r0 + rw * 16 + gid, rb = ra + 8;
    if (p.vec) {
        /* stage the warp's 16 rows in its part of the (now free) Q tile, then 16-byte stores */
        bf16 *Ow = Qs + rw * 16 * LD;
#pragma unroll
        for (int i = 0; i < NO; i++) {
            const int col = i * 8 + tq * 2;
            *(uint32_t *)(Ow + gid * LD + col) = pack_bf16x2(o[i][0] * i0, o[i][1] * i0);
            *(uint32_t *)(Ow + (gid + 8) * LD + col) = pack_bf16x2(o[i][2] * i1, o[i][3] * i1);
        }
        __syncwarp();
        const int c8 = hd >> 3;
        for (int idx = lane; idx < 16 * c8; idx += 32) {
            const int r = idx / c8, cc = (idx - r * c8) * 8;
            const int row = r0 + rw * 16 + r;
            if (row < R) *(uint4 *)(out + (long long)row * p.ldo + cc) = *(const uint4 *)(Ow + r * LD + cc);
        }
    } else {
#pragma unroll
        for (int i = 0; i < NO; i++) {
            const int col = i * 8 + tq * 2;
            if (col < hd) {
                if (ra < R) out[(long long)ra * p.ldo + col] = __float2bfloat16_rn(o[i][0] * i0);
                if (rb < R) out[(long long)rb * p.ldo + col] = __float2bfloat16_rn(o[i][2] * i1);
            }
            if (col + 1 < hd) {
                if (ra < R) out[(long long)ra * p.ldo + col + 1] = __float2bfloat16_rn(o[i][1] * i0);
                if (rb < R) out[(long long)rb * p.ldo + col + 1] = __float2bfloat16_rn(o[i][3] * i1);
            }
        }
    }
}

static constexpr int fa_opt(int o) {
    return o == 0 ? FA_PF | FA_RS : o == 1 ? 0 : o == 2 ? FA_PF : o == 3 ? FA_RS : o == 4 ? FA_PF | FA_DC
         : o == 5 ? FA_PF | FA_RS | FA_DC : o == 6 ? FA_PF | FA_FL : o == 7 ? FA_PF | FA_FL | FA_LZ
         : FA_PF | FA_FL | FA_LZ | FA_DC;
}

template <int HDP, int RW, int NG, int OPT = FA_PF | FA_RS, int ST = 2>
static cudaError_t fa_launch(cudaStream_t st, const FaParams &p, int nbh) {
    typedef FaCfg<HDP, RW, NG, ST> C;
    static int attr_set = 0; /* per process (one device per process in this backend) */
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(k_flash<HDP, RW, NG, OPT, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)C::smem);
        if (e != cudaSuccess) return e;
        attr_set = 1;
    }
    dim3 grid((unsigned)((p.R + C::ROWS - 1) / C::ROWS), (unsigned)nbh);
    k_flash<HDP, RW, NG, OPT, ST><<<grid, C::NT, C::smem, st>>>(p);
    LAUNCH_RET();
}

static int fa_num_sms(void) {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
            n = 132;
    }
    return n;
}

static int fa_aligned(const void *ptr) { return ((uintptr_t)ptr & 15) == 0; }

extern "C" cudaError_t cuk_flash_attn(cudaStream_t st, const cuk_flash_args *a) {
    if (!a || a->R < 0 || a->S < 0 || a->nb < 0 || a->nh <= 0 || a->hd <= 0) return cudaErrorInvalidValue;
    if (a->R == 0 || a->S == 0 || a->nb == 0) return cudaSuccess;
    if (a->variant == CUK_FLASH_WG) return cuk_flash_attn_wg(st, a);
    if (a->hd > 256 || (long long)a->nb * a->nh > 65535 || !a->q || !a->k || !a->v || !a->o)
        return cudaErrorInvalidValue;
    FaParams p;
    p.q = (const bf16 *)a->q; p.k = (const bf16 *)a->k; p.v = (const bf16 *)a->v; p.o = (bf16 *)a->o;
    p.ldq = a->ldq; p.ldk = a->ldk; p.ldv = a->ldv; p.ldo = a->ldo;
    p.qbs = a->q_bs; p.kbs = a->k_bs; p.vbs = a->v_bs; p.obs = a->o_bs;
    p.qhs = a->q_hs; p.khs = a->k_hs; p.vhs = a->v_hs; p.ohs = a->o_hs;
    p.nh = a->nh; p.R = a->R; p.S = a->S; p.hd = a->hd;
    p.sl2 = a->scale * 1.4426950408889634f;
    const long long strides[12] = {p.ldq, p.ldk, p.ldv, p.ldo, p.qbs, p.kbs, p.vbs, p.obs, p.qhs, p.khs, p.vhs, p.ohs};
    int vec = a->hd % 8 == 0 && fa_aligned(a->q) && fa_aligned(a->k) && fa_aligned(a->v) && fa_aligned(a->o);
    for (int i = 0; i < 12; i++) vec = vec && strides[i] % 8 == 0;
    p.vec = vec;
    const int nbh = a->nb * a->nh, hd = a->hd, var = a->variant;
    /* variant = 1000*ST' + 100*o + 10*RW + NG (ST' = 3: 3-stage K/V ring, 0: 2 stages); o: 0 FA_PF|FA_RS,
     * 1 none, 2 FA_PF, 3 FA_RS, 4 FA_PF|FA_DC, 5 FA_PF|FA_RS|FA_DC, 6 FA_PF|FA_FL, 7 FA_PF|FA_FL|FA_LZ,
     * 8 FA_PF|FA_FL|FA_LZ|FA_DC */
#define FA_CASE(hdp, st3, o, rw, ng)                                                                         \
    case (st3 ? 3000 : 0) + o * 100 + rw * 10 + ng:                                                          \
        return fa_launch<hdp, rw, ng, fa_opt(o), st3 ? 3 : 2>(st, p, nbh);
    if (hd > 128) {
        if (var == 0) {
            /* measured (dev/cuda/attention_flash.cu, bench/results/2026-11-24-h100-flash-attn-playground.txt):
             * 48-row CTAs of 12 warps (4 key groups, 3-stage ring, lean loads, lazy rescale: 3734) 38.5 us at
             * P = 788 vs 46.6 us for 64-row CTAs of 8 warps (742); both 1 CTA per SM, so the 64-row shape only
             * when the 48-row one needs more waves (e.g. P = 816: 136 CTAs of 48 rows on 132 SMs) */
            const long long sms = fa_num_sms();
            const long long w3 = ((a->R + 47) / 48 * nbh + sms - 1) / sms, w4 = ((a->R + 63) / 64 * nbh + sms - 1) / sms;
            if (w3 * 100 <= w4 * 121) return fa_launch<256, 3, 4, FA_PF | FA_FL | FA_LZ, 3>(st, p, nbh);
            return fa_launch<256, 4, 2, FA_PF | FA_FL | FA_LZ, 2>(st, p, nbh);
        }
        switch (var) {
            FA_CASE(256, 0, 0, 4, 2) FA_CASE(256, 0, 0, 4, 1) FA_CASE(256, 0, 0, 2, 4) FA_CASE(256, 1, 2, 3, 4)
            FA_CASE(256, 1, 6, 3, 4) FA_CASE(256, 1, 7, 3, 4) FA_CASE(256, 1, 8, 3, 4) FA_CASE(256, 0, 7, 3, 4)
            FA_CASE(256, 1, 7, 3, 2) FA_CASE(256, 0, 7, 4, 2) FA_CASE(256, 0, 7, 3, 2) FA_CASE(256, 0, 7, 4, 1)
        default: return cudaErrorInvalidValue;
        }
    }
    if (hd > 80) return var == 0 || var == 42 ? fa_launch<128, 4, 2>(st, p, nbh) : cudaErrorInvalidValue;
    if (hd > 64) {
        /* ViT (hd 72): 64-row CTAs of 8 warps, 2 key groups, prefetch only (242): 10.9 us for 3 cameras
         * (the lean loads / lazy rescale measured 11.2-11.3 us there) */
        if (var == 0) return fa_launch<80, 4, 2, FA_PF, 2>(st, p, nbh);
        switch (var) {
            FA_CASE(80, 0, 0, 4, 2) FA_CASE(80, 0, 0, 4, 1) FA_CASE(80, 0, 0, 4, 4) FA_CASE(80, 0, 2, 4, 2)
            FA_CASE(80, 0, 6, 4, 2) FA_CASE(80, 0, 7, 4, 2) FA_CASE(80, 1, 7, 4, 2) FA_CASE(80, 0, 7, 4, 1)
            FA_CASE(80, 0, 7, 2, 2) FA_CASE(80, 0, 8, 4, 2)
        default: return cudaErrorInvalidValue;
        }
    }
#undef FA_CASE
    if (var != 0 && var != 42) return cudaErrorInvalidValue;
    if (hd > 32) return fa_launch<64, 4, 2>(st, p, nbh);
    if (hd > 16) return fa_launch<32, 4, 2>(st, p, nbh);
    return fa_launch<16, 4, 2>(st, p, nbh);
}

/* the launchers' variant: CUK_FLASH_WG falls back to the mma.sync default for shapes it does not take */
static cudaError_t fa_run(cudaStream_t st, cuk_flash_args *a, int variant) {
    a->variant = variant;
    cudaError_t e = cuk_flash_attn(st, a);
    if (e == cudaErrorInvalidValue && variant == CUK_FLASH_WG) {
        a->variant = 0;
        e = cuk_flash_attn(st, a);
    }
    return e;
}

extern "C" cudaError_t cuk_flash_attn_vit(cudaStream_t st, const uint16_t *qkv, int ncam, int np, int nh, int hd,
                                          float scale, uint16_t *out, int variant) {
    const long long W = (long long)nh * hd;
    cuk_flash_args a;
    memset(&a, 0, sizeof a);
    a.q = qkv; a.k = qkv + W; a.v = qkv + 2 * W; a.o = out;
    a.ldq = a.ldk = a.ldv = 3 * W; a.ldo = W;
    a.q_bs = a.k_bs = a.v_bs = (long long)np * 3 * W; a.o_bs = (long long)np * W;
    a.q_hs = a.k_hs = a.v_hs = a.o_hs = hd;
    a.nb = ncam; a.nh = nh; a.R = np; a.S = np; a.hd = hd; a.scale = scale;
    return fa_run(st, &a, variant);
}

extern "C" cudaError_t cuk_flash_attn_mqa(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k,
                                          const uint16_t *v, int S, int hd, float scale, uint16_t *out, int variant) {
    cuk_flash_args a;
    memset(&a, 0, sizeof a);
    a.q = q; a.k = k; a.v = v; a.o = out;
    a.ldq = a.ldk = a.ldv = a.ldo = hd;
    a.nb = 1; a.nh = 1; a.R = R; a.S = S; a.hd = hd; a.scale = scale;
    return fa_run(st, &a, variant);
}

/* CPU twin: gather each (batch, head) into contiguous rows, double-precision cuk_attention_ref, scatter */
extern "C" void cuk_flash_attn_ref(const cuk_flash_args *a) {
    const int R = a->R, S = a->S, hd = a->hd;
    if (R <= 0 || S <= 0) return;
    uint16_t *q = (uint16_t *)malloc((size_t)R * hd * 2), *o = (uint16_t *)malloc((size_t)R * hd * 2);
    uint16_t *k = (uint16_t *)malloc((size_t)S * hd * 2), *v = (uint16_t *)malloc((size_t)S * hd * 2);
    for (int b = 0; b < a->nb; b++)
        for (int h = 0; h < a->nh; h++) {
            const uint16_t *qs = a->q + b * a->q_bs + h * a->q_hs, *ks = a->k + b * a->k_bs + h * a->k_hs;
            const uint16_t *vs = a->v + b * a->v_bs + h * a->v_hs;
            uint16_t *os = a->o + b * a->o_bs + h * a->o_hs;
            for (int r = 0; r < R; r++) memcpy(q + (size_t)r * hd, qs + r * a->ldq, (size_t)hd * 2);
            for (int j = 0; j < S; j++) {
                memcpy(k + (size_t)j * hd, ks + j * a->ldk, (size_t)hd * 2);
                memcpy(v + (size_t)j * hd, vs + j * a->ldv, (size_t)hd * 2);
            }
            cuk_attention_ref(q, R, k, v, S, hd, a->scale, o);
            for (int r = 0; r < R; r++) memcpy(os + r * a->ldo, o + (size_t)r * hd, (size_t)hd * 2);
        }
    free(q); free(o); free(k); free(v);
}
