/* openpi msgpack + numpy encoding (SPEC §11.4): requests -> pi0_obs_item, responses -> msgpack. */
#include "server/msgpack_numpy.h"

#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------------------ */

static int failf(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *obj_type_name(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "None";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bytes";
    case MSGPACK_OBJECT_ARRAY: return "list";
    case MSGPACK_OBJECT_MAP: return "dict";
    case MSGPACK_OBJECT_EXT: return "msgpack ext";
    default: return "unknown";
    }
}

/* ---- bounds scan ---------------------------------------------------------------------------- */

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

int mpn_scan(const uint8_t *buf, size_t len, char *err, size_t n_err) {
    uint64_t remaining[MPN_MAX_DEPTH + 2];
    int depth = 0;
    uint64_t objects = 1;
    size_t off = 0;
    remaining[0] = 1;
    if (len == 0) return failf(err, n_err, "empty message");
    while (depth >= 0) {
        if (remaining[depth] == 0) {
            depth--;
            continue;
        }
        remaining[depth]--;
        if (off >= len) return failf(err, n_err, "truncated msgpack (ends at byte %zu)", len);
        const uint8_t t = buf[off];
        const size_t left = len - off;
        uint64_t skip = 0, count = 0;
        int hdr = 1, container = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            skip = 0;
        } else if (t >= 0x80 && t <= 0x8f) {
            container = 2, count = t & 0x0f;
        } else if (t >= 0x90 && t <= 0x9f) {
            container = 1, count = t & 0x0f;
        } else if (t >= 0xa0 && t <= 0xbf) {
            skip = t & 0x1f;
        } else {
            int lenbytes = 0;
            switch (t) {
            case 0xc4: case 0xd9: lenbytes = 1; break;           /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;           /* bin16, str16 */
            case 0xc6: case 0xdb: lenbytes = 4; break;           /* bin32, str32 */
            case 0xc7: lenbytes = 1, skip = 1; break;            /* ext8: + type byte */
            case 0xc8: lenbytes = 2, skip = 1; break;
            case 0xc9: lenbytes = 4, skip = 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                          /* fixext1..16: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: container = 1, lenbytes = 2; break;
            case 0xdd: container = 1, lenbytes = 4; break;
            case 0xde: container = 2, lenbytes = 2; break;
            case 0xdf: container = 2, lenbytes = 4; break;
            default: return failf(err, n_err, "invalid msgpack byte 0x%02x at offset %zu", t, off);
            }
            if (left < 1 + (size_t)lenbytes) return failf(err, n_err, "truncated msgpack (ends at byte %zu)", len);
            hdr = 1 + lenbytes;
            if (container) count = be(buf + off + 1, lenbytes);
            else skip += be(buf + off + 1, lenbytes);
        }
        if (container) {
            uint64_t children = count * (uint64_t)container;
            if (children > left - (size_t)hdr)
                return failf(err, n_err, "msgpack %s at offset %zu claims %llu entries but only %zu bytes follow",
                             container == 2 ? "map" : "array", off, (unsigned long long)count, left - (size_t)hdr);
            objects += children;
            if (objects > MPN_MAX_OBJECTS)
                return failf(err, n_err, "message has more than %d msgpack objects", MPN_MAX_OBJECTS);
            off += (size_t)hdr;
            if (children) {
                if (depth + 1 > MPN_MAX_DEPTH)
                    return failf(err, n_err, "msgpack nesting deeper than %d levels", MPN_MAX_DEPTH);
                remaining[++depth] = children;
            }
        } else {
            if (skip > left - (size_t)hdr) return failf(err, n_err, "truncated msgpack (ends at byte %zu)", len);
            off += (size_t)hdr + (size_t)skip;
        }
    }
    if (off != len) return failf(err, n_err, "%zu trailing bytes after the msgpack object", len - off);
    return 0;
}

/* ---- decoder state ---------------------------------------------------------------------------- */

typedef struct {
    mpn_obs *o;
    char *err;
    size_t n_err;
} dec;

static void *dec_alloc(dec *d, size_t n) {
    mpn_obs *o = d->o;
    if (o->n_blocks == o->cap_blocks) {
        int cap = o->cap_blocks ? 2 * o->cap_blocks : 16;
        void **b = realloc(o->blocks, (size_t)cap * sizeof *b);
        if (!b) return NULL;
        o->blocks = b;
        o->cap_blocks = cap;
    }
    void *p = malloc(n ? n : 1);
    if (p) o->blocks[o->n_blocks++] = p;
    return p;
}

#define OOM(d) failf((d)->err, (d)->n_err, "out of memory")

static int add_item(dec *d, const pi0_obs_item *it) {
    mpn_obs *o = d->o;
    for (int i = 0; i < o->n_items; i++) /* Python dict semantics: a later key replaces */
        if (!strcmp(o->items[i].key, it->key)) {
            o->items[i] = *it;
            return 0;
        }
    if (o->n_items >= MPN_MAX_ITEMS) return failf(d->err, d->n_err, "observation has more than %d keys", MPN_MAX_ITEMS);
    if (o->n_items == o->cap_items) {
        int cap = o->cap_items ? 2 * o->cap_items : 16;
        pi0_obs_item *n = realloc(o->items, (size_t)cap * sizeof *n);
        if (!n) return OOM(d);
        o->items = n;
        o->cap_items = cap;
    }
    o->items[o->n_items++] = *it;
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------------------ */

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) k = 1, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0) k = 2, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0) k = 3, cp = c & 0x07;
        else return 0;
        if (n - i <= (size_t)k) return 0;
        for (int j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000)) return 0; /* overlong */
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A NUL-terminated copy of UTF-8 text (what pi0_obs_item.str needs). */
static int add_string(dec *d, const char *key, const uint8_t *s, size_t n, const char *what) {
    if (!n) s = (const uint8_t *)""; /* msgpack-c gives empty str/bin a NULL pointer */
    if (memchr(s, 0, n)) return failf(d->err, d->n_err, "key '%s': %s contains a NUL character", key, what);
    if (!utf8_valid(s, n)) return failf(d->err, d->n_err, "key '%s': %s is not valid UTF-8", key, what);
    char *c = dec_alloc(d, n + 1);
    if (!c) return OOM(d);
    memcpy(c, s, n);
    c[n] = 0;
    pi0_obs_item it = {.key = key, .kind = PI0_VALUE_STRING, .str = c};
    return add_item(d, &it);
}

