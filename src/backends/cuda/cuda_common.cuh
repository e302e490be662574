/* Device helpers shared by the CUDA backend's kernel files (bf16 access, reductions, GELU,
 * mma.sync / cp.async / ldmatrix wrappers). Included by each src/backends/cuda/<op>.cu. */
#ifndef PI0_CUDA_COMMON_CUH
#define PI0_CUDA_COMMON_CUH
#include "backends/cuda/kernels.h"

#include <cuda_bf16.h>
#include <math.h>
#include <string.h>

#include "util/bf16.h"

typedef __nv_bfloat16 bf16;

#define LAUNCH_RET() return cudaGetLastError()

/* Programmatic dependent launch (CUK_PDL): pdl_wait() before reading anything the previous kernel of the
 * stream wrote (a no-op when launched without the attribute); pdl_trigger() lets the next kernel launch. */
static __device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
/* Fill attribute slot at[*n] with the PDL attribute when pdl is set. */
static inline void pdl_attr(cudaLaunchAttribute *at, unsigned *n, int pdl) {
    if (!pdl) return;
    at[*n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[*n].val.programmaticStreamSerializationAllowed = 1;
    (*n)++;
}

static __device__ __forceinline__ float ld_bf(const uint16_t *p, long long i) {
    return __bfloat162float(reinterpret_cast<const bf16 *>(p)[i]);
}
static __device__ __forceinline__ void st_bf(uint16_t *p, long long i, float v) {
    reinterpret_cast<bf16 *>(p)[i] = __float2bfloat16_rn(v);
}

/* four bf16 (rounded from a, b, c, d) as one 8-byte store: elements 4 i4 .. 4 i4 + 3 of p */
static __device__ __forceinline__ void st_bf4(uint16_t *p, long long i4, float a, float b, float c, float d) {
    __align__(8) bf16 o[4] = {__float2bfloat16_rn(a), __float2bfloat16_rn(b), __float2bfloat16_rn(c),
                              __float2bfloat16_rn(d)};
    reinterpret_cast<uint2 *>(p)[i4] = *reinterpret_cast<const uint2 *>(o);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Deterministic block sum (fixed tree); all threads get the result. red: >= 33 floats. */
static __device__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        float t = lane < nw ? red[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) red[32] = t;
    }
    __syncthreads();
    return red[32];
}

static __device__ __forceinline__ float gelu_tanh(float x) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * x * (1.f + tanhf(k0 * (x + k1 * x * x * x)));
}
static float gelu_tanh_h(float x) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * x * (1.f + tanhf(k0 * (x + k1 * x * x * x)));
}

static __device__ __forceinline__ void mma_bf16_16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                      uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem));
}
static __device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
}
static __device__ __forceinline__ void ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3,
                                                   const void *smem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(sa));
}

/* 16 bytes to the shared address sa (zero-filled when !valid; gmem must still be a valid address) */
static __device__ __forceinline__ void cp_async16_zfill_s(unsigned sa, const void *gmem, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(n));
}
/* two floats as a bf16 pair (lo in the low half: the lower column of an mma fragment) */
static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
static __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* mbarrier + bulk-copy (TMA, non-tensor) helpers; bar / dst are shared-memory addresses */
static __device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
static __device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* this thread's arrival, announcing `bytes` of asynchronous copies that complete on bar */
static __device__ __forceinline__ void mbar_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    asm volatile("{\n.reg .pred P1;\nMB_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@!P1 bra MB_WAIT;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
/* bytes (multiple of 16, 16-byte aligned) from global to this CTA's shared memory, counted on bar */
static __device__ __forceinline__ void bulk_g2s(unsigned dst, const void *src, unsigned bytes, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}

#endif
