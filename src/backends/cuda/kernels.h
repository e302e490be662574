/*
 * CUDA kernels of the Pi0 CUDA backend, with a CPU reference twin for each one
 * (used by tests/cuda/test_kernels.cu). Launchers are asynchronous on `stream`
 * and return cudaSuccess or the launch error (cudaGetLastError after the launch).
 *
 * One .cu per op beside this header: norms, rope, softmax, geglu, embed, small_ops, init,
 * attention_mqa (the expert's attention), attention and skinny_gemm (experimental variants);
 * shared device helpers in cuda_common.cuh.
 *
 * bf16 data is passed as uint16_t* (raw bits) so the header is plain C.
 * Matrices are row-major.
 */
#ifndef PI0_CUDA_KERNELS_H
#define PI0_CUDA_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* data types of raw buffers */
enum { CUK_F32 = 0, CUK_BF16 = 1 };
/*
 * CUK_PDL, OR'd into the mode argument of cuk_rmsnorm (ydt), cuk_skinny_* (mode) and cuk_attention_mqa
 * (tile_rows): launch with programmatic dependent launch. The kernel may start while the previous kernel
 * of the stream still runs: it reads only constant data (weights) before griddepcontrol.wait, and lets
 * its own successor launch at once. Captured into graphs as programmatic edges.
 */
enum { CUK_PDL = 1 << 16 };

/* LayerNorm over rows of width w: y = (x-mu)/sqrt(var+eps)*g + b; x f32 (residual), y bf16; g,b f32. */
cudaError_t cuk_layernorm(cudaStream_t st, const float *x, const float *g, const float *b, uint16_t *y,
                          int rows, int w, float eps);
void cuk_layernorm_ref(const float *x, const float *g, const float *b, uint16_t *y, int rows, int w, float eps);

/* Gemma RMSNorm: y = x * rsqrt(mean(x^2)+eps) * (1+w). x f32 (residual), w f32, y bf16 (ydt CUK_BF16) or f32. */
cudaError_t cuk_rmsnorm(cudaStream_t st, const float *x, const float *w, void *y, int ydt, int rows,
                        int width, float eps);
void cuk_rmsnorm_ref(const float *x, const float *w, void *y, int ydt, int rows, int width, float eps);
/*
 * The consumer of a few-token GEMM's unreduced split-K partials (cuk_skinny_linear, CUK_SK_PARTIAL): for each row r,
 * x[r] += part[0][r] + part[1][r] + ... + part[np-1][r] (summed in that order, f32; part[c][r] at
 * part + c * pstride + r * ldp), then the Gemma RMSNorm of the updated row into y as cuk_rmsnorm. x is updated.
 */
cudaError_t cuk_rmsnorm_acc(cudaStream_t st, float *x, const float *part, int np, long long pstride, int ldp,
                            const float *w, void *y, int ydt, int rows, int width, float eps);
void cuk_rmsnorm_acc_ref(float *x, const float *part, int np, long long pstride, int ldp, const float *w, void *y,
                         int ydt, int rows, int width, float eps);

/*
 * RoPE + scatter of a fused QKV row block (num_kv_heads == 1):
 * qkv (T, (nh+2)*hd) bf16. For token t at position pos0+t:
 *   q head n -> qr[(t*nh+n)*hd ...] rotated (skipped when qr == NULL),
 *   k -> kc[(pos0+t)*hd ...] rotated, v -> vc[(pos0+t)*hd ...] copied.
 * cs, sn: (max_pos, hd/2) f32 cos/sin tables. Split-halves pairing (i, i+hd/2).
 */
cudaError_t cuk_rope_qkv(cudaStream_t st, const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T,
                         int nh, int hd, uint16_t *qr, uint16_t *kc, uint16_t *vc);
void cuk_rope_qkv_ref(const uint16_t *qkv, const float *cs, const float *sn, int pos0, int T, int nh, int hd,
                      uint16_t *qr, uint16_t *kc, uint16_t *vc);

/* Row softmax: p[r, 0..n) = softmax(l[r, 0..n)) (f32 logits, ld_l) -> bf16 (ld_p). */
cudaError_t cuk_softmax(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n);
void cuk_softmax_ref(const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n);
/* Same, but rows r < rows_lim use only columns [0, n_lim) and get zeros in [n_lim, n). */
cudaError_t cuk_softmax_lim(cudaStream_t st, const float *l, int ld_l, uint16_t *p, int ld_p, int rows, int n,
                            int rows_lim, int n_lim);

/* GeGLU: in (T, 2F) bf16 = [gate | up]; out (T, F) bf16 = gelu_tanh(gate) * up. */
cudaError_t cuk_geglu(cudaStream_t st, const uint16_t *in, uint16_t *out, int T, int F);
void cuk_geglu_ref(const uint16_t *in, uint16_t *out, int T, int F);

