/*
 * CUDA twin of image_resize.c: openpi's resize_with_pad (Pillow BILINEAR, either pass order)
 * fused with the uint8 -> [-1, 1] float conversion, on the device. Bit-exact with the CPU path:
 * the filter coefficients are computed on the device with explicitly rounded IEEE double
 * operations (no contraction, whatever the compile flags), the passes in integer arithmetic.
 */
#ifndef PI0_POLICY_IMAGE_RESIZE_CUDA_H
#define PI0_POLICY_IMAGE_RESIZE_CUDA_H
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "policy/image_resize.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device workspace bytes for an (h, w) image resized with pad to (S, S). 0 if the image cannot be
 * resized (a side would become 0, as Pillow refuses). */
size_t pi0_cuda_resize_workspace_size(int h, int w, int S);

/* d_src: (h, w, 3) uint8 HWC on the device; d_dst: (S, S, 3) float32 in [-1, 1] on the device
 * (black padding -> -1). Asynchronous on stream; d_ws: workspace of the size above. Returns
 * cudaErrorInvalidValue for bad sizes or a too small workspace, else the launch status. */
cudaError_t pi0_cuda_resize_with_pad_unit(cudaStream_t stream, const uint8_t *d_src, int h, int w, float *d_dst, int S,
                                          pi0_resize_order order, void *d_ws, size_t ws_size);

#ifdef __cplusplus
}
#endif
#endif