/* ---- numpy dtypes ---------------------------------------------------------------------------- */

typedef struct {
    char order; /* '<', '>', '|' */
    char kind;  /* b u i f U S */
    size_t itemsize;
} np_dtype;

static int parse_dtype(const msgpack_object *v, np_dtype *dt, char *text, size_t n_text) {
    const char *s;
    size_t n;
    if (v->type == MSGPACK_OBJECT_STR) s = v->via.str.ptr, n = v->via.str.size;
    else if (v->type == MSGPACK_OBJECT_BIN) s = v->via.bin.ptr, n = v->via.bin.size;
    else return snprintf(text, n_text, "<%s>", obj_type_name(v)), -1;
    snprintf(text, n_text, "%.*s", (int)(n < 32 ? n : 32), s);
    if (n < 3 || n > 12 || !s[0] || !strchr("<>|=", s[0])) return -1;
    dt->order = s[0] == '=' ? '<' : s[0];
    dt->kind = s[1];
    size_t size = 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        size = size * 10 + (size_t)(s[i] - '0');
    }
    dt->itemsize = size;
    switch (dt->kind) {
    case 'b': return size == 1 ? 0 : -1;
    case 'u':
    case 'i': return size == 1 || size == 2 || size == 4 || size == 8 ? 0 : -1;
    case 'f': return size == 2 || size == 4 || size == 8 ? 0 : -1;
    case 'U': /* numpy writes "<U5" (itemsize in characters) */
        if (size > (1u << 24)) return -1;
        dt->itemsize = 4 * size;
        return 0;
    case 'S': return size <= (1u << 26) ? 0 : -1;
    default: return -1;
    }
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0) {
        if (m == 0) bits = sign;
        else { /* subnormal */
            e = 127 - 15 + 1;
            while (!(m & 0x400)) m <<= 1, e--;
            bits = sign | e << 23 | (m & 0x3ff) << 13;
        }
    } else if (e == 31) bits = sign | 0x7f800000u | m << 13;
    else bits = sign | (e - 15 + 127) << 23 | m << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element i of a raw numpy buffer as an unsigned little-endian integer of dt->itemsize bytes. */
static uint64_t raw_elem(const uint8_t *p, size_t i, const np_dtype *dt) {
    uint64_t v = 0;
    const uint8_t *e = p + i * dt->itemsize;
    for (size_t b = 0; b < dt->itemsize; b++) {
        size_t src = dt->order == '>' ? dt->itemsize - 1 - b : b;
        v |= (uint64_t)e[src] << (8 * b);
    }
    return v;
}

