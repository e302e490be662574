/* Row softmax in f32 for the cuBLASLt attention path (finite, limited rows) (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- softmax ---------------- */
/* rows r < rows_lim see only the first n_lim columns (the rest of their row is written as 0) */
__global__ void k_softmax(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n, int rows_lim, int n_lim) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int nn = r < rows_lim ? n_lim : n;
    const float *lr = l + (long long)r * ld_l;
    float m = -INFINITY;
    for (int i = lane; i < nn; i += 32) m = fmaxf(m, lr[i]);
    m = warp_max(m);
    float s = 0.f;
    for (int i = lane; i < nn; i += 32) s += __expf(lr[i] - m);
    s = warp_sum(s);
    float inv = 1.f / s;
    uint16_t *pr = p + (long long)r * ld_p;
    for (int i = lane; i < nn; i += 32) st_bf(pr, i, __expf(lr[i] - m) * inv);
    for (int i = nn + lane; i < n; i += 32) pr[i] = 0;
}

/* one pass over the logits: a warp keeps its row (n <= 32 * NPL) in registers */
template <int NPL>
__global__ void k_softmax_reg(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n, int rows_lim,
                              int n_lim) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int nn = r < rows_lim ? n_lim : n;
    const float *lr = l + (long long)r * ld_l;
    float v[NPL];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        v[j] = i < nn ? lr[i] : -INFINITY;
        m = fmaxf(m, v[j]);
    }
    m = warp_max(m);
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        v[j] = i < nn ? __expf(v[j] - m) : 0.f;
        s += v[j];
    }
    s = warp_sum(s);
    float inv = 1.f / s;
    uint16_t *pr = p + (long long)r * ld_p;
#pragma unroll
    for (int j = 0; j < NPL; j++) {
        int i = lane + 32 * j;
        if (i < n) st_bf(pr, i, v[j] * inv); /* v = 0 for [nn, n) */
    }
}

cudaError_t cuk_softmax_lim(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n,
                            int rows_lim, int n_lim) {
    if (rows <= 0) return cudaSuccess;
    int wpb = 8;
    unsigned blocks = (unsigned)((rows + wpb - 1) / wpb);
    if (n <= 256) k_softmax_reg<8><<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    else if (n <= 1024) k_softmax_reg<32><<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    else k_softmax<<<blocks, 32 * wpb, 0, st>>>(l, ld_l, p, ld_p, rows, n, rows_lim, n_lim);
    LAUNCH_RET();
}

cudaError_t cuk_softmax(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    return cuk_softmax_lim(st, l, ld_l, p, ld_p, rows, n, 0, n);
}

void cuk_softmax_ref(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        const float *lr = l + (size_t)r * ld_l;
        float m = -INFINITY;
        for (int i = 0; i < n; i++) m = lr[i] > m ? lr[i] : m;
        double s = 0;
        for (int i = 0; i < n; i++) s += exp((double)lr[i] - m);
        for (int i = 0; i < n; i++) p[(size_t)r * ld_p + i] = f32_to_bf16((float)(exp((double)lr[i] - m) / s));
    }
}
