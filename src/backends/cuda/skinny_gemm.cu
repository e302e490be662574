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
 *
 * k_skinny_tma (v18, CUK_SK_PACKED) reads weights that cuk_skinny_pack rewrote into each CTA tile's
 * shared-memory image (same row order), so a tile arrives as a few bulk copies; see its comment below.
 */
#include <cooperative_groups.h>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/wgmma.cuh"

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
    int ring;               /* k_skinny_tma: weight ring slots */
    unsigned long long *tl; /* playground timeline (dev/cuda/skinny.cu): 8 %globaltimer stamps per CTA, or NULL */
};

static __device__ __forceinline__ void sk_stamp(const sk_epi &e, int cta, int i) {
    if (e.tl) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        e.tl[(size_t)cta * 8 + i] = t;
    }
}

/* W row of the CTA's local row r (BN rows), and whether it exists */
static __device__ __forceinline__ int sk_row(const sk_epi &e, int bx, int BN, int r, bool *valid) {
    if (e.mode == CUK_SK_BF16 || e.mode == CUK_SK_RESID || e.mode == CUK_SK_PARTIAL) {
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

static __device__ __forceinline__ void ldsm_x4(uint32_t *r, unsigned sa) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}

/*
 * Split-K over the cluster + epilogue, after every CTA of the cluster has its f32 partial tile in
 * shared memory (Ps: TR tokens x BN rows, pitch BN + 4) and the cluster barrier: each CTA reduces its
 * share of the tile over the ranks in rank order (DSMEM) and applies e's epilogue.
 */
template <int BN, int NTHR, int CS, int TR>
static __device__ __forceinline__ void sk_reduce_epilogue(const sk_epi &e, float *Ps, int T, int bx, int rank,
                                                          int tid, cg::cluster_group &cl) {
    constexpr int PB = BN + 4;
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
    sk_reduce_epilogue<BN, NTHR, CS, TR>(e, Ps, T, bx, rank, tid, cl);
}

/* ---------------- packed-weight wgmma variant (v18) ----------------
 * The weights are repacked once (cuk_skinny_pack) into the shared-memory image of every CTA's tile, in launch
 * order: tile (bx, rank) = BN weight rows (sk_row's order, so the paired epilogues find their partners) x KS k
 * values (the rank's K slice, zero-padded to a multiple of 64), stored as KS/64 blocks of BN 128-byte rows with
 * the 128-byte swizzle (16-byte chunk c of row r at c ^ (r % 8)) — the layout wgmma's descriptors read. So the CTA's
 * whole weight tile is KS/64 contiguous bulk copies (TMA, one thread, one mbarrier per 64-k block) issued at
 * entry, before the grid-dependency wait: the DRAM stream starts at once and needs no per-thread address math.
 * X (T x KS, L2-resident) follows by cp.async; block kb is multiplied as soon as its bytes land. M = the 64
 * (padded) tokens, N = the CTA's BN weight rows (warpgroup g: rows [g BN/2, (g+1) BN/2)), then v16's cluster
 * split-K reduction and epilogues.
 */
#define TM_MAXRS 16 /* weight ring slots (one mbarrier each) */

/* NWG warpgroups (1: all BN rows, 128 threads; 2: BN/2 rows each); e.ring weight slots of BN x 64 k */
template <int BN, int CS, int NWG>
__global__ void __launch_bounds__(128 * NWG) k_skinny_tma(const uint16_t *__restrict__ X, int ldx, int T,
                                                           const uint16_t *__restrict__ Wp, int KS, sk_epi e) {
    extern __shared__ __align__(1024) unsigned char tm_smem_raw[];
    __shared__ __align__(8) uint64_t bar[TM_MAXRS];
    constexpr int NTHR = 128 * NWG, TR = 64, HN = BN / NWG;
    cg::cluster_group cl = cg::this_cluster();
    /* rank = blockIdx.y: the cluster rank when split-K is a cluster, the partial's index in CUK_SK_PARTIAL */
    const int rank = (int)blockIdx.y, tid = threadIdx.x, bx = blockIdx.x, K = e.K, k0 = rank * KS;
    const int nkb = KS / 64, cpr = KS / 8, rs = e.ring; /* 64-wide k blocks; 16-byte chunks per X row; ring slots */
    const unsigned raw = (unsigned)__cvta_generic_to_shared(tm_smem_raw);
    const unsigned base = (raw + 1023u) & ~1023u;
    const unsigned xs = base, ws = base + (unsigned)TR * KS * 2, blk = (unsigned)BN * 128;
    const unsigned bar0 = (unsigned)__cvta_generic_to_shared(bar);
    const unsigned char *src = (const unsigned char *)Wp + ((size_t)bx * CS + rank) * BN * KS * 2;
    const int cta = bx * CS + rank;
    if (tid == 0) {
        sk_stamp(e, cta, 0);
        for (int j = 0; j < rs; j++) mbar_init(bar0 + 8 * j, 1);
        mbar_fence_init();
        for (int kb = 0; kb < rs; kb++) {
            mbar_expect_tx(bar0 + 8 * kb, blk);
            bulk_g2s(ws + kb * blk, src + (size_t)kb * blk, blk, bar0 + 8 * kb);
        }
    }
    pdl_trigger();
    pdl_wait();
    for (int i = tid; i < TR * cpr; i += NTHR) {
        const int r = i / cpr, kc = i - r * cpr;
        const bool v = r < T && k0 + kc * 8 < K;
        const unsigned d = xs + (unsigned)(kc >> 3) * TR * 128 + (unsigned)r * 128 + (unsigned)(((kc & 7) ^ (r & 7)) * 16);
        cp_async16_zfill_s(d, v ? X + (long long)r * ldx + k0 + kc * 8 : X, v);
    }
    cp_async_commit();
    cp_async_wait<0>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); /* cp.async writes -> wgmma reads */
    __syncthreads(); /* X complete, mbarriers initialised */
    if (tid == 0) sk_stamp(e, cta, 1);
    const int g = tid >> 7;
    float d[HN / 2]; /* the first k step overwrites (scale_d 0): no zero-fill that would serialize the wgmmas */
    for (int kb = 0; kb < nkb; kb++) {
        const int slot = kb % rs;
        mbar_wait(bar0 + 8 * slot, (unsigned)(kb / rs) & 1u);
        wg_fence();
        const unsigned xa = xs + (unsigned)kb * TR * 128, wb = ws + (unsigned)slot * blk + (unsigned)g * HN * 128;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            const uint64_t da = wg_desc(xa + ks * 32), db = wg_desc(wb + ks * 32);
            if constexpr (HN == 64) wg_mma_n64(d, da, db, kb | ks);
            else wg_mma_n32(d, da, db, kb | ks);
        }
        wg_commit();
        /* ring: block kb - 1 is done (one group may stay in flight) -> its slot takes block kb - 1 + rs */
        const int j = kb - 1;
        if (j >= 0 && j + rs < nkb) {
            wg_wait1();
            __syncthreads();
            if (tid == 0) {
                const int sj = j % rs;
                mbar_expect_tx(bar0 + 8 * sj, blk);
                bulk_g2s(ws + sj * blk, src + (size_t)(j + rs) * blk, blk, bar0 + 8 * sj);
            }
        }
    }
    if (tid == 0) sk_stamp(e, cta, 2);
    wg_wait0();
    if (e.mode == CUK_SK_PARTIAL) { /* f32 partial (rank, t, col) straight from the accumulators: no cluster */
        const int w = (tid >> 5) & 3, lane = tid & 31, t0 = w * 16 + (lane >> 2), q = lane & 3;
        float *o = (float *)e.out + (size_t)rank * T * e.ldo;
#pragma unroll
        for (int j = 0; j < HN / 8; j++) {
            const int col = bx * BN + g * HN + j * 8 + q * 2;
            if (col < e.N) { /* N even: col + 1 < N too */
                if (t0 < T) *reinterpret_cast<float2 *>(o + (size_t)t0 * e.ldo + col) = make_float2(d[4 * j], d[4 * j + 1]);
                if (t0 + 8 < T)
                    *reinterpret_cast<float2 *>(o + (size_t)(t0 + 8) * e.ldo + col) = make_float2(d[4 * j + 2], d[4 * j + 3]);
            }
        }
        if (tid == 0) sk_stamp(e, cta, 5);
        return;
    }
    __syncthreads(); /* X / W dead: the partial tile goes over them */
    if (tid == 0) sk_stamp(e, cta, 3);
    constexpr int PB = BN + 4;
    float *Ps = (float *)(tm_smem_raw + (base - raw));
    {
        const int w = (tid >> 5) & 3, lane = tid & 31, gq = lane >> 2, q = lane & 3, t0 = w * 16 + gq;
#pragma unroll
        for (int j = 0; j < HN / 8; j++) {
            const int n = g * HN + j * 8 + q * 2;
            Ps[t0 * PB + n] = d[4 * j];
            Ps[t0 * PB + n + 1] = d[4 * j + 1];
            Ps[(t0 + 8) * PB + n] = d[4 * j + 2];
            Ps[(t0 + 8) * PB + n + 1] = d[4 * j + 3];
        }
    }
    cl.sync();
    if (tid == 0) sk_stamp(e, cta, 4);
    sk_reduce_epilogue<BN, NTHR, CS, TR>(e, Ps, T, bx, rank, tid, cl);
    if (tid == 0) sk_stamp(e, cta, 5);
}