static int host_little_endian(void) {
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static int array_item(dec *d, const char *key, const msgpack_object *data, const np_dtype *dt, const char *dtext,
                      int ndim, const int64_t *shape) {
    const uint8_t *p = (const uint8_t *)data->via.bin.ptr;
    const size_t nbytes = data->via.bin.size;
    if (!nbytes) p = (const uint8_t *)""; /* empty arrays still get a non-NULL data pointer */
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && numel > UINT64_MAX / (uint64_t)shape[i] / 16)
            return failf(d->err, d->n_err, "key '%s': shape is too large", key);
        numel *= (uint64_t)shape[i];
    }
    if ((dt->itemsize && numel > UINT64_MAX / dt->itemsize) || numel * dt->itemsize != nbytes)
        return failf(d->err, d->n_err, "key '%s': %zu data bytes but dtype %s and its shape need %llu", key, nbytes, dtext,
                     (unsigned long long)(numel * dt->itemsize));
    if (dt->kind == 'U' || dt->kind == 'S') {
        if (numel != 1)
            return failf(d->err, d->n_err, "key '%s': string arrays must have one element, this one has %llu", key,
                         (unsigned long long)numel);
        if (dt->kind == 'S') {
            size_t n = nbytes;
            while (n && p[n - 1] == 0) n--;
            return add_string(d, key, p, n, "string");
        }
        size_t nch = nbytes / 4;
        while (nch && raw_elem(p, nch - 1, &(np_dtype){dt->order, 'u', 4}) == 0) nch--;
        char *u = dec_alloc(d, 4 * nch + 1);
        if (!u) return OOM(d);
        size_t o = 0;
        for (size_t i = 0; i < nch; i++) {
            uint32_t cp = (uint32_t)raw_elem(p, i, &(np_dtype){dt->order, 'u', 4});
            if (cp == 0) return failf(d->err, d->n_err, "key '%s': string contains a NUL character", key);
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return failf(d->err, d->n_err, "key '%s': invalid code point U+%X in a %s string", key, cp, dtext);
            o += utf8_put(cp, u + o);
        }
        u[o] = 0;
        pi0_obs_item it = {.key = key, .kind = PI0_VALUE_STRING, .str = u};
        return add_item(d, &it);
    }
    pi0_obs_item it = {.key = key, .kind = PI0_VALUE_ARRAY, .ndim = ndim};
    for (int i = 0; i < ndim; i++) it.shape[i] = shape[i];
    const int native = dt->order != '>' || dt->itemsize == 1;
    size_t out_size;
    switch (dt->kind) {
    case 'b': it.dtype = PI0_ELEM_BOOL, out_size = 1; break;
    case 'u':
        if (dt->itemsize == 1) it.dtype = PI0_ELEM_U8, out_size = 1;
        else if (dt->itemsize == 2) it.dtype = PI0_ELEM_I32, out_size = 4;
        else it.dtype = PI0_ELEM_I64, out_size = 8;
        break;
    case 'i':
        if (dt->itemsize <= 4) it.dtype = PI0_ELEM_I32, out_size = 4;
        else it.dtype = PI0_ELEM_I64, out_size = 8;
        break;
    default: /* 'f' */
        if (dt->itemsize <= 4) it.dtype = PI0_ELEM_F32, out_size = 4;
        else it.dtype = PI0_ELEM_F64, out_size = 8;
        break;
    }
    const int same_type = out_size == dt->itemsize && !(dt->kind == 'u' && dt->itemsize > 1) && dt->kind != 'b';
    if (same_type && native && host_little_endian() && ((uintptr_t)p % out_size) == 0) {
        it.data = p; /* zero copy */
        return add_item(d, &it);
    }
    uint8_t *q = dec_alloc(d, (size_t)numel * out_size);
    if (!q) return OOM(d);
    for (size_t i = 0; i < (size_t)numel; i++) {
        uint64_t v = raw_elem(p, i, dt);
        switch (it.dtype) {
        case PI0_ELEM_BOOL: q[i] = v != 0; break;
        case PI0_ELEM_U8: q[i] = (uint8_t)v; break;
        case PI0_ELEM_I32: {
            int32_t x = dt->kind == 'u' ? (int32_t)v
                        : dt->itemsize == 1 ? (int8_t)v
                        : dt->itemsize == 2 ? (int16_t)v
                                            : (int32_t)(uint32_t)v;
            memcpy(q + 4 * i, &x, 4);
            break;
        }
        case PI0_ELEM_I64: {
            if (dt->kind == 'u' && dt->itemsize == 8 && v > (uint64_t)INT64_MAX)
                return failf(d->err, d->n_err, "key '%s': value %llu at index %zu does not fit in int64", key,
                             (unsigned long long)v, i);
            int64_t x = (int64_t)v;
            memcpy(q + 8 * i, &x, 8);
            break;
        }
        case PI0_ELEM_F32: {
            float x;
            if (dt->itemsize == 2) x = half_to_float((uint16_t)v);
            else {
                uint32_t b = (uint32_t)v;
                memcpy(&x, &b, 4);
            }
            memcpy(q + 4 * i, &x, 4);
            break;
        }
        case PI0_ELEM_F64: memcpy(q + 8 * i, &v, 8); break;
        }
    }
    it.data = q;
    return add_item(d, &it);
}

