// The CUDA resize-with-pad (src/policy/image_resize_cuda.cu) vs the CPU path: bit-exact float
// outputs over many sizes and both pass orders. Exits 77 (skipped) without a GPU.
#include <cuda_runtime.h>

#include <stdlib.h>
#include <string.h>

extern "C" {
#include "policy/image_resize.h"
#include "policy/image_resize_cuda.h"
#include "test_util.h"
}

static uint32_t rng_state = 12345;
static uint32_t rnd() {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

int main() {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_resize_cuda: no CUDA device, skipped\n");
        return 77;
    }
    const int S = 224;
    int sizes[][2] = {{224, 224}, {480, 640}, {640, 480}, {300, 100}, {100, 300}, {1, 3}, {3, 1}, {720, 1280},
                      {1000, 3},  {7, 500},   {2, 2},     {225, 223}, {96, 96},   {1, 224}, {224, 1}, {2000, 1500}};
    int n_sizes = sizeof sizes / sizeof sizes[0];
    float *d_dst, *h_gpu = (float *)malloc((size_t)S * S * 3 * sizeof(float));
    float *h_cpu = (float *)malloc((size_t)S * S * 3 * sizeof(float));
    uint8_t *cpu_u8 = (uint8_t *)malloc((size_t)S * S * 3);
    cudaMalloc(&d_dst, (size_t)S * S * 3 * sizeof(float));
    int cases = 0, exact = 0;
    for (int t = 0; t < n_sizes + 60; t++) {
        int h = t < n_sizes ? sizes[t][0] : 1 + (int)(rnd() % 900);
        int w = t < n_sizes ? sizes[t][1] : 1 + (int)(rnd() % 900);
        size_t ws = pi0_cuda_resize_workspace_size(h, w, S);
        if (!ws) continue; /* too elongated: the CPU path refuses it too */
        uint8_t *src = (uint8_t *)malloc((size_t)h * w * 3), *d_src;
        for (size_t i = 0; i < (size_t)h * w * 3; i++) src[i] = (t % 3 == 0) ? (uint8_t)((rnd() & 1) * 255) : (uint8_t)rnd();
        void *d_ws;
        cudaMalloc(&d_src, (size_t)h * w * 3);
        cudaMalloc(&d_ws, ws);
        cudaMemcpy(d_src, src, (size_t)h * w * 3, cudaMemcpyHostToDevice);
        for (int order = 0; order < 2; order++) {
            cudaError_t e = pi0_cuda_resize_with_pad_unit(0, d_src, h, w, d_dst, S, (pi0_resize_order)order, d_ws, ws);
            CHECK(e == cudaSuccess, "%dx%d launch: %s", h, w, cudaGetErrorString(e));
            cudaMemcpy(h_gpu, d_dst, (size_t)S * S * 3 * sizeof(float), cudaMemcpyDeviceToHost);
            CHECK(pi0_resize_with_pad_u8_order(src, h, w, cpu_u8, S, S, (pi0_resize_order)order) == PI0_OK, "cpu");
            pi0_image_u8_to_unit(cpu_u8, (size_t)S * S * 3, h_cpu);
            int same = !memcmp(h_gpu, h_cpu, (size_t)S * S * 3 * sizeof(float));
            cases++;
            exact += same;
            CHECK(same, "%dx%d order %d differs from the CPU path", h, w, order);
        }
        CHECK(pi0_cuda_resize_with_pad_unit(0, d_src, h, w, d_dst, S, PI0_RESIZE_PILLOW11, d_ws, ws - 1) ==
                  cudaErrorInvalidValue,
              "small workspace refused");
        cudaFree(d_src);
        cudaFree(d_ws);
        free(src);
    }
    CHECK(pi0_cuda_resize_workspace_size(1, 1000, S) == 0, "elongated refused");
    printf("[resize cuda parity] %d/%d GPU resizes bit-exact vs the CPU path\n", exact, cases);
    cudaFree(d_dst);
    free(h_gpu);
    free(h_cpu);
    free(cpu_u8);
    return test_summary("test_resize_cuda");
}