/* one thread per 16-byte chunk of the packed array (n elements): tile (bx, rank), block kb, row r, chunk p */
__global__ void k_skinny_pack(const uint16_t *__restrict__ W, sk_epi e, int BN, int CS, int KS, uint16_t *Wp,
                              long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x, el = i * 8, tile_el = (long long)BN * KS;
    if (el >= n) return;
    const int tile = (int)(el / tile_el), rem = (int)(el - tile * tile_el);
    const int kb = rem / (BN * 64), r = (rem - kb * BN * 64) / 64, p = (rem & 63) / 8, c = p ^ (r & 7);
    const int bx = tile / CS, rank = tile - bx * CS, k = rank * KS + kb * 64 + c * 8;
    bool v;
    const int row = sk_row(e, bx, BN, r, &v);
    uint16_t out[8];
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = v && k + j < e.K ? W[(long long)row * e.K + k + j] : 0;
    *reinterpret_cast<uint4 *>(Wp + el) = *reinterpret_cast<uint4 *>(out);
}

/* ---------------- launcher ---------------- */

typedef void (*sk_kernel_t)(const uint16_t *, int, int, const uint16_t *, int, sk_epi);

/* Launch one of the streaming-GEMM kernels: grid (nblk, CS) in clusters of (1, CS), optionally under PDL;
 * the shared-memory opt-in is made on the kernel's first launch (*attr_set). */
