/* RoPE on q/k (split halves) with the K/V scatter into the cache (launchers and CPU twins declared in kernels.h). */
#include "backends/cuda/cuda_common.cuh"

/* ---------------- RoPE + KV scatter ---------------- */
__global__ void k_rope_qkv(const uint16_t *qkv, const float *cs, const float *sn, int pos0, int nh, int hd,
                           uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    int t = blockIdx.x, half = hd / 2, pos = pos0 + t;
    const long long ld = (long long)(nh + 2) * hd;
    const uint16_t *row = qkv + (long long)t * ld;
    const float *c = cs + (long long)pos * half, *s = sn + (long long)pos * half;
    int nq = qr ? nh : 0;
    /* q heads then the k head */
    for (int idx = threadIdx.x; idx < (nq + 1) * half; idx += blockDim.x) {
        int n = idx / half, i = idx - n * half;
        int head = qr ? n : nh; /* when q is skipped only the k head (index nh) is done */
        const uint16_t *u = row + (long long)head * hd;
        float a = ld_bf(u, i), b = ld_bf(u, i + half);
        float o0 = a * c[i] - b * s[i], o1 = b * c[i] + a * s[i];
        if (head < nh) {
            uint16_t *dst = qr + ((long long)t * nh + head) * hd;
            st_bf(dst, i, o0);
            st_bf(dst, i + half, o1);
        } else {
            uint16_t *dst = kc + (long long)pos * hd;
            st_bf(dst, i, o0);
            st_bf(dst, i + half, o1);
        }
    }
    const uint16_t *v = row + (long long)(nh + 1) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) vc[(long long)pos * hd + i] = v[i];
}

cudaError_t cuk_rope_qkv(cudaStream_t st, const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T,
                         int nh, int hd, uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    if (T <= 0) return cudaSuccess;
    k_rope_qkv<<<T, 256, 0, st>>>(qkv, cs, sn, pos0, nh, hd, qr, kc, vc);
    LAUNCH_RET();
}

void cuk_rope_qkv_ref(const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T, int nh, int hd,
                      uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    int half = hd / 2;
    for (int t = 0; t < T; t++) {
        int pos = pos0 + t;
        const uint16_t *row = qkv + (size_t)t * (nh + 2) * hd;
        for (int head = qr ? 0 : nh; head <= nh; head++) {
            const uint16_t *u = row + (size_t)head * hd;
            uint16_t *dst = head < nh ? qr + ((size_t)t * nh + head) * hd : kc + (size_t)pos * hd;
            for (int i = 0; i < half; i++) {
                float c = cs[(size_t)pos * half + i], s = sn[(size_t)pos * half + i];
                float a = bf16_to_f32(u[i]), b = bf16_to_f32(u[i + half]);
                dst[i] = f32_to_bf16(a * c - b * s);
                dst[i + half] = f32_to_bf16(b * c + a * s);
            }
        }
        memcpy(vc + (size_t)pos * hd, row + (size_t)(nh + 1) * hd, (size_t)hd * 2);
    }
}
