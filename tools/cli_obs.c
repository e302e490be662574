/* Observation files for `pi0 infer` (format in docs/FORMATS.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "io/safetensors.h"
#include "model/tensor_table.h"
#include "util/error.h"

int cli_error(const char *what, pi0_status st) {
    fprintf(stderr, "error: %s: %s: %s\n", what, pi0_status_name(st), pi0_last_error());
    return 1;
}

int cli_progress(float fraction, void *user) {
    static int last = -1;
    if (!isatty(2)) return 0;
    int pct = (int)(fraction * 100.f);
    if (pct == last) return 0;
    last = pct;
    int bar = pct / 2;
    fprintf(stderr, "\r%s [%.*s%*s] %3d%%", user ? (const char *)user : "", bar,
            "##################################################", 50 - bar, "", pct);
    if (pct >= 100) fprintf(stderr, "\n");
    return 0;
}

/* Find a tensor, check its shape, and convert it to a fresh buffer of the wanted type. */
static int get(const st_file *f, const char *name, int want_ndim, const int64_t *want, int optional, void **out,
               pi0_dtype as, int64_t *shape_out) {
    const st_tensor *t = st_find(f, name);
    *out = NULL;
    if (!t) {
        if (optional) return 0;
        fprintf(stderr, "error: observation: missing tensor %s\n", name);
        return -1;
    }
    int ok = t->ndim == want_ndim;
    for (int d = 0; ok && d < want_ndim; d++) ok = want[d] < 0 || t->shape[d] == want[d];
    if (!ok) {
        char a[96];
        fprintf(stderr, "error: observation: tensor %s has shape %s (expected %d dims", name,
                st_shape_str(t->shape, t->ndim, a, sizeof a), want_ndim);
        for (int d = 0; d < want_ndim; d++) fprintf(stderr, d ? ", %lld" : ": %lld", (long long)want[d]);
        fprintf(stderr, ")\n");
        return -1;
    }
    int64_t n = st_numel(t);
    if (shape_out)
        for (int d = 0; d < t->ndim; d++) shape_out[d] = t->shape[d];
    void *buf = malloc((size_t)(n ? n : 1) * 4);
    if (!buf) return -1;
    for (int64_t i = 0; i < n; i++) {
        double v;
        switch (t->dtype) {
        case PI0_DT_F32: { float x; memcpy(&x, (const char *)t->data + 4 * i, 4); v = x; break; }
        case PI0_DT_I32: { int32_t x; memcpy(&x, (const char *)t->data + 4 * i, 4); v = x; break; }
        case PI0_DT_I64: { int64_t x; memcpy(&x, (const char *)t->data + 8 * i, 8); v = (double)x; break; }
        case PI0_DT_U8: case PI0_DT_BOOL: v = ((const uint8_t *)t->data)[i]; break;
        default:
            fprintf(stderr, "error: observation: tensor %s has unsupported dtype %s\n", name, pi0_dtype_name(t->dtype));
            free(buf);
            return -1;
        }
        if (as == PI0_DT_F32) ((float *)buf)[i] = (float)v;
        else if (as == PI0_DT_I32) ((int32_t *)buf)[i] = (int32_t)v;
        else ((uint8_t *)buf)[i] = v != 0;
    }
    *out = buf;
    return 1;
}

int cli_obs_load(const char *path, const pi0_config *cfg, cli_obs *o) {
    memset(o, 0, sizeof *o);
    st_file *f;
    pi0_status st = st_open(path, &f);
    if (st != PI0_OK) return cli_error("observation", st);
    const int64_t S = cfg->image_size, A = cfg->action_dim;
    int64_t tok_shape[1] = {0}, noise_shape[2] = {0};
    uint8_t *masks = NULL;
    int rc = get(f, "images", 4, (const int64_t[]){3, S, S, 3}, 0, (void **)&o->images, PI0_DT_F32, NULL) < 0 ||
             get(f, "image_masks", 1, (const int64_t[]){3}, 0, (void **)&masks, PI0_DT_U8, NULL) < 0 ||
             get(f, "tokens", 1, (const int64_t[]){-1}, 0, (void **)&o->tokens, PI0_DT_I32, tok_shape) < 0 ||
             get(f, "token_mask", 1, tok_shape, 0, (void **)&o->token_mask, PI0_DT_U8, NULL) < 0 ||
             get(f, "state", 1, (const int64_t[]){A}, 0, (void **)&o->state, PI0_DT_F32, NULL) < 0 ||
             get(f, "noise", 2, (const int64_t[]){-1, A}, 1, (void **)&o->noise, PI0_DT_F32, noise_shape) < 0;
    st_close(f);
    if (rc) {
        free(masks);
        cli_obs_free(o);
        return 1;
    }
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        o->obs.images[k] = o->images + (size_t)k * S * S * 3;
        o->obs.image_mask[k] = masks[k];
    }
    free(masks);
    o->obs.tokens = o->tokens;
    o->obs.token_mask = o->token_mask;
    o->obs.n_tokens = (int)tok_shape[0];
    o->obs.state = o->state;
    o->obs.noise = o->noise;
    o->horizon = o->noise ? (int)noise_shape[0] : 0;
    return 0;
}

int cli_obs_random(const pi0_config *cfg, uint64_t seed, int n_cams, int n_tokens, int max_len, cli_obs *o) {
    memset(o, 0, sizeof *o);
    const size_t img = (size_t)cfg->image_size * cfg->image_size * 3;
    o->images = malloc(3 * img * sizeof(float));
    o->tokens = calloc((size_t)max_len + 1, sizeof(int32_t));
    o->token_mask = calloc((size_t)max_len + 1, 1);
    o->state = malloc((size_t)cfg->action_dim * sizeof(float));
    if (!o->images || !o->tokens || !o->token_mask || !o->state) {
        cli_obs_free(o);
        return 1;
    }
    uint64_t ts = pi0_spec_seed(seed, "obs");
    for (size_t i = 0; i < 3 * img; i++) {
        float z = pi0_random_value(ts, i, 0.f, 0.5f);
        o->images[i] = z > 1.f ? 1.f : z < -1.f ? -1.f : z;
    }
    for (int i = 0; i < max_len; i++) {
        o->tokens[i] = i < n_tokens ? (int32_t)(pi0_random_value(ts, 3 * img + i, 0.f, 1.f) * 1e6) : 0;
        if (o->tokens[i] < 0) o->tokens[i] = -o->tokens[i];
        o->tokens[i] %= cfg->vocab_size;
        o->token_mask[i] = i < n_tokens;
    }
    for (int i = 0; i < cfg->action_dim; i++) o->state[i] = pi0_random_value(ts, 3 * img + max_len + i, 0.f, 1.f);
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        o->obs.images[k] = o->images + (size_t)k * img;
        o->obs.image_mask[k] = k < n_cams;
    }
    o->obs.tokens = o->tokens;
    o->obs.token_mask = o->token_mask;
    o->obs.n_tokens = max_len;
    o->obs.state = o->state;
    o->obs.noise_seed = seed;
    return 0;
}

void cli_obs_free(cli_obs *o) {
    free(o->images);
    free(o->tokens);
    free(o->token_mask);
    free(o->state);
    free(o->noise);
    memset(o, 0, sizeof *o);
}
