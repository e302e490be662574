/* libFuzzer target: the safetensors header parser (src/io/safetensors.h, st_open_memory) and a
 * read of every tensor it accepts. */
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f;
    if (st_open_memory(data, size, &f) != PI0_OK) return 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->end < t->begin || t->end > f->data_size) __builtin_trap();
        const uint8_t *p = t->data;
        for (uint64_t b = 0; b < t->end - t->begin; b++) sink ^= p[b];
        if (st_find(f, t->name) == NULL) __builtin_trap();
    }
    for (int i = 0; i < f->n_meta; i++) sink ^= (uint8_t)f->meta[i].value[0];
    (void)sink;
    st_close(f);
    return 0;
}
