/*
 * Every bad input gets a status and a message that names the problem, never a crash:
 * broken checkpoint files (truncated, bad header, overlapping or out-of-range offsets,
 * wrong dtype/shape, missing tensors) and bad observations (NaN/Inf, too long prompt,
 * no camera, token outside the vocabulary, ...).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "test_util.h"

static char g_dir[256];

static const char *tmp(const char *name) {
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

typedef struct {
    const char *skip;         /* tensor left out */
    const char *transpose;    /* tensor written with its two dims swapped */
    const char *bad_dtype;    /* tensor written as I32 */
    const char *rename_from;  /* tensor stored under another name */
    const char *rename_to;
    const char *meta_key, *meta_value; /* extra metadata */
} mutation;

/* A tiny checkpoint in the openpi layout, with one mutation applied. */
static pi0_status write_tiny(const char *path, const mutation *mu) {
    pi0_config cfg;
    pi0_config_by_name("tiny", &cfg);
    pi0_tensor_spec *specs;
    int n;
    if (pi0_tensor_table(&cfg, NULL, &specs, &n)) return PI0_ERR_OOM;
    st_writer *w;
    pi0_status st = st_writer_create(path, &w);
    if (st != PI0_OK) {
        free(specs);
        return st;
    }
    char v[32];
    for (int i = 0; st == PI0_OK && i < pi0_config_num_fields; i++) {
        if (mu->meta_key && !strcmp(mu->meta_key, pi0_config_fields[i].key)) continue;
        snprintf(v, sizeof v, "%d", *(const int *)((const char *)&cfg + pi0_config_fields[i].offset));
        st = st_writer_meta(w, pi0_config_fields[i].key, v);
    }
    if (st == PI0_OK && mu->meta_key) st = st_writer_meta(w, mu->meta_key, mu->meta_value);
    size_t maxn = 0;
    for (int i = 0; i < n; i++) {
        pi0_tensor_spec *s = &specs[i];
        if ((size_t)pi0_spec_numel(s) > maxn) maxn = (size_t)pi0_spec_numel(s);
        if (mu->transpose && !strcmp(s->name, mu->transpose)) {
            int64_t t = s->shape[0];
            s->shape[0] = s->shape[1];
            s->shape[1] = t;
        }
    }
    for (int i = 0; st == PI0_OK && i < n; i++) {
        const pi0_tensor_spec *s = &specs[i];
        if (mu->skip && !strcmp(s->name, mu->skip)) continue;
        const char *name = mu->rename_from && !strcmp(s->name, mu->rename_from) ? mu->rename_to : s->name;
        pi0_dtype dt = mu->bad_dtype && !strcmp(s->name, mu->bad_dtype) ? PI0_DT_I32 : PI0_DT_BF16;
        st = st_writer_add(w, name, dt, s->ndim, s->shape);
    }
    void *buf = malloc(maxn * 4);
    for (int i = 0; st == PI0_OK && i < n; i++) {
        const pi0_tensor_spec *s = &specs[i];
        if (mu->skip && !strcmp(s->name, mu->skip)) continue;
        int i32 = mu->bad_dtype && !strcmp(s->name, mu->bad_dtype);
        pi0_fill_random(s, 7, i32 ? PI0_DT_F32 : PI0_DT_BF16, 0, (size_t)pi0_spec_numel(s), buf);
        st = st_writer_write(w, buf, (size_t)pi0_spec_numel(s) * (i32 ? 4 : 2));
    }
    free(buf);
    free(specs);
    if (st != PI0_OK) {
        st_writer_abort(w);
        return st;
    }
    return st_writer_finish(w);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A raw safetensors file from a JSON header and a data section of data_size bytes. */
static void write_raw(const char *path, const char *json, size_t data_size) {
    size_t hn = strlen(json);
    uint8_t *b = calloc(8 + hn + data_size, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(b + 8, json, hn);
    write_bytes(path, b, 8 + hn + data_size);
    free(b);
}

static pi0_status load(const char *path) {
    pi0_model_params p = pi0_model_default_params();
    p.backend = PI0_BACKEND_CPU;
    pi0_model *m = NULL;
    pi0_status st = pi0_model_load(path, &p, &m);
    pi0_model_free(m);
    return st;
}

static int cancel_at_half(float f, void *u) { return f > 0.5f; }

static void test_files(void) {
    char good[512];
    snprintf(good, sizeof good, "%s", tmp("good.safetensors"));
    mutation none = {0};
    CHECK(write_tiny(good, &none) == PI0_OK, "write tiny: %s", pi0_last_error());
    CHECK(load(good) == PI0_OK, "good file: %s", pi0_last_error());

    CHECK_ERR(load(tmp("does-not-exist")), PI0_ERR_IO, "cannot open");
    write_bytes(tmp("empty"), "", 0);
    CHECK_ERR(load(tmp("empty")), PI0_ERR_FORMAT, "too short for a safetensors header");
    uint8_t huge[16] = {0x40, 0x42, 0x0f, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(tmp("huge"), huge, sizeof huge);
    CHECK_ERR(load(tmp("huge")), PI0_ERR_FORMAT, "header length 1000000 exceeds file size 16");

    /* Truncated: the good file cut at 60%. */
    FILE *f = fopen(good, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *all = malloc((size_t)size);
    CHECK(fread(all, 1, (size_t)size, f) == (size_t)size, "read back");
    fclose(f);
    write_bytes(tmp("trunc"), all, (size_t)size * 6 / 10);
    CHECK_ERR(load(tmp("trunc")), PI0_ERR_FORMAT, "points past the end of the data");
    write_bytes(tmp("trunc_header"), all, 100);
    CHECK_ERR(load(tmp("trunc_header")), PI0_ERR_FORMAT, "exceeds file size 100");
    free(all);

    write_raw(tmp("badjson"), "{\"a\": {\"dtype\": \"F32\", ", 0);
    CHECK_ERR(load(tmp("badjson")), PI0_ERR_FORMAT, "header is not valid JSON");
    write_raw(tmp("notobj"), "[1, 2, 3]", 0);
    CHECK_ERR(load(tmp("notobj")), PI0_ERR_FORMAT, "header is not a JSON object");
    write_raw(tmp("overlap"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
              24);
    CHECK_ERR(load(tmp("overlap")), PI0_ERR_FORMAT, "overlap");
    write_raw(tmp("pastend"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    CHECK_ERR(load(tmp("pastend")), PI0_ERR_FORMAT, "tensor a: data_offsets end 16 points past the end");
    write_raw(tmp("reversed"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8);
    CHECK_ERR(load(tmp("reversed")), PI0_ERR_FORMAT, "reversed");
    write_raw(tmp("sizemismatch"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16);
    CHECK_ERR(load(tmp("sizemismatch")), PI0_ERR_FORMAT, "tensor a: 16 bytes for 3 elements of F32");
    write_raw(tmp("baddtype"), "{\"a\":{\"dtype\":\"Q8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
    CHECK_ERR(load(tmp("baddtype")), PI0_ERR_FORMAT, "tensor a: unsupported dtype Q8");
    write_raw(tmp("negshape"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16);
    CHECK_ERR(load(tmp("negshape")), PI0_ERR_FORMAT, "bad shape entry 0");
    write_raw(tmp("metatwice"), "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\"}}", 0);
    CHECK_ERR(load(tmp("metatwice")), PI0_ERR_FORMAT, "__metadata__ appears twice in the header");
    write_raw(tmp("nooffsets"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16);
    CHECK_ERR(load(tmp("nooffsets")), PI0_ERR_FORMAT, "tensor a: bad data_offsets");

    mutation miss = {.skip = "paligemma_with_expert.gemma_expert.model.norm.weight"};
    write_tiny(tmp("missing"), &miss);
    CHECK_ERR(load(tmp("missing")), PI0_ERR_TENSOR, "missing tensor paligemma_with_expert.gemma_expert.model.norm.weight");
    mutation shape = {.transpose = "action_time_mlp_in.weight"};
    write_tiny(tmp("shape"), &shape);
    CHECK_ERR(load(tmp("shape")), PI0_ERR_TENSOR, "tensor action_time_mlp_in.weight has shape [64, 32], expected [32, 64]");
    mutation dtype = {.bad_dtype = "state_proj.bias"};
    write_tiny(tmp("dtype"), &dtype);
    CHECK_ERR(load(tmp("dtype")), PI0_ERR_TENSOR, "tensor state_proj.bias has dtype I32, expected BF16 or F32");
    mutation meta = {.meta_key = "pi0.vit_width", .meta_value = "abc"};
    write_tiny(tmp("meta"), &meta);
    CHECK_ERR(load(tmp("meta")), PI0_ERR_FORMAT, "metadata pi0.vit_width = 'abc' is not a positive integer");
    mutation alias = {.rename_from = PI0_TIED_EMBED_NAME, .rename_to = PI0_TIED_EMBED_ALIAS};
    write_tiny(tmp("alias"), &alias);
    CHECK(load(tmp("alias")) == PI0_OK, "embedding stored under its alias name: %s", pi0_last_error());
    mutation nohead = {.skip = "paligemma_with_expert.gemma_expert.lm_head.weight"};
    write_tiny(tmp("nohead"), &nohead);
    CHECK(load(tmp("nohead")) == PI0_OK, "the unused expert lm_head is optional: %s", pi0_last_error());

    pi0_model_params p = pi0_model_default_params();
    p.backend = PI0_BACKEND_CPU;
    p.progress = cancel_at_half;
    pi0_model *m = NULL;
    CHECK_ERR(pi0_model_load(good, &p, &m), PI0_ERR_CANCELLED, "cancelled");
    CHECK(m == NULL, "no model on failure");
}

static void test_observations(void) {
    pi0_config cfg;
    CHECK_ERR(pi0_config_by_name("huge", &cfg), PI0_ERR_INVALID_ARG, "unknown config 'huge'");
    pi0_config_by_name("tiny", &cfg);
    pi0_model_params mp = pi0_model_default_params();
    mp.backend = PI0_BACKEND_CPU;
    pi0_model *m = NULL;
    CHECK(pi0_model_random(&cfg, 1, &mp, &m) == PI0_OK, "random tiny: %s", pi0_last_error());
    if (!m) return;
    pi0_session_params sp = pi0_session_default_params();
    pi0_session *s = NULL;
    sp.action_horizon = -1;
    CHECK_ERR(pi0_session_create(m, &sp, &s), PI0_ERR_INVALID_ARG, "action_horizon -1 is out of range");
    sp.action_horizon = 10;
    CHECK(pi0_session_create(m, &sp, &s) == PI0_OK, "session: %s", pi0_last_error());

    const size_t npix = (size_t)cfg.image_size * cfg.image_size * 3;
    float *img = calloc(npix, sizeof *img), state[32] = {0}, noise[10 * 32] = {0}, actions[10 * 32];
    int32_t tokens[64] = {0};
    uint8_t tmask[64];
    memset(tmask, 1, sizeof tmask);
    for (size_t i = 0; i < npix; i++) img[i] = (float)((i % 97) / 48.5 - 1.0);
    for (int i = 0; i < 10 * 32; i++) noise[i] = (float)((i % 13) / 6.5 - 1.0);
    pi0_observation o = {.images = {img, img, img}, .image_mask = {1, 1, 0}, .tokens = tokens, .token_mask = tmask,
                         .n_tokens = 10, .state = state, .noise = noise};
    CHECK(pi0_infer(s, &o, actions, NULL) == PI0_OK, "good observation: %s", pi0_last_error());
    CHECK_ERR(pi0_stage_kv(s, 5, actions, actions), PI0_ERR_INVALID_ARG, "layer 5 is out of range [0, 2)");

    pi0_observation b = o;
    b.image_mask[0] = b.image_mask[1] = 0;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "no valid camera");
    b = o;
    b.n_tokens = 49;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "prompt has 49 tokens, more than max_token_len 48");
    b = o;
    tokens[3] = cfg.vocab_size;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "token 1024 at position 3 is outside the vocabulary");
    tokens[3] = 0;
    img[1234] = NAN;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "image 0 (base_0_rgb) has a non-finite value (nan) at index 1234");
    img[1234] = 0.f;
    float *img2 = malloc(npix * sizeof *img2);
    memcpy(img2, img, npix * sizeof *img2);
    img2[7] = INFINITY;
    b.images[1] = img2;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "image 1 (left_wrist_0_rgb) has a non-finite value (inf)");
    b = o;
    b.images[1] = NULL;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "image 1 (left_wrist_0_rgb): image pointer is NULL");
    b = o;
    state[5] = NAN;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "state has a non-finite value (nan) at index 5");
    state[5] = 0.f;
    noise[17] = -INFINITY;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "noise has a non-finite value (-inf) at index 17");
    noise[17] = 0.f;
    b.image_mask[2] = 1; /* a masked camera's NULL image is fine, a valid one's is not */
    b.images[2] = NULL;
    CHECK_ERR(pi0_infer(s, &b, actions, NULL), PI0_ERR_INVALID_ARG, "image 2 (right_wrist_0_rgb): image pointer is NULL");
    b = o;
    b.images[2] = NULL;
    CHECK(pi0_infer(s, &b, actions, NULL) == PI0_OK, "masked camera with NULL image: %s", pi0_last_error());
    CHECK_ERR(pi0_infer(s, NULL, actions, NULL), PI0_ERR_INVALID_ARG, "observation is NULL");

    pi0_session *fresh = NULL;
    CHECK(pi0_session_create(m, &sp, &fresh) == PI0_OK, "fresh session");
    CHECK_ERR(pi0_stage_kv(fresh, 0, actions, actions), PI0_ERR_INVALID_ARG, "run the prefill first");
    CHECK_ERR(pi0_stage_velocity(fresh, state, noise, 1.0f, actions), PI0_ERR_INVALID_ARG, "run the prefill first");
    pi0_session_free(fresh);
    pi0_model *gm = NULL;
    mp.backend = PI0_BACKEND_CUDA;
#ifndef PI0_HAVE_CUDA
    CHECK_ERR(pi0_model_random(&cfg, 1, &mp, &gm), PI0_ERR_UNSUPPORTED, "no CUDA backend");
#else
    /* an explicit CUDA request never falls back to the CPU */
    pi0_status gs = pi0_model_random(&cfg, 1, &mp, &gm);
    CHECK(gs == PI0_OK ? pi0_model_backend(gm) == PI0_BACKEND_CUDA : strstr(pi0_last_error(), "CUDA") != NULL,
          "explicit CUDA: %s %s", pi0_status_name(gs), pi0_last_error());
    pi0_model_free(gm);
#endif
    free(img);
    free(img2);
    pi0_session_free(s);
    pi0_model_free(m);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/pi0_test_errors_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    if (system(cmd) != 0) return 1;
    test_files();
    test_observations();
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", g_dir);
    return test_summary("test_model_errors");
}
