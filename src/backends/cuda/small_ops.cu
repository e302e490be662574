/* Small f32 matmuls of the action heads and the Euler update (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- small f32 matmul ---------------- */
__global__ void k_small_mm(int M, int N, int K, const float *A, long long sam, long long sak, const float *B,
                           long long sbk, long long sbn, const float *bias, const float *add, int act, void *C,
                           int cdt, int ldc) {
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)M * N) return;
    int m = (int)(idx / N), n = (int)(idx - (long long)m * N);
    float s = 0.f;
    for (int k = 0; k < K; k++) s = fmaf(A[m * sam + k * sak], B[k * sbk + n * sbn], s);
    if (bias) s += bias[n];
    if (add) s += add[n];
    if (act == 1) s = s / (1.f + expf(-s));
    if (cdt == CUK_BF16) st_bf((uint16_t *)C, (long long)m * ldc + n, s);
    else ((float *)C)[(long long)m * ldc + n] = s;
}

cudaError_t cuk_small_mm(cudaStream_t st, int M, int N, int K, const float *A, long long sam, long long sak,
                         const float *B, long long sbk, long long sbn, const float *bias, const float *add, int act,
                         void *C, int cdt, int ldc) {
    long long total = (long long)M * N;
    if (total <= 0) return cudaSuccess;
    k_small_mm<<<(unsigned)((total + 127) / 128), 128, 0, st>>>(M, N, K, A, sam, sak, B, sbk, sbn, bias, add, act, C,
                                                                cdt, ldc);
    LAUNCH_RET();
}

void cuk_small_mm_ref(int M, int N, int K, const float *A, long long sam, long long sak, const float *B,
                      long long sbk, long long sbn, const float *bias, const float *add, int act, void *C, int cdt,
                      int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[m * sam + k * sak] * B[k * sbk + n * sbn];
            if (bias) s += bias[n];
            if (add) s += add[n];
            if (act == 1) s = s / (1.0 + exp(-s));
            if (cdt == CUK_BF16) ((uint16_t *)C)[(size_t)m * ldc + n] = f32_to_bf16((float)s);
            else ((float *)C)[(size_t)m * ldc + n] = (float)s;
        }
}

/* ---------------- Euler ---------------- */
__global__ void k_euler(float *x, const float *v, float dt, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] + dt * v[i];
}
cudaError_t cuk_euler(cudaStream_t st, float *x, const float *v, float dt, int n) {
    if (n <= 0) return cudaSuccess;
    k_euler<<<(n + 255) / 256, 256, 0, st>>>(x, v, dt, n);
    LAUNCH_RET();
}
