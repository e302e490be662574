/* Unit tests of the openpi msgpack + numpy codec (src/server/msgpack_numpy.c, SPEC §11.4). */
#include <math.h>
#include <msgpack.h>
#include <stdlib.h>

#include "server/msgpack_numpy.h"
#include "test_util.h"

/* ---- building messages the way openpi_client.msgpack_numpy.Packer does ---------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} msg;

static void m_init(msg *m) {
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}
static void m_free(msg *m) { msgpack_sbuffer_destroy(&m->sb); }
static void s_(msg *m, const char *s) {
    msgpack_pack_str(&m->pk, strlen(s));
    msgpack_pack_str_body(&m->pk, s, strlen(s));
}
static void b_(msg *m, const void *p, size_t n) {
    msgpack_pack_bin(&m->pk, n);
    msgpack_pack_bin_body(&m->pk, p, n);
}
static void bk(msg *m, const char *s) { b_(m, s, strlen(s)); }
/* ndarray wrapper: {b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": [..]} */
static void nd(msg *m, const char *dtype, const void *data, size_t nbytes, int ndim, const int64_t *shape) {
    msgpack_pack_map(&m->pk, 4);
    bk(m, "__ndarray__");
    msgpack_pack_true(&m->pk);
    bk(m, "data");
    b_(m, data, nbytes);
    bk(m, "dtype");
    s_(m, dtype);
    bk(m, "shape");
    msgpack_pack_array(&m->pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_int64(&m->pk, shape[i]);
}

static int decode(msg *m, mpn_obs *o, char *err) {
    return mpn_decode((const uint8_t *)m->sb.data, m->sb.size, o, err, 512);
}

static void expect_error(msg *m, const char *want, int line) {
    mpn_obs o;
    char err[512] = "";
    int rc = decode(m, &o, err);
    CHECK(rc == -1 && strstr(err, want), "line %d: rc %d err '%s' (expected '%s')", line, rc, err, want);
    if (!rc) mpn_obs_free(&o);
}
#define EXPECT_ERROR(m, want) expect_error(m, want, __LINE__)

static void test_libero_request(void) {
    /* {"observation/image": u8 [224,224,3], "observation/wrist_image": u8, "observation/state": f8 [8],
     *  "prompt": str} as openpi's LIBERO example client sends it */
    static uint8_t img[224 * 224 * 3], wrist[224 * 224 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 7), wrist[i] = (uint8_t)(i * 3);
    double state[8];
    for (int i = 0; i < 8; i++) state[i] = 0.25 * i - 1;
    msg m;
    m_init(&m);
    msgpack_pack_map(&m.pk, 4);
    s_(&m, "observation/image");
    nd(&m, "|u1", img, sizeof img, 3, (int64_t[]){224, 224, 3});
    s_(&m, "observation/wrist_image");
    nd(&m, "|u1", wrist, sizeof wrist, 3, (int64_t[]){224, 224, 3});
    s_(&m, "observation/state");
    nd(&m, "<f8", state, sizeof state, 1, (int64_t[]){8});
    s_(&m, "prompt");
    s_(&m, "pick up the black bowl");
    /* the request example bytes of SPEC §11.4 for the image */
    const uint8_t *p = (const uint8_t *)m.sb.data;
    static const uint8_t head[] = {0x84, 0xb1};
    CHECK(!memcmp(p, head, 2), "map header");
    mpn_obs o;
    char err[512];
    CHECK(decode(&m, &o, err) == 0, "%s", err);
    CHECK(o.n_items == 4, "%d items", o.n_items);
    const pi0_obs_item *it = mpn_find(&o, "observation/image");
    CHECK(it && it->kind == PI0_VALUE_ARRAY && it->dtype == PI0_ELEM_U8 && it->ndim == 3 && it->shape[0] == 224 &&
              it->shape[2] == 3 && !memcmp(it->data, img, sizeof img),
          "image");
    it = mpn_find(&o, "observation/state");
    CHECK(it && it->dtype == PI0_ELEM_F64 && it->ndim == 1 && it->shape[0] == 8 && !memcmp(it->data, state, sizeof state),
          "state");
    CHECK(((uintptr_t)it->data % 8) == 0, "f64 data aligned");
    it = mpn_find(&o, "prompt");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, "pick up the black bowl"), "prompt");
    CHECK(mpn_remove(&o, "prompt") == 1 && o.n_items == 3 && !mpn_find(&o, "prompt"), "remove");
    mpn_obs_free(&o);
    m_free(&m);
}

