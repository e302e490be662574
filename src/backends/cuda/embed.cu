/* ViT patch im2col, position embedding add, text token embedding (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- im2col ---------------- */
__global__ void k_im2col(const float *img, uint16_t *out, int S, int p, int ldo, long long total) {
    int g = S / p, K = 3 * p * p;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long row = idx / ldo;
        int col = (int)(idx - row * ldo);
        float v = 0.f;
        if (col < K) {
            int cam = (int)(row / (g * g)), tok = (int)(row % (g * g));
            int pr = tok / g, pc = tok % g;
            int c = col / (p * p), rem = col % (p * p), kh = rem / p, kw = rem % p;
            v = img[(((long long)cam * S + pr * p + kh) * S + pc * p + kw) * 3 + c];
        }
        st_bf(out, idx, v);
    }
}

cudaError_t cuk_im2col(cudaStream_t st, const float *img, uint16_t *out, int ncam, int S, int p, int ldo) {
    int g = S / p;
    long long total = (long long)ncam * g * g * ldo;
    if (total <= 0) return cudaSuccess;
    long long blocks = (total + 255) / 256;
    if (blocks > 132 * 32) blocks = 132 * 32;
    k_im2col<<<(unsigned)blocks, 256, 0, st>>>(img, out, S, p, ldo, total);
    LAUNCH_RET();
}

void cuk_im2col_ref(const float *img, uint16_t *out, int ncam, int S, int p, int ldo) {
    int g = S / p, K = 3 * p * p;
    for (long long row = 0; row < (long long)ncam * g * g; row++)
        for (int col = 0; col < ldo; col++) {
            float v = 0.f;
            if (col < K) {
                int cam = (int)(row / (g * g)), tok = (int)(row % (g * g));
                int pr = tok / g, pc = tok % g;
                int c = col / (p * p), rem = col % (p * p), kh = rem / p, kw = rem % p;
                v = img[(((long long)cam * S + pr * p + kh) * S + pc * p + kw) * 3 + c];
            }
            out[row * ldo + col] = f32_to_bf16(v);
        }
}

/* ---------------- position add ---------------- */
__global__ void k_add_pos(const float *in, const float *pos, float *out, int np, int w, long long total) {
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx / w;
        int c = (int)(idx - r * w);
        out[idx] = in[idx] + pos[(r % np) * w + c];
    }
}

cudaError_t cuk_add_pos(cudaStream_t st, const float *in, const float *pos, float *out, int rows, int np, int w) {
    long long total = (long long)rows * w;
    if (total <= 0) return cudaSuccess;
    long long blocks = (total + 255) / 256;
    if (blocks > 132 * 32) blocks = 132 * 32;
    k_add_pos<<<(unsigned)blocks, 256, 0, st>>>(in, pos, out, np, w, total);
    LAUNCH_RET();
}

void cuk_add_pos_ref(const float *in, const float *pos, float *out, int rows, int np, int w) {
    for (long long r = 0; r < rows; r++)
        for (int c = 0; c < w; c++) out[r * w + c] = in[r * w + c] + pos[(r % np) * w + c];
}

/* ---------------- embedding ---------------- */
__global__ void k_embed(const int32_t *tok, const uint16_t *table, float *out, int d, float scale) {
    int i = blockIdx.x;
    const uint16_t *src = table + (long long)tok[i] * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) out[(long long)i * d + c] = ld_bf(src, c) * scale;
}

cudaError_t cuk_embed(cudaStream_t st, const int32_t *tok, const uint16_t *table, float *out, int n, int d,
                      float scale) {
    if (n <= 0) return cudaSuccess;
    k_embed<<<n, 256, 0, st>>>(tok, table, out, d, scale);
    LAUNCH_RET();
}

void cuk_embed_ref(const int32_t *tok, const uint16_t *table, float *out, int n, int d, float scale) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++)
            out[(size_t)i * d + c] = bf16_to_f32(table[(size_t)tok[i] * d + c]) * scale;
}