static const msgpack_object *wrapper_get(const msgpack_object *m, const char *name) {
    size_t n = strlen(name);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_BIN && k->via.bin.size == n && !memcmp(k->via.bin.ptr, name, n))
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int ndarray_item(dec *d, const char *key, const msgpack_object *m) {
    const msgpack_object *data = wrapper_get(m, "data"), *dtype = wrapper_get(m, "dtype"), *shape = wrapper_get(m, "shape");
    if (!data || !dtype || !shape)
        return failf(d->err, d->n_err, "key '%s': numpy array without '%s'", key, !data ? "data" : !dtype ? "dtype" : "shape");
    np_dtype dt;
    char dtext[40];
    if (parse_dtype(dtype, &dt, dtext, sizeof dtext))
        return failf(d->err, d->n_err, "key '%s': unsupported dtype '%s' (supported: |u1 |b1 |i1 <i2 <i4 <i8 <u2 <u4 <u8 "
                     "<f2 <f4 <f8, <U.. and |S.. strings)", key, dtext);
    if (data->type != MSGPACK_OBJECT_BIN)
        return failf(d->err, d->n_err, "key '%s': numpy array data is %s, expected bytes", key, obj_type_name(data));
    if (shape->type != MSGPACK_OBJECT_ARRAY)
        return failf(d->err, d->n_err, "key '%s': numpy array shape is %s, expected a list", key, obj_type_name(shape));
    if (shape->via.array.size > 4)
        return failf(d->err, d->n_err, "key '%s': array has %u dimensions, at most 4 are supported", key,
                     shape->via.array.size);
    int64_t dims[4];
    for (uint32_t i = 0; i < shape->via.array.size; i++) {
        const msgpack_object *e = &shape->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > (1ull << 40))
            return failf(d->err, d->n_err, "key '%s': shape entry %u is not a non-negative integer", key, i);
        dims[i] = (int64_t)e->via.u64;
    }
    return array_item(d, key, data, &dt, dtext, (int)shape->via.array.size, dims);
}

static int scalar_item(dec *d, const char *key, pi0_elem_type t, const void *v) {
    static const size_t sizes[] = {1, 1, 4, 8, 4, 8};
    void *p = dec_alloc(d, sizes[t]);
    if (!p) return OOM(d);
    memcpy(p, v, sizes[t]);
    pi0_obs_item it = {.key = key, .kind = PI0_VALUE_ARRAY, .dtype = t, .ndim = 0, .data = p};
    return add_item(d, &it);
}

/* A plain msgpack number/bool -> 0-d array (what numpy makes of a Python scalar). */
static int plain_scalar(dec *d, const char *key, const msgpack_object *v) {
    switch (v->type) {
    case MSGPACK_OBJECT_BOOLEAN: {
        uint8_t b = v->via.boolean ? 1 : 0;
        return scalar_item(d, key, PI0_ELEM_BOOL, &b);
    }
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (v->via.u64 > (uint64_t)INT64_MAX) {
            double x = (double)v->via.u64;
            return scalar_item(d, key, PI0_ELEM_F64, &x);
        } else {
            int64_t x = (int64_t)v->via.u64;
            return scalar_item(d, key, PI0_ELEM_I64, &x);
        }
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return scalar_item(d, key, PI0_ELEM_I64, &v->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return scalar_item(d, key, PI0_ELEM_F64, &v->via.f64);
    default: return failf(d->err, d->n_err, "key '%s': unsupported value of type %s", key, obj_type_name(v));
    }
}

static int npgeneric_item(dec *d, const char *key, const msgpack_object *m) {
    const msgpack_object *data = wrapper_get(m, "data"), *dtype = wrapper_get(m, "dtype");
    if (!data || !dtype) return failf(d->err, d->n_err, "key '%s': numpy scalar without '%s'", key, !data ? "data" : "dtype");
    np_dtype dt;
    char dtext[40];
    if (parse_dtype(dtype, &dt, dtext, sizeof dtext))
        return failf(d->err, d->n_err, "key '%s': unsupported numpy scalar dtype '%s'", key, dtext);
    const int is_num = data->type == MSGPACK_OBJECT_BOOLEAN || data->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                       data->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || data->type == MSGPACK_OBJECT_FLOAT32 ||
                       data->type == MSGPACK_OBJECT_FLOAT64;
    if (dt.kind == 'U' || dt.kind == 'S') {
        if (data->type == MSGPACK_OBJECT_STR) return add_string(d, key, (const uint8_t *)data->via.str.ptr, data->via.str.size, "string");
        if (data->type == MSGPACK_OBJECT_BIN) return add_string(d, key, (const uint8_t *)data->via.bin.ptr, data->via.bin.size, "string");
        return failf(d->err, d->n_err, "key '%s': numpy scalar of dtype %s holds a %s", key, dtext, obj_type_name(data));
    }
    if (!is_num) return failf(d->err, d->n_err, "key '%s': numpy scalar of dtype %s holds a %s", key, dtext, obj_type_name(data));
    double f = data->type == MSGPACK_OBJECT_FLOAT32 || data->type == MSGPACK_OBJECT_FLOAT64 ? data->via.f64
               : data->type == MSGPACK_OBJECT_BOOLEAN                                      ? (double)data->via.boolean
               : data->type == MSGPACK_OBJECT_POSITIVE_INTEGER                             ? (double)data->via.u64
                                                                                           : (double)data->via.i64;
    int64_t i = data->type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (int64_t)data->via.u64
                : data->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? data->via.i64
                : data->type == MSGPACK_OBJECT_BOOLEAN          ? (int64_t)data->via.boolean
                                                                : 0;
    const int is_float = data->type == MSGPACK_OBJECT_FLOAT32 || data->type == MSGPACK_OBJECT_FLOAT64;
    switch (dt.kind) {
    case 'b': {
        uint8_t b = f != 0;
        return scalar_item(d, key, PI0_ELEM_BOOL, &b);
    }
    case 'u':
    case 'i':
        if (is_float) return failf(d->err, d->n_err, "key '%s': numpy scalar of dtype %s holds a float", key, dtext);
        if (dt.kind == 'u' && dt.itemsize == 1) {
            if (i < 0 || i > 255) return failf(d->err, d->n_err, "key '%s': %lld does not fit in %s", key, (long long)i, dtext);
            uint8_t b = (uint8_t)i;
            return scalar_item(d, key, PI0_ELEM_U8, &b);
        }
        if (data->type == MSGPACK_OBJECT_POSITIVE_INTEGER && data->via.u64 > (uint64_t)INT64_MAX)
            return failf(d->err, d->n_err, "key '%s': value does not fit in int64", key);
        if (dt.itemsize <= 4 && !(dt.kind == 'u' && dt.itemsize == 4)) {
            if (i < INT32_MIN || i > INT32_MAX) return failf(d->err, d->n_err, "key '%s': %lld does not fit in %s", key, (long long)i, dtext);
            int32_t x = (int32_t)i;
            return scalar_item(d, key, PI0_ELEM_I32, &x);
        }
        return scalar_item(d, key, PI0_ELEM_I64, &i);
    default:
        if (dt.itemsize <= 4) {
            float x = (float)f;
            return scalar_item(d, key, PI0_ELEM_F32, &x);
        }
        return scalar_item(d, key, PI0_ELEM_F64, &f);
    }
}

/* A rectangular nested list of numbers/bools -> array (numpy.asarray of it). */
#define LIST_RAGGED (-1)
#define LIST_BADTYPE (-2)
static int list_check(const msgpack_object *o, int depth, int rank, const int64_t *shape, int *kind,
                      const msgpack_object **bad) {
    if (depth < rank) {
        if (o->type != MSGPACK_OBJECT_ARRAY || (int64_t)o->via.array.size != shape[depth]) return LIST_RAGGED;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int r = list_check(&o->via.array.ptr[i], depth + 1, rank, shape, kind, bad);
            if (r) return r;
        }
        return 0;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN: *kind |= 1; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *kind |= 2; return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *kind |= 4; return 0;
    case MSGPACK_OBJECT_ARRAY: return LIST_RAGGED;
    default: *bad = o; return LIST_BADTYPE;
    }
}