static void test_nested_and_scalars(void) {
    /* ALOHA: {"state": f4 [14], "images": {"cam_high": u8 [3,4,5], "cam_low": ...}, "prompt": bytes,
     *  "n": np.int64 scalar, "t": 0.5, "flag": True, "k": -3, "lst": [[1, 2.5], [3, 4]], "bl": [True, False],
     *  "u": np.array("héllo"), "s": np.bytes_ scalar array |S3} */
    float st[14];
    for (int i = 0; i < 14; i++) st[i] = (float)i / 7.0f;
    uint8_t cam[60];
    for (int i = 0; i < 60; i++) cam[i] = (uint8_t)i;
    msg m;
    m_init(&m);
    msgpack_pack_map(&m.pk, 11);
    s_(&m, "state");
    nd(&m, "<f4", st, sizeof st, 1, (int64_t[]){14});
    s_(&m, "images");
    msgpack_pack_map(&m.pk, 2);
    s_(&m, "cam_high");
    nd(&m, "|u1", cam, sizeof cam, 3, (int64_t[]){3, 4, 5});
    s_(&m, "cam_low");
    nd(&m, "|u1", cam, sizeof cam, 3, (int64_t[]){3, 4, 5});
    s_(&m, "prompt");
    b_(&m, "fold it", 7);
    s_(&m, "n");
    msgpack_pack_map(&m.pk, 3);
    bk(&m, "__npgeneric__");
    msgpack_pack_true(&m.pk);
    bk(&m, "data");
    msgpack_pack_int64(&m.pk, 42);
    bk(&m, "dtype");
    s_(&m, "<i8");
    s_(&m, "t");
    msgpack_pack_double(&m.pk, 0.5);
    s_(&m, "flag");
    msgpack_pack_true(&m.pk);
    s_(&m, "k");
    msgpack_pack_int(&m.pk, -3);
    s_(&m, "lst");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_double(&m.pk, 2.5);
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int(&m.pk, 3);
    msgpack_pack_int(&m.pk, 4);
    s_(&m, "bl");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_true(&m.pk);
    msgpack_pack_false(&m.pk);
    s_(&m, "u");
    uint32_t ucs[6] = {'h', 0xe9, 'l', 'l', 'o', 0};
    nd(&m, "<U6", ucs, sizeof ucs, 0, NULL);
    s_(&m, "s");
    nd(&m, "|S3", "ab\0", 3, 1, (int64_t[]){1});
    mpn_obs o;
    char err[512];
    CHECK(decode(&m, &o, err) == 0, "%s", err);
    CHECK(o.n_items == 12, "%d items", o.n_items);
    const pi0_obs_item *it = mpn_find(&o, "images/cam_high");
    CHECK(it && it->dtype == PI0_ELEM_U8 && it->ndim == 3 && it->shape[0] == 3 && it->shape[1] == 4, "nested key");
    CHECK(mpn_find(&o, "images/cam_low") != NULL, "second nested key");
    it = mpn_find(&o, "state");
    CHECK(it && it->dtype == PI0_ELEM_F32 && !memcmp(it->data, st, sizeof st) && ((uintptr_t)it->data % 4) == 0, "f4");
    it = mpn_find(&o, "prompt");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, "fold it"), "bytes prompt");
    it = mpn_find(&o, "n");
    CHECK(it && it->dtype == PI0_ELEM_I64 && it->ndim == 0 && *(const int64_t *)it->data == 42, "npgeneric");
    it = mpn_find(&o, "t");
    CHECK(it && it->dtype == PI0_ELEM_F64 && it->ndim == 0 && *(const double *)it->data == 0.5, "float");
    it = mpn_find(&o, "flag");
    CHECK(it && it->dtype == PI0_ELEM_BOOL && *(const uint8_t *)it->data == 1, "bool");
    it = mpn_find(&o, "k");
    CHECK(it && it->dtype == PI0_ELEM_I64 && *(const int64_t *)it->data == -3, "neg int");
    it = mpn_find(&o, "lst");
    CHECK(it && it->dtype == PI0_ELEM_F64 && it->ndim == 2 && it->shape[0] == 2 && it->shape[1] == 2 &&
              ((const double *)it->data)[1] == 2.5 && ((const double *)it->data)[3] == 4,
          "list");
    it = mpn_find(&o, "bl");
    CHECK(it && it->dtype == PI0_ELEM_BOOL && it->ndim == 1 && ((const uint8_t *)it->data)[0] == 1, "bool list");
    it = mpn_find(&o, "u");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, "h\xc3\xa9llo"), "<U string: '%s'", it ? it->str : "");
    it = mpn_find(&o, "s");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, "ab"), "|S string");
    mpn_obs_free(&o);
    m_free(&m);
}

