/*
 * Playground: the action expert's few-token linears (T = 51) — cuBLASLt (pi0_linear, what the
 * backend uses) against cuk_skinny_linear (the packed-weight wgmma kernel for every (BN, cluster split) pair;
 * k_skinny2 too with SKINNY_ALL=1) on the
 * exact shapes, with a cold L2 (the weights rotate through > 200 MB of copies, as in the real
 * 18-layer sweep) and launches captured in a CUDA graph (as in the real run). Each variant is
 * checked against the cuBLASLt result first (rel L2).
 *
 *   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --use_fast_math -Isrc -Iinclude dev/cuda/skinny.cu \
 *        src/backends/cuda/skinny_gemm.cu src/backends/cuda/geglu.cu src/backends/cuda/rope.cu src/backends/cuda/norms.cu \
 *        src/backends/cuda/gemm.cu src/util/error.c -lcublasLt -o /tmp/skinny && /tmp/skinny
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <vector>

#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "util/bf16.h"

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));          \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static uint64_t rs = 88172645463325252ull;
static float nr() {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    double u1 = ((rs >> 11) + 0.5) / 9007199254740992.0;
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    double u2 = ((rs >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

struct shape { const char *name; int T, N, K, mode; };

/* out values as doubles (bf16 or f32) */
static std::vector<double> fetch(const void *d, size_t n, int f32) {
    std::vector<double> r(n);
    if (f32) {
        std::vector<float> h(n);
        CK(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) r[i] = h[i];
    } else {
        std::vector<uint16_t> h(n);
        CK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) r[i] = bf16_to_f32(h[i]);
    }
    return r;
}
static double rel(const std::vector<double> &a, const std::vector<double> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (!std::isfinite(a[i])) return INFINITY;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den + 1e-30));
}

/* us per call of fn(W), ITER calls rotating W through NC copies of wbytes, captured in one graph and
 * replayed 3 times after one warm-up replay */
template <class F>
static double time_graph(cudaStream_t st, cudaEvent_t e0, cudaEvent_t e1, int ITER, const void *Wc, int NC,
                         size_t wbytes, F fn) {
    cudaGraph_t gr;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < ITER; i++) CK(fn((const uint16_t *)((const char *)Wc + (size_t)(i % NC) * wbytes)));
    CK(cudaStreamEndCapture(st, &gr));
    CK(cudaGraphInstantiate(&ge, gr, 0));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e0, st));
    for (int r = 0; r < 3; r++) CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(gr));
    return 1e3 * ms / (3 * ITER);
}

/* one row of X per CTA (the "previous kernel" that leaves X in L2) */
__global__ void copy_bf(const uint16_t *src, uint16_t *dst, int K) {
    for (int k = threadIdx.x; k < K; k += blockDim.x) dst[(size_t)blockIdx.x * K + k] = src[(size_t)blockIdx.x * K + k];
}

/* one cold launch of fn with the kernel's per-CTA %globaltimer stamps: each stamp's min / median / max over the
 * CTAs, in us after the first CTA's entry (0 entry, 1 X staged, 2 last weight block landed + issued, 3 MMAs
 * done, 4 cluster barrier passed, 5 reduce + epilogue done) */
