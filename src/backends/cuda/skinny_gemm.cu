/* Weight-streaming GEMM for few tokens (experimental: PI0_EXP_SKINNY_GEMM) (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- skinny GEMM (T <= 64) ---------------- */
/*
 * Weight-streaming GEMM for few tokens. CTA = 8 warps = 128 output features (16 per warp) x all
 * T tokens x one K chunk of KC. The chunk of X (T x KC) is staged once per CTA in shared memory,
 * each warp streams its 16 x KC weight tile with 16-byte cp.async into shared memory and feeds
 * the tensor cores with ldmatrix (A) and 32-bit LDS (B). Partial sums (split, T, N) f32 are
 * reduced in a fixed order by k_skinny_reduce, which applies the epilogue.
 */
#define SK_WARPS 8
#define SK_PAD 8

template <int NT>
__global__ void __launch_bounds__(SK_WARPS * 32) k_skinny(const uint16_t *__restrict__ X, int ldx, int T,
                                                          const uint16_t *__restrict__ W, int N, int K, int KC,
                                                          float *__restrict__ part) {
    extern __shared__ __align__(16) unsigned char sk_smem[];
    const int ld = KC + SK_PAD; /* smem row pitch in bf16 elements */
    bf16 *Xs = (bf16 *)sk_smem;                        /* NT*8 rows */
    bf16 *Ws = Xs + NT * 8 * ld;                       /* SK_WARPS * 16 rows */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tg = lane & 3;
    const int n_cta = blockIdx.x * (SK_WARPS * 16), split = blockIdx.y, k0 = split * KC;
    const int kc = min(KC, K - k0); /* multiple of 16 */
    const int v16 = kc / 8;         /* 16-byte vectors per row */
    /* X chunk: rows < T copied, rows [T, NT*8) zeroed */
    for (int i = tid; i < NT * 8 * v16; i += SK_WARPS * 32) {
        int r = i / v16, c = i - r * v16;
        bf16 *dst = Xs + r * ld + c * 8;
        if (r < T) cp_async16(dst, X + (long long)r * ldx + k0 + c * 8);
        else *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
    /* this warp's 16 weight rows */
    const int n0 = n_cta + warp * 16;
    bf16 *Wsw = Ws + warp * 16 * ld;
    if (n0 < N)
        for (int i = lane; i < 16 * v16; i += 32) {
            int r = i / v16, c = i - r * v16;
            cp_async16(Wsw + r * ld + c * 8, W + (long long)(n0 + r) * K + k0 + c * 8);
        }
    cp_async_wait_all();
    __syncthreads();
    if (n0 >= N) return;
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
    for (int kk = 0; kk < kc; kk += 16) {
        uint32_t a0, a1, a2, a3;
        ldmatrix_x4(a0, a1, a2, a3, Wsw + arow * ld + kk + acol);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const bf16 *xb = Xs + (nt * 8 + g) * ld + kk + tg * 2;
            uint32_t b0 = *(const uint32_t *)xb, b1 = *(const uint32_t *)(xb + 8);
            mma_bf16_16816(acc[nt], a0, a1, a2, a3, b0, b1);
        }
    }
    float *p = part + (long long)split * T * N;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int t0 = nt * 8 + tg * 2;
        if (t0 < T) {
            p[(long long)t0 * N + n0 + g] = acc[nt][0];
            p[(long long)t0 * N + n0 + g + 8] = acc[nt][2];
        }
        if (t0 + 1 < T) {
            p[(long long)(t0 + 1) * N + n0 + g] = acc[nt][1];
            p[(long long)(t0 + 1) * N + n0 + g + 8] = acc[nt][3];
        }
    }
}

__global__ void k_skinny_reduce(const float *__restrict__ part, int nsplit, int T, int N, int mode, void *out, int ldo) {
    const int No = mode == CUK_SK_GEGLU ? N / 2 : N;
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)T * No) return;
    int t = (int)(idx / No), n = (int)(idx - (long long)t * No);
    const long long sstride = (long long)T * N;
    const float *p = part + (long long)t * N + n;
    float s = 0.f;
    for (int i = 0; i < nsplit; i++) s += p[i * sstride];
    if (mode == CUK_SK_GEGLU) {
        float u = 0.f;
        for (int i = 0; i < nsplit; i++) u += p[i * sstride + No];
        float gb = __bfloat162float(__float2bfloat16_rn(s)), ub = __bfloat162float(__float2bfloat16_rn(u));
        st_bf((uint16_t *)out, (long long)t * ldo + n, gelu_tanh(gb) * ub);
    } else if (mode == CUK_SK_RESID) {
        float *o = (float *)out + (long long)t * ldo + n;
        *o = *o + s;
    } else {
        st_bf((uint16_t *)out, (long long)t * ldo + n, s);
    }
}

static int sk_attr[9];

cudaError_t cuk_skinny_linear(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                              int mode, void *out, int ldo, float *part, size_t part_floats) {
    if (T <= 0) return cudaSuccess;
    if (T > 64 || N % 16 || K % 16 || (ldx % 8) || ((uintptr_t)X & 15) || ((uintptr_t)W & 15) || !part ||
        (mode == CUK_SK_GEGLU && (N / 2) % 16))
        return cudaErrorInvalidValue;
    const int NT = (T + 7) / 8;
    const int ctas_n = (N + SK_WARPS * 16 - 1) / (SK_WARPS * 16);
    /* K chunk: aim at >= ~2 CTAs per SM, chunks of 128..512 */
    int KC = 512;
    while (KC > 128 && (long long)ctas_n * ((K + KC - 1) / KC) < 264) KC /= 2;
    if (KC > K) KC = K;
    int nsplit = (K + KC - 1) / KC;
    while ((size_t)nsplit * T * N > part_floats) {
        if (KC >= K) return cudaErrorInvalidValue;
        KC *= 2;
        nsplit = (K + KC - 1) / KC;
    }
    size_t smem = (size_t)(NT * 8 + SK_WARPS * 16) * (KC + SK_PAD) * 2;
    if (smem > 200 * 1024) return cudaErrorInvalidValue;
    dim3 grid(ctas_n, nsplit);
    cudaError_t e = cudaSuccess;
#define SK_CASE(n)                                                                                             \
    case n:                                                                                                    \
        if (!sk_attr[n]) {                                                                                     \
            e = cudaFuncSetAttribute(k_skinny<n>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);    \
            if (e != cudaSuccess) return e;                                                                    \
            sk_attr[n] = 1;                                                                                    \
        }                                                                                                      \
        k_skinny<n><<<grid, SK_WARPS * 32, smem, st>>>(X, ldx, T, W, N, K, KC, part);                          \
        break;
    switch (NT) {
        SK_CASE(1) SK_CASE(2) SK_CASE(3) SK_CASE(4) SK_CASE(5) SK_CASE(6) SK_CASE(7) SK_CASE(8)
    default: return cudaErrorInvalidValue;
    }
#undef SK_CASE
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    long long no = (long long)T * (mode == CUK_SK_GEGLU ? N / 2 : N);
    k_skinny_reduce<<<(unsigned)((no + 255) / 256), 256, 0, st>>>(part, nsplit, T, N, mode, out, ldo);
    LAUNCH_RET();
}
