/* Built-in configurations (SPEC §1) and the config <-> safetensors metadata mapping. */
#include "model/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

static const pi0_config k_full = {
    .image_size = 224, .patch_size = 14,
    .vit_width = 1152, .vit_depth = 27, .vit_mlp = 4304, .vit_heads = 16,
    .llm_width = 2048, .llm_depth = 18, .llm_mlp = 16384,
    .exp_width = 1024, .exp_mlp = 4096,
    .num_heads = 8, .num_kv_heads = 1, .head_dim = 256,
    .vocab_size = 257152, .action_dim = 32, .max_token_len = 48,
    .action_horizon = 50, .num_steps = 10,
};

/* Every width, depth and head count shrunk; same structure (MQA, q width != model width). */
static const pi0_config k_tiny = {
    .image_size = 224, .patch_size = 14,
    .vit_width = 48, .vit_depth = 2, .vit_mlp = 96, .vit_heads = 4,
    .llm_width = 64, .llm_depth = 2, .llm_mlp = 128,
    .exp_width = 32, .exp_mlp = 64,
    .num_heads = 2, .num_kv_heads = 1, .head_dim = 16,
    .vocab_size = 1024, .action_dim = 32, .max_token_len = 48,
    .action_horizon = 50, .num_steps = 10,
};

pi0_status pi0_config_by_name(const char *name, pi0_config *out) {
    if (!name || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_config_by_name: NULL argument");
    if (!strcmp(name, "full")) *out = k_full;
    else if (!strcmp(name, "tiny")) *out = k_tiny;
    else return pi0_fail(PI0_ERR_INVALID_ARG, "unknown config '%s' (expected full or tiny)", name);
    return PI0_OK;
}

#define FIELD(f) {"pi0." #f, offsetof(pi0_config, f)}
const pi0_config_field pi0_config_fields[] = {
    FIELD(image_size), FIELD(patch_size), FIELD(vit_width), FIELD(vit_depth), FIELD(vit_mlp),
    FIELD(vit_heads), FIELD(llm_width), FIELD(llm_depth), FIELD(llm_mlp), FIELD(exp_width),
    FIELD(exp_mlp), FIELD(num_heads), FIELD(num_kv_heads), FIELD(head_dim), FIELD(vocab_size),
    FIELD(action_dim), FIELD(max_token_len), FIELD(action_horizon), FIELD(num_steps),
};
const int pi0_config_num_fields = (int)(sizeof pi0_config_fields / sizeof pi0_config_fields[0]);

pi0_status pi0_config_check(const pi0_config *c) {
    const int *v = (const int *)c;
    for (int i = 0; i < pi0_config_num_fields; i++) {
        int x = *(const int *)((const char *)c + pi0_config_fields[i].offset);
        if (x <= 0 || x > 1 << 24)
            return pi0_fail(PI0_ERR_FORMAT, "config %s = %d is out of range", pi0_config_fields[i].key, x);
    }
    (void)v;
    if (c->image_size % c->patch_size)
        return pi0_fail(PI0_ERR_FORMAT, "config: image_size %d is not a multiple of patch_size %d",
                        c->image_size, c->patch_size);
    if (c->vit_width % c->vit_heads)
        return pi0_fail(PI0_ERR_FORMAT, "config: vit_width %d not divisible by vit_heads %d", c->vit_width,
                        c->vit_heads);
    if (c->num_heads % c->num_kv_heads)
        return pi0_fail(PI0_ERR_FORMAT, "config: num_heads %d not divisible by num_kv_heads %d", c->num_heads,
                        c->num_kv_heads);
    if (c->head_dim % 2) return pi0_fail(PI0_ERR_FORMAT, "config: head_dim %d must be even", c->head_dim);
    if (c->exp_width % 2) return pi0_fail(PI0_ERR_FORMAT, "config: exp_width %d must be even", c->exp_width);
    return PI0_OK;
}

int pi0_config_num_patches(const pi0_config *c) {
    int g = c->image_size / c->patch_size;
    return g * g;
}
