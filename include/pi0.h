/*
 * pi0.h — public C API of the Pi0 (openpi `pi0`, pi05=False) inference engine.
 *
 * Two handles, as in llama.h / whisper.h:
 *   pi0_model   : configuration + read-only weights (one per checkpoint).
 *   pi0_session : per-caller buffers and KV cache (one per concurrent caller).
 *
 * Thread-safety: a pi0_model is immutable after loading and may be shared by any
 * number of sessions on any threads. A pi0_session must be used by one thread at a
 * time. pi0_last_error() is thread-local. pi0_set_log() is global: set it before
 * creating models.
 *
 * Every call returns a pi0_status; on failure pi0_last_error() says what was wrong
 * (which tensor, which shape, which input). The library never exits and never prints
 * except through the log callback.
 */
#ifndef PI0_H
#define PI0_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PI0_NUM_CAMERAS 3
#define PI0_IMAGE_SIZE 224

typedef enum {
    PI0_OK = 0,
    PI0_ERR_INVALID_ARG,  /* bad argument or observation (shape, NaN, mask) */
    PI0_ERR_IO,           /* open/read/write/mmap failed */
    PI0_ERR_FORMAT,       /* malformed file (header, offsets, JSON) */
    PI0_ERR_TENSOR,       /* missing tensor, wrong dtype or shape */
    PI0_ERR_OOM,          /* allocation failed */
    PI0_ERR_CANCELLED,    /* progress callback asked to stop */
    PI0_ERR_BACKEND,      /* CUDA / cuBLAS failure */
    PI0_ERR_UNSUPPORTED   /* backend not compiled in, or feature not available */
} pi0_status;

/* Name of a status code ("PI0_ERR_TENSOR", ...). */
const char *pi0_status_name(pi0_status s);
/* Message of the last failure on this thread ("" when none). */
const char *pi0_last_error(void);

typedef enum { PI0_LOG_DEBUG = 0, PI0_LOG_INFO, PI0_LOG_WARN, PI0_LOG_ERROR } pi0_log_level;
typedef void (*pi0_log_fn)(pi0_log_level level, const char *msg, void *user);
/* Route library messages (NULL: drop them; the default). */
void pi0_set_log(pi0_log_fn fn, void *user);

/* Progress of a long operation in [0,1]; return non-zero to cancel it. */
typedef int (*pi0_progress_fn)(float fraction, void *user);

typedef enum {
    PI0_BACKEND_AUTO = 0, /* CUDA when compiled in and a GPU is present, else CPU */
    PI0_BACKEND_CPU,
    PI0_BACKEND_CUDA
} pi0_backend;

/* Model hyper-parameters (read from the checkpoint, SPEC §1). */
typedef struct {
    /* SigLIP */
    int image_size, patch_size;            /* 224, 14 */
    int vit_width, vit_depth, vit_mlp, vit_heads;    /* 1152, 27, 4304, 16 */
    /* Gemma 2B (prefix / VLM) */
    int llm_width, llm_depth, llm_mlp;     /* 2048, 18, 16384 */
    /* Gemma 300M (action expert); depth = llm_depth */
    int exp_width, exp_mlp;                /* 1024, 4096 */
    int num_heads, num_kv_heads, head_dim; /* 8, 1, 256 (shared by both experts) */
    int vocab_size;                        /* 257152 */
    int action_dim;                        /* 32 */
    int max_token_len;                     /* 48 */
    int action_horizon;                    /* default horizon (50) */
    int num_steps;                         /* default denoising steps (10) */
} pi0_config;

/* Built-in configs: "full" (openpi Pi0Config) and "tiny" (same structure, small). */
pi0_status pi0_config_by_name(const char *name, pi0_config *out);

typedef struct {
    pi0_backend backend;
    int n_threads;               /* CPU threads; 0 = all cores */
    int device;                  /* CUDA device ordinal */
    pi0_progress_fn progress;    /* may be NULL */
    void *progress_user;
} pi0_model_params;
pi0_model_params pi0_model_default_params(void);

typedef struct pi0_model pi0_model;
typedef struct pi0_session pi0_session;