template <class F>
static void timeline(cudaStream_t st, F fn, const uint16_t *Wc, int NC, size_t stride) {
    const int MAXC = 1024;
    unsigned long long *tl;
    CK(cudaMalloc(&tl, MAXC * 8 * 8));
    std::vector<unsigned long long> h(MAXC * 8);
    for (int rep = 0; rep < 3; rep++) {
        CK(cudaMemsetAsync(tl, 0, MAXC * 8 * 8, st));
        cuk_skinny_set_timeline(tl);
        CK(fn((const uint16_t *)((const char *)Wc + (size_t)((rep + 1) % NC) * stride)));
        cuk_skinny_set_timeline(NULL);
        CK(cudaStreamSynchronize(st));
        CK(cudaMemcpy(h.data(), tl, h.size() * 8, cudaMemcpyDeviceToHost));
        int n = 0;
        while (n < MAXC && h[(size_t)n * 8]) n++;
        unsigned long long t0 = ~0ull;
        for (int c = 0; c < n; c++) t0 = std::min(t0, h[(size_t)c * 8]);
        printf("    timeline rep %d (%d CTAs):", rep, n);
        for (int i = 0; i < 6; i++) {
            std::vector<double> v;
            for (int c = 0; c < n; c++) v.push_back((h[(size_t)c * 8 + i] - t0) / 1e3);
            std::sort(v.begin(), v.end());
            printf("  [%d] %.2f/%.2f/%.2f", i, v[0], v[v.size() / 2], v.back());
        }
        printf("\n");
    }
    CK(cudaFree(tl));
}

