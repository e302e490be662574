/*
 * Weight-streaming GEMM for few tokens (T <= 64): Y(T, N) = X(T, K) W(N, K)^T — the action
 * expert's linears at batch 1, where the weights are streamed from DRAM once and X is tiny.
 *
 *  - CTA = NW warps x 16 output features (BN = 16 NW) x all T tokens (padded to 16s) x one K
 *    slice. The CS K-slices of one feature block form a thread-block cluster (split-K = cluster).
 *  - The CTA's X slice is staged once in shared memory (cp.async, 16-byte chunks XOR-swizzled so
 *    ldmatrix is conflict-free). Each warp streams its own 16 weight rows through a private
 *    ST-stage cp.async ring of 16 x 64 tiles: no CTA barrier in the main loop. mma.sync
 *    m16n8k16 with the features as M and the tokens as N (X rows are the "col" B operand).
 *  - Split-K partials meet in shared memory: after a cluster barrier each CTA reduces its share of
 *    the tile over the cluster's ranks in rank order (DSMEM reads: deterministic, no global round
 *    trip, one launch) and applies the epilogue (bf16 store, f32 residual add, GeGLU of a gate/up
 *    row pair, RoPE of a q/k row pair with the K/V cache scatter).
 *
 * Paired epilogues (GeGLU, RoPE) need both rows of a pair in one CTA: the CTA's first BN/2 rows
 * are W rows [base, base + BN/2), its last BN/2 rows the partners [base + off, ...), so the
 * weights keep their checkpoint layout.
 */
#include <cooperative_groups.h>

#include "backends/cuda/cuda_common.cuh"

namespace cg = cooperative_groups;

#define SK_KT 64 /* k per weight stage */
#define SK_SMEM_MAX (220 * 1024)

struct sk_epi {
    int mode;
    void *out;
    int ldo;
    int N, K;
    int half_off; /* paired modes: row offset of the partner rows (GeGLU: N/2, RoPE: hd/2) */
    /* RoPE */
    const float *cs, *sn;
    int pos0, nh, hd;
    uint16_t *qr, *kc, *vc;
};

/* W row of the CTA's local row r (BN rows), and whether it exists */
static __device__ __forceinline__ int sk_row(const sk_epi &e, int bx, int BN, int r, bool *valid) {
    if (e.mode == CUK_SK_BF16 || e.mode == CUK_SK_RESID) {
        int row = bx * BN + r;
        *valid = row < e.N;
        return row;
    }
    const int half = BN / 2, j = r < half ? r : r - half, off = r < half ? 0 : e.half_off;
    if (e.mode == CUK_SK_GEGLU) {
        int base = bx * half;
        *valid = base + j < e.half_off;
        return base + j + off;
    }
    /* RoPE: blocks per head = (hd/2) / half */
    const int bph = (e.hd / 2) / half, head = bx / bph, d0 = (bx - head * bph) * half;
    *valid = true;
    return head * e.hd + d0 + j + off;
}

static __device__ __forceinline__ void cp_async16_zfill_s(unsigned sa, const void *gmem, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(n));
}
static __device__ __forceinline__ void ldsm_x4(uint32_t *r, unsigned sa) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}

/*
 * NW warps of MT x 16 weight rows, NP 16-token groups, CS CTAs per cluster (split-K), SK_ST weight
 * stages per warp. Every shared-memory address of the main loop is a per-lane constant plus a
 * uniform offset (computed once): the loop is ldmatrix + mma + cp.async only.
 */