static void list_fill(const msgpack_object *v, pi0_elem_type t, uint8_t *out, size_t *i) {
    if (v->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t k = 0; k < v->via.array.size; k++) list_fill(&v->via.array.ptr[k], t, out, i);
        return;
    }
    if (t == PI0_ELEM_F64) {
        double f = v->type == MSGPACK_OBJECT_BOOLEAN            ? (double)v->via.boolean
                   : v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)v->via.u64
                   : v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (double)v->via.i64
                                                                : v->via.f64;
        memcpy(out + 8 * *i, &f, 8);
    } else if (t == PI0_ELEM_BOOL) {
        out[*i] = v->via.boolean ? 1 : 0;
    } else {
        int64_t x = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64
                    : v->type == MSGPACK_OBJECT_BOOLEAN        ? (int64_t)v->via.boolean
                                                               : v->via.i64;
        memcpy(out + 8 * *i, &x, 8);
    }
    (*i)++;
}

static int list_item(dec *d, const char *key, const msgpack_object *v) {
    int64_t shape[4] = {0};
    int rank = 0, kind = 0;
    const msgpack_object *p = v, *bad = NULL;
    while (p->type == MSGPACK_OBJECT_ARRAY) { /* the rank and shape along the first elements */
        if (rank == 4) return failf(d->err, d->n_err, "key '%s': nested lists deeper than 4 levels", key);
        shape[rank++] = p->via.array.size;
        if (!p->via.array.size) break;
        p = &p->via.array.ptr[0];
    }
    int r = list_check(v, 0, rank, shape, &kind, &bad);
    if (r == LIST_RAGGED) return failf(d->err, d->n_err, "key '%s': nested lists are not rectangular", key);
    if (r == LIST_BADTYPE)
        return failf(d->err, d->n_err, "key '%s': lists may only hold numbers or bools, found a %s", key, obj_type_name(bad));
    uint64_t numel = 1;
    for (int k = 0; k < rank; k++) numel *= (uint64_t)shape[k]; /* <= MPN_MAX_OBJECTS: each is an object */
    /* numpy: any float -> float64, all bools -> bool, ints (and bools mixed in) -> int64, empty -> float64 */
    pi0_elem_type t = (kind & 4) || kind == 0 ? PI0_ELEM_F64 : kind == 1 ? PI0_ELEM_BOOL : PI0_ELEM_I64;
    size_t esz = t == PI0_ELEM_BOOL ? 1 : 8;
    uint8_t *q = dec_alloc(d, (size_t)numel * esz);
    if (!q) return OOM(d);
    size_t i = 0;
    list_fill(v, t, q, &i);
    pi0_obs_item it = {.key = key, .kind = PI0_VALUE_ARRAY, .dtype = t, .ndim = rank, .data = q};
    for (int k = 0; k < rank; k++) it.shape[k] = shape[k];
    return add_item(d, &it);
}

