#include "model/weights.h"

#include <stdlib.h>
#include <string.h>

#include "util/bf16.h"

size_t pi0_dtype_size(pi0_dtype dt) {
    switch (dt) {
    case PI0_DT_F32: case PI0_DT_I32: return 4;
    case PI0_DT_BF16: case PI0_DT_F16: return 2;
    case PI0_DT_I64: return 8;
    case PI0_DT_U8: case PI0_DT_BOOL: return 1;
    }
    return 0;
}

const char *pi0_dtype_name(pi0_dtype dt) {
    switch (dt) {
    case PI0_DT_F32: return "F32";
    case PI0_DT_BF16: return "BF16";
    case PI0_DT_F16: return "F16";
    case PI0_DT_I32: return "I32";
    case PI0_DT_I64: return "I64";
    case PI0_DT_U8: return "U8";
    case PI0_DT_BOOL: return "BOOL";
    }
    return "?";
}

int64_t pi0_tensor_numel(const pi0_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

void pi0_tensor_to_f32(const pi0_tensor *t, size_t off, size_t n, float *dst) {
    if (t->dtype == PI0_DT_F32) {
        memcpy(dst, (const float *)t->data + off, n * sizeof(float));
    } else { /* BF16: the loader accepts nothing else for weights */
        const uint16_t *s = (const uint16_t *)t->data + off;
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
    }
}

int pi0_weights_build(pi0_weights *w, const pi0_config *cfg) {
    memset(w, 0, sizeof *w);
    w->vit = calloc((size_t)cfg->vit_depth, sizeof *w->vit);
    w->llm = calloc((size_t)cfg->llm_depth, sizeof *w->llm);
    w->exp = calloc((size_t)cfg->llm_depth, sizeof *w->exp);
    if (!w->vit || !w->llm || !w->exp) {
        pi0_weights_free(w);
        return -1;
    }
    return 0;
}

void pi0_weights_free(pi0_weights *w) {
    free(w->vit);
    free(w->llm);
    free(w->exp);
    memset(w, 0, sizeof *w);
}
