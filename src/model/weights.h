/*
 * Pi0 weights as host views (llama2.c style: Config / Weights / RunState apart).
 * Each pi0_tensor points into the mmapped checkpoint or the random-weight arena;
 * data is NULL when the weights live only on a device (random weights made on the GPU).
 * Shapes are the PyTorch/safetensors ones: Linear weight = (out, in).
 */
#ifndef PI0_WEIGHTS_H
#define PI0_WEIGHTS_H
#include <stddef.h>
#include <stdint.h>

#include "pi0.h"

typedef enum { PI0_DT_F32 = 0, PI0_DT_BF16, PI0_DT_F16, PI0_DT_I32, PI0_DT_I64, PI0_DT_U8, PI0_DT_BOOL } pi0_dtype;

typedef struct {
    const void *data;  /* NULL when not on the host */
    pi0_dtype dtype;   /* F32 or BF16 for weights */
    int ndim;
    int64_t shape[4];
} pi0_tensor;

size_t pi0_dtype_size(pi0_dtype dt);
const char *pi0_dtype_name(pi0_dtype dt); /* safetensors spelling: "F32", "BF16", ... */
int64_t pi0_tensor_numel(const pi0_tensor *t);
/* Copy elements [off, off+n) of a weight tensor to f32. */
void pi0_tensor_to_f32(const pi0_tensor *t, size_t off, size_t n, float *dst);

typedef struct {
    pi0_tensor ln1_w, ln1_b;          /* (W,) */
    pi0_tensor q_w, k_w, v_w, o_w;    /* (W, W) */
    pi0_tensor q_b, k_b, v_b, o_b;    /* (W,) */
    pi0_tensor ln2_w, ln2_b;          /* (W,) */
    pi0_tensor fc1_w, fc1_b;          /* (M, W), (M,) */
    pi0_tensor fc2_w, fc2_b;          /* (W, M), (W,) */
} pi0_vit_layer;

typedef struct {
    pi0_tensor attn_norm;  /* (D,) RMSNorm w, applied as (1+w) */
    pi0_tensor q_w;        /* (H*hd, D) */
    pi0_tensor k_w, v_w;   /* (KV*hd, D) */
    pi0_tensor o_w;        /* (D, H*hd) */
    pi0_tensor ffn_norm;   /* (D,) pre-MLP RMSNorm ("post_attention_layernorm") */
    pi0_tensor gate_w, up_w; /* (F, D) */
    pi0_tensor down_w;     /* (D, F) */
} pi0_gemma_layer;

typedef struct {
    /* SigLIP */
    pi0_tensor patch_w;    /* (W, 3, p, p) OIHW */
    pi0_tensor patch_b;    /* (W,) */
    pi0_tensor pos_emb;    /* (N_patches, W) */
    pi0_vit_layer *vit;    /* [vit_depth] */
    pi0_tensor post_ln_w, post_ln_b; /* (W,) */
    pi0_tensor proj_w;     /* (D, W) multi_modal_projector */
    pi0_tensor proj_b;     /* (D,) */
    /* Gemma 2B */
    pi0_tensor embed;      /* (vocab, D) tied embedding */
    pi0_gemma_layer *llm;  /* [llm_depth] */
    pi0_tensor llm_norm;   /* (D,) unused at inference */
    /* action expert */
    pi0_gemma_layer *exp;  /* [llm_depth] */
    pi0_tensor exp_norm;   /* (De,) */
    /* pi0 heads */
    pi0_tensor state_w, state_b;       /* (De, A), (De,) */
    pi0_tensor ain_w, ain_b;           /* (De, A), (De,) action_in_proj */
    pi0_tensor atm_in_w, atm_in_b;     /* (De, 2*De), (De,) action_time_mlp_in */
    pi0_tensor atm_out_w, atm_out_b;   /* (De, De), (De,) action_time_mlp_out */
    pi0_tensor aout_w, aout_b;         /* (A, De), (A,) action_out_proj */
} pi0_weights;

/* Allocate the per-layer arrays for cfg (tensors left empty). */
int pi0_weights_build(pi0_weights *w, const pi0_config *cfg);
void pi0_weights_free(pi0_weights *w);
#endif