static cudaError_t sk_cluster_launch(sk_kernel_t k, int *attr_set, int threads, cudaStream_t st, int nblk, int CS,
                                     size_t smem, const uint16_t *X, int ldx, int T, const uint16_t *W, int KS,
                                     const sk_epi &e, int pdl) {
    if (!*attr_set) {
        cudaError_t r = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, SK_SMEM_MAX);
        if (r != cudaSuccess) return r;
        *attr_set = 1;
    }
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = dim3((unsigned)nblk, (unsigned)CS, 1);
    cfg.blockDim = dim3((unsigned)threads, 1, 1);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 1;
    at[0].val.clusterDim.y = e.mode == CUK_SK_PARTIAL ? 1u : (unsigned)CS; /* partials: no reduction, no cluster */
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    pdl_attr(at, &cfg.numAttrs, pdl);
    return cudaLaunchKernelEx(&cfg, k, X, ldx, T, W, KS, e);
}

template <int NW, int MT, int NP, int CS, int ST>
static cudaError_t sk_launch(cudaStream_t st, int nblk, size_t smem, const uint16_t *X, int ldx, int T,
                             const uint16_t *W, int KS, const sk_epi &e, int pdl) {
    static int attr_set = 0;
    return sk_cluster_launch(k_skinny2<NW, MT, NP, CS, ST>, &attr_set, NW * 32, st, nblk, CS, smem, X, ldx, T, W, KS, e,
                             pdl);
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

/* feature blocks of BN weight rows (paired modes: BN/2 output features per block) */
static int sk_nblk(int mode, int N, int BN) {
    return mode == CUK_SK_GEGLU ? (N / 2 + BN / 2 - 1) / (BN / 2) : (N + BN - 1) / BN;
}

extern "C" void cuk_skinny_pick(int T, int N, int K, int mode, int hd, int *nw, int *cs, int *mt) {
    *mt = 1;
    (void)T;
    int w = (mode == CUK_SK_GEGLU ? N / 2 : N) >= 4096 ? 8 : 4;
    if (mode == CUK_SK_ROPE && (hd / 2) % (w * 8)) w = 4;
    const int nblk = sk_nblk(mode, N, 16 * w);
    int c = 1;
    while (c < 8 && nblk * c < 128 && K / (2 * c) >= 128 && K % (2 * c * 16) == 0) c *= 2;
    while (c < 8 && K / c > 1024 && K % (2 * c * 16) == 0) c *= 2; /* the X slice must fit */
    *nw = w;
    *cs = c;
}

/* sk_nblk for e's shape after checking that it fits (0 when not); sets e.half_off. The RoPE epilogue's
 * output pointers are checked by the launchers, not here (the packer needs only the shape). */
static int sk_blocks(sk_epi &e, int BN) {
    const int N = e.N;
    if (N % 16) return 0;
    if (e.mode == CUK_SK_GEGLU) {
        if (N % 32) return 0;
        e.half_off = N / 2;
    } else if (e.mode == CUK_SK_ROPE) {
        if (e.hd <= 0 || N != (e.nh + 2) * e.hd || (e.hd / 2) % (BN / 2)) return 0;
        e.half_off = e.hd / 2; /* N = (nh + 2) hd is a multiple of BN here */
    }
    return sk_nblk(e.mode, N, BN);
}

/* ---- packed-weight variant: tile / split choice, packing and launch ---- */
static int tm_ks(int K, int cs) { return ((K + cs - 1) / cs + 63) / 64 * 64; } /* K slice, padded to 64s */
/* ring slots: the whole slice when it fits, else as many BN x 64 blocks as shared memory takes beside X */
static int tm_ring(int BN, int KS) {
    const long long room = (long long)SK_SMEM_MAX - 1024 - (long long)64 * KS * 2;
    long long r = room / ((long long)BN * 128);
    if (r > KS / 64) r = KS / 64;
    if (r > TM_MAXRS) r = TM_MAXRS;
    return r < 2 && KS / 64 >= 2 ? 0 : (int)r;
}
static size_t tm_smem(int BN, int KS, int rs) {
    size_t xw = (size_t)64 * KS * 2 + (size_t)rs * BN * 128, pb = (size_t)64 * (BN + 4) * 4;
    return (xw > pb ? xw : pb) + 1024; /* + alignment to 1024 bytes */
}
static bool tm_fits(int BN, int KS) {
    const int rs = tm_ring(BN, KS);
    return rs > 0 && tm_smem(BN, KS, rs) <= SK_SMEM_MAX;
}
/* BN 128 (64 when the shape has no 128-row tiles), the smallest split-K reaching 128 CTAs (at most 8) that fits:
 * the playground's best on all four expert shapes (no split-K is far slower: every CTA stages the whole X) */
static void tm_pick(sk_epi e, int *bn, int *cs) {
    *bn = *cs = 0;
    int b = 128, nb = sk_blocks(e, 128);
    if (!nb) {
        b = 64;
        nb = sk_blocks(e, 64);
    }
    if (!nb) return;
    const int kblk = (e.K + 63) / 64;
    int c = 1;
    while (c < 8 && nb * c < 128 && kblk >= 2 * c) c *= 2;
    while (c < 8 && !tm_fits(b, tm_ks(e.K, c)) && kblk >= 2 * c) c *= 2;
    if (!tm_fits(b, tm_ks(e.K, c))) return;
    *bn = b;
    *cs = c;
}
/* resolve (bn, cs) (0, 0: tm_pick) and check them; the tile count, or 0 when the shape does not fit */
static int tm_config(sk_epi &e, int *bn, int *cs) {
    if (*bn <= 0 || *cs <= 0) tm_pick(e, bn, cs);
    const int BN = *bn, CS = *cs;
    if ((BN != 32 && BN != 64 && BN != 128) || (CS != 1 && CS != 2 && CS != 4 && CS != 8) || e.K <= 0 || e.K % 8 ||
        !tm_fits(BN, tm_ks(e.K, CS)))
        return 0;
    return sk_blocks(e, BN);
}

template <int BN, int CS, int NWG>
static cudaError_t tm_launch(cudaStream_t st, int nblk, size_t smem, const uint16_t *X, int ldx, int T,
                             const uint16_t *W, int KS, const sk_epi &e, int pdl) {
    static int attr_set = 0;
    return sk_cluster_launch(k_skinny_tma<BN, CS, NWG>, &attr_set, 128 * NWG, st, nblk, CS, smem, X, ldx, T, W, KS, e,
                             pdl);
}

static unsigned long long *tm_timeline; /* cuk_skinny_set_timeline (playground only) */
void cuk_skinny_set_timeline(unsigned long long *tl) { tm_timeline = tl; }

/* nwg: warpgroups per CTA (0: 1 for BN <= 64, else 2) */
static cudaError_t tm_run(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *Wp, sk_epi &e, int BN,
                          int CS, int nwg, int pdl) {
    if (T <= 0) return cudaSuccess;
    e.tl = tm_timeline;
    const int nblk = tm_config(e, &BN, &CS);
    if (T > 64 || !nblk || (ldx % 8) || ((uintptr_t)X & 15) || ((uintptr_t)Wp & 15)) return cudaErrorInvalidValue;
    if (nwg <= 0) nwg = BN <= 64 ? 1 : 2;
    const int KS = tm_ks(e.K, CS);
    e.ring = tm_ring(BN, KS);
    const size_t smem = tm_smem(BN, KS, e.ring);
    cudaError_t r = cudaErrorInvalidValue;
#define TM_CASE(b, w)                                                                      \
    if (BN == b && nwg == w) {                                                             \
        if (CS == 1) r = tm_launch<b, 1, w>(st, nblk, smem, X, ldx, T, Wp, KS, e, pdl);   \
        if (CS == 2) r = tm_launch<b, 2, w>(st, nblk, smem, X, ldx, T, Wp, KS, e, pdl);   \
        if (CS == 4) r = tm_launch<b, 4, w>(st, nblk, smem, X, ldx, T, Wp, KS, e, pdl);   \
        if (CS == 8) r = tm_launch<b, 8, w>(st, nblk, smem, X, ldx, T, Wp, KS, e, pdl);   \
    }
    TM_CASE(32, 1) TM_CASE(64, 1) TM_CASE(64, 2) TM_CASE(128, 2)
#undef TM_CASE
    if (r != cudaSuccess) return r;
    return cudaGetLastError();
}

static sk_epi sk_shape_epi(int N, int K, int mode, int nh, int hd) {
    sk_epi e;
    memset(&e, 0, sizeof e);
    e.mode = mode;
    e.N = N;
    e.K = K;
    e.nh = nh;
    e.hd = hd;
    return e;
}

size_t cuk_skinny_packed_elems(int N, int K, int mode, int nh, int hd, int bn, int cs) {
    sk_epi e = sk_shape_epi(N, K, mode, nh, hd);
    const int nblk = tm_config(e, &bn, &cs);
    return nblk ? (size_t)nblk * cs * bn * tm_ks(K, cs) : 0;
}

int cuk_skinny_packed_tiles(int N, int K, int mode, int nh, int hd, int *bn, int *cs) {
    sk_epi e = sk_shape_epi(N, K, mode, nh, hd);
    if (!tm_config(e, bn, cs)) *bn = *cs = 0;
    return *bn > 0;
}

cudaError_t cuk_skinny_pack(cudaStream_t st, const uint16_t *W, int N, int K, int mode, int nh, int hd, int bn, int cs,
                            uint16_t *Wp) {
    sk_epi e = sk_shape_epi(N, K, mode, nh, hd);
    const int nblk = tm_config(e, &bn, &cs);
    if (!nblk || ((uintptr_t)Wp & 15)) return cudaErrorInvalidValue;
    const long long n = (long long)nblk * cs * bn * tm_ks(K, cs);
    k_skinny_pack<<<(unsigned)((n / 8 + 255) / 256), 256, 0, st>>>(W, e, bn, cs, tm_ks(K, cs), Wp, n);
    return cudaGetLastError();
}

/* the default for raw (unpacked) weights: k_skinny2 with cuk_skinny_pick's shape */
static cudaError_t sk_auto(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, sk_epi &e, int hd,
                           int pdl);

static cudaError_t sk_run(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, sk_epi &e, int nw,
                          int CS, int mt, int pdl) {
    const int N = e.N, K = e.K, mode = e.mode;
    if (T <= 0) return cudaSuccess;
    if (T > 64 || (nw != 4 && nw != 8) || (CS != 1 && CS != 2 && CS != 4 && CS != 8) || K % (16 * CS) ||
        (ldx % 8) || ((uintptr_t)X & 15) || ((uintptr_t)W & 15) || N % 16 || (mt != 1 && mt != 2))
        return cudaErrorInvalidValue;
    const int BN = nw * 16 * mt, KS = K / CS, KSp = (KS + SK_KT - 1) / SK_KT * SK_KT, NP = T <= 16 ? 1 : 4;
    const int nblk = sk_blocks(e, BN);
    if (!nblk) return cudaErrorInvalidValue;
    (void)mode;
    (void)N;
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
    const int pdl = mode & CUK_PDL, packed = mode & CUK_SK_PACKED;
    mode &= ~(CUK_PDL | CUK_SK_PACKED);
    if (mode != CUK_SK_BF16 && mode != CUK_SK_RESID && mode != CUK_SK_GEGLU && mode != CUK_SK_PARTIAL)
        return cudaErrorInvalidValue;
    if (mode == CUK_SK_PARTIAL && (!packed || N % 2 || ldo % 2)) return cudaErrorInvalidValue;
    sk_epi e = sk_shape_epi(N, K, mode, 0, 0);
    e.out = out;
    e.ldo = ldo;
    if (packed) return tm_run(st, X, ldx, T, W, e, nw, cs, mt, pdl);
    if (nw <= 0 || cs <= 0) return sk_auto(st, X, ldx, T, W, e, 0, pdl);
    if (mt <= 0) mt = 1;
    return sk_run(st, X, ldx, T, W, e, nw, cs, mt, pdl);
}

static cudaError_t sk_auto(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, sk_epi &e, int hd,
                           int pdl) {
    int cs, nw, mt;
    cuk_skinny_pick(T, e.N, e.K, e.mode, hd, &nw, &cs, &mt);
    return sk_run(st, X, ldx, T, W, e, nw, cs, mt, pdl);
}

cudaError_t cuk_skinny_linear(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                              int mode, void *out, int ldo) {
    return cuk_skinny_linear_cfg(st, X, ldx, T, W, N, K, mode, out, ldo, 0, 0, 0);
}

cudaError_t cuk_skinny_qkv_rope(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int K,
                                const float *cs, const float *sn, int pos0, int nh, int hd, uint16_t *qr,
                                uint16_t *kc, uint16_t *vc, int flags) {
    if (!qr || !kc || !vc || !cs || !sn) return cudaErrorInvalidValue;
    sk_epi e = sk_shape_epi((nh + 2) * hd, K, CUK_SK_ROPE, nh, hd);
    e.cs = cs;
    e.sn = sn;
    e.pos0 = pos0;
    e.qr = qr;
    e.kc = kc;
    e.vc = vc;
    if (flags & CUK_SK_PACKED) return tm_run(st, X, ldx, T, W, e, 0, 0, 0, flags & CUK_PDL);
    return sk_auto(st, X, ldx, T, W, e, hd, flags & CUK_PDL);
}
