/* GeGLU: gelu_tanh(gate) * up (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- GeGLU ---------------- */
__global__ void k_geglu(const uint16_t *in, uint16_t *out, long long total, int F) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long t = idx / F, f = idx - t * F;
        const uint16_t *row = in + t * 2 * F;
        st_bf(out, idx, gelu_tanh(ld_bf(row, f)) * ld_bf(row, F + f));
    }
}
/* vectorised: F % 8 == 0, 8 bf16 per thread */
__global__ void k_geglu8(const uint4 *in, uint4 *out, long long total8, int F8) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total8;
         idx += (long long)gridDim.x * blockDim.x) {
        long long t = idx / F8, f = idx - t * F8;
        uint4 g = in[t * 2 * F8 + f], u = in[t * 2 * F8 + F8 + f];
        const bf16 *gb = reinterpret_cast<const bf16 *>(&g), *ub = reinterpret_cast<const bf16 *>(&u);
        uint4 o;
        bf16 *ob = reinterpret_cast<bf16 *>(&o);
#pragma unroll
        for (int j = 0; j < 8; j++) ob[j] = __float2bfloat16_rn(gelu_tanh(__bfloat162float(gb[j])) * __bfloat162float(ub[j]));
        out[idx] = o;
    }
}

cudaError_t cuk_geglu(cudaStream_t st, const uint16_t *in, uint16_t *out, int T, int F) {
    if (T <= 0) return cudaSuccess;
    if (F % 8 == 0 && ((uintptr_t)in & 15) == 0 && ((uintptr_t)out & 15) == 0) {
        long long total8 = (long long)T * F / 8;
        long long blocks = (total8 + 255) / 256;
        if (blocks > 132 * 16) blocks = 132 * 16;
        k_geglu8<<<(unsigned)blocks, 256, 0, st>>>((const uint4 *)in, (uint4 *)out, total8, F / 8);
    } else {
        long long total = (long long)T * F;
        long long blocks = (total + 255) / 256;
        if (blocks > 132 * 16) blocks = 132 * 16;
        k_geglu<<<(unsigned)blocks, 256, 0, st>>>(in, out, total, F);
    }
    LAUNCH_RET();
}

void cuk_geglu_ref(const uint16_t *in, uint16_t *out, int T, int F) {
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            float g = bf16_to_f32(in[(size_t)t * 2 * F + f]), u = bf16_to_f32(in[(size_t)t * 2 * F + F + f]);
            out[(size_t)t * F + f] = f32_to_bf16(gelu_tanh_h(g) * u);
        }
}