template <int NW, int MT, int NP, int CS, int SK_ST>
__global__ void __launch_bounds__(NW * 32) k_skinny2(const uint16_t *__restrict__ X, int ldx, int T,
                                                      const uint16_t *__restrict__ W, int KS, sk_epi e) {
    extern __shared__ __align__(128) unsigned char sk_smem[];
    constexpr int RW = 16 * MT, BN = NW * RW, NTHR = NW * 32, TR = NP * 16; /* padded token rows */
    constexpr int NCH = RW * 8 / 32;                                        /* 16-byte chunks per lane per stage */
    static_assert((SK_ST & (SK_ST - 1)) == 0, "stages: power of two");
    cg::cluster_group cl = cg::this_cluster();
    const int rank = (int)cl.block_rank();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, bx = blockIdx.x;
    const int KSp = (KS + SK_KT - 1) / SK_KT * SK_KT, nkt = KSp / SK_KT, k0 = rank * KS, K = e.K;
    bf16 *Xs = (bf16 *)sk_smem;       /* TR x KSp */
    bf16 *Ws = Xs + (size_t)TR * KSp; /* NW x ST x RW x 64 */
    const int xch = KSp / 8;          /* 16-byte chunks per X row */
    const unsigned xs_s = (unsigned)__cvta_generic_to_shared(Xs);
    const unsigned wq_s = (unsigned)__cvta_generic_to_shared(Ws + (size_t)warp * SK_ST * RW * SK_KT);

    /* this warp's RW weight rows: NCH chunks per lane per stage */
    const uint16_t *wsrc[NCH];
    unsigned wdst[NCH];
    int wk[NCH];
    bool wok[NCH];
#pragma unroll
    for (int j = 0; j < NCH; j++) {
        int idx = lane + 32 * j, r = idx >> 3, c = idx & 7;
        bool v;
        int row = sk_row(e, bx, BN, warp * RW + r, &v);
        wok[j] = v;
        wsrc[j] = v ? W + (long long)row * K + k0 + c * 8 : W;
        wdst[j] = (unsigned)(r * SK_KT + ((c ^ r) & 7) * 8) * 2;
        wk[j] = c * 8;
    }
    auto load_stage = [&](int kt) {
        const unsigned base = wq_s + (unsigned)(kt & (SK_ST - 1)) * RW * SK_KT * 2;
        const bool full = (kt + 1) * SK_KT <= KS;
#pragma unroll
        for (int j = 0; j < NCH; j++) {
            bool ok = wok[j] && (full || kt * SK_KT + wk[j] < KS);
            cp_async16_zfill_s(base + wdst[j], ok ? wsrc[j] + kt * SK_KT : W, ok);
        }
    };
    /* The weight stream (DRAM, constant) fills the whole ring first: under programmatic dependent launch
     * (CUK_PDL) this runs while the previous kernel still computes X. Then the successor may launch,
     * and X (L2-resident, written by the previous kernel) is loaded after the grid dependency. */
#pragma unroll
    for (int s = 0; s < SK_ST; s++) {
        if (s < nkt) load_stage(s);
        cp_async_commit();
    }
    pdl_trigger();
    pdl_wait();
    /* X slice: one row per warp, one 16-byte chunk per lane; rows >= T and columns >= KS zero-filled */
    for (int r = warp; r < TR; r += NW)
        for (int c = lane; c < xch; c += 32) {
            bool ok = r < T && c * 8 < KS;
            const uint16_t *src = ok ? X + (long long)r * ldx + k0 + c * 8 : X;
            cp_async16_zfill_s(xs_s + (unsigned)(r * KSp + ((c & ~7) | ((c ^ r) & 7)) * 8) * 2, src, ok);
        }
    cp_async_commit();

    float acc[MT][2 * NP][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < 2 * NP; i++) acc[m][i][0] = acc[m][i][1] = acc[m][i][2] = acc[m][i][3] = 0.f;
    /* per-lane ldmatrix offsets (bytes) for the 4 k16 steps of a stage */
    unsigned aoff[4], boff[4];
    {
        const int ar = (lane & 7) + ((lane >> 3) & 1) * 8, ac = lane >> 4;
        const int bm = lane >> 3, xr = (bm >> 1) * 8 + (lane & 7);
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            aoff[ks] = (unsigned)(ar * SK_KT + (((ks * 2 + ac) ^ ar) & 7) * 8) * 2;
            boff[ks] = (unsigned)(xr * KSp + (((ks * 2 + (bm & 1)) ^ xr) & 7) * 8) * 2;
        }
    }
    const unsigned prow = (unsigned)16 * KSp * 2; /* bytes between 16-token groups */
    for (int kt = 0; kt < nkt; kt++) {
        /* stage kt: in the first (ring + X) groups for kt < SK_ST, else committed SK_ST - 1 groups ago */
        if (kt == 0) {
            cp_async_wait<0>();
            __syncthreads(); /* the X slice was loaded by all threads */
        } else {
            cp_async_wait<SK_ST - 1>();
            __syncwarp();
        }
        const unsigned wt = wq_s + (unsigned)(kt & (SK_ST - 1)) * RW * SK_KT * 2, xt = xs_s + (unsigned)kt * SK_KT * 2;
#pragma unroll
        for (int ks = 0; ks < SK_KT / 16; ks++) {
            uint32_t a[MT][4];
#pragma unroll
            for (int m = 0; m < MT; m++) ldsm_x4(a[m], wt + m * 16 * SK_KT * 2 + aoff[ks]);
#pragma unroll
            for (int p = 0; p < NP; p++) {
                uint32_t b[4];
                ldsm_x4(b, xt + p * prow + boff[ks]);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    mma_bf16_16816(acc[m][2 * p], a[m][0], a[m][1], a[m][2], a[m][3], b[0], b[1]);
                    mma_bf16_16816(acc[m][2 * p + 1], a[m][0], a[m][1], a[m][2], a[m][3], b[2], b[3]);
                }
            }
        }
        __syncwarp(); /* every lane is done with ring slot kt: refill it with stage kt + SK_ST */
        if (kt + SK_ST < nkt) load_stage(kt + SK_ST);
        cp_async_commit();
    }
    cp_async_wait<0>();
    __syncthreads();

    /* partial tile (TR tokens x BN rows, f32) into this CTA's shared memory */
    constexpr int PB = BN + 4;
    float *Ps = (float *)sk_smem;
    {
        const int g = lane >> 2, tg = lane & 3;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const int r0 = warp * RW + m * 16 + g;
#pragma unroll
            for (int i = 0; i < 2 * NP; i++) {
                int t = i * 8 + tg * 2;
                Ps[t * PB + r0] = acc[m][i][0];
                Ps[(t + 1) * PB + r0] = acc[m][i][1];
                Ps[t * PB + r0 + 8] = acc[m][i][2];
                Ps[(t + 1) * PB + r0 + 8] = acc[m][i][3];
            }
        }
    }
    cl.sync();

    const bool paired = e.mode == CUK_SK_GEGLU || e.mode == CUK_SK_ROPE;
    const int BNe = paired ? BN / 2 : BN, E = T * BNe;
    /* all remote loads first (independent: one DSMEM latency), then the sums in rank order */
    constexpr int PER = (TR * BN + CS * NTHR - 1) / (CS * NTHR);
    float sv[PER][CS], uv[PER][CS];
    const float *Pr[CS];
