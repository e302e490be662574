/* Pillow-exact BILINEAR resize, openpi's resize_with_pad, and the [-1, 1] pixel scaling. */
#include "policy/image_resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

#define PREC_BITS 22 /* 32 - 8 bits of result - 2 bits of headroom, as Pillow */

/* Pillow's triangle filter, support 1. */
static double bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Per output index: first input index, tap count, and ksize fixed-point weights.
 * The floating-point steps are Pillow's, in the same order (the source box is (0, in_size)
 * as float, the scale in double). */
static int coeffs(int in_size, int out_size, int **bounds_out, int32_t **kk_out) {
    const float in0 = 0.f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc((size_t)ksize * sizeof *w);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    int32_t *kk = malloc((size_t)out_size * ksize * sizeof *kk);
    if (!w || !bounds || !kk) {
        free(w);
        free(bounds);
        free(kk);
        return 0;
    }
    double inv = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize; /* cannot happen; keeps the writes in bounds */
        for (int x = 0; x < xmax; x++) {
            w[x] = bilinear((x + xmin - center + 0.5) * inv);
            ww += w[x];
        }
        int32_t *k = kk + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PREC_BITS)) : (int32_t)(0.5 + v * (1 << PREC_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(w);
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= PREC_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

/* Horizontal pass over rows [0, rows) of src (width w) into dst (width ow). */
static void hpass(const uint8_t *src, int rows, int w, int c, uint8_t *dst, int ow, const int *b, const int32_t *kk,
                  int ks) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *line = src + (size_t)y * w * c;
        uint8_t *out = dst + (size_t)y * ow * c;
        for (int xx = 0; xx < ow; xx++) {
            int xmin = b[2 * xx], n = b[2 * xx + 1];
            const int32_t *k = kk + (size_t)xx * ks;
            for (int ch = 0; ch < c; ch++) {
                int32_t ss = 1 << (PREC_BITS - 1);
                for (int x = 0; x < n; x++) ss += line[(size_t)(x + xmin) * c + ch] * k[x];
                out[(size_t)xx * c + ch] = clip8(ss);
            }
        }
    }
}

/* Vertical pass: dst row yy mixes src rows b[2yy] - row0 ...; rows are w * c bytes. */
static void vpass(const uint8_t *src, int w, int c, int row0, uint8_t *dst, int oh, const int *b, const int32_t *kk,
                  int ks) {
    size_t stride = (size_t)w * c;
    for (int yy = 0; yy < oh; yy++) {
        int ymin = b[2 * yy] - row0, n = b[2 * yy + 1];
        const int32_t *k = kk + (size_t)yy * ks;
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int32_t ss = 1 << (PREC_BITS - 1);
            for (int y = 0; y < n; y++) ss += src[(size_t)(y + ymin) * stride + i] * k[y];
            out[i] = clip8(ss);
        }
    }
}

int pi0_resize_vertical_first(int h, int w, int oh, int ow, pi0_resize_order order) {
    if (order != PI0_RESIZE_PILLOW13) return 0;
    return (h - oh) > 0 && (h - oh) > (w - ow) * 2;
}

pi0_status pi0_resize_bilinear_u8_order(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow,
                                        pi0_resize_order order) {
    if (!src || !dst || h <= 0 || w <= 0 || c <= 0 || oh <= 0 || ow <= 0)
        return pi0_fail(PI0_ERR_INVALID_ARG, "resize: bad size (%d, %d, %d) -> (%d, %d)", h, w, c, oh, ow);
    int need_h = ow != w, need_v = oh != h;
    if (!need_h || !need_v) { /* one pass (or a copy): no order question */
        if (!need_h && !need_v) {
            memcpy(dst, src, (size_t)h * w * c);
            return PI0_OK;
        }
        int *b;
        int32_t *kk;
        int ks = need_h ? coeffs(w, ow, &b, &kk) : coeffs(h, oh, &b, &kk);
        if (!ks) return pi0_fail(PI0_ERR_OOM, "resize: out of memory");
        if (need_h) hpass(src, h, w, c, dst, ow, b, kk, ks);
        else vpass(src, w, c, 0, dst, oh, b, kk, ks);
        free(b);
        free(kk);
        return PI0_OK;
    }
    int *bv = NULL, *bh = NULL;
    int32_t *kv = NULL, *kh = NULL;
    uint8_t *tmp = NULL;
    int ksv = coeffs(h, oh, &bv, &kv), ksh = ksv ? coeffs(w, ow, &bh, &kh) : 0;
    pi0_status st = PI0_OK;
    if (!ksv || !ksh) {
        st = pi0_fail(PI0_ERR_OOM, "resize: out of memory");
    } else if (!pi0_resize_vertical_first(h, w, oh, ow, order)) {
        /* Pillow: horizontal pass over the source rows the vertical pass reads, then vertical */
        int y_first = bv[0], y_last = bv[2 * (oh - 1)] + bv[2 * (oh - 1) + 1];
        tmp = malloc((size_t)(y_last - y_first) * ow * c);
        if (!tmp) st = pi0_fail(PI0_ERR_OOM, "resize: out of memory");
        else {
            hpass(src + (size_t)y_first * w * c, y_last - y_first, w, c, tmp, ow, bh, kh, ksh);
            vpass(tmp, ow, c, y_first, dst, oh, bv, kv, ksv);
        }
    } else {
        tmp = malloc((size_t)oh * w * c);
        if (!tmp) st = pi0_fail(PI0_ERR_OOM, "resize: out of memory");
        else {
            vpass(src, w, c, 0, tmp, oh, bv, kv, ksv);
            hpass(tmp, oh, w, c, dst, ow, bh, kh, ksh);
        }
    }
    free(bv);
    free(kv);
    free(bh);
    free(kh);
    free(tmp);
    return st;
}

