/* The openpi PyTorch checkpoint layout for a pi0 config (SPEC §9.1), in file order. */
#include "model/tensor_table.h"

#include "model/config.h"
#include "util/bf16.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pi0_tensor_spec *v;
    int n, cap;
    int failed; /* an allocation failed */
} spec_list;

static void add(spec_list *l, pi0_tensor *dst, pi0_init_kind init, int ndim, const int64_t *shape,
                const char *fmt, ...) {
    if (l->failed) return;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        pi0_tensor_spec *nv = realloc(l->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            l->failed = 1;
            return;
        }
        l->v = nv;
        l->cap = cap;
    }
    pi0_tensor_spec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    int64_t fan_in = 1;
    for (int i = 0; i < ndim; i++) s->shape[i] = shape[i];
    for (int i = 1; i < ndim; i++) fan_in *= shape[i];
    s->init = init;
    s->dst = dst;
    switch (init) {
    case PI0_INIT_KERNEL: s->mean = 0.f; s->std = (float)(1.0 / sqrt((double)fan_in)); break;
    case PI0_INIT_BIAS: s->mean = 0.f; s->std = 0.02f; break;
    case PI0_INIT_NORM: s->mean = 0.f; s->std = 0.1f; break;
    case PI0_INIT_LN_GAIN: s->mean = 1.f; s->std = 0.1f; break;
    case PI0_INIT_EMBED: s->mean = 0.f; s->std = (float)(1.0 / sqrt((double)shape[1])); break;
    }
    if (dst) {
        dst->ndim = ndim;
        for (int i = 0; i < 4; i++) dst->shape[i] = i < ndim ? shape[i] : 0;
    }
}

#define S1(a) ((const int64_t[]){(a)})
#define S2(a, b) ((const int64_t[]){(a), (b)})
#define PT(w, f) ((w) ? &(w)->f : NULL)

static void gemma_layer(spec_list *l, pi0_gemma_layer *g, const char *prefix, int i, int D, int F,
                        const pi0_config *c) {
    int64_t q = (int64_t)c->num_heads * c->head_dim, kv = (int64_t)c->num_kv_heads * c->head_dim;
    add(l, PT(g, q_w), PI0_INIT_KERNEL, 2, S2(q, D), "%s.layers.%d.self_attn.q_proj.weight", prefix, i);
    add(l, PT(g, k_w), PI0_INIT_KERNEL, 2, S2(kv, D), "%s.layers.%d.self_attn.k_proj.weight", prefix, i);
    add(l, PT(g, v_w), PI0_INIT_KERNEL, 2, S2(kv, D), "%s.layers.%d.self_attn.v_proj.weight", prefix, i);
    add(l, PT(g, o_w), PI0_INIT_KERNEL, 2, S2(D, q), "%s.layers.%d.self_attn.o_proj.weight", prefix, i);
    add(l, PT(g, gate_w), PI0_INIT_KERNEL, 2, S2(F, D), "%s.layers.%d.mlp.gate_proj.weight", prefix, i);
    add(l, PT(g, up_w), PI0_INIT_KERNEL, 2, S2(F, D), "%s.layers.%d.mlp.up_proj.weight", prefix, i);
    add(l, PT(g, down_w), PI0_INIT_KERNEL, 2, S2(D, F), "%s.layers.%d.mlp.down_proj.weight", prefix, i);
    add(l, PT(g, attn_norm), PI0_INIT_NORM, 1, S1(D), "%s.layers.%d.input_layernorm.weight", prefix, i);
    add(l, PT(g, ffn_norm), PI0_INIT_NORM, 1, S1(D), "%s.layers.%d.post_attention_layernorm.weight", prefix, i);
}