#pragma unroll
    for (int q = 0; q < CS; q++) Pr[q] = cl.map_shared_rank(Ps, q);
#pragma unroll
    for (int it = 0; it < PER; it++) {
        int idx = rank * NTHR + tid + it * CS * NTHR;
        if (idx < E) {
            int t = idx / BNe, n = idx - t * BNe;
#pragma unroll
            for (int q = 0; q < CS; q++) {
                sv[it][q] = Pr[q][t * PB + n];
                uv[it][q] = paired ? Pr[q][t * PB + n + BN / 2] : 0.f;
            }
        }
    }
    cl.barrier_arrive(); /* this CTA is done reading remote partials; the epilogue overlaps the barrier */
#pragma unroll
    for (int it = 0; it < PER; it++) {
        int idx = rank * NTHR + tid + it * CS * NTHR;
        if (idx >= E) break;
        int t = idx / BNe, n = idx - t * BNe;
        float s = 0.f, u = 0.f;
#pragma unroll
        for (int q = 0; q < CS; q++) {
            s += sv[it][q];
            u += uv[it][q];
        }
        if (e.mode == CUK_SK_BF16) {
            int col = bx * BN + n;
            if (col < e.N) st_bf((uint16_t *)e.out, (long long)t * e.ldo + col, s);
        } else if (e.mode == CUK_SK_RESID) {
            int col = bx * BN + n;
            if (col < e.N) {
                float *o = (float *)e.out + (long long)t * e.ldo + col;
                *o = *o + s;
            }
        } else if (e.mode == CUK_SK_GEGLU) {
            int col = bx * BNe + n;
            if (col < e.half_off) {
                float gb = __bfloat162float(__float2bfloat16_rn(s)), ub = __bfloat162float(__float2bfloat16_rn(u));
                st_bf((uint16_t *)e.out, (long long)t * e.ldo + col, gelu_tanh(gb) * ub);
            }
        } else { /* RoPE: q heads -> qr, k head -> kc row pos, v head -> vc row pos */
            const int hh = e.hd / 2, bph = hh / BNe, head = bx / bph, i = (bx - head * bph) * BNe + n;
            const int pos = e.pos0 + t;
            float a = __bfloat162float(__float2bfloat16_rn(s)), b = __bfloat162float(__float2bfloat16_rn(u));
            uint16_t *dst;
            if (head <= e.nh) {
                float c = e.cs[(long long)pos * hh + i], sn = e.sn[(long long)pos * hh + i];
                float o0 = a * c - b * sn, o1 = b * c + a * sn;
                a = o0;
                b = o1;
                dst = head < e.nh ? e.qr + ((long long)t * e.nh + head) * e.hd : e.kc + (long long)pos * e.hd;
            } else {
                dst = e.vc + (long long)pos * e.hd;
            }
            st_bf(dst, i, a);
            st_bf(dst, i + hh, b);
        }
    }
    cl.barrier_wait(); /* keep this CTA's partials alive until every rank has read them */
}

