/*
 * Playground: how fast can one denoise step's expert weights (18 layers x [QKV 5.2 MB, o 4.2 MB,
 * gate/up 16.8 MB, down 8.4 MB] = 0.62 GB, cold: they rotate through 2 copies > L2) be streamed, and what
 * do the phase boundaries cost? The real step is 0.95 ms in the graph (bench/NOTES.md); the bytes alone
 * are ~0.21 ms at 3 TB/s. Variants, each timed as one CUDA-graph replay per step:
 *   A  72 kernels, one per weight block (what a kernel-per-linear design pays at best)
 *   B  one cooperative kernel per step, grid.sync() after every block (a persistent "megakernel" with
 *      a barrier per phase; 72 barriers per step)
 *   C  one cooperative kernel per step, no barriers (the streaming floor)
 *   D  as B, but each CTA requests the next block's first lines before the barrier (prefetch.global.L2)
 *   E  as B, but the grid requests the whole next block into L2 before the barrier (cp.async.bulk.prefetch.L2)
 *   F  one CTA per SM; each CTA's slice of every block flows through a shared-memory ring (bulk copies on
 *      mbarriers, RING chunks in flight) that runs ahead across the barriers: grid.sync() after every block
 *   G  as F, no barriers (the ring's own floor)
 *   H  as F, and after every barrier each CTA also reads a 104 KB activation (51 x 1024 bf16) from L2, as a
 *      GEMM phase of a persistent expert step would (the activation's read is on the critical path)
 *   I  72 barriers alone (no data); J as I and F, the barrier hierarchical: a cluster barrier, one global
 *      arrival per cluster of 2 or 4 CTAs, a cluster barrier again (fewer atomics on the counter's line)
 * Every kernel sums what it reads into one value per CTA (so no load is dead).
 *
 *   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a dev/cuda/stream_floor.cu -o /tmp/sf && /tmp/sf
 */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

namespace cg = cooperative_groups;

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));          \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define NBLK 72 /* 18 layers x 4 linears */

struct Blocks {
    const uint4 *p[NBLK];
    size_t n[NBLK]; /* uint4 count */
};

static __device__ __forceinline__ unsigned fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

/* read block b with the whole grid */
static __device__ __forceinline__ unsigned read_block(const uint4 *p, size_t n) {
    unsigned acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
        acc ^= fold(a) ^ fold(b) ^ fold(c) ^ fold(d);
    }
    for (; i < n; i += stride) acc ^= fold(__ldcs(p + i));
    return acc;
}

__global__ void k_one(const uint4 *p, size_t n, unsigned *sink) {
    unsigned a = read_block(p, n);
    if (a == 0x12345678u) sink[blockIdx.x] = a;
}

__global__ void k_all(Blocks b, unsigned *sink, int barrier, int prefetch) {
    cg::grid_group grid = cg::this_grid();
    unsigned acc = 0;
    for (int k = 0; k < NBLK; k++) {
        acc ^= read_block(b.p[k], b.n[k]);
        if (barrier) {
            if (prefetch == 1 && k + 1 < NBLK) { /* the next block's first lines of this thread */
                const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
                if (i < b.n[k + 1]) asm volatile("prefetch.global.L2 [%0];" ::"l"(b.p[k + 1] + i));
            }
            if (prefetch == 2 && k + 1 < NBLK && threadIdx.x < 32) { /* the whole next block, this CTA's 1/grid */
                const size_t bytes = b.n[k + 1] * 16, per = (bytes / gridDim.x + 4095) & ~(size_t)4095;
                const size_t lo = (size_t)blockIdx.x * per, hi = lo + per < bytes ? lo + per : bytes;
                for (size_t o = lo + (size_t)threadIdx.x * 4096; o < hi; o += 32 * 4096) {
                    const unsigned len = (unsigned)(hi - o < 4096 ? hi - o : 4096);
                    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((const char *)b.p[k + 1] + o),
                                 "r"(len & ~15u)
                                 : "memory");
                }
            }
            grid.sync();
        }
    }
    if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}