static int add_value(dec *d, const char *key, const msgpack_object *v, int depth);

static int add_map(dec *d, const char *prefix, const msgpack_object *m, int depth) {
    const size_t plen = prefix ? strlen(prefix) : 0;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        const char *ks;
        size_t kn;
        if (k->type == MSGPACK_OBJECT_STR) ks = k->via.str.ptr, kn = k->via.str.size;
        else if (k->type == MSGPACK_OBJECT_BIN) ks = k->via.bin.ptr, kn = k->via.bin.size;
        else if (prefix)
            return failf(d->err, d->n_err, "key '%s': a dict key is a %s (keys must be str)", prefix, obj_type_name(k));
        else
            return failf(d->err, d->n_err, "a dict key is a %s (keys must be str)", obj_type_name(k));
        if (!kn) ks = ""; /* msgpack-c gives empty str/bin a NULL pointer */
        if (plen + 1 + kn > MPN_MAX_KEY) return failf(d->err, d->n_err, "a key is longer than %d bytes", MPN_MAX_KEY);
        if (memchr(ks, 0, kn) || !utf8_valid((const uint8_t *)ks, kn))
            return failf(d->err, d->n_err, "a dict key contains a NUL character or invalid UTF-8");
        char *full = dec_alloc(d, plen + 1 + kn + 1);
        if (!full) return OOM(d);
        size_t o = 0;
        if (prefix) {
            memcpy(full, prefix, plen);
            full[plen] = '/';
            o = plen + 1;
        }
        memcpy(full + o, ks, kn);
        full[o + kn] = 0;
        if (add_value(d, full, &m->via.map.ptr[i].val, depth + 1)) return -1;
    }
    return 0;
}

static int add_value(dec *d, const char *key, const msgpack_object *v, int depth) {
    if (depth > MPN_MAX_DEPTH) return failf(d->err, d->n_err, "key '%s': nested too deeply", key);
    switch (v->type) {
    case MSGPACK_OBJECT_MAP:
        if (wrapper_get(v, "__ndarray__")) return ndarray_item(d, key, v);
        if (wrapper_get(v, "__npgeneric__")) return npgeneric_item(d, key, v);
        return add_map(d, key, v, depth);
    case MSGPACK_OBJECT_STR: return add_string(d, key, (const uint8_t *)v->via.str.ptr, v->via.str.size, "string");
    case MSGPACK_OBJECT_BIN: return add_string(d, key, (const uint8_t *)v->via.bin.ptr, v->via.bin.size, "bytes value");
    case MSGPACK_OBJECT_ARRAY: return list_item(d, key, v);
    case MSGPACK_OBJECT_NIL: return failf(d->err, d->n_err, "key '%s': None values are not supported", key);
    case MSGPACK_OBJECT_EXT: return failf(d->err, d->n_err, "key '%s': msgpack ext values are not supported", key);
    default: return plain_scalar(d, key, v);
    }
}

