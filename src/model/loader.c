/* Checkpoint binding and random weights; the file format is documented in io/safetensors.h
 * and docs/FORMATS.md (openpi PyTorch layout, SPEC §9.1). */
#include "model/loader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "util/error.h"
#include "util/threads.h"

static pi0_status config_from_metadata(const st_file *f, pi0_config *cfg) {
    PI0_TRY(pi0_config_by_name("full", cfg));
    for (int i = 0; i < pi0_config_num_fields; i++) {
        const char *v = st_meta(f, pi0_config_fields[i].key);
        if (!v) continue;
        char *end;
        long x = strtol(v, &end, 10);
        if (end == v || *end || x <= 0 || x > (1 << 24))
            return pi0_fail(PI0_ERR_FORMAT, "metadata %s = '%s' is not a positive integer", pi0_config_fields[i].key, v);
        *(int *)((char *)cfg + pi0_config_fields[i].offset) = (int)x;
    }
    return pi0_config_check(cfg);
}

static pi0_status table_for(pi0_model *m, pi0_tensor_spec **specs, int *n) {
    if (pi0_weights_build(&m->w, &m->cfg) != 0 || pi0_tensor_table(&m->cfg, &m->w, specs, n) != 0)
        return pi0_fail(PI0_ERR_OOM, "out of memory building the tensor table");
    return PI0_OK;
}

static pi0_status bind_tensor(const st_file *f, const pi0_tensor_spec *s) {
    const st_tensor *t = st_find(f, s->name);
    if (!t && !strcmp(s->name, PI0_TIED_EMBED_NAME)) t = st_find(f, PI0_TIED_EMBED_ALIAS);
    if (!t) return pi0_fail(PI0_ERR_TENSOR, "missing tensor %s", s->name);
    int same = t->ndim == s->ndim;
    for (int d = 0; same && d < s->ndim; d++) same = t->shape[d] == s->shape[d];
    if (!same) {
        char a[96], b[96];
        return pi0_fail(PI0_ERR_TENSOR, "tensor %s has shape %s, expected %s", s->name,
                        st_shape_str(t->shape, t->ndim, a, sizeof a), st_shape_str(s->shape, s->ndim, b, sizeof b));
    }
    if (t->dtype != PI0_DT_BF16 && t->dtype != PI0_DT_F32)
        return pi0_fail(PI0_ERR_TENSOR, "tensor %s has dtype %s, expected BF16 or F32", s->name, pi0_dtype_name(t->dtype));
    s->dst->data = t->data;
    s->dst->dtype = t->dtype;
    return PI0_OK;
}

pi0_status pi0_load_checkpoint(pi0_model *m, const char *path, pi0_progress_fn progress, void *user) {
    st_file *f;
    PI0_TRY(st_open(path, &f));
    m->file = f;
    pi0_status st = config_from_metadata(f, &m->cfg);
    if (st != PI0_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", pi0_last_error());
        return pi0_fail(st, "%s: %s", path, msg);
    }
    pi0_tensor_spec *specs;
    int n;
    PI0_TRY(table_for(m, &specs, &n));
    for (int i = 0; i < n && st == PI0_OK; i++) {
        if (!specs[i].dst) continue; /* the unused expert lm_head */
        st = bind_tensor(f, &specs[i]);
        if (st == PI0_OK && progress && progress((float)(i + 1) / (float)n, user))
            st = pi0_fail(PI0_ERR_CANCELLED, "loading %s cancelled", path);
    }
    free(specs);
    return st;
}

typedef struct {
    const pi0_tensor_spec *spec;
    uint64_t seed;
    uint16_t *dst;
    size_t numel;
} random_job;

#define RANDOM_CHUNK (1 << 20)

static void fill_chunks(void *ctx, int begin, int end) {
    random_job *j = ctx;
    for (int c = begin; c < end; c++) {
        size_t off = (size_t)c * RANDOM_CHUNK, n = j->numel - off < RANDOM_CHUNK ? j->numel - off : RANDOM_CHUNK;
        pi0_fill_random(j->spec, j->seed, PI0_DT_BF16, off, n, j->dst + off);
    }
}

pi0_status pi0_make_random_host(pi0_model *m, uint64_t seed, pi0_progress_fn progress, void *user) {
    pi0_tensor_spec *specs;
    int n;
    PI0_TRY(table_for(m, &specs, &n));
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (specs[i].dst) total += (size_t)pi0_spec_numel(&specs[i]);
    m->arena = malloc(total * sizeof(uint16_t));
    if (!m->arena) {
        free(specs);
        return pi0_fail(PI0_ERR_OOM, "cannot allocate %.2f GB for random weights", total * 2.0 / 1e9);
    }
    int threads = m->n_threads > 0 ? m->n_threads : pi0_num_cores();
    pi0_status st = PI0_OK;
    size_t off = 0;
    for (int i = 0; i < n && st == PI0_OK; i++) {
        if (!specs[i].dst) continue;
        random_job job = {&specs[i], seed, (uint16_t *)m->arena + off, (size_t)pi0_spec_numel(&specs[i])};
        pi0_parallel_for((int)((job.numel + RANDOM_CHUNK - 1) / RANDOM_CHUNK), threads, fill_chunks, &job);
        specs[i].dst->data = job.dst;
        specs[i].dst->dtype = PI0_DT_BF16;
        off += job.numel;
        if (progress && progress((float)off / (float)total, user))
            st = pi0_fail(PI0_ERR_CANCELLED, "making random weights cancelled");
    }
    free(specs);
    return st;
}

pi0_status pi0_bind_shapes(pi0_model *m) {
    pi0_tensor_spec *specs;
    int n;
    PI0_TRY(table_for(m, &specs, &n));
    for (int i = 0; i < n; i++)
        if (specs[i].dst) specs[i].dst->dtype = PI0_DT_BF16;
    free(specs);
    return PI0_OK;
}
