// CUDA twin of image_resize.c (see image_resize_cuda.h).
#include "policy/image_resize_cuda.h"

#include <math.h>

#define PREC_BITS 22

namespace {

struct Axis {
    int in, out, ksize;
    int *bounds;  // (out, 2): first input index, tap count
    int32_t *kk;  // (out, ksize)
};

// Same double steps as Pillow's precompute_coeffs / normalize_coeffs_8bpc, each explicitly rounded.
__device__ double filter_weight(int x, int xmin, double center, double inv) {
    double t = __dmul_rn(__dadd_rn(__dsub_rn((double)(x + xmin), center), 0.5), inv);
    if (t < 0.0) t = -t;
    return t < 1.0 ? __dsub_rn(1.0, t) : 0.0;
}

__global__ void coeffs_kernel(Axis a) {
    int xx = blockIdx.x * blockDim.x + threadIdx.x;
    if (xx >= a.out) return;
    double scale = __ddiv_rn((double)a.in, (double)a.out);
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filterscale;
    double inv = __ddiv_rn(1.0, filterscale);
    double center = __dadd_rn(0.0, __dmul_rn(__dadd_rn((double)xx, 0.5), scale));
    int xmin = __double2int_rz(__dadd_rn(__dsub_rn(center, support), 0.5));
    if (xmin < 0) xmin = 0;
    int xmax = __double2int_rz(__dadd_rn(__dadd_rn(center, support), 0.5));
    if (xmax > a.in) xmax = a.in;
    xmax -= xmin;
    if (xmax > a.ksize) xmax = a.ksize;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) ww = __dadd_rn(ww, filter_weight(x, xmin, center, inv));
    int32_t *k = a.kk + (size_t)xx * a.ksize;
    for (int x = 0; x < a.ksize; x++) {
        double v = 0.0;
        if (x < xmax) {
            v = filter_weight(x, xmin, center, inv);
            if (ww != 0.0) v = __ddiv_rn(v, ww);
        }
        double f = __dmul_rn(v, (double)(1 << PREC_BITS));
        k[x] = v < 0 ? __double2int_rz(__dadd_rn(-0.5, f)) : __double2int_rz(__dadd_rn(0.5, f));
    }
    a.bounds[2 * xx] = xmin;
    a.bounds[2 * xx + 1] = xmax;
}

__device__ __forceinline__ uint8_t clip8(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= PREC_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

// Horizontal pass: (rows, w, 3) -> (rows, ow, 3).
__global__ void hpass_kernel(const uint8_t *src, int rows, int w, uint8_t *dst, Axis a) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)rows * a.out * 3;
    if (i >= n) return;
    int ch = (int)(i % 3), xx = (int)((i / 3) % a.out);
    size_t y = i / (3 * (size_t)a.out);
    int xmin = a.bounds[2 * xx], taps = a.bounds[2 * xx + 1];
    const int32_t *k = a.kk + (size_t)xx * a.ksize;
    const uint8_t *line = src + y * w * 3;
    int32_t ss = 1 << (PREC_BITS - 1);
    for (int x = 0; x < taps; x++) ss += line[(size_t)(x + xmin) * 3 + ch] * k[x];
    dst[i] = clip8(ss);
}

// Vertical pass: (h, w, 3) -> (oh, w, 3).
__global__ void vpass_kernel(const uint8_t *src, int w, uint8_t *dst, Axis a) {
    size_t stride = (size_t)w * 3;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)a.out * stride) return;
    int yy = (int)(i / stride);
    size_t col = i % stride;
    int ymin = a.bounds[2 * yy], taps = a.bounds[2 * yy + 1];
    const int32_t *k = a.kk + (size_t)yy * a.ksize;
    int32_t ss = 1 << (PREC_BITS - 1);
    for (int y = 0; y < taps; y++) ss += src[(size_t)(y + ymin) * stride + col] * k[y];
    dst[i] = clip8(ss);
}

// Paste the (rh, rw, 3) image at (top, left) of a black (S, S, 3) canvas and scale to [-1, 1].
__global__ void pad_unit_kernel(const uint8_t *img, int rh, int rw, int top, int left, float *dst, int S) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)S * S * 3) return;
    int ch = (int)(i % 3), x = (int)((i / 3) % S), y = (int)(i / (3 * (size_t)S));
    int p = 0;
    if (y >= top && y < top + rh && x >= left && x < left + rw) p = img[((size_t)(y - top) * rw + (x - left)) * 3 + ch];
    dst[i] = __fsub_rn(__fmul_rn(__fdiv_rn((float)p, 255.0f), 2.0f), 1.0f);
}

