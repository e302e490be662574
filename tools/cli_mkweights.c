/* `pi0 mkweights`: random weights in the exact openpi checkpoint layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/tensor_table.h"
#include "util/error.h"

static int usage(void) {
    fprintf(stderr, "usage: pi0 mkweights --config full|tiny [--seed N] [--dtype bf16|f32] (-o FILE | --list)\n");
    return 2;
}

/* Tensor data streamed in chunks so the full 7 GB model never sits in memory. */
static pi0_status write_tensors(st_writer *w, const pi0_tensor_spec *specs, int n, uint64_t seed, pi0_dtype dt) {
    const size_t chunk = 1 << 22, esz = pi0_dtype_size(dt);
    void *buf = malloc(chunk * esz);
    if (!buf) return pi0_fail(PI0_ERR_OOM, "out of memory");
    uint64_t total = 0, done = 0;
    for (int i = 0; i < n; i++) total += (uint64_t)pi0_spec_numel(&specs[i]);
    pi0_status st = PI0_OK;
    for (int i = 0; i < n && st == PI0_OK; i++) {
        size_t numel = (size_t)pi0_spec_numel(&specs[i]);
        for (size_t off = 0; off < numel && st == PI0_OK; off += chunk) {
            size_t k = numel - off < chunk ? numel - off : chunk;
            pi0_fill_random(&specs[i], seed, dt, off, k, buf);
            st = st_writer_write(w, buf, k * esz);
            done += k;
            cli_progress((float)((double)done / (double)total), "mkweights");
        }
    }
    free(buf);
    return st;
}

int cmd_mkweights(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    uint64_t seed = 0;
    int list = 0;
    pi0_dtype dt = PI0_DT_BF16;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--list")) list = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "bf16")) dt = PI0_DT_BF16;
            else if (!strcmp(d, "f32")) dt = PI0_DT_F32;
            else return usage();
        } else return usage();
    }
    if (!config || (!out && !list)) return usage();
    pi0_config cfg;
    pi0_status st = pi0_config_by_name(config, &cfg);
    if (st != PI0_OK) return cli_error("mkweights", st);
    pi0_tensor_spec *specs;
    int n;
    if (pi0_tensor_table(&cfg, NULL, &specs, &n) != 0) return cli_error("mkweights", pi0_fail(PI0_ERR_OOM, "out of memory"));
    if (list) {
        char shape[96];
        for (int i = 0; i < n; i++)
            printf("%s %s %s\n", specs[i].name, pi0_dtype_name(dt), st_shape_str(specs[i].shape, specs[i].ndim, shape, sizeof shape));
        free(specs);
        return 0;
    }
    st_writer *w;
    st = st_writer_create(out, &w);
    char val[32];
    if (st == PI0_OK) st = st_writer_meta(w, "format", "pt");
    if (st == PI0_OK) st = st_writer_meta(w, PI0_TIED_EMBED_ALIAS, PI0_TIED_EMBED_NAME);
    for (int i = 0; st == PI0_OK && i < pi0_config_num_fields; i++) {
        snprintf(val, sizeof val, "%d", *(const int *)((const char *)&cfg + pi0_config_fields[i].offset));
        st = st_writer_meta(w, pi0_config_fields[i].key, val);
    }
    for (int i = 0; st == PI0_OK && i < n; i++) st = st_writer_add(w, specs[i].name, dt, specs[i].ndim, specs[i].shape);
    if (st == PI0_OK) st = write_tensors(w, specs, n, seed, dt);
    if (st == PI0_OK) st = st_writer_finish(w);
    else if (w) st_writer_abort(w);
    free(specs);
    if (st != PI0_OK) return cli_error("mkweights", st);
    return 0;
}
