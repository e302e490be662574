/* CPU ops and shared math against direct definitions (SPEC §1.5, §6.2, §7). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_ops.h"
#include "model/pi0_math.h"
#include "model/tensor_table.h"
#include "test_util.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

int main(void) {
    /* SPEC §7: the f32 time values of the 10-step schedule. */
    const uint32_t want[10] = {0x3f800000, 0x3f666666, 0x3f4ccccc, 0x3f333332, 0x3f199998,
                               0x3efffffd, 0x3eccccca, 0x3e999997, 0x3e4cccc8, 0x3dccccc3};
    float ts[10];
    pi0_time_schedule(10, ts);
    for (int k = 0; k < 10; k++) CHECK(bits(ts[k]) == want[k], "t[%d] = %08x, expected %08x", k, bits(ts[k]), want[k]);

    /* time embedding: sines then cosines; at t = 0 sin = 0, cos = 1 */
    float te[1024];
    pi0_time_embedding(0.f, 1024, te);
    CHECK(te[0] == 0.f && te[511] == 0.f && te[512] == 1.f && te[1023] == 1.f, "t=0 embedding");
    pi0_time_embedding(1.f, 1024, te);
    CHECK(fabsf(te[511] - (float)sin(2 * M_PI / 4.0)) < 1e-6f, "lowest frequency: period 4");
    CHECK(fabsf(te[0] - (float)sin(2 * M_PI / 4e-3)) < 1e-6f, "highest frequency: period 4e-3");

    /* random stream: deterministic, seed- and name-dependent, ~N(mean, std) */
    uint64_t s1 = pi0_spec_seed(1, "a"), s2 = pi0_spec_seed(1, "b"), s3 = pi0_spec_seed(2, "a");
    CHECK(s1 != s2 && s1 != s3, "tensor seeds differ");
    CHECK(pi0_random_value(s1, 5, 0, 1) == pi0_random_value(s1, 5, 0, 1), "deterministic");
    double sum = 0, sq = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double z = pi0_random_value(s1, (uint64_t)i, 1.f, 0.5f);
        sum += z;
        sq += z * z;
    }
    double mean = sum / n, var = sq / n - mean * mean;
    CHECK(fabs(mean - 1.0) < 0.01 && fabs(sqrt(var) - 0.5) < 0.01, "mean %.4f std %.4f", mean, sqrt(var));

    /* GEMM C = A B^T against a loop */
    cpu_ctx ctx = {.n_threads = 2};
    enum { M = 7, N = 5, K = 9 };
    float A[M * K], B[N * K], C[M * N];
    for (int i = 0; i < M * K; i++) A[i] = (float)((i * 37 % 11) - 5) / 3.f;
    for (int i = 0; i < N * K; i++) B[i] = (float)((i * 17 % 13) - 6) / 4.f;
    cpu_gemm_nt(&ctx, A, B, C, M, N, K, 0);
    double err = 0;
    for (int m = 0; m < M; m++)
        for (int j = 0; j < N; j++) {
            double r = 0;
            for (int k = 0; k < K; k++) r += (double)A[m * K + k] * B[j * K + k];
            err = fmax(err, fabs(r - C[m * N + j]));
        }
    CHECK(err < 1e-4, "gemm err %g", err);

    /* attention with a per-query key limit: query 0 sees 1 key -> output = v[0] */
    enum { T = 2, S = 3, HD = 4 };
    float q[T * HD], k[S * HD], v[S * HD], out[T * HD], scores[T * S];
    for (int i = 0; i < T * HD; i++) q[i] = (float)(i % 3) - 1.f;
    for (int i = 0; i < S * HD; i++) k[i] = (float)(i % 5) - 2.f, v[i] = (float)i;
    int nkeys[T] = {1, 3};
    CHECK(cpu_attention(&ctx, q, k, v, T, S, 1, 1, HD, 0.5f, nkeys, scores, out) == PI0_OK, "attention");
    CHECK(!memcmp(out, v, HD * sizeof(float)), "masked query sees only key 0");
    double w[S], z = 0;
    for (int s = 0; s < S; s++) {
        double d = 0;
        for (int i = 0; i < HD; i++) d += q[HD + i] * k[s * HD + i] * 0.5;
        w[s] = exp(d);
        z += w[s];
    }
    err = 0;
    for (int i = 0; i < HD; i++) {
        double r = 0;
        for (int s = 0; s < S; s++) r += w[s] / z * v[s * HD + i];
        err = fmax(err, fabs(r - out[HD + i]));
    }
    CHECK(err < 1e-5, "attention err %g", err);

    /* RoPE at position 0 is the identity; it preserves each pair's norm */
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, x0[8];
    memcpy(x0, x, sizeof x);
    int p0 = 0, p7 = 7;
    cpu_rope(x, 1, 1, 8, &p0);
    CHECK(!memcmp(x, x0, sizeof x), "rope at 0");
    cpu_rope(x, 1, 1, 8, &p7);
    for (int i = 0; i < 4; i++)
        CHECK(fabsf(hypotf(x[i], x[i + 4]) - hypotf(x0[i], x0[i + 4])) < 1e-5f, "rope pair %d norm", i);
    CHECK(fabsf(x[0] - (float)(cos(7.0) * 1 - sin(7.0) * 5)) < 1e-5f, "rope dim 0");

    /* GELU tanh */
    CHECK(cpu_gelu_tanh(0.f) == 0.f && fabsf(cpu_gelu_tanh(1.f) - 0.8411920f) < 1e-6f, "gelu(1) = %.7f", cpu_gelu_tanh(1.f));
    return test_summary("test_cpu_ops");
}
