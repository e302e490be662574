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

/* ---------------- MQA flash-decoding attention (v2): key splits = one thread-block cluster ---------------- */
/*
 * CTA (split, tile) = NR x 16 query rows x the keys of one split; the ns splits of a row tile form one
 * cluster (ns <= 16). Warp (rt, kg): 16 rows (rt) x the kg-th KC/NK keys of every KC-key chunk, all hd
 * columns: S = Q K^T and O += P V by mma.sync m16n8k16 (bf16, f32 accumulate) from ldmatrix fragments, P
 * kept in registers (the S accumulator re-packed as the A operand of P V), online softmax in log2 units.
 * The CTA loops over its chunks with a double-buffered cp.async ring (the first chunk's Q and K in two
 * column halves, so Q K^T starts on half of them; K and V of a chunk in separate groups, so Q K^T runs
 * while V lands); keys past S are zero-filled and masked. The P row sums use the bf16-rounded P, as P V does.
 * Merge of the splits, in a fixed order (bitwise deterministic), CTA rank c owning the rows c, c + ns, ...:
 *  - pull (default): each warp's unnormalised O (bf16 with one key group per CTA, MQ_BFPART, the default since
 *    it measured 9.35 vs 11.19 us per call and E2E -0.26 ms; else f32), running max m and sum l go to shared memory
 *    over the dead Q/K/V buffers (optionally the NK key groups merged locally first: MQ_PREMERGE); cluster barrier
 *    (release/acquire); the owner reads every split's partial of its rows through distributed shared
 *    memory, one warp per row; relaxed cluster barrier so that no CTA leaves while it is read;
 *  - push (MQ_PUSH): relaxed cluster barrier; each thread sends its O rows (float4 after a lane-pair
 *    exchange), m and l from registers to the owner with st.async, counted on the owner's mbarrier
 *    (expect_tx set at kernel start); the owner waits on it and merges from its own shared memory.
 * Measured on the H100 (bench/results/2026-11-24-h100-mqa-v2-playground.txt): both merges cost ~5 us for
 * R = 408 (64 KB of f32 partials into every CTA), push ~1.5 us more than pull; the math runs at ~15 cycles
 * per HMMA.16816 per SM sub-partition (ldmatrix-bound), ~2 us per 64 x 64 chunk-tile.
 * No global workspace, one launch.
 */
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

struct MqArgs {
    const bf16 *q, *k, *v;
    bf16 *out;
    int R, S, rows_lim, n_lim, ns, nbuf, premerge, push;
    int bfpart; /* MQ_BFPART: the pulled partials are bf16 (half the distributed-shared-memory bytes; NK = 1) */
    float sl2;  /* scale * log2(e) */
    int diag;  /* MQ_DIAG builds only (dev/cuda/attention_mqa.cu): 1 skip K/V loads, 2 skip the math, 4 skip the merge */
};

static __device__ __forceinline__ void mq_cp16(void *s, const void *g, bool valid) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(s);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(valid ? 16 : 0));
}
static __device__ __forceinline__ void mq_ldsm(uint32_t (&r)[4], const void *p) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}
static __device__ __forceinline__ void mq_ldsm_t(uint32_t (&r)[4], const void *p) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sa));
}
/* distributed shared memory: the address of a shared variable in CTA `rank` of the cluster; asynchronous
 * stores there that count their bytes on an mbarrier of that CTA (complete_tx) */
static __device__ __forceinline__ unsigned mq_mapa(const void *p, unsigned rank) {
    unsigned r, a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(rank));
    return r;
}
static __device__ __forceinline__ void mq_st_async4(unsigned ra, float x, float y, float z, float w, unsigned rbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(ra),
                 "f"(x), "f"(y), "f"(z), "f"(w), "r"(rbar)
                 : "memory");
}
static __device__ __forceinline__ void mq_st_async2(unsigned ra, float x, float y, unsigned rbar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];\n" ::"r"(ra), "f"(x),
                 "f"(y), "r"(rbar)
                 : "memory");
}
static __device__ __forceinline__ void mq_mbar_wait(unsigned bar, int phase) {
    asm volatile("{\n.reg .pred P1;\nMQ_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n@P1 bra MQ_DONE;\n"
                 "bra MQ_WAIT;\nMQ_DONE:\n}\n" ::"r"(bar),
                 "r"(phase)
                 : "memory");
}
/* plain (weakly ordered) stores to another CTA's shared memory; a release cluster barrier publishes them */
static __device__ __forceinline__ void mq_st_cl4(unsigned ra, float x, float y, float z, float w) {
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(ra), "f"(x), "f"(y), "f"(z), "f"(w) : "memory");
}
static __device__ __forceinline__ void mq_st_cl2(unsigned ra, float x, float y) {
    asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(ra), "f"(x), "f"(y) : "memory");
}
static __device__ __forceinline__ void mq_cluster_sync_relaxed() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;\n" ::: "memory");
}
static __device__ __forceinline__ uint32_t mq_pack(float lo, float hi, float &sum) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    sum += __low2float(h) + __high2float(h);
    return *(uint32_t *)&h;
}