int mpn_decode(const uint8_t *buf, size_t len, mpn_obs *out, char *err, size_t n_err) {
    memset(out, 0, sizeof *out);
    if (mpn_scan(buf, len, err, n_err)) return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    msgpack_unpack_return r = msgpack_unpack_next(&up, (const char *)buf, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS) {
        failf(err, n_err, r == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory decoding msgpack" : "malformed msgpack");
    } else if (up.data.type != MSGPACK_OBJECT_MAP) {
        failf(err, n_err, "the observation must be a dict (msgpack map), got a %s", obj_type_name(&up.data));
    } else if (wrapper_get(&up.data, "__ndarray__") || wrapper_get(&up.data, "__npgeneric__")) {
        failf(err, n_err, "the observation must be a dict, got a numpy value");
    } else {
        dec d = {out, err, n_err};
        rc = add_map(&d, NULL, &up.data, 0);
    }
    msgpack_unpacked_destroy(&up);
    if (rc) mpn_obs_free(out);
    return rc;
}

void mpn_obs_free(mpn_obs *o) {
    if (!o) return;
    for (int i = 0; i < o->n_blocks; i++) free(o->blocks[i]);
    free(o->blocks);
    free(o->items);
    memset(o, 0, sizeof *o);
}

const pi0_obs_item *mpn_find(const mpn_obs *o, const char *key) {
    for (int i = 0; i < o->n_items; i++)
        if (!strcmp(o->items[i].key, key)) return &o->items[i];
    return NULL;
}

int mpn_remove(mpn_obs *o, const char *key) {
    for (int i = 0; i < o->n_items; i++)
        if (!strcmp(o->items[i].key, key)) {
            memmove(&o->items[i], &o->items[i + 1], (size_t)(o->n_items - i - 1) * sizeof o->items[0]);
            o->n_items--;
            return 1;
        }
    return 0;
}

const char *mpn_elem_name(pi0_elem_type t) {
    switch (t) {
    case PI0_ELEM_U8: return "|u1";
    case PI0_ELEM_BOOL: return "|b1";
    case PI0_ELEM_I32: return "<i4";
    case PI0_ELEM_I64: return "<i8";
    case PI0_ELEM_F32: return "<f4";
    case PI0_ELEM_F64: return "<f8";
    }
    return "?";
}

/* ---- encoding ---------------------------------------------------------------------------------- */

static int pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_bkey(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    return msgpack_pack_bin(pk, n) || msgpack_pack_bin_body(pk, s, n);
}

int mpn_encode_response(const double *actions, int horizon, int action_dims, double policy_infer_ms,
                        double server_infer_ms, int has_prev, double prev_total_ms, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (horizon < 0 || action_dims < 0) return -1;
    const size_t n = (size_t)horizon * (size_t)action_dims;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int e = 0;
    e |= msgpack_pack_map(&pk, 3);
    e |= pack_cstr(&pk, "actions");
    e |= msgpack_pack_map(&pk, 4);
    e |= pack_bkey(&pk, "__ndarray__");
    e |= msgpack_pack_true(&pk);
    e |= pack_bkey(&pk, "data");
    e |= msgpack_pack_bin(&pk, n * 8);
    if (host_little_endian()) {
        e |= msgpack_pack_bin_body(&pk, actions, n * 8);
    } else {
        for (size_t i = 0; i < n && !e; i++) {
            uint8_t b[8], le[8];
            memcpy(b, &actions[i], 8);
            for (int k = 0; k < 8; k++) le[k] = b[7 - k];
            e |= msgpack_pack_bin_body(&pk, le, 8);
        }
    }
    e |= pack_bkey(&pk, "dtype");
    e |= pack_cstr(&pk, "<f8");
    e |= pack_bkey(&pk, "shape");
    e |= msgpack_pack_array(&pk, 2);
    e |= msgpack_pack_int(&pk, horizon);
    e |= msgpack_pack_int(&pk, action_dims);
    e |= pack_cstr(&pk, "policy_timing");
    e |= msgpack_pack_map(&pk, 1);
    e |= pack_cstr(&pk, "infer_ms");
    e |= msgpack_pack_double(&pk, policy_infer_ms);
    e |= pack_cstr(&pk, "server_timing");
    e |= msgpack_pack_map(&pk, has_prev ? 2 : 1);
    e |= pack_cstr(&pk, "infer_ms");
    e |= msgpack_pack_double(&pk, server_infer_ms);
    if (has_prev) {
        e |= pack_cstr(&pk, "prev_total_ms");
        e |= msgpack_pack_double(&pk, prev_total_ms);
    }
    if (e) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    *out_len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    msgpack_sbuffer_destroy(&sb);
    return *out ? 0 : -1;
}

/* ---- JSON -> msgpack ---------------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t i;
    msgpack_packer *pk;
    char *err;
    size_t n_err;
    int depth;
} jp;

static void jws(jp *p) {
    while (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r') p->i++;
}

static int jfail(jp *p, const char *what) { return failf(p->err, p->n_err, "JSON: %s at offset %zu", what, p->i); }

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (x < 0) return -1;
        *v = *v << 4 | (uint32_t)x;
    }
    return 0;
}

/* Parse a JSON string at p->i (on the opening quote) into a malloc'ed UTF-8 buffer. */
static int jstring(jp *p, char **out, size_t *n) {
    size_t cap = 64, o = 0;
    char *b = malloc(cap);
    if (!b) return jfail(p, "out of memory");
    p->i++;
    for (;;) {
        if (o + 8 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) return free(b), jfail(p, "out of memory");
            b = nb;
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == 0) return free(b), jfail(p, "unterminated string");
        if (c < 0x20) return free(b), jfail(p, "control character in string");
        p->i++;
        if (c == '"') break;
        if (c != '\\') {
            b[o++] = (char)c;
            continue;
        }
        char e = p->s[p->i++];
        uint32_t cp;
        switch (e) {
        case '"': b[o++] = '"'; break;
        case '\\': b[o++] = '\\'; break;
        case '/': b[o++] = '/'; break;
        case 'b': b[o++] = '\b'; break;
        case 'f': b[o++] = '\f'; break;
        case 'n': b[o++] = '\n'; break;
        case 'r': b[o++] = '\r'; break;
        case 't': b[o++] = '\t'; break;
        case 'u':
            if (hex4(p->s + p->i, &cp)) return free(b), jfail(p, "bad \\u escape");
            p->i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                uint32_t lo;
                if (!hex4(p->s + p->i + 2, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p->i += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff) return free(b), jfail(p, "lone surrogate in string");
            o += utf8_put(cp, b + o);
            break;
        default: return free(b), jfail(p, "bad escape");
        }
    }
    if (!utf8_valid((const uint8_t *)b, o)) return free(b), jfail(p, "invalid UTF-8 in string");
    *out = b;
    *n = o;
    return 0;
}

static int jvalue(jp *p);

static int jnumber(jp *p) {
    size_t start = p->i;
    int is_float = 0;
    if (p->s[p->i] == '-') p->i++;
    if (p->s[p->i] < '0' || p->s[p->i] > '9') return jfail(p, "bad number");
    while ((p->s[p->i] >= '0' && p->s[p->i] <= '9') || p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E' ||
           p->s[p->i] == '+' || p->s[p->i] == '-') {
        if (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E') is_float = 1;
        p->i++;
    }
    size_t n = p->i - start;
    char tmp[64];
    if (n >= sizeof tmp) is_float = 1, n = sizeof tmp - 1;
    memcpy(tmp, p->s + start, n);
    tmp[n] = 0;
    char *end;
    if (!is_float) {
        if (tmp[0] == '-') {
            long long v = strtoll(tmp, &end, 10);
            if (*end == 0 && !(v == LLONG_MIN && strcmp(tmp, "-9223372036854775808")))
                return msgpack_pack_long_long(p->pk, v) ? jfail(p, "out of memory") : 0;
        } else {
            unsigned long long v = strtoull(tmp, &end, 10);
            if (*end == 0 && !(v == ULLONG_MAX && strcmp(tmp, "18446744073709551615")))
                return msgpack_pack_unsigned_long_long(p->pk, v) ? jfail(p, "out of memory") : 0;
        }
    }
    double d = strtod(tmp, &end);
    if (*end) return jfail(p, "bad number");
    return msgpack_pack_double(p->pk, d) ? jfail(p, "out of memory") : 0;
}

static int jvalue(jp *p) {
    jws(p);
    char c = p->s[p->i];
    if (c == '{' || c == '[') {
        if (++p->depth > 64) return jfail(p, "nested too deeply");
        const char close = c == '{' ? '}' : ']';
        msgpack_sbuffer child;
        msgpack_sbuffer_init(&child);
        msgpack_packer cpk;
        msgpack_packer_init(&cpk, &child, msgpack_sbuffer_write);
        msgpack_packer *parent = p->pk;
        p->pk = &cpk;
        size_t n = 0;
        int rc = 0;
        p->i++;
        jws(p);
        if (p->s[p->i] == close) p->i++;
        else
            for (;;) {
                jws(p);
                if (c == '{') {
                    char *key;
                    size_t kn;
                    if (p->s[p->i] != '"') { rc = jfail(p, "expected a string key"); break; }
                    if ((rc = jstring(p, &key, &kn))) break;
                    int e = msgpack_pack_str(p->pk, kn) || msgpack_pack_str_body(p->pk, key, kn);
                    free(key);
                    if (e) { rc = jfail(p, "out of memory"); break; }
                    jws(p);
                    if (p->s[p->i] != ':') { rc = jfail(p, "expected ':'"); break; }
                    p->i++;
                }
                if ((rc = jvalue(p))) break;
                n++;
                jws(p);
                if (p->s[p->i] == ',') { p->i++; continue; }
                if (p->s[p->i] == close) { p->i++; break; }
                rc = jfail(p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
                break;
            }
        p->pk = parent;
        if (!rc) {
            int e = c == '{' ? msgpack_pack_map(parent, n) : msgpack_pack_array(parent, n);
            if (!e && child.size) e = parent->callback(parent->data, child.data, child.size);
            if (e) rc = jfail(p, "out of memory");
        }
        msgpack_sbuffer_destroy(&child);
        p->depth--;
        return rc;
    }
    if (c == '"') {
        char *s;
        size_t n;
        if (jstring(p, &s, &n)) return -1;
        int e = msgpack_pack_str(p->pk, n) || msgpack_pack_str_body(p->pk, s, n);
        free(s);
        return e ? jfail(p, "out of memory") : 0;
    }
    if (!strncmp(p->s + p->i, "true", 4)) return p->i += 4, msgpack_pack_true(p->pk);
    if (!strncmp(p->s + p->i, "false", 5)) return p->i += 5, msgpack_pack_false(p->pk);
    if (!strncmp(p->s + p->i, "null", 4)) return p->i += 4, msgpack_pack_nil(p->pk);
    if (c == '-' || (c >= '0' && c <= '9')) return jnumber(p);
    return jfail(p, "unexpected character");
}

int mpn_json_to_msgpack(const char *json, uint8_t **out, size_t *out_len, char *err, size_t n_err) {
    *out = NULL;
    *out_len = 0;
    if (!json) return failf(err, n_err, "JSON: no text");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    jp p = {json, 0, &pk, err, n_err, 0};
    int rc = jvalue(&p);
    if (!rc) {
        jws(&p);
        if (json[p.i]) rc = jfail(&p, "trailing characters");
    }
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    *out_len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    msgpack_sbuffer_destroy(&sb);
    if (!*out) { /* empty buffer cannot happen: every value packs at least one byte */
        return failf(err, n_err, "out of memory");
    }
    return 0;
}
