/*
 * openpi's msgpack + numpy wire encoding (SPEC §11.4), on msgpack-c.
 *
 * Decoding: a request is one msgpack map (the observation dict). Every map at any depth that has
 * the bin key "__ndarray__" is a numpy array ({data: bin, dtype: str, shape: [ints]}), one with
 * "__npgeneric__" a numpy scalar ({data: scalar, dtype: str}); other maps are dicts whose entries
 * are flattened into '/'-joined keys ({"observation": {"image": x}} -> "observation/image").
 * Leaves become pi0_obs_items: arrays (|u1 |b1 <i4 <i8 <f4 <f8 as they are; |i1 <i2 <u2 -> i32,
 * <u4 <u8 -> i64, <f2 -> f32, big-endian forms byte-swapped), strings (str, bin, <U.. and |S..
 * arrays of one element), plain msgpack numbers/bools (0-d f64/i64/bool arrays) and rectangular
 * lists of numbers (f64, i64 or bool arrays). A later duplicate key replaces the earlier one.
 *
 * Hostile input is bounded before msgpack-c sees it: at most MPN_MAX_DEPTH nesting levels and
 * MPN_MAX_OBJECTS objects, container counts that fit in the remaining bytes, no trailing bytes.
 *
 * Encoding: the per-call response {"actions": ndarray <f8, "policy_timing": {...},
 * "server_timing": {...}} and JSON (policy metadata) -> msgpack the way Python's json + msgpack
 * would write it (integer literals stay ints, key order kept).
 */
#ifndef PI0_SERVER_MSGPACK_NUMPY_H
#define PI0_SERVER_MSGPACK_NUMPY_H
#include <stddef.h>
#include <stdint.h>

#include "pi0_policy.h"

#define MPN_MAX_DEPTH 24
#define MPN_MAX_OBJECTS (1 << 20)
#define MPN_MAX_ITEMS 1024
#define MPN_MAX_KEY 1024

typedef struct {
    pi0_obs_item *items;
    int n_items, cap_items;
    void **blocks; /* every allocation the items point to (keys, converted data) */
    int n_blocks, cap_blocks;
} mpn_obs;

/* Decode one request. Array data may point into buf (when already aligned and in a native
 * type), so buf must outlive the items. Returns 0, or -1 with a message in err. */
int mpn_decode(const uint8_t *buf, size_t len, mpn_obs *out, char *err, size_t n_err);
void mpn_obs_free(mpn_obs *o);
const pi0_obs_item *mpn_find(const mpn_obs *o, const char *key);
/* Remove an item (the storage stays with o). Returns 1 if it was there. */
int mpn_remove(mpn_obs *o, const char *key);

/* Bounds check only (what mpn_decode runs first). Returns 0 or -1 with err. */
int mpn_scan(const uint8_t *buf, size_t len, char *err, size_t n_err);

/* Response of one call. has_prev = 0 leaves "prev_total_ms" out (first request of a connection).
 * *out is malloc'ed. Returns 0, or -1 when out of memory. */
int mpn_encode_response(const double *actions, int horizon, int action_dims, double policy_infer_ms,
                        double server_infer_ms, int has_prev, double prev_total_ms, uint8_t **out, size_t *out_len);

/* JSON text -> msgpack (objects -> maps in order, integer literals -> ints, other numbers ->
 * float64, strings -> str). *out is malloc'ed. Returns 0, or -1 with err. */
int mpn_json_to_msgpack(const char *json, uint8_t **out, size_t *out_len, char *err, size_t n_err);

const char *mpn_elem_name(pi0_elem_type t); /* numpy spelling: "<f4", "|u1", ... */
#endif
