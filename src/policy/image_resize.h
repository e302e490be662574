/*
 * Image preprocessing of openpi's policy pipeline (SPEC §10.4, §3.1), on the CPU.
 *
 * pi0_resize_bilinear_u8 reproduces Pillow's Image.resize(..., BILINEAR) on 8-bit images
 * (libImaging/Resample.c): separable two-pass resampling; the triangle filter's support is
 * widened by the downscale factor (antialias); coefficients normalised in double then rounded
 * to 22-bit fixed point; each pass rounds and clips to uint8. Bit-exact with Pillow
 * (tests/policy/test_image_resize.py).
 *
 * The pass order matters (the intermediate image is rounded to uint8). Pillow <= 12.1 (openpi
 * pins 11.2.1) always runs the horizontal pass first; Pillow 13 runs the vertical pass first
 * when the height shrinks by more than twice as many pixels as the width
 * ((h - oh) > 0 and (h - oh) > 2 (w - ow)). PI0_RESIZE_PILLOW11 is the default.
 */
#ifndef PI0_POLICY_IMAGE_RESIZE_H
#define PI0_POLICY_IMAGE_RESIZE_H
#include <stddef.h>
#include <stdint.h>

#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PI0_RESIZE_PILLOW11 = 0, PI0_RESIZE_PILLOW13 } pi0_resize_order;

/* Resize an HWC uint8 image of c channels from (h, w) to (oh, ow). dst must not alias src. */
pi0_status pi0_resize_bilinear_u8(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow);
pi0_status pi0_resize_bilinear_u8_order(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow,
                                        pi0_resize_order order);
/* 1 when the given order runs the vertical pass first for this resize. */
int pi0_resize_vertical_first(int h, int w, int oh, int ow, pi0_resize_order order);

/* The resized size and paste offset of openpi_client.image_tools.resize_with_pad:
 * ratio = max(w/ow, h/oh); rw = int(w/ratio), rh = int(h/ratio) (truncation);
 * offsets int((ow-rw)/2), int((oh-rh)/2). Fails when a side would be 0 (Pillow refuses). */
pi0_status pi0_resize_with_pad_geometry(int h, int w, int oh, int ow, int *rh, int *rw, int *top, int *left);

/* resize_with_pad on an HWC uint8 image with 3 channels: (h, w, 3) -> (oh, ow, 3), black
 * padding. An image already (oh, ow) is copied unchanged. */
pi0_status pi0_resize_with_pad_u8(const uint8_t *src, int h, int w, uint8_t *dst, int oh, int ow);
pi0_status pi0_resize_with_pad_u8_order(const uint8_t *src, int h, int w, uint8_t *dst, int oh, int ow,
                                        pi0_resize_order order);

/* uint8 -> float32 p / 255 * 2 - 1, each step rounded in float32 (as openpi). */
void pi0_image_u8_to_unit(const uint8_t *src, size_t n, float *dst);

#ifdef __cplusplus
}
#endif
#endif