#define CHUNK 16384
#define RING 12
static __device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
static __device__ __forceinline__ void mb_wait(unsigned b, unsigned parity) {
    asm volatile("{\n.reg .pred P1;\nSF_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n@P1 bra SF_DONE;\n"
                 "bra SF_WAIT;\nSF_DONE:\n}\n" ::"r"(b), "r"(parity) : "memory");
}
/* this CTA's slice [lo, hi) of block k, in bytes */
static __device__ __forceinline__ void slice(const Blocks &b, int k, size_t *lo, size_t *hi) {
    const size_t bytes = b.n[k] * 16, per = (bytes / gridDim.x + CHUNK - 1) / CHUNK * CHUNK;
    *lo = (size_t)blockIdx.x * per < bytes ? (size_t)blockIdx.x * per : bytes;
    *hi = *lo + per < bytes ? *lo + per : bytes;
}
/* chunk cursor over this CTA's slices: (block, offset) -> next */
struct Cur { int k; size_t o, hi; };
static __device__ __forceinline__ void cur_first(const Blocks &b, Cur *c) { size_t lo; c->k = 0; slice(b, 0, &lo, &c->hi); c->o = lo; }
static __device__ __forceinline__ void cur_next(const Blocks &b, Cur *c) {
    c->o += CHUNK;
    while (c->k < NBLK && c->o >= c->hi) { if (++c->k < NBLK) { size_t lo; slice(b, c->k, &lo, &c->hi); c->o = lo; } }
}
/* grid barrier: generation counter; only thread 0 of each CTA touches it, with release/acquire atomics and no
 * full fence (a membar.gl may wait for the CTA's bulk copies in flight) */
static __device__ __forceinline__ void bar_sync(unsigned *ctr, unsigned *gen_seen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned target = (*gen_seen + 1) * gridDim.x;
        unsigned v;
        asm volatile("atom.add.release.gpu.u32 %0, [%1], 1;" : "=r"(v) : "l"(ctr) : "memory");
        do { asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory"); } while (v < target);
        *gen_seen += 1;
    }
    __syncthreads();
}
/* hierarchical: cluster barrier, rank 0 of each cluster arrives at the global counter and waits, cluster
 * barrier again */
static __device__ __forceinline__ void bar_sync_cluster(unsigned *ctr, unsigned *gen_seen) {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    unsigned rank, ncl;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(ncl));
    if (rank == 0 && threadIdx.x == 0) {
        const unsigned target = (*gen_seen + 1) * ncl;
        unsigned v;
        asm volatile("atom.add.release.gpu.u32 %0, [%1], 1;" : "=r"(v) : "l"(ctr) : "memory");
        do { asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory"); } while (v < target);
    }
    *gen_seen += 1;
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__global__ void __launch_bounds__(512, 1) k_ring(Blocks b, unsigned *sink, int barrier, const uint4 *act, int act_n,
                                                 int prod, unsigned *ctr, int nring) {
    unsigned gen = 0;
    cg::grid_group grid = cg::this_grid();
    extern __shared__ __align__(128) unsigned char ring[];
    __shared__ __align__(8) unsigned long long full[RING];
    if (threadIdx.x == 0) {
        for (int i = 0; i < RING; i++) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(&full[i])));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    Cur issue, use;
    cur_first(b, &issue);
    cur_first(b, &use);
    long n_issued = 0, n_used = 0;
    if (threadIdx.x == prod) /* fill the ring */
        for (; n_issued < nring && issue.k < NBLK; n_issued++, cur_next(b, &issue)) {
            const unsigned len = (unsigned)(issue.hi - issue.o < CHUNK ? issue.hi - issue.o : CHUNK);
            const unsigned fb = smem_u32(&full[n_issued % nring]);
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(fb), "r"(len) : "memory");
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                             smem_u32(ring + (n_issued % nring) * CHUNK)),
                         "l"((const char *)b.p[issue.k] + issue.o), "r"(len), "r"(fb)
                         : "memory");
        }
    unsigned acc = 0;
    for (int k = 0; k < NBLK; k++) {
        if (act_n && k > 0) /* the phase's activation, from L2 */
            for (int i = threadIdx.x; i < act_n; i += blockDim.x) acc ^= fold(__ldcg(act + i));
        while (use.k == k) {
            const int slot = (int)(n_used % nring);
            mb_wait(smem_u32(&full[slot]), (unsigned)((n_used / nring) & 1));
            const unsigned len = (unsigned)(use.hi - use.o < CHUNK ? use.hi - use.o : CHUNK);
            const uint4 *src = (const uint4 *)(ring + slot * CHUNK);
            for (unsigned i = threadIdx.x; i < len / 16; i += blockDim.x) acc ^= fold(src[i]);
            __syncthreads(); /* the slot is read: refill it */
            n_used++;
            cur_next(b, &use);
            if (threadIdx.x == prod && issue.k < NBLK) {
                const unsigned ilen = (unsigned)(issue.hi - issue.o < CHUNK ? issue.hi - issue.o : CHUNK);
                const unsigned fb = smem_u32(&full[slot]);
                asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(fb), "r"(ilen) : "memory");
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                                 smem_u32(ring + slot * CHUNK)),
                             "l"((const char *)b.p[issue.k] + issue.o), "r"(ilen), "r"(fb)
                             : "memory");
                n_issued++;
                cur_next(b, &issue);
            }
        }
        if (barrier == 1) grid.sync();
        if (barrier == 2) bar_sync(ctr, &gen);
        if (barrier == 3) bar_sync_cluster(ctr, &gen);
    }
    if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}