/* ---------------- launcher ---------------- */

template <int NW, int MT, int NP, int CS, int ST>
static cudaError_t sk_launch(cudaStream_t st, int nblk, size_t smem, const uint16_t *X, int ldx, int T,
                             const uint16_t *W, int KS, const sk_epi &e, int pdl) {
    static int attr_set = 0;
    if (!attr_set) {
        cudaError_t r = cudaFuncSetAttribute(k_skinny2<NW, MT, NP, CS, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             SK_SMEM_MAX);
        if (r != cudaSuccess) return r;
        attr_set = 1;
    }
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = dim3((unsigned)nblk, (unsigned)CS, 1);
    cfg.blockDim = dim3(NW * 32, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 1;
    at[0].val.clusterDim.y = (unsigned)CS;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    pdl_attr(at, &cfg.numAttrs, pdl);
    return cudaLaunchKernelEx(&cfg, k_skinny2<NW, MT, NP, CS, ST>, X, ldx, T, W, KS, e);
}

/* ring depth: the whole K slice when it is at most 8 stages (one-feature-tile warps only), else 4 */
template <int NW, int MT, int NP, int CS>
static cudaError_t sk_launch_st(int nst, cudaStream_t st, int nblk, size_t smem, const uint16_t *X, int ldx, int T,
                                const uint16_t *W, int KS, const sk_epi &e, int pdl) {
    if constexpr (MT == 1)
        if (nst == 8) return sk_launch<NW, MT, NP, CS, 8>(st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    return sk_launch<NW, MT, NP, CS, 4>(st, nblk, smem, X, ldx, T, W, KS, e, pdl);
}

template <int NW, int MT, int NP>
static cudaError_t sk_launch_cs(int cs, int nst, cudaStream_t st, int nblk, size_t smem, const uint16_t *X, int ldx,
                                int T, const uint16_t *W, int KS, const sk_epi &e, int pdl) {
    switch (cs) {
    case 1: return sk_launch_st<NW, MT, NP, 1>(nst, st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    case 2: return sk_launch_st<NW, MT, NP, 2>(nst, st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    case 4: return sk_launch_st<NW, MT, NP, 4>(nst, st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    case 8: return sk_launch_st<NW, MT, NP, 8>(nst, st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    }
    return cudaErrorInvalidValue;
}
static int sk_stages(int KS, int mt) { return mt == 1 && (KS + SK_KT - 1) / SK_KT > 4 ? 8 : 4; }

extern "C" void cuk_skinny_pick(int T, int N, int K, int mode, int hd, int *nw, int *cs, int *mt) {
    *mt = 1;
    (void)T;
    int w = (mode == CUK_SK_GEGLU ? N / 2 : N) >= 4096 ? 8 : 4;
    if (mode == CUK_SK_ROPE && (hd / 2) % (w * 8)) w = 4;
    const int bn = 16 * w, nblk = (mode == CUK_SK_GEGLU ? (N / 2 + bn / 2 - 1) / (bn / 2) : (N + bn - 1) / bn);
    int c = 1;
    while (c < 8 && nblk * c < 128 && K / (2 * c) >= 128 && K % (2 * c * 16) == 0) c *= 2;
    while (c < 8 && K / c > 1024 && K % (2 * c * 16) == 0) c *= 2; /* the X slice must fit */
    *nw = w;
    *cs = c;
}

static cudaError_t sk_run(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, sk_epi &e, int nw,
                          int CS, int mt, int pdl) {
    const int N = e.N, K = e.K, mode = e.mode;
    if (T <= 0) return cudaSuccess;
    if (T > 64 || (nw != 4 && nw != 8) || (CS != 1 && CS != 2 && CS != 4 && CS != 8) || K % (16 * CS) ||
        (ldx % 8) || ((uintptr_t)X & 15) || ((uintptr_t)W & 15) || N % 16 || (mt != 1 && mt != 2))
        return cudaErrorInvalidValue;
    const int BN = nw * 16 * mt, KS = K / CS, KSp = (KS + SK_KT - 1) / SK_KT * SK_KT, NP = T <= 16 ? 1 : 4;
    int nblk;
    if (mode == CUK_SK_GEGLU) {
        if (N % 32) return cudaErrorInvalidValue;
        e.half_off = N / 2;
        nblk = (N / 2 + BN / 2 - 1) / (BN / 2);
    } else if (mode == CUK_SK_ROPE) {
        if (!e.qr || !e.kc || !e.vc || e.hd <= 0 || N != (e.nh + 2) * e.hd || (e.hd / 2) % (BN / 2))
            return cudaErrorInvalidValue;
        e.half_off = e.hd / 2;
        nblk = N / BN;
    } else {
        nblk = (N + BN - 1) / BN;
    }
    const int nst = sk_stages(KS, mt);
    size_t xw = (size_t)NP * 16 * KSp * 2 + (size_t)nw * nst * 16 * mt * SK_KT * 2;
    size_t pb = (size_t)NP * 16 * (BN + 4) * 4;
    size_t smem = xw > pb ? xw : pb;
    if (smem > SK_SMEM_MAX) return cudaErrorInvalidValue;
    cudaError_t r = cudaErrorInvalidValue;
#define SK_CASE(w, m, p) \
    if (nw == w && mt == m && NP == p) r = sk_launch_cs<w, m, p>(CS, nst, st, nblk, smem, X, ldx, T, W, KS, e, pdl);
    SK_CASE(4, 1, 1) SK_CASE(4, 1, 4) SK_CASE(8, 1, 1) SK_CASE(8, 1, 4)
    SK_CASE(4, 2, 1) SK_CASE(4, 2, 4) SK_CASE(8, 2, 1) SK_CASE(8, 2, 4)
#undef SK_CASE
    if (r != cudaSuccess) return r;
    return cudaGetLastError();
}

cudaError_t cuk_skinny_linear_cfg(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                                  int mode, void *out, int ldo, int nw, int cs, int mt) {
    const int pdl = mode & CUK_PDL;
    mode &= ~CUK_PDL;
    if (mode != CUK_SK_BF16 && mode != CUK_SK_RESID && mode != CUK_SK_GEGLU) return cudaErrorInvalidValue;
    sk_epi e;
    memset(&e, 0, sizeof e);
    e.mode = mode;
    e.out = out;
    e.ldo = ldo;
    e.N = N;
    e.K = K;
    if (nw <= 0 || cs <= 0) cuk_skinny_pick(T, N, K, mode, 0, &nw, &cs, &mt);
    if (mt <= 0) mt = 1;
    return sk_run(st, X, ldx, T, W, e, nw, cs, mt, pdl);
}

cudaError_t cuk_skinny_linear(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                              int mode, void *out, int ldo) {
    return cuk_skinny_linear_cfg(st, X, ldx, T, W, N, K, mode, out, ldo, 0, 0, 0);
}

cudaError_t cuk_skinny_qkv_rope(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int K,
                                const float *cs, const float *sn, int pos0, int nh, int hd, uint16_t *qr,
                                uint16_t *kc, uint16_t *vc, int flags) {
    const int pdl = flags & CUK_PDL;
    sk_epi e;
    memset(&e, 0, sizeof e);
    e.mode = CUK_SK_ROPE;
    e.N = (nh + 2) * hd;
    e.K = K;
    e.cs = cs;
    e.sn = sn;
    e.pos0 = pos0;
    e.nh = nh;
    e.hd = hd;
    e.qr = qr;
    e.kc = kc;
    e.vc = vc;
    int nw, c, mt;
    cuk_skinny_pick(T, e.N, K, CUK_SK_ROPE, hd, &nw, &c, &mt);
    return sk_run(st, X, ldx, T, W, e, nw, c, mt, pdl);
}