/*
 * im2col for the SigLIP patch embedding: img (ncam, S, S, 3) f32 HWC ->
 * out (ncam*g*g, ldo) bf16 with column c*p*p + kh*p + kw (OIHW order); columns
 * [3*p*p, ldo) are zeroed.
 */
cudaError_t cuk_im2col(cudaStream_t st, const float *img, uint16_t *out, int ncam, int S, int p, int ldo);
void cuk_im2col_ref(const float *img, uint16_t *out, int ncam, int S, int p, int ldo);

/* out (rows, w) f32 = in (rows, w) f32 + pos[(r % np), :] */
cudaError_t cuk_add_pos(cudaStream_t st, const float *in, const float *pos, float *out, int rows, int np, int w);
void cuk_add_pos_ref(const float *in, const float *pos, float *out, int rows, int np, int w);

/* Token embedding: out[i, :] (f32) = table[tok[i], :] * scale. */
cudaError_t cuk_embed(cudaStream_t st, const int32_t *tok, const uint16_t *table, float *out, int n, int d,
                      float scale);
void cuk_embed_ref(const int32_t *tok, const uint16_t *table, float *out, int n, int d, float scale);

/*
 * Small f32 matmul (one thread per output; for the pi0 heads and init-time folds):
 * C[m, n] = act( sum_k A[m*sam + k*sak] * B[k*sbk + n*sbn] + bias[n] + add[n] )
 * bias/add may be NULL; act 0 = none, 1 = silu; C is f32 (cdt CUK_F32) or bf16, ld ldc.
 */
cudaError_t cuk_small_mm(cudaStream_t st, int M, int N, int K, const float *A, long long sam, long long sak,
                         const float *B, long long sbk, long long sbn, const float *bias, const float *add, int act,
                         void *C, int cdt, int ldc);
void cuk_small_mm_ref(int M, int N, int K, const float *A, long long sam, long long sak, const float *B,
                      long long sbk, long long sbn, const float *bias, const float *add, int act, void *C, int cdt,
                      int ldc);

/* x[i] += dt * v[i] (f32). */
cudaError_t cuk_euler(cudaStream_t st, float *x, const float *v, float dt, int n);

/*
 * Element conversion into a pitched destination: element i0+j (j < n) of a
 * (rows, cols) tensor goes to dst[(i/cols)*ld + i%cols]. src holds elements i0..i0+n-1.
 */
cudaError_t cuk_convert(cudaStream_t st, const void *src, int sdt, void *dst, int ddt, long long i0, long long n,
                        long long cols, long long ld);

/* Random weights: element i of a (rows, cols) tensor = bf16(pi0_random_value(seed, i, mean, std)), pitched as above. */
cudaError_t cuk_random(cudaStream_t st, void *dst, int ddt, long long n, long long cols, long long ld,
                       uint64_t tensor_seed, float mean, float std);

#ifdef __cplusplus
}
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif
/*
 * Fused multi-query attention (flash style, tensor cores via WMMA, f32 online softmax):
 * out[r, :] (bf16) = softmax_j(scale * q[r]·k[j], j < S) · v[j] for r < R, with
 * q (R, hd), k/v (S, hd) bf16 row-major, hd % 16 == 0, hd <= 256. The keys are split
 * over nsplit CTAs per 16-row tile; partials (nsplit*R*(hd+2) floats in `part`) are merged
 * in a fixed order by a second kernel (deterministic). k/v rows [S, round_up(S, 64)) are
 * read (times zero weight): they must exist and be finite.
 * nsplit = 0 picks a split from the shape; part may be NULL when the chosen split is 1.
 */
cudaError_t cuk_attention(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                          int hd, float scale, uint16_t *out, float *part, size_t part_floats, int nsplit);
void cuk_attention_ref(const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S, int hd, float scale,
                       uint16_t *out);