/* shared memory: [Q | K0 V0 | K1 V1] bf16 (pitch HD + 8), reused for the f32 partials (pull: pitch HD + 8;
 * push: the owner's receive area [slot][partial][HD] + [slot][partial][m, l]), then a tail of m, l (NK x ROWS
 * each; push: the receive mbarrier) and the premerge weights (the tail is sized with some slack) */
template <int HD, int NR, int NK, int KC> struct MqCfg {
    static constexpr int ROWS = NR * 16, NW = NR * NK, NTH = NW * 32, KS = KC / NK, LD = HD + 8, OLD = HD + 8;
    static constexpr int TAILF = 2 * NK * ROWS + (ROWS + 16) * NK + 3 * ROWS;
    static constexpr __host__ __device__ size_t main_bytes(int nbuf) {
        size_t a = (size_t)(ROWS + 2 * nbuf * KC) * LD * 2, b = (size_t)NK * ROWS * OLD * 4;
        return ((a > b ? a : b) + 15) / 16 * 16;
    }
    static constexpr __host__ __device__ size_t smem_bytes(int nbuf) { return main_bytes(nbuf) + (size_t)TAILF * 4; }
    static_assert(KS % 16 == 0 && HD % 16 == 0 && HD <= 256, "MQA flash shape");
};