int pi0_tensor_table(const pi0_config *c, pi0_weights *w, pi0_tensor_spec **specs, int *n) {
    spec_list l = {0};
    const char *V = "paligemma_with_expert.paligemma.model.vision_tower.vision_model";
    const int64_t W = c->vit_width, M = c->vit_mlp, p = c->patch_size, np = pi0_config_num_patches(c);
    add(&l, PT(w, patch_w), PI0_INIT_KERNEL, 4, ((const int64_t[]){W, 3, p, p}),
        "%s.embeddings.patch_embedding.weight", V);
    add(&l, PT(w, patch_b), PI0_INIT_BIAS, 1, S1(W), "%s.embeddings.patch_embedding.bias", V);
    add(&l, PT(w, pos_emb), PI0_INIT_BIAS, 2, S2(np, W), "%s.embeddings.position_embedding.weight", V);
    for (int i = 0; i < c->vit_depth; i++) {
        pi0_vit_layer *v = w ? &w->vit[i] : NULL;
        const char *E = "encoder.layers";
        add(&l, PT(v, ln1_w), PI0_INIT_LN_GAIN, 1, S1(W), "%s.%s.%d.layer_norm1.weight", V, E, i);
        add(&l, PT(v, ln1_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.layer_norm1.bias", V, E, i);
        add(&l, PT(v, k_w), PI0_INIT_KERNEL, 2, S2(W, W), "%s.%s.%d.self_attn.k_proj.weight", V, E, i);
        add(&l, PT(v, k_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.self_attn.k_proj.bias", V, E, i);
        add(&l, PT(v, v_w), PI0_INIT_KERNEL, 2, S2(W, W), "%s.%s.%d.self_attn.v_proj.weight", V, E, i);
        add(&l, PT(v, v_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.self_attn.v_proj.bias", V, E, i);
        add(&l, PT(v, q_w), PI0_INIT_KERNEL, 2, S2(W, W), "%s.%s.%d.self_attn.q_proj.weight", V, E, i);
        add(&l, PT(v, q_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.self_attn.q_proj.bias", V, E, i);
        add(&l, PT(v, o_w), PI0_INIT_KERNEL, 2, S2(W, W), "%s.%s.%d.self_attn.out_proj.weight", V, E, i);
        add(&l, PT(v, o_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.self_attn.out_proj.bias", V, E, i);
        add(&l, PT(v, ln2_w), PI0_INIT_LN_GAIN, 1, S1(W), "%s.%s.%d.layer_norm2.weight", V, E, i);
        add(&l, PT(v, ln2_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.layer_norm2.bias", V, E, i);
        add(&l, PT(v, fc1_w), PI0_INIT_KERNEL, 2, S2(M, W), "%s.%s.%d.mlp.fc1.weight", V, E, i);
        add(&l, PT(v, fc1_b), PI0_INIT_BIAS, 1, S1(M), "%s.%s.%d.mlp.fc1.bias", V, E, i);
        add(&l, PT(v, fc2_w), PI0_INIT_KERNEL, 2, S2(W, M), "%s.%s.%d.mlp.fc2.weight", V, E, i);
        add(&l, PT(v, fc2_b), PI0_INIT_BIAS, 1, S1(W), "%s.%s.%d.mlp.fc2.bias", V, E, i);
    }
    add(&l, PT(w, post_ln_w), PI0_INIT_LN_GAIN, 1, S1(W), "%s.post_layernorm.weight", V);
    add(&l, PT(w, post_ln_b), PI0_INIT_BIAS, 1, S1(W), "%s.post_layernorm.bias", V);
    const int64_t D = c->llm_width, De = c->exp_width, A = c->action_dim;
    const char *P = "paligemma_with_expert.paligemma.model";
    add(&l, PT(w, proj_w), PI0_INIT_KERNEL, 2, S2(D, W), "%s.multi_modal_projector.linear.weight", P);
    add(&l, PT(w, proj_b), PI0_INIT_BIAS, 1, S1(D), "%s.multi_modal_projector.linear.bias", P);
    for (int i = 0; i < c->llm_depth; i++)
        gemma_layer(&l, w ? &w->llm[i] : NULL, "paligemma_with_expert.paligemma.model.language_model", i,
                    (int)D, c->llm_mlp, c);
    add(&l, PT(w, llm_norm), PI0_INIT_NORM, 1, S1(D), "%s.language_model.norm.weight", P);
    add(&l, PT(w, embed), PI0_INIT_EMBED, 2, S2(c->vocab_size, D), "%s", PI0_TIED_EMBED_NAME);
    for (int i = 0; i < c->llm_depth; i++)
        gemma_layer(&l, w ? &w->exp[i] : NULL, "paligemma_with_expert.gemma_expert.model", i, (int)De,
                    c->exp_mlp, c);
    add(&l, PT(w, exp_norm), PI0_INIT_NORM, 1, S1(De), "paligemma_with_expert.gemma_expert.model.norm.weight");
    add(&l, NULL, PI0_INIT_EMBED, 2, S2(c->vocab_size, De), "paligemma_with_expert.gemma_expert.lm_head.weight");
    add(&l, PT(w, ain_w), PI0_INIT_KERNEL, 2, S2(De, A), "action_in_proj.weight");
    add(&l, PT(w, ain_b), PI0_INIT_BIAS, 1, S1(De), "action_in_proj.bias");
    add(&l, PT(w, aout_w), PI0_INIT_KERNEL, 2, S2(A, De), "action_out_proj.weight");
    add(&l, PT(w, aout_b), PI0_INIT_BIAS, 1, S1(A), "action_out_proj.bias");
    add(&l, PT(w, state_w), PI0_INIT_KERNEL, 2, S2(De, A), "state_proj.weight");
    add(&l, PT(w, state_b), PI0_INIT_BIAS, 1, S1(De), "state_proj.bias");
    add(&l, PT(w, atm_in_w), PI0_INIT_KERNEL, 2, S2(De, 2 * De), "action_time_mlp_in.weight");
    add(&l, PT(w, atm_in_b), PI0_INIT_BIAS, 1, S1(De), "action_time_mlp_in.bias");
    add(&l, PT(w, atm_out_w), PI0_INIT_KERNEL, 2, S2(De, De), "action_time_mlp_out.weight");
    add(&l, PT(w, atm_out_b), PI0_INIT_BIAS, 1, S1(De), "action_time_mlp_out.bias");
    if (l.failed) {
        free(l.v);
        return -1;
    }
    *specs = l.v;
    *n = l.n;
    return 0;
}

int64_t pi0_spec_numel(const pi0_tensor_spec *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

/* splitmix64: a well-mixed 64-bit hash, cheap on CPU and GPU alike. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t pi0_spec_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return mix64(seed ^ mix64(h));
}

/*
 * Box-Muller on a counter: pair j = i/2 draws two uniforms from mix64(seed + 2j) and
 * mix64(seed + 2j + 1); even i takes the cosine branch, odd i the sine branch.
 * All in double so a GPU port gives the same bf16 values.
 */
float pi0_random_value(uint64_t tensor_seed, uint64_t i, float mean, float std) {
    uint64_t j = i >> 1;
    uint64_t a = mix64(tensor_seed + 2 * j), b = mix64(tensor_seed + 2 * j + 1);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);         /* [0, 1) */
    double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    double z = (i & 1) ? r * sin(th) : r * cos(th);
    return (float)(mean + std * z);
}

void pi0_fill_random(const pi0_tensor_spec *s, uint64_t model_seed, pi0_dtype dt, size_t off, size_t n, void *dst) {
    uint64_t ts = pi0_spec_seed(model_seed, s->name);
    if (dt == PI0_DT_F32) {
        float *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = pi0_random_value(ts, off + i, s->mean, s->std);
    } else {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(pi0_random_value(ts, off + i, s->mean, s->std));
    }
}