pi0_status pi0_resize_bilinear_u8(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow) {
    return pi0_resize_bilinear_u8_order(src, h, w, c, dst, oh, ow, PI0_RESIZE_PILLOW11);
}

pi0_status pi0_resize_with_pad_geometry(int h, int w, int oh, int ow, int *rh, int *rw, int *top, int *left) {
    if (h <= 0 || w <= 0) return pi0_fail(PI0_ERR_INVALID_ARG, "image has an empty size %dx%d", h, w);
    if (h == oh && w == ow) {
        *rh = h, *rw = w, *top = 0, *left = 0;
        return PI0_OK;
    }
    double rx = (double)w / ow, ry = (double)h / oh;
    double ratio = rx >= ry ? rx : ry;
    double fh = h / ratio, fw = w / ratio;
    *rh = fh >= oh ? oh : (int)fh;
    *rw = fw >= ow ? ow : (int)fw;
    if (*rh <= 0 || *rw <= 0)
        return pi0_fail(PI0_ERR_INVALID_ARG,
                        "image of %dx%d (HxW) is too elongated: resize_with_pad to %dx%d would make it %dx%d", h, w, oh,
                        ow, *rh, *rw);
    int ph = (int)((oh - *rh) / 2.0), pw = (int)((ow - *rw) / 2.0);
    *top = ph > 0 ? ph : 0;
    *left = pw > 0 ? pw : 0;
    return PI0_OK;
}

pi0_status pi0_resize_with_pad_u8_order(const uint8_t *src, int h, int w, uint8_t *dst, int oh, int ow,
                                        pi0_resize_order order) {
    int rh, rw, top, left;
    PI0_TRY(pi0_resize_with_pad_geometry(h, w, oh, ow, &rh, &rw, &top, &left));
    if (rh == h && rw == w && rh == oh && rw == ow) {
        memcpy(dst, src, (size_t)h * w * 3);
        return PI0_OK;
    }
    uint8_t *r = malloc((size_t)rh * rw * 3);
    if (!r) return pi0_fail(PI0_ERR_OOM, "resize: out of memory");
    pi0_status st = pi0_resize_bilinear_u8_order(src, h, w, 3, r, rh, rw, order);
    if (st == PI0_OK) {
        memset(dst, 0, (size_t)oh * ow * 3);
        for (int y = 0; y < rh; y++) memcpy(dst + ((size_t)(y + top) * ow + left) * 3, r + (size_t)y * rw * 3, (size_t)rw * 3);
    }
    free(r);
    return st;
}

pi0_status pi0_resize_with_pad_u8(const uint8_t *src, int h, int w, uint8_t *dst, int oh, int ow) {
    return pi0_resize_with_pad_u8_order(src, h, w, dst, oh, ow, PI0_RESIZE_PILLOW11);
}

void pi0_image_u8_to_unit(const uint8_t *src, size_t n, float *dst) {
    float lut[256];
    for (int p = 0; p < 256; p++) {
        volatile float v = (float)p / 255.0f; /* one f32 rounding per step, no contraction */
        volatile float v2 = v * 2.0f;
        lut[p] = v2 - 1.0f;
    }
    for (size_t i = 0; i < n; i++) dst[i] = lut[src[i]];
}