/* S (16 rows x KS keys of this warp) += Q K^T over the 16-column steps [KK0, KK1) */
template <int KK0, int KK1, int NTS, int LD>
static __device__ __forceinline__ void mq_qk(float (&s)[NTS][4], const bf16 *Qw, const bf16 *Kw, int lane) {
#pragma unroll
    for (int kk = KK0; kk < KK1; kk++) {
        uint32_t qa[4];
        mq_ldsm(qa, Qw + (lane & 15) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int p = 0; p < NTS / 2; p++) {
            uint32_t kb[4];
            mq_ldsm(kb, Kw + (p * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
            mma_bf16_16816(s[2 * p], qa[0], qa[1], qa[2], qa[3], kb[0], kb[1]);
            mma_bf16_16816(s[2 * p + 1], qa[0], qa[1], qa[2], qa[3], kb[2], kb[3]);
        }
    }
}

template <int HD, int NR, int NK, int KC>
__global__ void __launch_bounds__(NR *NK * 32, 1) k_mqa_flash(MqArgs a) {
    using C = MqCfg<HD, NR, NK, KC>;
    constexpr int ROWS = C::ROWS, NTH = C::NTH, NW = C::NW, KS = C::KS, LD = C::LD, OLD = C::OLD;
    constexpr int NTS = KS / 8, NTO = HD / 8, V8 = HD / 8, VH = V8 / 2, KH = HD / 32;
    constexpr int NC4 = HD / 4, CPL = (NC4 + 31) / 32; /* merge: float4 columns per row, per lane */
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *KVs = Qs + ROWS * LD;
    float *Op = (float *)smem;
    float *Ms = (float *)(smem + C::main_bytes(a.nbuf)), *Ls = Ms + NK * ROWS, *Wt = Ls + NK * ROWS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, rt = warp % NR, kg = warp / NR;
    const int split = blockIdx.x, ns = a.ns, r0 = blockIdx.y * ROWS, R = a.R, S = a.S;
    const int nch = (S + KC - 1) / KC, cb = split * nch / ns, nmy = (split + 1) * nch / ns - cb;
#ifdef MQ_DIAG
    const bool dg_nokv = a.diag & 1, dg_nomath = a.diag & 2, dg_nomerge = a.diag & 4;
#else
    constexpr bool dg_nokv = false, dg_nomath = false, dg_nomerge = false;
#endif

    /* this CTA merges the rows lr = split + ns i (i < nmr) of the tile */
    int nmr = 0;
    for (int lr = split; lr < ROWS && r0 + lr < R; lr += ns) nmr++;
    /* push: 1 = st.async into the receive area over Q/K/V (after a cluster barrier), counted on an mbarrier;
     * 2 = plain remote stores into a receive area of its own past the tail, published by one release / acquire
     * cluster barrier (no barrier before, none after: nothing is read remotely) */
    const bool push = a.push != 0, push2 = a.push == 2; /* host: ns > 1 and the receive area fits */
    uint64_t *rbar = (uint64_t *)(smem + C::main_bytes(a.nbuf)); /* push 1: over Ms (unused there) */
    if (push && !push2 && tid == 0) {
        const unsigned b = (unsigned)__cvta_generic_to_shared(rbar);
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(b));
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b),
                     "r"(nmr * ns * NK * (HD * 4 + 8))
                     : "memory");
    }

    /* 16-byte vectors [v0, v1) of every row of Q / of the K or V chunk ch */
    auto loadq = [&](int v0, int v1) {
        const int nv = v1 - v0;
        for (int i = tid; i < ROWS * nv; i += NTH) {
            const int r = i / nv, c = (v0 + i - r * nv) * 8;
            const bool ok = r0 + r < R;
            mq_cp16(Qs + r * LD + c, a.q + (ok ? (long long)(r0 + r) * HD + c : 0), ok);
        }
    };
    auto load = [&](int ch, int buf, int isv, int v0, int v1) {
        if (dg_nokv) return;
        bf16 *d = KVs + (buf * 2 + isv) * KC * LD;
        const bf16 *src = isv ? a.v : a.k;
        const int key0 = ch * KC, nv = v1 - v0;
        for (int i = tid; i < KC * nv; i += NTH) {
            const int r = i / nv, c = (v0 + i - r * nv) * 8;
            const bool ok = key0 + r < S;
            mq_cp16(d + r * LD + c, src + (ok ? (long long)(key0 + r) * HD + c : 0), ok);
        }
    };
    /* first chunk in three groups: Q and K columns [0, HD/2), then [HD/2, HD), then V */
    pdl_trigger();
    pdl_wait(); /* Q and the newest K/V rows come from the previous kernel */
    loadq(0, VH);
    if (nmy > 0) load(cb, 0, 0, 0, VH);
    cp_async_commit();
    loadq(VH, V8);
    if (nmy > 0) load(cb, 0, 0, VH, V8);
    cp_async_commit();
    if (nmy > 0) load(cb, 0, 1, 0, V8);
    cp_async_commit();

    const int g = lane >> 2, tq = lane & 3;
    const int gr0 = r0 + rt * 16 + g, gr1 = gr0 + 8;
    const bool act = r0 + rt * 16 < R && !dg_nomath;
    const int lim0 = min(gr0 < a.rows_lim ? a.n_lim : S, S), lim1 = min(gr1 < a.rows_lim ? a.n_lim : S, S);
    const float sl2 = a.sl2;
    const bf16 *Qw = Qs + rt * 16 * LD;
    float o[NTO][4];