int main() {
    const size_t mb[4] = {2560 * 1024, 1024 * 2048, 8192 * 1024, 1024 * 4096}; /* elements (bf16) per linear */
    size_t step_bytes = 0;
    for (int i = 0; i < 4; i++) step_bytes += 18 * mb[i] * 2;
    char *buf[2];
    for (int c = 0; c < 2; c++) {
        CK(cudaMalloc(&buf[c], step_bytes));
        CK(cudaMemset(buf[c], c + 1, step_bytes));
    }
    unsigned *sink;
    CK(cudaMalloc(&sink, 1 << 20));
    Blocks B[2];
    for (int c = 0; c < 2; c++) {
        size_t off = 0;
        for (int k = 0; k < NBLK; k++) {
            B[c].p[k] = (const uint4 *)(buf[c] + off);
            B[c].n[k] = mb[k % 4] * 2 / 16;
            off += mb[k % 4] * 2;
        }
    }
    int dev = 0, nsm = 0, occ = 0;
    CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    const int threads = 512;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_all, threads, 0));
    const int grid = nsm * (occ < 2 ? occ : 2);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("%d SMs, grid %d x %d threads, %.1f MB per step, %.1f us at 3.0 TB/s\n", nsm, grid, threads,
           step_bytes / 1e6, step_bytes / 3.0e6);
    const int STEPS = 20; /* steps per graph, alternating the two weight copies */
    uint4 *act;
    CK(cudaMalloc(&act, 51 * 1024 * 2));
    CK(cudaMemset(act, 3, 51 * 1024 * 2));
    CK(cudaFuncSetAttribute(k_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, RING * CHUNK));
    unsigned *ctr;
    CK(cudaMalloc(&ctr, 4 * 64));
    Blocks Z = B[0];
    for (int k = 0; k < NBLK; k++) Z.n[k] = 0;
    for (int v = 0; v < 24; v++) {
        cudaGraph_t gr;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int s = 0; s < STEPS; s++) {
            const Blocks &b = (v == 12) ? Z : B[s & 1];
            if (v == 0) {
                for (int k = 0; k < NBLK; k++) k_one<<<grid, threads, 0, st>>>(b.p[k], b.n[k], sink);
                CK(cudaGetLastError());
            } else if (v >= 20) { /* 20/21: J no data, clusters of 2 / 4; 22/23: J with the ring (F'') */
                const int csz = (v & 1) ? 4 : 2;
                int barrier = 3, act_n = 0, prod = 32, nring = RING;
                const uint4 *ap = act;
                unsigned *cp = ctr + 16 * (s & 1);
                CK(cudaMemsetAsync(cp, 0, 4, st));
                cudaLaunchConfig_t cfg = {};
                cudaLaunchAttribute at[1];
                at[0].id = cudaLaunchAttributeClusterDimension;
                at[0].val.clusterDim.x = csz;
                at[0].val.clusterDim.y = 1;
                at[0].val.clusterDim.z = 1;
                cfg.blockDim = dim3(512);
                cfg.dynamicSmemBytes = RING * CHUNK;
                cfg.stream = st;
                cfg.attrs = at;
                cfg.numAttrs = 1;
                int ncl = 0;
                cfg.gridDim = dim3(csz);
                CK(cudaOccupancyMaxActiveClusters(&ncl, k_ring, &cfg));
                const int g = (ncl * csz < nsm ? ncl * csz : nsm) / csz * csz; /* all resident: the barrier spins */
                if (s == 0) printf("(J: clusters of %d, %d CTAs resident)\n", csz, g);
                cfg.gridDim = dim3(g);
                CK(cudaLaunchKernelEx(&cfg, k_ring, v >= 22 ? b : Z, sink, barrier, ap, act_n, prod, cp, nring));
            } else if (v >= 12) { /* 12: barriers alone; 13..19: F'' with ring depth 2,3,4,6,8,10,12 */
                static const int depth[8] = {12, 2, 3, 4, 6, 8, 10, 12};
                int barrier = 2, act_n = 0, prod = 32, nring = depth[v - 12];
                const uint4 *ap = act;
                unsigned *cp = ctr + 16 * (s & 1);
                CK(cudaMemsetAsync(cp, 0, 4, st));
                void *args[] = {(void *)&b, (void *)&sink, (void *)&barrier, (void *)&ap, (void *)&act_n, (void *)&prod, (void *)&cp, (void *)&nring};
                CK(cudaLaunchCooperativeKernel((void *)k_ring, nsm, 512, args, RING * CHUNK, st));
            } else if (v >= 5) {
                /* 5 F, 6 G, 7 H, 8 F producer warp 1, 9 F own barrier + producer warp 1, 10 H with both, 11 G prod 32 */
                int barrier = (v == 6 || v == 11) ? 0 : (v >= 9 && v <= 10) ? 2 : 1;
                int act_n = (v == 7 || v == 10) ? 51 * 1024 * 2 / 16 : 0, prod = v >= 8 ? 32 : 0;
                const uint4 *ap = act;
                unsigned *cp = ctr + 16 * (s & 1); /* a fresh counter per launch pair: reset below */
                if (barrier == 2) CK(cudaMemsetAsync(cp, 0, 4, st));
                int nring = RING;
                void *args[] = {(void *)&b, (void *)&sink, (void *)&barrier, (void *)&ap, (void *)&act_n, (void *)&prod, (void *)&cp, (void *)&nring};
                CK(cudaLaunchCooperativeKernel((void *)k_ring, nsm, 512, args, RING * CHUNK, st));
            } else {
                int barrier = v != 2, prefetch = v == 3 ? 1 : v == 4 ? 2 : 0;
                void *args[] = {(void *)&b, (void *)&sink, (void *)&barrier, (void *)&prefetch};
                CK(cudaLaunchCooperativeKernel((void *)k_all, grid, threads, args, 0, st));
            }
        }
        CK(cudaStreamEndCapture(st, &gr));
        CK(cudaGraphInstantiate(&ge, gr, 0));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e0, st));
        for (int r = 0; r < 3; r++) CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        const double us = 1e3 * ms / (3 * STEPS);
        static const char *nm[24] = {"A 72 kernels per step", "B 1 kernel, 72 grid barriers", "C 1 kernel, no barriers",
                                    "D as B + next block's first lines to L2", "E as B + whole next block to L2 (bulk)",
                                    "F smem ring ahead, 72 grid barriers", "G smem ring, no barriers",
                                    "H as F + 104 KB activation per phase",
                                    "F' as F, producer = warp 1", "F'' as F', own release/acquire barrier",
                                    "H'' as H, with F'' changes", "G' as G, producer = warp 1", "I 72 own barriers, no data",
              "F'' ring depth 2", "F'' ring depth 3", "F'' ring depth 4", "F'' ring depth 6", "F'' ring depth 8",
              "F'' ring depth 10", "F'' ring depth 12",
              "J 72 cluster-2 barriers, no data", "J 72 cluster-4 barriers, no data",
              "J ring + cluster-2 barriers", "J ring + cluster-4 barriers"};
        printf("%-42s %8.1f us per step  %6.2f TB/s  (%.2f us per block)\n", nm[v], us, step_bytes / us / 1e6,
               us / NBLK);
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(gr));
    }
    return 0;
}
