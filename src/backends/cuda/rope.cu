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

/* The same with 8 rotation pairs per thread (16-byte loads of both halves and of the cos / sin tables): every load of
 * the token issued at once, one memory round trip instead of one per loop trip (hd / 2 % 8 == 0, aligned rows). */
__global__ void __launch_bounds__(256) k_rope_qkv8(const uint16_t *qkv, const float *cs, const float *sn, int pos0,
                                                   int nh, int hd, uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    const int t = blockIdx.x, half = hd / 2, g8 = half / 8, pos = pos0 + t;
    const long long ld = (long long)(nh + 2) * hd;
    const uint16_t *row = qkv + (long long)t * ld;
    const float *c = cs + (long long)pos * half, *s = sn + (long long)pos * half;
    const int nrot = ((qr ? nh : 0) + 1) * g8; /* q heads (unless skipped) then the k head */
    for (int idx = threadIdx.x; idx < nrot + hd / 8; idx += blockDim.x) {
        if (idx >= nrot) { /* v: 8 elements */
            const int i = (idx - nrot) * 8;
            *reinterpret_cast<uint4 *>(vc + (long long)pos * hd + i) =
                *reinterpret_cast<const uint4 *>(row + (long long)(nh + 1) * hd + i);
            continue;
        }
        const int n = idx / g8, i = (idx - n * g8) * 8, head = qr ? n : nh;
        const uint16_t *u = row + (long long)head * hd;
        const uint4 A = *reinterpret_cast<const uint4 *>(u + i), B = *reinterpret_cast<const uint4 *>(u + i + half);
        const float4 c0 = *reinterpret_cast<const float4 *>(c + i), c1 = *reinterpret_cast<const float4 *>(c + i + 4);
        const float4 s0 = *reinterpret_cast<const float4 *>(s + i), s1 = *reinterpret_cast<const float4 *>(s + i + 4);
        const bf16 *a = reinterpret_cast<const bf16 *>(&A), *b = reinterpret_cast<const bf16 *>(&B);
        const float cv[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
        const float sv[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
        __align__(16) bf16 o0[8], o1[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float av = __bfloat162float(a[k]), bv = __bfloat162float(b[k]);
            o0[k] = __float2bfloat16_rn(av * cv[k] - bv * sv[k]);
            o1[k] = __float2bfloat16_rn(bv * cv[k] + av * sv[k]);
        }
        uint16_t *dst = head < nh ? qr + ((long long)t * nh + head) * hd : kc + (long long)pos * hd;
        *reinterpret_cast<uint4 *>(dst + i) = *reinterpret_cast<const uint4 *>(o0);
        *reinterpret_cast<uint4 *>(dst + i + half) = *reinterpret_cast<const uint4 *>(o1);
    }
}

cudaError_t cuk_rope_qkv(cudaStream_t st, const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T,
                         int nh, int hd, uint16_t *qr, uint16_t *kc, uint16_t *vc) {
    if (T <= 0) return cudaSuccess;
    const bool v8 = (hd / 2) % 8 == 0 && (((uintptr_t)qkv | (uintptr_t)cs | (uintptr_t)sn | (uintptr_t)qr |
                                           (uintptr_t)kc | (uintptr_t)vc) & 15) == 0;
    if (v8) k_rope_qkv8<<<T, 256, 0, st>>>(qkv, cs, sn, pos0, nh, hd, qr, kc, vc);
    else k_rope_qkv<<<T, 256, 0, st>>>(qkv, cs, sn, pos0, nh, hd, qr, kc, vc);
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