#pragma unroll
    for (int i = 0; i < NTO; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int it = 0; it < nmy; it++) {
        if (it + 1 < nmy) {
            load(cb + it + 1, (it + 1) & 1, 0, 0, V8);
            cp_async_commit();
            load(cb + it + 1, (it + 1) & 1, 1, 0, V8);
            cp_async_commit();
        } else {
            cp_async_commit();
            cp_async_commit();
        }
        const bf16 *Kb = KVs + (it & 1) * 2 * KC * LD + kg * KS * LD, *Vb = Kb + KC * LD;
        const int key0 = (cb + it) * KC + kg * KS;
        float s[NTS][4];
#pragma unroll
        for (int j = 0; j < NTS; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        if (it == 0) cp_async_wait<4>(); /* first half of Q and K0 */
        else cp_async_wait<3>();         /* K of chunk it */
        __syncthreads();
        if (act) mq_qk<0, KH, NTS, LD>(s, Qw, Kb, lane);
        cp_async_wait<3>(); /* second half of Q and K0 (no-op after the first chunk) */
        __syncthreads();
        uint32_t pa[NTS][2];
        if (act) {
            mq_qk<KH, HD / 16, NTS, LD>(s, Qw, Kb, lane);
            float x0 = -INFINITY, x1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < NTS; j++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int key = key0 + j * 8 + tq * 2 + e;
                    s[j][e] = key < lim0 ? s[j][e] * sl2 : -INFINITY;
                    s[j][2 + e] = key < lim1 ? s[j][2 + e] * sl2 : -INFINITY;
                    x0 = fmaxf(x0, s[j][e]);
                    x1 = fmaxf(x1, s[j][2 + e]);
                }
            }
            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
            x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
            x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
            const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
            const float b0 = n0 == -INFINITY ? 0.f : n0, b1 = n1 == -INFINITY ? 0.f : n1;
            const float al0 = exp2f(m0 - b0), al1 = exp2f(m1 - b1);
            m0 = n0;
            m1 = n1;
            l0 *= al0;
            l1 *= al1;
#pragma unroll
            for (int i = 0; i < NTO; i++) {
                o[i][0] *= al0; o[i][1] *= al0;
                o[i][2] *= al1; o[i][3] *= al1;
            }
#pragma unroll
            for (int j = 0; j < NTS; j++) {
                pa[j][0] = mq_pack(exp2f(s[j][0] - b0), exp2f(s[j][1] - b0), l0);
                pa[j][1] = mq_pack(exp2f(s[j][2] - b1), exp2f(s[j][3] - b1), l1);
            }
        }
        cp_async_wait<2>(); /* V of chunk it */
        __syncthreads();
        if (act) {
#pragma unroll
            for (int t = 0; t < KS / 16; t++) {
#pragma unroll
                for (int qd = 0; qd < HD / 16; qd++) {
                    uint32_t vb[4];
                    mq_ldsm_t(vb, Vb + (t * 16 + (lane & 15)) * LD + qd * 16 + (lane >> 4) * 8);
                    mma_bf16_16816(o[2 * qd], pa[2 * t][0], pa[2 * t][1], pa[2 * t + 1][0], pa[2 * t + 1][1], vb[0],
                                   vb[1]);
                    mma_bf16_16816(o[2 * qd + 1], pa[2 * t][0], pa[2 * t][1], pa[2 * t + 1][0], pa[2 * t + 1][1],
                                   vb[2], vb[3]);
                }
            }
        }
        __syncthreads(); /* buffer it & 1 is refilled next iteration */
    }
    cp_async_wait<0>();
    __syncthreads(); /* Q/K/V dead: the partials go over them */
    if (dg_nomerge) return;

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    int PK = NK; /* partial slots per CTA */
    float *recv = push2 ? (float *)(smem + C::smem_bytes(a.nbuf)) : Op; /* push: [slot][partial][HD] O rows */
    float *rml = Op;                                                      /*       and [slot][partial][2] m, l */
    cg::cluster_group cl = cg::this_cluster();
    if (push) {
        /* push: each thread sends its O fragment rows (float4 after a pair exchange), m and l straight from registers
         * to the owner CTA of the row. push 1: after a barrier (the receive area is the owners' Q/K/V), st.async
         * counted on the owner's mbarrier, then it waits for its own rows; push 2: plain stores into a receive area
         * of its own (no barrier before), published by one release / acquire cluster barrier */
        if (!push2) mq_cluster_sync_relaxed();
        const int np = ns * NK, p = split * NK + kg, rslots = (ROWS + ns - 1) / ns;
        rml = recv + (size_t)rslots * np * HD;
        if (r0 + rt * 16 < R) {
            const int odd = tq & 1, lr = rt * 16 + g + (odd ? 8 : 0), owner = lr % ns, slot = lr / ns;
            const bool ok = r0 + lr < R;
            const unsigned dst = mq_mapa(recv + ((size_t)slot * np + p) * HD + (tq & 2) * 2, owner);
            const unsigned rb = push2 ? 0u : mq_mapa(rbar, owner);
#pragma unroll
            for (int i = 0; i < NTO; i++) {
                const float s0 = odd ? o[i][0] : o[i][2], s1 = odd ? o[i][1] : o[i][3];
                const float x0 = __shfl_xor_sync(0xffffffffu, s0, 1), x1 = __shfl_xor_sync(0xffffffffu, s1, 1);
                const float v0 = odd ? x0 : o[i][0], v1 = odd ? x1 : o[i][1], v2 = odd ? o[i][2] : x0,
                            v3 = odd ? o[i][3] : x1;
                if (ok && push2) mq_st_cl4(dst + i * 32, v0, v1, v2, v3);
                else if (ok) mq_st_async4(dst + i * 32, v0, v1, v2, v3, rb);
            }
            const int lr2 = rt * 16 + g + (tq == 1 ? 8 : 0);
            if (tq < 2 && r0 + lr2 < R) {
                const int ow2 = lr2 % ns;
                const unsigned d2 = mq_mapa(rml + ((size_t)(lr2 / ns) * np + p) * 2, ow2);
                if (push2) mq_st_cl2(d2, tq ? m1 : m0, tq ? l1 : l0);
                else mq_st_async2(d2, tq ? m1 : m0, tq ? l1 : l0, mq_mapa(rbar, ow2));
            }
        }
        if (push2) asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
        else mq_mbar_wait((unsigned)__cvta_generic_to_shared(rbar), 0);
    } else {
        bool stored = false;
        if constexpr (NK == 1) {
            if (a.bfpart && r0 + rt * 16 < R) { /* bf16 rows of pitch OLD */
                __nv_bfloat162 *ob = (__nv_bfloat162 *)((bf16 *)smem + (rt * 16 + g) * OLD + tq * 2);
#pragma unroll
                for (int i = 0; i < NTO; i++) {
                    ob[i * 4] = __floats2bfloat162_rn(o[i][0], o[i][1]);
                    ob[4 * OLD + i * 4] = __floats2bfloat162_rn(o[i][2], o[i][3]);
                }
                if (tq == 0) {
                    Ms[rt * 16 + g] = m0;
                    Ms[rt * 16 + g + 8] = m1;
                    Ls[rt * 16 + g] = l0;
                    Ls[rt * 16 + g + 8] = l1;
                }
            }
            stored = a.bfpart;
        }
        if (!stored && r0 + rt * 16 < R) {
            float *op = Op + (kg * ROWS + rt * 16 + g) * OLD + tq * 2;
#pragma unroll
            for (int i = 0; i < NTO; i++) {
                *(float2 *)(op + i * 8) = make_float2(o[i][0], o[i][1]);
                *(float2 *)(op + 8 * OLD + i * 8) = make_float2(o[i][2], o[i][3]);
            }
            if (tq == 0) {
                Ms[kg * ROWS + rt * 16 + g] = m0;
                Ms[kg * ROWS + rt * 16 + g + 8] = m1;
                Ls[kg * ROWS + rt * 16 + g] = l0;
                Ls[kg * ROWS + rt * 16 + g + 8] = l1;
            }
        }
        if (NK > 1 && a.premerge) {
            /* merge the NK key groups of this CTA into slot 0 (fixed order) */
            __syncthreads();
            float *Mw = Wt + ROWS * NK, *Lw = Mw + ROWS;
            for (int r = tid; r < ROWS; r += NTH) {
                float M = -INFINITY, den = 0.f;
#pragma unroll
                for (int j = 0; j < NK; j++) M = fmaxf(M, Ms[j * ROWS + r]);
#pragma unroll
                for (int j = 0; j < NK; j++) {
                    const float mj = Ms[j * ROWS + r], w = mj == -INFINITY ? 0.f : exp2f(mj - M);
                    Wt[r * NK + j] = w;
                    den += w * Ls[j * ROWS + r];
                }
                Mw[r] = M;
                Lw[r] = den;
            }
            __syncthreads();
            for (int e = tid; e < ROWS * NC4; e += NTH) {
                const int r = e / NC4, c = (e - r * NC4) * 4;
                if (r0 + r >= R) continue;
                float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int j = 0; j < NK; j++) {
                    const float w = Wt[r * NK + j];
                    const float4 x = *(const float4 *)(Op + (j * ROWS + r) * OLD + c);
                    acc.x += w * x.x; acc.y += w * x.y; acc.z += w * x.z; acc.w += w * x.w;
                }
                *(float4 *)(Op + r * OLD + c) = acc;
            }
            for (int r = tid; r < ROWS; r += NTH) {
                Ms[r] = Mw[r];
                Ls[r] = Lw[r];
            }
            PK = 1;
        }
        if (ns > 1) cl.sync(); /* release / acquire: the partials are visible cluster-wide */
        else __syncthreads();
    }
    /* merge this CTA's rows, one warp per row; np partials in the order (split, key group); lane p < np
     * fetches m and l of partial p, each lane CPL float4 columns of every partial (16 partials' loads in
     * flight per batch; pull: through distributed shared memory), the weights are broadcast by shuffles */
    const int np = ns * PK;
    bool merged = false;
    if constexpr (NK == 1) {
        if (a.bfpart) { /* bf16 partials (pull): lane c8 holds columns [8 c8, 8 c8 + 8) of the row */
            constexpr int NC8 = HD / 8;
            for (int i = warp; i < nmr; i += NW) {
                const int lr = split + ns * i;
                float m = -INFINITY, l = 0.f;
                if (lane < ns) {
                    m = *cl.map_shared_rank(Ms + lr, lane);
                    l = *cl.map_shared_rank(Ls + lr, lane);
                }
                const float M = warp_max(m), w = m == -INFINITY ? 0.f : exp2f(m - M), den = warp_sum(w * l);
                float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                uint4 x[16];
#pragma unroll
                for (int u = 0; u < 16; u++)
                    if (u < ns && lane < NC8)
                        x[u] = *cl.map_shared_rank((const uint4 *)((const bf16 *)smem + lr * OLD) + lane, u);
#pragma unroll
                for (int u = 0; u < 16; u++) {
                    const float wp = __shfl_sync(0xffffffffu, w, u);
                    if (u < ns && lane < NC8) {
                        const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&x[u];
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float2 f = __bfloat1622float2(h2[e]);
                            acc[2 * e] += wp * f.x;
                            acc[2 * e + 1] += wp * f.y;
                        }
                    }
                }
                const float inv = 1.f / den;
                if (lane < NC8) {
                    uint16_t *dst = reinterpret_cast<uint16_t *>(a.out + (long long)(r0 + lr) * HD);
                    st_bf4(dst, 2 * lane, acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv);
                    st_bf4(dst, 2 * lane + 1, acc[4] * inv, acc[5] * inv, acc[6] * inv, acc[7] * inv);
                }
            }
            merged = true;
        }
    }
    for (int i = warp; i < nmr && !merged; i += NW) {
        const int lr = split + ns * i;
        float m = -INFINITY, l = 0.f;
        if (lane < np) {
            const float *mp, *lp;
            if (push) {
                mp = rml + ((size_t)i * np + lane) * 2;
                lp = mp + 1;
            } else {
                const int j = lane / PK, kk = lane - j * PK;
                mp = Ms + kk * ROWS + lr;
                lp = Ls + kk * ROWS + lr;
                if (ns > 1) {
                    mp = cl.map_shared_rank(mp, j);
                    lp = cl.map_shared_rank(lp, j);
                }
            }
            m = *mp;
            l = *lp;
        }
        float4 acc[CPL];
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) acc[cc] = make_float4(0.f, 0.f, 0.f, 0.f);
        float w = 0.f, den = 0.f;
        for (int p0 = 0; p0 < np; p0 += 16) {
            float4 x[16][CPL];
#pragma unroll
            for (int u = 0; u < 16; u++) {
                const int p = p0 + u;
                if (p < np) {
                    const float *src;
                    if (push) {
                        src = recv + ((size_t)i * np + p) * HD;
                    } else {
                        const int j = p / PK, kk = p - j * PK;
                        src = Op + (kk * ROWS + lr) * OLD;
                        if (ns > 1) src = cl.map_shared_rank(src, j);
                    }
#pragma unroll
                    for (int cc = 0; cc < CPL; cc++)
                        if (lane + 32 * cc < NC4) x[u][cc] = *(const float4 *)(src + (lane + 32 * cc) * 4);
                }
            }
            if (p0 == 0) {
                const float M = warp_max(m);
                w = m == -INFINITY ? 0.f : exp2f(m - M);
                den = warp_sum(w * l);
            }
#pragma unroll
            for (int u = 0; u < 16; u++) {
                const int p = p0 + u;
                if (p < np) {
                    const float wp = __shfl_sync(0xffffffffu, w, p);
#pragma unroll
                    for (int cc = 0; cc < CPL; cc++) {
                        acc[cc].x += wp * x[u][cc].x; acc[cc].y += wp * x[u][cc].y;
                        acc[cc].z += wp * x[u][cc].z; acc[cc].w += wp * x[u][cc].w;
                    }
                }
            }
        }
        const float inv = 1.f / den;