int host_ksize(int in, int out) {
    double scale = (double)in / out;
    double fs = scale < 1.0 ? 1.0 : scale;
    return (int)ceil(fs) * 2 + 1;
}

size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

struct Plan {
    int rh, rw, top, left;
    Axis v, h;
    size_t off_bv, off_kv, off_bh, off_kh, off_tmp, off_res, total;
};

int make_plan(int h, int w, int S, Plan *p) {
    if (pi0_resize_with_pad_geometry(h, w, S, S, &p->rh, &p->rw, &p->top, &p->left) != PI0_OK) return 0;
    p->v = Axis{h, p->rh, host_ksize(h, p->rh), nullptr, nullptr};
    p->h = Axis{w, p->rw, host_ksize(w, p->rw), nullptr, nullptr};
    size_t o = 0;
    p->off_bv = o, o += align256(sizeof(int) * 2 * p->rh);
    p->off_kv = o, o += align256(sizeof(int32_t) * (size_t)p->rh * p->v.ksize);
    p->off_bh = o, o += align256(sizeof(int) * 2 * p->rw);
    p->off_kh = o, o += align256(sizeof(int32_t) * (size_t)p->rw * p->h.ksize);
    size_t tmp = (size_t)h * p->rw * 3, tmp2 = (size_t)p->rh * w * 3;
    p->off_tmp = o, o += align256(tmp > tmp2 ? tmp : tmp2);
    p->off_res = o, o += align256((size_t)p->rh * p->rw * 3);
    p->total = o;
    return 1;
}

unsigned blocks(size_t n, unsigned t) { return (unsigned)((n + t - 1) / t); }

}  // namespace

extern "C" size_t pi0_cuda_resize_workspace_size(int h, int w, int S) {
    Plan p;
    return make_plan(h, w, S, &p) ? p.total : 0;
}

extern "C" cudaError_t pi0_cuda_resize_with_pad_unit(cudaStream_t st, const uint8_t *d_src, int h, int w, float *d_dst,
                                                     int S, pi0_resize_order order, void *d_ws, size_t ws_size) {
    Plan p;
    if (!d_src || !d_dst || S <= 0 || !make_plan(h, w, S, &p) || (p.total > ws_size) || !d_ws) return cudaErrorInvalidValue;
    uint8_t *ws = static_cast<uint8_t *>(d_ws);
    p.v.bounds = reinterpret_cast<int *>(ws + p.off_bv);
    p.v.kk = reinterpret_cast<int32_t *>(ws + p.off_kv);
    p.h.bounds = reinterpret_cast<int *>(ws + p.off_bh);
    p.h.kk = reinterpret_cast<int32_t *>(ws + p.off_kh);
    uint8_t *tmp = ws + p.off_tmp, *res = ws + p.off_res;
    const unsigned T = 256;
    bool need_h = p.rw != w, need_v = p.rh != h;
    const uint8_t *img = d_src;
    if (need_h) coeffs_kernel<<<blocks(p.rw, 64), 64, 0, st>>>(p.h);
    if (need_v) coeffs_kernel<<<blocks(p.rh, 64), 64, 0, st>>>(p.v);
    if (need_h && need_v) {
        if (pi0_resize_vertical_first(h, w, p.rh, p.rw, order)) {
            vpass_kernel<<<blocks((size_t)p.rh * w * 3, T), T, 0, st>>>(d_src, w, tmp, p.v);
            hpass_kernel<<<blocks((size_t)p.rh * p.rw * 3, T), T, 0, st>>>(tmp, p.rh, w, res, p.h);
        } else {
            hpass_kernel<<<blocks((size_t)h * p.rw * 3, T), T, 0, st>>>(d_src, h, w, tmp, p.h);
            vpass_kernel<<<blocks((size_t)p.rh * p.rw * 3, T), T, 0, st>>>(tmp, p.rw, res, p.v);
        }
        img = res;
    } else if (need_h) {
        hpass_kernel<<<blocks((size_t)h * p.rw * 3, T), T, 0, st>>>(d_src, h, w, res, p.h);
        img = res;
    } else if (need_v) {
        vpass_kernel<<<blocks((size_t)p.rh * w * 3, T), T, 0, st>>>(d_src, w, res, p.v);
        img = res;
    }
    pad_unit_kernel<<<blocks((size_t)S * S * 3, T), T, 0, st>>>(img, p.rh, p.rw, p.top, p.left, d_dst, S);
    return cudaGetLastError();
}