static void test_conversions(void) {
    /* big-endian f4, f2, i2, u2, u4, i1, |b1 normalisation, duplicate keys (the later wins) */
    msg m;
    m_init(&m);
    msgpack_pack_map(&m.pk, 8);
    const uint8_t be_f4[] = {0x3f, 0xc0, 0, 0}; /* 1.5 */
    s_(&m, "bef4");
    nd(&m, ">f4", be_f4, 4, 1, (int64_t[]){1});
    const uint8_t f2[] = {0x00, 0x3c, 0x00, 0xc0}; /* 1.0, -2.0 */
    s_(&m, "f2");
    nd(&m, "<f2", f2, 4, 1, (int64_t[]){2});
    const int16_t i2[] = {-5, 300};
    s_(&m, "i2");
    nd(&m, "<i2", i2, 4, 1, (int64_t[]){2});
    const uint16_t u2[] = {65535};
    s_(&m, "u2");
    nd(&m, "<u2", u2, 2, 1, (int64_t[]){1});
    const uint32_t u4[] = {4000000000u};
    s_(&m, "u4");
    nd(&m, "<u4", u4, 4, 0, NULL);
    const int8_t i1[] = {-128, 127};
    s_(&m, "i1");
    nd(&m, "|i1", i1, 2, 1, (int64_t[]){2});
    const uint8_t b1[] = {0, 7};
    s_(&m, "b1");
    nd(&m, "|b1", b1, 2, 1, (int64_t[]){2});
    s_(&m, "i2"); /* duplicate: replaces */
    msgpack_pack_int(&m.pk, 9);
    mpn_obs o;
    char err[512];
    CHECK(decode(&m, &o, err) == 0, "%s", err);
    CHECK(o.n_items == 7, "%d items", o.n_items);
    const pi0_obs_item *it = mpn_find(&o, "bef4");
    CHECK(it && it->dtype == PI0_ELEM_F32 && *(const float *)it->data == 1.5f, ">f4");
    it = mpn_find(&o, "f2");
    CHECK(it && it->dtype == PI0_ELEM_F32 && ((const float *)it->data)[0] == 1.0f && ((const float *)it->data)[1] == -2.0f,
          "<f2");
    it = mpn_find(&o, "i2");
    CHECK(it && it->dtype == PI0_ELEM_I64 && it->ndim == 0 && *(const int64_t *)it->data == 9, "duplicate key");
    it = mpn_find(&o, "u2");
    CHECK(it && it->dtype == PI0_ELEM_I32 && *(const int32_t *)it->data == 65535, "<u2");
    it = mpn_find(&o, "u4");
    CHECK(it && it->dtype == PI0_ELEM_I64 && *(const int64_t *)it->data == 4000000000ll, "<u4");
    it = mpn_find(&o, "i1");
    CHECK(it && it->dtype == PI0_ELEM_I32 && ((const int32_t *)it->data)[0] == -128, "|i1");
    it = mpn_find(&o, "b1");
    CHECK(it && it->dtype == PI0_ELEM_BOOL && ((const uint8_t *)it->data)[1] == 1, "|b1 normalised");
    mpn_obs_free(&o);
    m_free(&m);
}