#pragma unroll
        for (int cc = 0; cc < CPL; cc++) {
            const int c4 = lane + 32 * cc;
            if (c4 < NC4) {
                st_bf4(reinterpret_cast<uint16_t *>(a.out + (long long)(r0 + lr) * HD), c4, acc[cc].x * inv,
                       acc[cc].y * inv, acc[cc].z * inv, acc[cc].w * inv);
            }
        }
    }
    /* pull: no CTA may leave while the others still read its shared memory (their loads have completed once
     * they arrive here, so no memory ordering is needed); push: every CTA has received all its rows, so no
     * st.async is in flight when any CTA leaves */
    if (ns > 1 && !push2) mq_cluster_sync_relaxed();
}

/* launcher flags: premerge the key groups of a CTA locally; pad the shared memory so that one CTA holds
 * an SM (else the cluster scheduler may stack two split CTAs on one SM while others idle) */
#define MQ_PREMERGE 1
#define MQ_SPREAD 2
#define MQ_PUSH 4 /* merge by pushing the partials to the owner CTAs (st.async + mbarrier) instead of pulling */
#define MQ_PDL 8  /* programmatic dependent launch (CUK_PDL) */
#define MQ_PUSH2 16 /* push with plain remote stores into a separate receive area, one cluster barrier */
#define MQ_K32 32   /* hd 256, R > 128: 32-key chunks (up to 16 splits: 4 rows per CTA to merge, one round per warp) */
#define MQ_BFPART 128 /* pull merge from bf16 partials (NK = 1, more than one split) */
#define MQ_SPREAD_SMEM ((size_t)116 * 1024)
#define MQ_SMEM_MAX ((size_t)227 * 1024) /* the opt-in maximum per CTA on sm_90 */
#ifdef MQ_DIAG
static int mq_diag = 0;
#else
static const int mq_diag = 0;
#endif
/* one flash configuration: ns key splits (clamped to [1, min(16, chunks)]); cudaErrorInvalidValue when the
 * cluster cannot be scheduled (the caller falls back) */
