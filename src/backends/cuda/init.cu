/* Weight conversion and the on-GPU random weights (bit-equal to the host generator) (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- conversion / random init ---------------- */
__global__ void k_convert(const void *src, int sdt, void *dst, int ddt, long long i0, long long n, long long cols,
                          long long ld) {
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x) {
        long long i = i0 + j;
        float v = sdt == CUK_BF16 ? ld_bf((const uint16_t *)src, j) : ((const float *)src)[j];
        long long o = (i / cols) * ld + i % cols;
        if (ddt == CUK_BF16) st_bf((uint16_t *)dst, o, v);
        else ((float *)dst)[o] = v;
    }
}

cudaError_t cuk_convert(cudaStream_t st, const void *src, int sdt, void *dst, int ddt, long long i0, long long n,
                        long long cols, long long ld) {
    if (n <= 0) return cudaSuccess;
    long long blocks = (n + 255) / 256;
    if (blocks > 132 * 64) blocks = 132 * 64;
    k_convert<<<(unsigned)blocks, 256, 0, st>>>(src, sdt, dst, ddt, i0, n, cols, ld);
    LAUNCH_RET();
}

/* Bit-exact port of tensor_table.c mix64 / pi0_random_value (no FMA contraction). */
static __device__ __forceinline__ uint64_t d_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static __device__ float d_random_value(uint64_t seed, uint64_t i, float mean, float std) {
    uint64_t j = i >> 1;
    uint64_t a = d_mix64(seed + 2 * j), b = d_mix64(seed + 2 * j + 1);
    double u1 = __dmul_rn(__dadd_rn((double)(a >> 11), 1.0), (1.0 / 9007199254740993.0));
    double u2 = __dmul_rn((double)(b >> 11), (1.0 / 9007199254740992.0));
    double r = sqrt(__dmul_rn(-2.0, log(u1))), th = __dmul_rn(6.283185307179586, u2);
    double z = (i & 1) ? __dmul_rn(r, sin(th)) : __dmul_rn(r, cos(th));
    return (float)__dadd_rn((double)mean, __dmul_rn((double)std, z));
}

__global__ void k_random(void *dst, int ddt, long long n, long long cols, long long ld, uint64_t seed, float mean,
                         float std) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        /* the host generator stores every tensor in bf16: round to bf16 also for f32 destinations */
        float v = __bfloat162float(__float2bfloat16_rn(d_random_value(seed, (uint64_t)i, mean, std)));
        long long o = (i / cols) * ld + i % cols;
        if (ddt == CUK_BF16) st_bf((uint16_t *)dst, o, v);
        else ((float *)dst)[o] = v;
    }
}

cudaError_t cuk_random(cudaStream_t st, void *dst, int ddt, long long n, long long cols, long long ld,
                       uint64_t tensor_seed, float mean, float std) {
    if (n <= 0) return cudaSuccess;
    long long blocks = (n + 255) / 256;
    if (blocks > 132 * 64) blocks = 132 * 64;
    k_random<<<(unsigned)blocks, 256, 0, st>>>(dst, ddt, n, cols, ld, tensor_seed, mean, std);
    LAUNCH_RET();
}