static void test_empty_values(void) {
    /* {"": {"": ""}, "e": np.zeros(0), "b": b""}: msgpack-c hands out NULL for empty str/bin */
    msg m;
    m_init(&m);
    msgpack_pack_map(&m.pk, 3);
    s_(&m, "");
    msgpack_pack_map(&m.pk, 1);
    s_(&m, "");
    s_(&m, "");
    s_(&m, "e");
    nd(&m, "<f8", NULL, 0, 1, (int64_t[]){0});
    s_(&m, "b");
    b_(&m, NULL, 0);
    mpn_obs o;
    char err[512];
    CHECK(decode(&m, &o, err) == 0, "%s", err);
    const pi0_obs_item *it = mpn_find(&o, "/");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, ""), "empty keys joined as '/'");
    it = mpn_find(&o, "e");
    CHECK(it && it->ndim == 1 && it->shape[0] == 0 && it->data != NULL, "empty array has a data pointer");
    it = mpn_find(&o, "b");
    CHECK(it && it->kind == PI0_VALUE_STRING && !strcmp(it->str, ""), "empty bytes");
    mpn_obs_free(&o);
    m_free(&m);
}

static void test_errors(void) {
    msg m;
    uint8_t data[16] = {0};
#define CASE(build, want)        \
    do {                         \
        m_init(&m);              \
        build;                   \
        EXPECT_ERROR(&m, want);  \
        m_free(&m);              \
    } while (0)
    CASE(msgpack_pack_array(&m.pk, 0), "the observation must be a dict (msgpack map), got a list");
    CASE(s_(&m, "hello"), "must be a dict (msgpack map), got a str");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<c8", data, 8, 1, (int64_t[]){1})),
         "key 'x': unsupported dtype '<c8'");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "|O", data, 8, 1, (int64_t[]){1})), "unsupported dtype '|O'");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<f4", data, 12, 1, (int64_t[]){4})),
         "key 'x': 12 data bytes but dtype <f4 and its shape need 16");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<f4", data, 4, 5, (int64_t[]){1, 1, 1, 1, 1})),
         "array has 5 dimensions, at most 4");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<f4", data, 4, 2, (int64_t[]){1 << 30, 1 << 30})),
         "key 'x': shape is too large");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<f4", data, 4, 2, (int64_t[]){1 << 20, 1 << 20})),
         "key 'x': 4 data bytes but dtype <f4 and its shape need 4398046511104");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), nd(&m, "<f4", data, 4, 1, (int64_t[]){-1})),
         "shape entry 0 is not a non-negative integer");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), msgpack_pack_map(&m.pk, 2), bk(&m, "__ndarray__"),
          msgpack_pack_true(&m.pk), bk(&m, "data"), b_(&m, data, 4)),
         "numpy array without 'dtype'");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "x"), msgpack_pack_nil(&m.pk)), "key 'x': None values are not supported");
    CASE((msgpack_pack_map(&m.pk, 1), msgpack_pack_int(&m.pk, 3), msgpack_pack_int(&m.pk, 3)),
         "a dict key is a int (keys must be str)");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "p"), b_(&m, "a\0b", 3)), "key 'p': bytes value contains a NUL");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "p"), s_(&m, "\xff\xfe")), "key 'p': string is not valid UTF-8");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "l"), msgpack_pack_array(&m.pk, 2), msgpack_pack_int(&m.pk, 1),
          msgpack_pack_array(&m.pk, 0)),
         "key 'l': nested lists are not rectangular");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "l"), msgpack_pack_array(&m.pk, 1), s_(&m, "a")),
         "lists may only hold numbers or bools, found a str");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "u"), nd(&m, "<U1", "a\0\0\0b\0\0\0", 8, 1, (int64_t[]){2})),
         "string arrays must have one element, this one has 2");
    CASE((msgpack_pack_map(&m.pk, 1), s_(&m, "e"), msgpack_pack_ext(&m.pk, 1, 1), msgpack_pack_ext_body(&m.pk, "x", 1)),
         "msgpack ext values are not supported");