template <int HD, int NR, int NK, int KC>
static cudaError_t mq_flash_launch(cudaStream_t st, const bf16 *q, int R, const bf16 *k, const bf16 *v, int S,
                                   float scale, int rows_lim, int n_lim, bf16 *out, int ns, int flags) {
    using C = MqCfg<HD, NR, NK, KC>;
    const int premerge = flags & MQ_PREMERGE, spread = (flags & MQ_SPREAD) ? 1 : 0;
    int push = (flags & MQ_PUSH2) ? 2 : (flags & MQ_PUSH) ? 1 : 0;
    const int nch = (S + KC - 1) / KC;
    if (ns > nch) ns = nch;
    if (ns > 16) ns = 16;
    if (ns < 1) ns = 1;
    if (ns * NK > 32) return cudaErrorInvalidValue;
    const int nbuf = (nch + ns - 1) / ns >= 2 ? 2 : 1;
    const size_t recv_bytes = (size_t)((C::ROWS + ns - 1) / ns) * ns * NK * (HD * 4 + 8);
    if (push == 1 && (ns < 2 || recv_bytes > C::main_bytes(nbuf))) push = 0;
    if (push == 2 && (ns < 2 || C::smem_bytes(nbuf) + recv_bytes > MQ_SMEM_MAX)) push = 0;
    size_t sm = C::smem_bytes(nbuf) + (push == 2 ? recv_bytes : 0);
    if (spread && sm < MQ_SPREAD_SMEM) sm = MQ_SPREAD_SMEM;
    static int attr = 0;             /* 1: attributes set, -1: failed */
    static signed char ok[17][2][2][3]; /* cluster schedulable per (ns, nbuf, spread, push): 0 unknown, 1 yes, -1 no */
    if (!attr) {
        const size_t smax = MQ_SMEM_MAX;
        cudaError_t e = cudaFuncSetAttribute(k_mqa_flash<HD, NR, NK, KC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smax);
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(k_mqa_flash<HD, NR, NK, KC>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
        attr = e == cudaSuccess ? 1 : -1;
        if (e != cudaSuccess) (void)cudaGetLastError();
    }
    if (attr < 0) return cudaErrorInvalidValue;
    MqArgs a;
    a.q = q; a.k = k; a.v = v; a.out = out;
    a.R = R; a.S = S; a.rows_lim = rows_lim; a.n_lim = n_lim; a.ns = ns; a.nbuf = nbuf; a.premerge = premerge;
    a.push = push;
    a.sl2 = scale * 1.4426950408889634f;
    a.diag = mq_diag;
    a.bfpart = (flags & MQ_BFPART) && NK == 1 && !push && ns > 1;
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = dim3((unsigned)ns, (unsigned)((R + C::ROWS - 1) / C::ROWS), 1);
    cfg.blockDim = dim3(C::NTH, 1, 1);
    cfg.dynamicSmemBytes = sm;
    cfg.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = (unsigned)ns;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    pdl_attr(at, &cfg.numAttrs, flags & MQ_PDL);
    signed char &okc = ok[ns][nbuf - 1][spread][push];
    if (!okc) {
        int ncl = 0;
        cudaError_t e = cudaOccupancyMaxActiveClusters(&ncl, k_mqa_flash<HD, NR, NK, KC>, &cfg);
        if (e != cudaSuccess) (void)cudaGetLastError();
        okc = e == cudaSuccess && ncl > 0 ? 1 : -1;
    }
    if (okc < 0) return cudaErrorInvalidValue;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k_mqa_flash<HD, NR, NK, KC>, a);
    if (e != cudaSuccess) return e;
    LAUNCH_RET();
}

