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
    for (int v = 0; v < 5; v++) {
        cudaGraph_t gr;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int s = 0; s < STEPS; s++) {
            const Blocks &b = B[s & 1];
            if (v == 0) {
                for (int k = 0; k < NBLK; k++) k_one<<<grid, threads, 0, st>>>(b.p[k], b.n[k], sink);
                CK(cudaGetLastError());
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
        static const char *nm[5] = {"A 72 kernels per step", "B 1 kernel, 72 grid barriers", "C 1 kernel, no barriers",
                                    "D as B + next block's first lines to L2", "E as B + whole next block to L2 (bulk)"};
        printf("%-42s %8.1f us per step  %6.2f TB/s  (%.2f us per block)\n", nm[v], us, step_bytes / us / 1e6,
               us / NBLK);
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(gr));
    }
    return 0;
}