#undef CASE
    /* raw byte-level garbage */
    struct {
        const char *bytes;
        size_t n;
        const char *want;
    } raw[] = {
        {"", 0, "empty message"},
        {"\xc1", 1, "invalid msgpack byte 0xc1"},
        {"\x81\xa1", 2, "msgpack map at offset 0 claims 1 entries but only 1 bytes follow"},
        {"\x81\xa1x", 3, "truncated msgpack (ends at byte 3)"},
        {"\x80\x80", 2, "1 trailing bytes"},
        {"\xdd\xff\xff\xff\xff", 5, "claims 4294967295 entries but only 0 bytes follow"},
        {"\xdf\x7f\xff\xff\xff\x00", 6, "msgpack map at offset 0 claims"},
        {"\xc6\x7f\xff\xff\xff", 5, "truncated msgpack"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        mpn_obs o;
        char err[512] = "";
        int rc = mpn_decode((const uint8_t *)raw[i].bytes, raw[i].n, &o, err, sizeof err);
        CHECK(rc == -1 && strstr(err, raw[i].want), "raw case %zu: '%s' (expected '%s')", i, err, raw[i].want);
    }
    /* nesting bombs: 100 nested arrays; a map of 200000 empty arrays (too many objects is fine here, bounded) */
    uint8_t deep[101];
    memset(deep, 0x91, 100);
    deep[100] = 0x90;
    mpn_obs o;
    char err[512] = "";
    CHECK(mpn_decode(deep, sizeof deep, &o, err, sizeof err) == -1 && strstr(err, "nesting deeper than"), "%s", err);
    size_t big = 1 + 4 + 2 * (size_t)(MPN_MAX_OBJECTS);
    uint8_t *bomb = malloc(big);
    bomb[0] = 0xdd;
    uint32_t cnt = (uint32_t)(MPN_MAX_OBJECTS + 1);
    bomb[1] = (uint8_t)(cnt >> 24), bomb[2] = (uint8_t)(cnt >> 16), bomb[3] = (uint8_t)(cnt >> 8), bomb[4] = (uint8_t)cnt;
    memset(bomb + 5, 0x90, big - 5);
    CHECK(mpn_decode(bomb, big, &o, err, sizeof err) == -1 && strstr(err, "more than"), "%s", err);
    free(bomb);
}

static void test_response_bytes(void) {
    /* SPEC §11.4: the LIBERO response, second request on the connection */
    double actions[350];
    for (int i = 0; i < 350; i++) actions[i] = i * 0.5 - 3;
    uint8_t *out;
    size_t len;
    CHECK(mpn_encode_response(actions, 50, 7, 12.5, 20.25, 1, 100.0, &out, &len) == 0, "encode");
    static const uint8_t head[] = {0x83, 0xa7, 'a', 'c', 't', 'i', 'o', 'n', 's', 0x84, 0xc4, 0x0b, '_', '_', 'n', 'd',
                                   'a', 'r', 'r', 'a', 'y', '_', '_', 0xc3, 0xc4, 0x04, 'd', 'a', 't', 'a', 0xc5, 0x0a, 0xf0};
    CHECK(len > sizeof head && !memcmp(out, head, sizeof head), "response head");
    CHECK(!memcmp(out + sizeof head, actions, 2800), "little-endian f64 data");
    const uint8_t *p = out + sizeof head + 2800;
    static const uint8_t mid[] = {0xc4, 0x05, 'd', 't', 'y', 'p', 'e', 0xa3, '<', 'f', '8', 0xc4, 0x05, 's', 'h', 'a', 'p',
                                  'e', 0x92, 0x32, 0x07, 0xad, 'p', 'o', 'l', 'i', 'c', 'y', '_', 't', 'i', 'm', 'i', 'n',
                                  'g', 0x81, 0xa8, 'i', 'n', 'f', 'e', 'r', '_', 'm', 's', 0xcb, 0x40, 0x29, 0, 0, 0, 0, 0, 0};
    CHECK(!memcmp(p, mid, sizeof mid), "dtype, shape, policy_timing");
    p += sizeof mid;
    static const uint8_t tail[] = {0xad, 's', 'e', 'r', 'v', 'e', 'r', '_', 't', 'i', 'm', 'i', 'n', 'g', 0x82, 0xa8, 'i',
                                   'n', 'f', 'e', 'r', '_', 'm', 's', 0xcb, 0x40, 0x34, 0x40, 0, 0, 0, 0, 0, 0xad, 'p',
                                   'r', 'e', 'v', '_', 't', 'o', 't', 'a', 'l', '_', 'm', 's', 0xcb, 0x40, 0x59, 0, 0, 0,
                                   0, 0, 0};
    CHECK(!memcmp(p, tail, sizeof tail) && (size_t)(p + sizeof tail - out) == len, "server_timing");
    free(out);
    /* first request: server_timing has infer_ms only */
    CHECK(mpn_encode_response(actions, 10, 8, 1, 2, 0, 0, &out, &len) == 0, "encode");
    CHECK(out[len - 9 - 9 - 1] == 0x81, "server_timing without prev_total_ms");
    /* the response decodes as an observation-like map too */
    mpn_obs o;
    char err[512];
    CHECK(mpn_decode(out, len, &o, err, sizeof err) == 0, "%s", err);
    const pi0_obs_item *it = mpn_find(&o, "actions");
    CHECK(it && it->dtype == PI0_ELEM_F64 && it->ndim == 2 && it->shape[0] == 10 && it->shape[1] == 8, "round trip");
    CHECK(mpn_find(&o, "server_timing/infer_ms") != NULL && !mpn_find(&o, "server_timing/prev_total_ms"), "keys");
    mpn_obs_free(&o);
    free(out);
}