/* the production choice (dev/cuda/attention_mqa.cu, bench/results/2026-11-24-h100-mqa-v2-playground.txt):
 * 64-row CTAs (4 warps) x 64-key chunks with key splits for about MQ_TARGET_CTAS CTAs (R = 408 / 400, S = 839:
 * 7 tiles x 14 splits); for R <= 128 rows at hd 256 (the H = 10 expert), 16-row CTAs whose 4 warps take a
 * quarter of every chunk each (key groups merged locally), at most 8 splits */
#ifndef MQ_TARGET_CTAS
#define MQ_TARGET_CTAS 112
#endif
static int mq_pick_ns(int R, int S, int rows, int kc) {
    const int tiles = (R + rows - 1) / rows, nch = (S + kc - 1) / kc;
    int ns = (MQ_TARGET_CTAS + tiles / 2) / tiles;
    if (ns > nch) ns = nch;
    if (ns > 16) ns = 16;
    return ns < 1 ? 1 : ns;
}
#define MQ_AUTO(HD_, NR_, NK_, KC_)                                                                               \
    case HD_:                                                                                                   \
        return mq_flash_launch<HD_, NR_, NK_, KC_>(st, q, R, k, v, S, scale, rows_lim, n_lim, out,              \
                                                   mq_pick_ns(R, S, NR_ * 16, KC_), flags)