/* Load an openpi PyTorch checkpoint (model.safetensors, bf16 or f32 tensors). */
pi0_status pi0_model_load(const char *path, const pi0_model_params *params, pi0_model **out);
/* Random weights of the exact checkpoint layout, deterministic per seed (same values
 * as `pi0 mkweights`). With the CUDA backend they are generated on the GPU. */
pi0_status pi0_model_random(const pi0_config *cfg, uint64_t seed, const pi0_model_params *params,
                            pi0_model **out);
void pi0_model_free(pi0_model *model);
const pi0_config *pi0_model_config(const pi0_model *model);
pi0_backend pi0_model_backend(const pi0_model *model);

typedef struct {
    int action_horizon;  /* 0 = config default */
    int num_steps;       /* 0 = config default */
    int max_token_len;   /* longest prompt accepted; 0 = config default */
    int profile_stages;  /* 1: pi0_infer runs stage by stage and fills every pi0_timing field
                            (CUDA: events between stages instead of one graph replay) */
    unsigned experimental; /* PI0_EXP_* bits: opt-in CUDA variants kept for measurement */
} pi0_session_params;

/* Experimental CUDA variants (correct, measured slower on the H100; see bench/NOTES.md). */
#define PI0_EXP_GEMM_TUNE 1u    /* time cuBLASLt candidates for the few-token GEMMs too (default: >= 256 tokens only) */
#define PI0_EXP_FUSED_ATTN 2u   /* fused WMMA attention instead of cuBLASLt QK^T, softmax, PV */
#define PI0_EXP_SKINNY_GEMM 4u  /* hand-written GEMM for the action expert's few tokens */
#define PI0_EXP_OP_TIMES 8u     /* with profile_stages: log per-op device times at session free */
#define PI0_EXP_EXPERT_GEMM_ATTN 16u /* expert attention through cuBLASLt QK^T, softmax, PV (v12) instead of
                                        * the fused MQA kernel cuk_attention_mqa (the default since v13) */
#define PI0_EXP_MQA_MERGE_ROW 32u /* cuk_attention_mqa: the warp-per-row merge (v13) instead of thread-per-4-columns */
#define PI0_EXP_MQA_ROWS64 64u  /* cuk_attention_mqa: the v13 two-kernel path with 64 query rows per CTA (v13c) */
#define PI0_EXP_MQA_V13 256u    /* cuk_attention_mqa: the v13 two-kernel path (32-row x 64-key CTAs + merge kernel)
                                 * instead of the one-launch flash kernel (v2, the default) */
#define PI0_EXP_NO_FLASH_ATTN 128u /* ViT and prefill attention through cuBLASLt QK^T, softmax, PV (v14) instead of
                                    * the fused flash kernel cuk_flash_attn */
#define PI0_EXP_NO_TUNE 1024u    /* no timing-based cuBLASLt algorithm choice for the ViT / prefill GEMMs */
#define PI0_EXP_PDL 512u         /* programmatic dependent launch of the expert's RMSNorm, MQA attention and (with
                                  * SKINNY_GEMM) streaming GEMMs: each may start while its predecessor runs */
#define PI0_EXP_FLASH_MMA 2048u   /* ViT / prefill attention through the mma.sync flash kernel, not the wgmma one */
#define PI0_EXP_XPART 4096u       /* expert o / down projections as unreduced split-K GEMMs of ours (packed weights)
                                   * summed into the residual by the next RMSNorm, not cuBLASLt with a residual epilogue */
#define PI0_EXP_VIT_CHAINS 8192u  /* ViT: one chain of layers per camera on its own stream (concurrent graph branches)
                                   * instead of one chain over all cameras' tokens */