/*
 * MQA attention for few query rows (the expert: R = T * nh <= ~1024 rows share one K/V head): CTA =
 * 64 (or 32) query rows x one 64-key chunk (K/V chunk staged once in shared memory by cp.async for all
 * the CTA's rows), WMMA for Q K^T and P V, chunk-local softmax, f32 partials merged in a fixed order
 * (deterministic). Rows r < rows_lim see only keys [0, n_lim) (the state token). Keys past S are
 * zero-filled (no padding needed). part: >= ceil(S/64) * R * (hd + 2) floats and S <= 2048, else
 * cudaErrorInvalidValue (caller falls back). hd % 16 == 0, hd <= 256.
 * merge: CUK_MQA_MERGE_COL4 (one thread per row x 4 columns) or CUK_MQA_MERGE_ROW (one warp per row).
 * tile_rows: query rows per CTA, 64 or 32 (any other value: 64), or CUK_MQA_FLASH / _PUSH / _PUSH2: the
 * one-launch v2 kernel (flash-decoding over key splits, one thread-block cluster per row tile merging the
 * splits through distributed shared memory: pulled by the row owner, pushed to it with st.async (_PUSH), or
 * pushed with plain remote stores into a receive area of its own and one cluster barrier (_PUSH2); _K32: pulled,
 * with 32-key chunks at hd 256 (more splits, fewer rows to merge per CTA). _FLASH and _K32 pull the splits' partials
 * as bf16 where a CTA has one key group (half the distributed-shared-memory bytes of f32: 9.35 vs 11.19 us per call at
 * R = 408, S = 839); _F32: as _FLASH with f32 partials;
 * mma.sync; no workspace: part may be NULL and S is unlimited); when its cluster cannot be scheduled it
 * falls back to the 32-row path (then the part rule above applies).
 */
enum { CUK_MQA_MERGE_COL4 = 0, CUK_MQA_MERGE_ROW = 1 };
enum { CUK_MQA_FLASH = 0, CUK_MQA_FLASH_PUSH = 1, CUK_MQA_FLASH_PUSH2 = 2, CUK_MQA_FLASH_K32 = 3, CUK_MQA_FLASH_F32 = 4 };
cudaError_t cuk_attention_mqa(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                              int hd, float scale, int rows_lim, int n_lim, uint16_t *out, float *part,
                              size_t part_floats, int merge, int tile_rows);
void cuk_attention_lim_ref(const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S, int hd, float scale,
                           int rows_lim, int n_lim, uint16_t *out);
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif
/*
 * Skinny GEMM for few tokens (T <= 64), weight-bandwidth bound: Y(T, N) = X(T, K) W(N, K)^T with
 * mma.sync m16n8k16 (bf16 in, f32 accumulate). CTAs of 16*nw features x one K slice, split-K over a
 * thread-block cluster of cs CTAs reduced through distributed shared memory in rank order
 * (deterministic, one launch), epilogue:
 *   CUK_SK_BF16  : out bf16 (T, ldo) = Y
 *   CUK_SK_RESID : out f32 (T, ldo) += Y            (residual stream)
 *   CUK_SK_GEGLU : out bf16 (T, ldo) = gelu_tanh(Y[:, :N/2]) * Y[:, N/2:]   (fused [gate; up];
 *                  both halves rounded to bf16 first, as the unfused path)
 *   CUK_SK_PARTIAL (packed weights only, experimental): out f32 (cs, T, ldo): the cs split-K partials of Y, not
 *                  reduced (no cluster; a consumer sums them in rank order)
 * K % (16 cs) == 0, N % 16 == 0 (GeGLU: N % 32), ldx % 8 == 0, X and W 16-byte aligned; nw warps of
 * 16 mt features each (nw in {4, 8}, mt in {1, 2}), cs in {1, 2, 4, 8}; nw = cs = 0: cuk_skinny_pick's shape.
 * mode | CUK_SK_PACKED: W is in cuk_skinny_pack's layout, packed with the same (bn, cs) = (nw, cs) (0, 0: the
 * automatic choice both sides make): the wgmma kernel that bulk-copies each CTA's weight tile (K % 8 == 0).
 * Returns cudaErrorInvalidValue when the shape is not supported (caller falls back).
 */
enum { CUK_SK_BF16 = 0, CUK_SK_RESID = 1, CUK_SK_GEGLU = 2, CUK_SK_ROPE = 3, CUK_SK_PARTIAL = 4 };
enum { CUK_SK_PACKED = 1 << 17 };
/*
 * Packed weights for the CUK_SK_PACKED kernel: every CTA tile's shared-memory image (its weight rows x its K
 * slice zero-padded to 64s, 128-byte swizzled 64-k blocks) in launch order, for one (N, K, mode) shape
 * (CUK_SK_ROPE: N = (nh + 2) hd) and tile choice (bn, cs; 0, 0: automatic). Elements of the packed array
 * (0: the shape does not fit); the packer (one launch on st) writes it from W (N, K).
 */
size_t cuk_skinny_packed_elems(int N, int K, int mode, int nh, int hd, int bn, int cs);
/* resolve a tile choice (*bn, *cs; 0, 0: the automatic one) for that shape: 1, or 0 (and 0, 0) when it does not fit */
int cuk_skinny_packed_tiles(int N, int K, int mode, int nh, int hd, int *bn, int *cs);
cudaError_t cuk_skinny_pack(cudaStream_t st, const uint16_t *W, int N, int K, int mode, int nh, int hd, int bn, int cs,
                            uint16_t *Wp);