static cudaError_t mq_flash_auto(cudaStream_t st, const bf16 *q, int R, const bf16 *k, const bf16 *v, int S, int hd,
                                 float scale, int rows_lim, int n_lim, bf16 *out, int flags) {
    if (hd == 256 && R > 128 && (flags & MQ_K32))
        return mq_flash_launch<256, 4, 1, 32>(st, q, R, k, v, S, scale, rows_lim, n_lim, out, mq_pick_ns(R, S, 64, 32),
                                              flags & ~MQ_K32);
    flags &= ~MQ_K32;
    if (hd == 256 && R <= 128) {
        const int nch = (S + 63) / 64;
        return mq_flash_launch<256, 1, 4, 64>(st, q, R, k, v, S, scale, rows_lim, n_lim, out, nch < 8 ? nch : 8,
                                              flags | MQ_PREMERGE);
    }
    switch (hd) {
        MQ_AUTO(256, 4, 1, 64);
        MQ_AUTO(128, 4, 1, 64);
        MQ_AUTO(64, 4, 1, 64);
        MQ_AUTO(32, 4, 1, 64);
        MQ_AUTO(16, 4, 1, 64);
    default: return cudaErrorInvalidValue;
    }
}
#undef MQ_AUTO

cudaError_t cuk_attention_mqa(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                              int hd, float scale, int rows_lim, int n_lim, uint16_t *out, float *part,
                              size_t part_floats, int merge, int tile_rows) {
    if (R <= 0 || S <= 0) return cudaSuccess;
    if (hd % 16 || hd > 256) return cudaErrorInvalidValue;
    const int pdl = tile_rows & CUK_PDL; /* the flash kernel only; the two-kernel fallback launches plainly */
    tile_rows &= ~CUK_PDL;
    if (tile_rows == CUK_MQA_FLASH || tile_rows == CUK_MQA_FLASH_PUSH || tile_rows == CUK_MQA_FLASH_PUSH2 ||
        tile_rows == CUK_MQA_FLASH_K32 || tile_rows == CUK_MQA_FLASH_F32) {
        cudaError_t e = mq_flash_auto(st, (const bf16 *)q, R, (const bf16 *)k, (const bf16 *)v, S, hd, scale,
                                      rows_lim, n_lim, (bf16 *)out,
                                      (tile_rows == CUK_MQA_FLASH_PUSH    ? MQ_PUSH
                                       : tile_rows == CUK_MQA_FLASH_PUSH2 ? MQ_PUSH2
                                       : tile_rows == CUK_MQA_FLASH_K32   ? MQ_K32 | MQ_BFPART
                                       : tile_rows == CUK_MQA_FLASH_F32   ? 0
                                                                          : MQ_BFPART) |
                                          (pdl ? MQ_PDL : 0));
        if (e != cudaErrorInvalidValue) return e;
        tile_rows = 32; /* cluster not schedulable: the two-kernel path */
    }
    if (!part) return cudaErrorInvalidValue;
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