static void test_json(void) {
    struct {
        const char *json;
        const char *hex;
    } cases[] = {
        {"{}", "80"},
        {"{\"reset_pose\": [0, -1.5, 1.5, 0, 0, 0]}",
         "81aa72657365745f706f736596 00 cbbff8000000000000 cb3ff8000000000000 00 00 00"},
        {" [true, false, null, \"a\\u00e9\\n\", 1e2, -7, 300, 0.0] ",
         "98 c3 c2 c0 a461c3a90a cb4059000000000000 f9 cd012c cb0000000000000000"},
        {"{\"b\": 1, \"a\": {\"c\": []}}", "82 a162 01 a161 81 a163 90"},
        {"18446744073709551615", "cfffffffffffffffff"},
        {"-9223372036854775808", "d38000000000000000"},
        {"\"\\ud83d\\ude00\"", "a4f09f9880"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *out;
        size_t len;
        char err[256] = "", hex[512] = "", want[512] = "";
        int rc = mpn_json_to_msgpack(cases[i].json, &out, &len, err, sizeof err);
        CHECK(rc == 0, "json case %zu: %s", i, err);
        if (rc) continue;
        for (size_t k = 0; k < len && 2 * k + 2 < sizeof hex; k++) snprintf(hex + 2 * k, 3, "%02x", out[k]);
        size_t w = 0;
        for (const char *c = cases[i].hex; *c && w + 1 < sizeof want; c++)
            if (*c != ' ') want[w++] = *c;
        CHECK(!strcmp(hex, want), "json case %zu: %s (expected %s)", i, hex, want);
        free(out);
    }
    const char *bad[] = {"", "{", "{\"a\" 1}", "[1,]", "[1 2]", "tru", "\"\\x\"", "{} x", "\"\x01\"", "{1: 2}", "\"\\ud800\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = NULL;
        size_t len;
        char err[256] = "";
        CHECK(mpn_json_to_msgpack(bad[i], &out, &len, err, sizeof err) == -1 && strstr(err, "JSON"), "bad json %zu: %s", i,
              err);
        free(out);
    }
    char deep[300];
    memset(deep, '[', 200);
    deep[200] = 0;
    uint8_t *out = NULL;
    size_t len;
    char err[256] = "";
    CHECK(mpn_json_to_msgpack(deep, &out, &len, err, sizeof err) == -1 && strstr(err, "nested too deeply"), "%s", err);
}

int main(void) {
    test_libero_request();
    test_nested_and_scalars();
    test_conversions();
    test_empty_values();
    test_errors();
    test_response_bytes();
    test_json();
    return test_summary("test_msgpack_numpy");
}
