/* safetensors writer -> reader round trip, metadata, alignment, in-memory parsing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "test_util.h"

int main(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/pi0_test_st_%d.safetensors", (int)getpid());
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    uint16_t b[3] = {0x3f80, 0xc000, 0x7f80};
    int32_t c[2] = {-5, 123456};
    uint8_t d[5] = {1, 0, 1, 1, 0};
    st_entry e[4] = {{"alpha", PI0_DT_F32, 2, {2, 3}, a},
                     {"beta.weight", PI0_DT_BF16, 1, {3}, b},
                     {"gamma", PI0_DT_I32, 1, {2}, c},
                     {"delta", PI0_DT_U8, 1, {5}, d}};
    const char *meta[] = {"format", "pt", "pi0.vit_width", "48"};
    CHECK(st_save(path, e, 4, meta, 2) == PI0_OK, "save: %s", pi0_last_error());
    st_file *f = NULL;
    CHECK(st_open(path, &f) == PI0_OK, "open: %s", pi0_last_error());
    if (f) {
        CHECK(f->n_tensors == 4, "n_tensors %d", f->n_tensors);
        CHECK(!strcmp(st_meta(f, "pi0.vit_width"), "48"), "metadata");
        CHECK(st_meta(f, "nope") == NULL, "absent metadata");
        const st_tensor *t = st_find(f, "alpha");
        CHECK(t && t->dtype == PI0_DT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "alpha header");
        CHECK(t && !memcmp(t->data, a, sizeof a), "alpha data");
        CHECK(t && ((uintptr_t)t->data % 8) == 0, "data section is 8-byte aligned");
        t = st_find(f, "beta.weight");
        CHECK(t && t->dtype == PI0_DT_BF16 && !memcmp(t->data, b, sizeof b), "beta");
        t = st_find(f, "gamma");
        CHECK(t && t->dtype == PI0_DT_I32 && !memcmp(t->data, c, sizeof c), "gamma");
        t = st_find(f, "delta");
        CHECK(t && t->dtype == PI0_DT_U8 && st_numel(t) == 5 && !memcmp(t->data, d, sizeof d), "delta");
        CHECK(st_find(f, "missing") == NULL, "missing");
        st_close(f);
    }
    /* the same bytes parsed from memory */
    FILE *fp = fopen(path, "rb");
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    CHECK(st_open_memory(buf, n, &f) == PI0_OK, "memory: %s", pi0_last_error());
    if (f) {
        CHECK(f->n_tensors == 4, "memory n_tensors");
        st_close(f);
    }
    CHECK_ERR(st_open_memory(buf, 7, &f), PI0_ERR_FORMAT, "too short");
    /* a writer that gets fewer bytes than declared removes its file */
    st_writer *w;
    CHECK(st_writer_create(path, &w) == PI0_OK, "create");
    st_writer_add(w, "x", PI0_DT_F32, 1, (const int64_t[]){4});
    st_writer_write(w, a, 8);
    CHECK_ERR(st_writer_finish(w), PI0_ERR_INVALID_ARG, "8 data bytes written, 16 declared");
    CHECK(access(path, F_OK) != 0, "partial file removed");
    CHECK_ERR(st_writer_create("/nonexistent-dir/x.safetensors", &w), PI0_ERR_IO, "cannot create");
    return test_summary("test_safetensors");
}