/* Timing diagnostics, not a variant: bit PI0_EXP_SKIP_SHIFT + i leaves op i of every layer of one stage out of the
 * chain, so that E2E differences give each op's cost inside the graph. The actions are wrong. The stage (bits
 * PI0_EXP_SKIP_STAGE_SHIFT..+1): 0 the expert, 1 the prefill (ops: 0 attention RMSNorm, 1 QKV GEMM, 2 RoPE + K/V write,
 * 3 attention, 4 o projection, 5 FFN RMSNorm, 6 gate/up GEMM, 7 GeGLU, 8 down projection), 2 the ViT (0 LayerNorm 1,
 * 1 QKV GEMM, 2 attention, 3 o projection, 4 LayerNorm 2, 5 fc1, 6 fc2). */
#define PI0_EXP_SKIP_SHIFT 16
#define PI0_EXP_SKIP_STAGE_SHIFT 25
#define PI0_EXP_MQA_PUSH2 32768u  /* expert attention: split partials pushed to their row owners with plain remote
                                   * stores and one cluster barrier instead of pulled between two */
#define PI0_EXP_RESID_EPILOGUE (1u << 27) /* expert o / down: the residual added by cuBLASLt's beta = 1 epilogue, not by
                                           * the next RMSNorm from the f32 product (the default since E2E -0.05..-0.07 ms) */
#define PI0_EXP_MQA_K64 (1u << 28) /* expert attention: 64-key chunks (up to 14 splits at P = 788) instead of 32-key
                                   * chunks with 16 splits (the default since E2E -0.17 ms with bf16 partials) */
#define PI0_EXP_MQA_F32 (1u << 30) /* expert attention: the key splits' partials merged from f32 (v2), not bf16 */
#define PI0_EXP_L2_KV 16384u      /* keep the K/V cache in a persisting L2 window (cudaLimitPersistingL2CacheSize is set
                                   * device-wide) so the expert's streamed weights do not evict it between steps */
pi0_session_params pi0_session_default_params(void);

pi0_status pi0_session_create(pi0_model *model, const pi0_session_params *params, pi0_session **out);
void pi0_session_free(pi0_session *s);

/* One observation at the model boundary (SPEC §10.2), batch 1. */
typedef struct {
    const float *images[PI0_NUM_CAMERAS]; /* (224,224,3) HWC float in [-1,1]; may be NULL if masked */
    int image_mask[PI0_NUM_CAMERAS];      /* 0 = camera absent */
    const int32_t *tokens;                /* (n_tokens,) token ids */
    const uint8_t *token_mask;            /* (n_tokens,) 1 = real token */
    int n_tokens;
    const float *state;                   /* (action_dim,) normalized, zero-padded */
    const float *noise;                   /* (horizon, action_dim) or NULL: drawn from noise_seed */
    uint64_t noise_seed;
} pi0_observation;

typedef struct {
    double total_ms, vit_ms, prefill_ms, diffusion_ms; /* stage times of the last run */
} pi0_timing;

/* Full sample_actions: actions_out is (horizon, action_dim) normalized actions. */
pi0_status pi0_infer(pi0_session *s, const pi0_observation *obs, float *actions_out, pi0_timing *timing);

/* ---- stage entry points (tests, timing) ---- */
/* ViT + projector on one camera image: out (num_patches, llm_width). */
pi0_status pi0_stage_vit(pi0_session *s, const float *image, float *out);
/* Prefill: builds the compacted prefix and its KV cache. Returns the valid prefix length. */
pi0_status pi0_stage_prefill(pi0_session *s, const pi0_observation *obs, int *prefix_len);
/* Post-RoPE K and V of one layer after prefill: each (prefix_len, num_kv_heads*head_dim). */
pi0_status pi0_stage_kv(pi0_session *s, int layer, float *k_out, float *v_out);
/* One velocity evaluation after prefill: x (horizon, action_dim) at time t -> v. */
pi0_status pi0_stage_velocity(pi0_session *s, const float *state, const float *x, float t, float *v_out);

/* sizeof of a public struct by its name ("pi0_session_params", "pi0_policy_params", ...), 0 if
 * unknown: lets bindings that mirror the structs (python/) check their layout at load time. */
size_t pi0_struct_size(const char *name);

/* Fill out with N(0,1) noise, deterministic per seed (used when obs->noise is NULL). */
void pi0_gaussian_noise(uint64_t seed, float *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* PI0_H */
