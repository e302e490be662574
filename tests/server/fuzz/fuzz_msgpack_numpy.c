/* libFuzzer target: the request decoder (msgpack bytes -> pi0_obs_items), then a use of every
 * decoded byte so ASan sees any item pointing outside its storage. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/msgpack_numpy.h"

static const size_t k_elem[] = {1, 1, 4, 8, 4, 8};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mpn_obs o;
    char err[256];
    if (mpn_decode(data, size, &o, err, sizeof err)) {
        if (!memchr(err, 0, sizeof err)) __builtin_trap(); /* the message is always terminated */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (int i = 0; i < o.n_items; i++) {
        const pi0_obs_item *it = &o.items[i];
        sink ^= (uint8_t)strlen(it->key);
        if (it->kind == PI0_VALUE_STRING) {
            sink ^= (uint8_t)strlen(it->str);
            continue;
        }
        if (it->ndim < 0 || it->ndim > 4 || (unsigned)it->dtype > PI0_ELEM_F64) __builtin_trap();
        size_t n = k_elem[it->dtype];
        for (int k = 0; k < it->ndim; k++) n *= (size_t)it->shape[k];
        const uint8_t *p = it->data;
        for (size_t b = 0; b < n; b++) sink ^= p[b];
        if (mpn_find(&o, it->key) == NULL) __builtin_trap();
    }
    (void)sink;
    mpn_obs_free(&o);
    return 0;
}