/* playground only (dev/cuda/skinny.cu): later packed launches write 8 %globaltimer stamps per CTA to tl (NULL: off) */
void cuk_skinny_set_timeline(unsigned long long *tl);
cudaError_t cuk_skinny_linear(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                              int mode, void *out, int ldo);
cudaError_t cuk_skinny_linear_cfg(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int N, int K,
                                  int mode, void *out, int ldo, int nw, int cs, int mt);
void cuk_skinny_pick(int T, int N, int K, int mode, int hd, int *nw, int *cs, int *mt);
/*
 * The fused Gemma QKV projection + RoPE + K/V cache scatter (what cuk_rope_qkv does to the output of
 * an unfused QKV GEMM, bitwise the same rounding): W ((nh + 2) hd, K) = [q heads; k; v], token t at
 * position pos0 + t: qr (T, nh, hd) rotated, kc/vc row pos0 + t (k rotated). cudaErrorInvalidValue
 * when the shape does not fit (hd / 2 must be a multiple of the CTA's half tile).
 */
cudaError_t cuk_skinny_qkv_rope(cudaStream_t st, const uint16_t *X, int ldx, int T, const uint16_t *W, int K,
                                const float *cs, const float *sn, int pos0, int nh, int hd, uint16_t *qr,
                                uint16_t *kc, uint16_t *vc, int flags /* CUK_PDL, CUK_SK_PACKED */);
#ifdef __cplusplus
}
#endif

#ifndef PI0_CUDA_FLASH_ATTN_H
#define PI0_CUDA_FLASH_ATTN_H
#ifdef __cplusplus
extern "C" {
#endif
/*
 * Fused flash attention (attention_flash.cu; FlashAttention-2 style, mma.sync m16n8k16, P kept in
 * registers, f32 online softmax, deterministic), no mask, strided and batched: for batch item
 * b < nb and head h < nh (one CTA grid row each), rows r < R, keys j < S:
 *   o[b*o_bs + h*o_hs + r*ldo + c] = sum_j softmax_j(scale * q_r . k_j) v[j][c], c < hd,
 * q_r = q + b*q_bs + h*q_hs + r*ldq (k, v likewise with row j). All offsets in elements, bf16 data.
 * hd <= 256 (padded to 16/32/64/80/128/256 in shared memory), nb*nh <= 65535, scale > 0; any S >= 1.
 * 16-byte aligned pointers, offsets % 8 == 0 and hd % 8 == 0 use cp.async and 16-byte stores, other
 * layouts element loads (same results). variant: 0 = tile shape picked from the shape (measured best);
 * else 1000*[3-stage ring] + 100*opt + 10*RW + NG (16*RW query rows and NG key groups per CTA) for
 * measurements (dev/cuda/attention_flash.cu lists them). Returns cudaErrorInvalidValue for unsupported
 * shapes or variants (caller falls back).
 */
typedef struct {
    const uint16_t *q, *k, *v;
    uint16_t *o;
    long long ldq, ldk, ldv, ldo;
    long long q_bs, k_bs, v_bs, o_bs;
    long long q_hs, k_hs, v_hs, o_hs;
    int nb, nh, R, S, hd;
    float scale;
    int variant;
} cuk_flash_args;
cudaError_t cuk_flash_attn(cudaStream_t st, const cuk_flash_args *a);
void cuk_flash_attn_ref(const cuk_flash_args *a); /* CPU twin (double precision, same strides) */
/* SigLIP ViT: qkv (ncam*np, 3W) = [q | k | v] rows of the fused QKV GEMM, W = nh*hd, head h at columns
 * h*hd of each third; out (ncam*np, W). All cameras x heads in one launch. */
cudaError_t cuk_flash_attn_vit(cudaStream_t st, const uint16_t *qkv, int ncam, int np, int nh, int hd, float scale,
                               uint16_t *out, int variant /* as cuk_flash_attn_mqa's */);
/* variant CUK_FLASH_WG: the wgmma kernel (attention_flash_wg.cu; hd = 256 or 72, 16-byte aligned rows), also
 * callable directly */
#define CUK_FLASH_WG 9000
cudaError_t cuk_flash_attn_wg(cudaStream_t st, const cuk_flash_args *a);
/* Multi-query (Gemma prefill): q (R, hd) rows (R = tokens x query heads), one shared k/v (S, hd); out (R, hd).
 * variant as in cuk_flash_args (0: the mma.sync kernel's default shape; CUK_FLASH_WG: the wgmma kernel, or
 * the default where it does not take the shape). */
cudaError_t cuk_flash_attn_mqa(cudaStream_t st, const uint16_t *q, int R, const uint16_t *k, const uint16_t *v, int S,
                               int hd, float scale, uint16_t *out, int variant);
#ifdef __cplusplus
}
#endif
#endif
