/*
 * The checkpoint layout: every tensor of an openpi PyTorch pi0 model.safetensors, in
 * file order, with its shape for a config and how `mkweights` initialises it.
 * One table drives the writer, the loader's checks and random-weight generation.
 */
#ifndef PI0_TENSOR_TABLE_H
#define PI0_TENSOR_TABLE_H
#include "model/weights.h"

typedef enum {
    PI0_INIT_KERNEL = 0, /* N(0, 1/sqrt(fan_in)) */
    PI0_INIT_BIAS,       /* N(0, 0.02) */
    PI0_INIT_NORM,       /* N(0, 0.1): RMSNorm w used as (1+w) */
    PI0_INIT_LN_GAIN,    /* 1 + N(0, 0.1): LayerNorm gain */
    PI0_INIT_EMBED       /* N(0, 1/sqrt(width)) */
} pi0_init_kind;

#define PI0_TENSOR_NAME_MAX 112

typedef struct {
    char name[PI0_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[4];
    pi0_init_kind init;
    float mean, std;     /* derived from init kind and fan-in */
    pi0_tensor *dst;     /* field in pi0_weights, NULL for tensors pi0 never uses */
} pi0_tensor_spec;

#define PI0_TIED_EMBED_NAME "paligemma_with_expert.paligemma.lm_head.weight"
#define PI0_TIED_EMBED_ALIAS "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"

/* Fill specs (malloc'd, *n entries). w may be NULL (then dst is NULL). 0 on success. */
int pi0_tensor_table(const pi0_config *cfg, pi0_weights *w, pi0_tensor_spec **specs, int *n);
int64_t pi0_spec_numel(const pi0_tensor_spec *s);
/* Seed of one tensor's random stream: depends on the model seed and the tensor name only. */
uint64_t pi0_spec_seed(uint64_t seed, const char *name);
/* Element i of a tensor's random stream, N(mean, std) (counter-based, so it can run on a GPU). */
float pi0_random_value(uint64_t tensor_seed, uint64_t i, float mean, float std);
/* Fill elements [off, off+n) of a spec's random tensor into dst as F32 or BF16. */
void pi0_fill_random(const pi0_tensor_spec *s, uint64_t model_seed, pi0_dtype dt, size_t off, size_t n, void *dst);
#endif