int main() {
    const shape shapes[] = {{"qkv", 51, 2560, 1024, CUK_SK_BF16},
                            {"o_proj", 51, 1024, 2048, CUK_SK_RESID},
                            {"gate_up+geglu", 51, 8192, 1024, CUK_SK_GEGLU},
                            {"down", 51, 1024, 4096, CUK_SK_RESID}};
    void *ws;
    CK(cudaMalloc(&ws, 32 << 20));
    pi0_gemm_ctx *g;
    if (pi0_gemm_ctx_create(&g, ws, 32 << 20) != PI0_OK) return 1;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const int ITER = 100;
    /* SKINNY_PROFILE="shape nw cs st": just that variant, 10 plain launches (for ncu) */
    const char *prof = getenv("SKINNY_PROFILE");
    char pshape[32] = "";
    int pnw0 = 0, pcs0 = 0, pst0 = 0;
    if (prof) sscanf(prof, "%31s %d %d %d", pshape, &pnw0, &pcs0, &pst0);
    printf("X %s; each call = X copy kernel + GEMM\n", getenv("SKINNY_COLDX") ? "cold (SKINNY_COLDX)" : "rewritten before each GEMM");
    printf("%-14s %-14s %9s %9s %8s\n", "shape", "variant", "us/call", "GB/s", "relL2");
    double tot_base = 0, tot_best = 0;
    for (const shape &sh : shapes) {
        const int T = sh.T, N = sh.N, K = sh.K, No = sh.mode == CUK_SK_GEGLU ? N / 2 : N;
        const size_t wbytes = (size_t)N * K * 2;
        const int NC = (int)((200u << 20) / wbytes) + 1;
        std::vector<uint16_t> hx((size_t)T * K), hw((size_t)N * K);
        for (auto &v : hx) v = f32_to_bf16(nr());
        for (auto &v : hw) v = f32_to_bf16(nr() / sqrtf((float)K));
        uint16_t *X, *Wc, *tmp;
        float *out, *res0;
        CK(cudaMalloc(&X, hx.size() * 2));
        CK(cudaMalloc(&Wc, wbytes * NC));
        CK(cudaMalloc(&tmp, (size_t)T * N * 2));
        CK(cudaMalloc(&out, (size_t)T * No * 4));
        CK(cudaMalloc(&res0, (size_t)T * No * 4));
        CK(cudaMemcpy(X, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
        for (int c = 0; c < NC; c++) CK(cudaMemcpy((char *)Wc + c * wbytes, hw.data(), wbytes, cudaMemcpyHostToDevice));
        std::vector<float> hr((size_t)T * No);
        for (auto &v : hr) v = nr();
        CK(cudaMemcpy(res0, hr.data(), hr.size() * 4, cudaMemcpyHostToDevice));
        const int f32 = sh.mode == CUK_SK_RESID;
        /* X rewritten right before every GEMM (as the norm / attention / GeGLU kernel before it does in the real
         * chain, so it is L2-resident), for every variant alike; SKINNY_COLDX=1: X left to be evicted */
        uint16_t *Xsrc;
        CK(cudaMalloc(&Xsrc, hx.size() * 2));
        CK(cudaMemcpy(Xsrc, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
        const bool coldx = getenv("SKINNY_COLDX") != NULL;
        auto hot = [&]() -> cudaError_t {
            if (coldx) return cudaSuccess;
            copy_bf<<<T, 128, 0, st>>>(Xsrc, X, K);
            return cudaGetLastError();
        };
        auto reset = [&]() {
            if (f32) CK(cudaMemcpyAsync(out, res0, (size_t)T * No * 4, cudaMemcpyDeviceToDevice, st));
            else CK(cudaMemsetAsync(out, 0xff, (size_t)T * No * 4, st));
        };
        /* baseline: cuBLASLt (+ GeGLU kernel) */
        auto base = [&](const uint16_t *W) -> cudaError_t {
            cudaError_t he = hot();
            if (he != cudaSuccess) return he;
            if (sh.mode == CUK_SK_RESID) {
                if (pi0_linear(g, st, T, N, K, X, K, GEMM_BF16, W, K, GEMM_BF16, out, N, GEMM_F32, 1.f, GEMM_EPI_NONE, NULL))
                    return cudaErrorUnknown;
                return cudaSuccess;
            }
            void *dst = sh.mode == CUK_SK_GEGLU ? (void *)tmp : (void *)out;
            if (pi0_linear(g, st, T, N, K, X, K, GEMM_BF16, W, K, GEMM_BF16, dst, N, GEMM_BF16, 0.f, GEMM_EPI_NONE, NULL))
                return cudaErrorUnknown;
            if (sh.mode == CUK_SK_GEGLU) return cuk_geglu(st, tmp, (uint16_t *)out, T, N / 2);
            return cudaSuccess;
        };
        auto timeit = [&](auto fn) { return time_graph(st, e0, e1, ITER, Wc, NC, wbytes, fn); };
        if (prof) {
            if (strcmp(pshape, sh.name)) continue;
            for (int i = 0; i < 10; i++) {
                CK(base((const uint16_t *)((char *)Wc + (size_t)(i % NC) * wbytes)));
                CK(cuk_skinny_linear_cfg(st, X, K, T, (const uint16_t *)((char *)Wc + (size_t)((i + 3) % NC) * wbytes),
                                         N, K, sh.mode, out, No, pnw0, pcs0, pst0));
            }
            CK(cudaStreamSynchronize(st));
            continue;
        }
        reset();
        CK(base(Wc));
        CK(cudaStreamSynchronize(st));
        std::vector<double> ref = fetch(out, (size_t)T * No, f32);
        double tb = timeit(base);
        printf("%-14s %-14s %9.2f %9.0f %8s\n", sh.name, "cublasLt", tb, wbytes / tb / 1e3, "-");
        if (!coldx) {
            auto xonly = [&](const uint16_t *) { return hot(); };
            printf("%-14s %-14s %9.2f\n", sh.name, "X copy alone", timeit(xonly));
        }
        /* every cuBLASLt candidate (heuristic answers + split-K variants), cold, in a graph */
        for (int ci = 0; ci < (getenv("SKINNY_NO_LT") ? 0 : 64); ci++) {
            pi0_gemm_ctx *gf;
            if (pi0_gemm_ctx_create(&gf, ws, 32 << 20) != PI0_OK) break;
            pi0_gemm_ctx_force_candidate(gf, ci);
            pi0_gemm_ctx *keep = g;
            g = gf;
            reset();
            cudaError_t be = base(Wc);
            int nc = pi0_gemm_ctx_force_candidate(gf, ci);
            if (be != cudaSuccess || ci >= nc) { g = keep; pi0_gemm_ctx_free(gf); cudaGetLastError(); break; }
            CK(cudaStreamSynchronize(st));
            double r = rel(fetch(out, (size_t)T * No, f32), ref);
            double t = timeit(base);
            g = keep;
            pi0_gemm_ctx_free(gf);
            char nm[32];
            snprintf(nm, sizeof nm, "lt cand %d/%d", ci, nc);
            printf("%-14s %-12s %9.2f %9.0f %8.1e\n", sh.name, nm, t, wbytes / t / 1e3, r);
        }
        /* cuBLASLt with the operand roles swapped (SKINNY_SWAP=1): m = the T tokens, n = the N features, so the
         * output is feature-major (T, N) column-major with ldc 64; timing only for GeGLU (its kernel runs on the
         * transposed product). Checked against the reference transposed (beta 0, residual taken off). */
        if (getenv("SKINNY_SWAP")) {
            const int ldt = 64;
            void *outT;
            CK(cudaMalloc(&outT, (size_t)ldt * N * 4));
            for (int ci = -1; ci < 64; ci++) {
                pi0_gemm_ctx *gs;
                if (pi0_gemm_ctx_create(&gs, ws, 32 << 20) != PI0_OK) break;
                if (ci >= 0) pi0_gemm_ctx_force_candidate(gs, ci);
                auto swp = [&](float beta) {
                    return [&, beta](const uint16_t *W) -> cudaError_t {
                        cudaError_t he = hot();
                        if (he != cudaSuccess) return he;
                        pi0_gemm_args a;
                        memset(&a, 0, sizeof a);
                        a.m = T; a.n = N; a.k = K;
                        a.A = X; a.lda = K; a.opA = 1; a.ta = GEMM_BF16;
                        a.B = W; a.ldb = K; a.opB = 0; a.tb = GEMM_BF16;
                        a.C = outT; a.ldc = ldt; a.tc = f32 ? GEMM_F32 : GEMM_BF16;
                        a.alpha = 1.f; a.beta = beta; a.batch = 1;
                        if (pi0_gemm(gs, st, &a)) return cudaErrorUnknown;
                        if (sh.mode == CUK_SK_GEGLU) return cuk_geglu(st, (const uint16_t *)outT, (uint16_t *)out, T, N / 2);
                        return cudaSuccess;
                    };
                };
                CK(cudaMemsetAsync(outT, 0, (size_t)ldt * N * 4, st));
                cudaError_t se = swp(0.f)(Wc);
                int nc = ci >= 0 ? pi0_gemm_ctx_force_candidate(gs, ci) : 0;
                if (se != cudaSuccess || (ci >= 0 && ci >= nc)) { pi0_gemm_ctx_free(gs); cudaGetLastError(); break; }
                CK(cudaStreamSynchronize(st));
                double r = -1;
                if (sh.mode != CUK_SK_GEGLU) {
                    std::vector<double> got = fetch(outT, (size_t)ldt * N, f32), tr((size_t)T * N), rf((size_t)T * N);
                    for (int t = 0; t < T; t++)
                        for (int n = 0; n < N; n++) {
                            tr[(size_t)t * N + n] = got[(size_t)n * ldt + t];
                            rf[(size_t)t * N + n] = ref[(size_t)t * N + n] - (f32 ? hr[(size_t)t * N + n] : 0.0);
                        }
                    r = rel(tr, rf);
                }
                double t = timeit(swp(f32 ? 1.f : 0.f));
                pi0_gemm_ctx_free(gs);
                char nm[32];
                if (ci < 0) snprintf(nm, sizeof nm, "lt swap heur");
                else snprintf(nm, sizeof nm, "lt swap %d/%d", ci, nc);
                printf("%-14s %-14s %9.2f %9.0f %8.1e\n", sh.name, nm, t, wbytes / t / 1e3, r);
            }
            CK(cudaFree(outT));
        }
        double best = 1e30;
        /* k_skinny2 (nw 4 / 8 warps, mt 1 / 2; only with SKINNY_ALL), the packed-weight wgmma kernel (nw = BN 64 /
         * 128, every split; its weights repacked for each tile choice), the packed kernel's auto pick (nw = 0) */
        const int nws[6] = {4, 8, 32, 64, 128, 0};
        uint16_t *Wpc = NULL;
        size_t pcap = 0;
        /* the NC weight copies packed for (mode, bn, cs) into Wpc (grown as needed); elements per copy, 0: no fit */
        auto pack_copies = [&](int mode, int bn, int cs) -> size_t {
            size_t pe = cuk_skinny_packed_elems(N, K, mode, 0, 0, bn, cs);
            if (!pe) return 0;
            if (pe * 2 * NC > pcap) {
                if (Wpc) CK(cudaFree(Wpc));
                pcap = pe * 2 * NC;
                CK(cudaMalloc(&Wpc, pcap));
            }
            for (int c = 0; c < NC; c++)
                CK(cuk_skinny_pack(st, (const uint16_t *)((char *)Wc + c * wbytes), N, K, mode, 0, 0, bn, cs,
                                   Wpc + (size_t)c * pe));
            return pe;
        };
        for (int wi = 0; wi < 6; wi++)
            for (int cs = nws[wi] ? 1 : 0; cs <= (nws[wi] ? 8 : 0); cs = cs ? cs * 2 : 1)
            for (int sg = 1; sg <= (nws[wi] == 4 || nws[wi] == 8 || nws[wi] == 64 ? 2 : 1); sg++) {
                const int nw = nws[wi], packed = nw != 4 && nw != 8;
                if (!packed && !getenv("SKINNY_ALL")) continue;
                const uint16_t *Wsrc = Wc;
                size_t stride = wbytes;
                if (packed) {
                    size_t pe = pack_copies(sh.mode, nw, cs);
                    if (!pe) continue;
                    Wsrc = Wpc;
                    stride = pe * 2;
                }
                const int mode = sh.mode | (packed ? CUK_SK_PACKED : 0);
                const int mt = !packed ? sg : nw == 64 ? sg : 0; /* packed: warpgroups per CTA (0: auto) */
                auto fn = [&](const uint16_t *W) {
                    cudaError_t he = hot();
                    if (he != cudaSuccess) return he;
                    return cuk_skinny_linear_cfg(st, X, K, T, W, N, K, mode, out, No, nw, cs, mt);
                };
                reset();
                cudaError_t le = fn(Wsrc);
                if (le == cudaErrorInvalidValue) { cudaGetLastError(); continue; }
                CK(le);
                CK(cudaStreamSynchronize(st));
                double r = rel(fetch(out, (size_t)T * No, f32), ref);
                double t = time_graph(st, e0, e1, ITER, Wsrc, NC, stride, fn);
                if (packed && getenv("SKINNY_TIMELINE")) timeline(st, fn, Wsrc, NC, stride);
                char nm[32];
                if (nw >= 32) snprintf(nm, sizeof nm, "tma%d cs%d g%d", nw, cs, mt);
                else if (nw) snprintf(nm, sizeof nm, "nw%d cs%d mt%d", nw, cs, sg);
                else snprintf(nm, sizeof nm, "tma auto");
                printf("%-14s %-14s %9.2f %9.0f %8.1e%s\n", sh.name, nm, t, wbytes / t / 1e3, r, r > 1e-2 ? "  BAD" : "");
                if (r <= 1e-2 && t < best) best = t;
                if (!nw) break;
            }
        /* split-K partials left unreduced (CUK_SK_PARTIAL: no cluster barrier, no reduction; a consumer would sum
         * them): what the GEMM itself costs without the reduction. Checked where the epilogue is the plain Y. */
        for (int bn = 64; bn <= 128; bn *= 2)
            for (int cs = 2; cs <= 8; cs *= 2) {
                size_t pe = pack_copies(CUK_SK_PARTIAL, bn, cs);
                if (!pe) continue;
                float *part;
                CK(cudaMalloc(&part, (size_t)cs * T * N * 4));
                auto fn = [&](const uint16_t *W) {
                    cudaError_t he = hot();
                    if (he != cudaSuccess) return he;
                    return cuk_skinny_linear_cfg(st, X, K, T, W, N, K, CUK_SK_PARTIAL | CUK_SK_PACKED, part, N, bn, cs, 0);
                };
                CK(fn(Wpc));
                CK(cudaStreamSynchronize(st));
                double r = -1;
                if (sh.mode == CUK_SK_BF16) {
                    std::vector<float> hp((size_t)cs * T * N);
                    CK(cudaMemcpy(hp.data(), part, hp.size() * 4, cudaMemcpyDeviceToHost));
                    std::vector<double> sum((size_t)T * N, 0.0);
                    for (int q = 0; q < cs; q++)
                        for (size_t i = 0; i < sum.size(); i++) sum[i] += hp[(size_t)q * T * N + i];
                    r = rel(sum, ref);
                }
                double t = time_graph(st, e0, e1, ITER, Wpc, NC, pe * 2, fn);
                if (getenv("SKINNY_TIMELINE")) timeline(st, fn, Wpc, NC, pe * 2);
                char nm[32];
                snprintf(nm, sizeof nm, "part%d cs%d", bn, cs);
                printf("%-14s %-14s %9.2f %9.0f %8.1e\n", sh.name, nm, t, wbytes / t / 1e3, r);
                CK(cudaFree(part));
            }
        if (Wpc) CK(cudaFree(Wpc));
        int pnw, pcs, pst;
        cuk_skinny_pick(T, N, K, sh.mode, 256, &pnw, &pcs, &pst);
        printf("%-14s default pick: nw%d cs%d mt%d\n", sh.name, pnw, pcs, pst);
        tot_base += tb;
        tot_best += best;
        cudaFree(X); cudaFree(Xsrc); cudaFree(Wc); cudaFree(tmp); cudaFree(out); cudaFree(res0);
    }
    if (prof) return 0;
    printf("per layer (4 linears): cuBLASLt %.1f us, best streaming %.1f us\n", tot_base, tot_best);
    /* fused QKV + RoPE vs GEMM + rope kernel */
    {
        const int T = 51, nh = 8, hd = 256, K = 1024, N = (nh + 2) * hd, pos0 = 788, S = pos0 + T;
        const size_t wbytes = (size_t)N * K * 2;
        const int NC = (int)((200u << 20) / wbytes) + 1;
        uint16_t *X, *Wc, *qkv, *qr, *kc, *vc;
        float *cs, *sn;
        CK(cudaMalloc(&X, (size_t)T * K * 2)); CK(cudaMemset(X, 0, (size_t)T * K * 2));
        CK(cudaMalloc(&Wc, wbytes * NC)); CK(cudaMemset(Wc, 0, wbytes * NC));
        CK(cudaMalloc(&qkv, (size_t)T * N * 2));
        CK(cudaMalloc(&qr, (size_t)T * nh * hd * 2));
        CK(cudaMalloc(&kc, (size_t)S * hd * 2));
        CK(cudaMalloc(&vc, (size_t)S * hd * 2));
        CK(cudaMalloc(&cs, (size_t)S * hd / 2 * 4)); CK(cudaMemset(cs, 0, (size_t)S * hd / 2 * 4));
        CK(cudaMalloc(&sn, (size_t)S * hd / 2 * 4)); CK(cudaMemset(sn, 0, (size_t)S * hd / 2 * 4));
        auto unf = [&](const uint16_t *W) -> cudaError_t {
            if (pi0_linear(g, st, T, N, K, X, K, GEMM_BF16, W, K, GEMM_BF16, qkv, N, GEMM_BF16, 0.f, GEMM_EPI_NONE, NULL))
                return cudaErrorUnknown;
            return cuk_rope_qkv(st, qkv, cs, sn, pos0, T, nh, hd, qr, kc, vc);
        };
        const size_t pe = cuk_skinny_packed_elems(N, K, CUK_SK_ROPE, nh, hd, 0, 0);
        uint16_t *Wp;
        CK(cudaMalloc(&Wp, pe * 2 * NC));
        for (int c = 0; c < NC; c++)
            CK(cuk_skinny_pack(st, (const uint16_t *)((char *)Wc + c * wbytes), N, K, CUK_SK_ROPE, nh, hd, 0, 0,
                               Wp + (size_t)c * pe));
        auto fus = [&](const uint16_t *W) {
            return cuk_skinny_qkv_rope(st, X, K, T, W, K, cs, sn, pos0, nh, hd, qr, kc, vc, CUK_SK_PACKED);
        };
        printf("qkv+rope %-22s %9.2f us\n", "cuBLASLt + rope kernel", time_graph(st, e0, e1, ITER, Wc, NC, wbytes, unf));
        printf("qkv+rope %-22s %9.2f us\n", "packed wgmma fused", time_graph(st, e0, e1, ITER, Wp, NC, pe * 2, fus));
        CK(cudaFree(Wp));
    }
    /* RMSNorm -> QKV GEMM pairs (the expert's layer start), cold weights, in a graph: does programmatic
     * dependent launch let the streaming GEMM's weight loads overlap the norm? */
    {
        const int T = 51, K = 1024, N = 2560;
        const size_t wbytes = (size_t)N * K * 2;
        const int NC = (int)((200u << 20) / wbytes) + 1;
        uint16_t *X, *Wc, *out;
        float *x, *nw;
        CK(cudaMalloc(&X, (size_t)64 * K * 2)); CK(cudaMemset(X, 0, (size_t)64 * K * 2));
        CK(cudaMalloc(&Wc, wbytes * NC)); CK(cudaMemset(Wc, 0, wbytes * NC)); /* zeros: already the packed layout */
        CK(cudaMalloc(&out, (size_t)T * N * 2));
        CK(cudaMalloc(&x, (size_t)T * K * 4)); CK(cudaMemset(x, 0, (size_t)T * K * 4));
        CK(cudaMalloc(&nw, (size_t)K * 4)); CK(cudaMemset(nw, 0, (size_t)K * 4));
        for (int v = 0; v < 5; v++) {
            const int pdl = v == 3 || v == 4 ? CUK_PDL : 0, norm = v != 4 && v != 2;
            auto fn = [&](const uint16_t *W) -> cudaError_t {
                if (norm) {
                    cudaError_t e = cuk_rmsnorm(st, x, nw, X, CUK_BF16 | pdl, T, K, 1e-6f);
                    if (e != cudaSuccess) return e;
                }
                if (v == 0) {
                    if (pi0_linear(g, st, T, N, K, X, K, GEMM_BF16, W, K, GEMM_BF16, out, N, GEMM_BF16, 0.f,
                                   GEMM_EPI_NONE, NULL))
                        return cudaErrorUnknown;
                    return cudaSuccess;
                }
                return cuk_skinny_linear(st, X, K, T, W, N, K, CUK_SK_BF16 | CUK_SK_PACKED | pdl, out, N);
            };
            static const char *nm[5] = {"norm + cuBLASLt", "norm + packed", "packed alone", "norm + packed, PDL",
                                        "packed alone, PDL"};
            printf("pair %-24s %9.2f us\n", nm[v], time_graph(st, e0, e1, ITER, Wc, NC, wbytes, fn));
        }
        cudaFree(X); cudaFree(Wc); cudaFree(out); cudaFree(x); cudaFree(nw);
    }
    pi0_gemm_ctx_free(g);
    return 0;
}
