/*
 * `pi0 policy-infer`: a raw robot observation (docs/POLICY.md) -> unnormalized actions, through
 * the policy layer (include/pi0_policy.h).
 *
 *   pi0 policy-infer (-m MODEL | --random tiny|full) --policy-config CFG --raw-obs OBS.safetensors
 *                    -o ACTIONS.safetensors [--tokenizer SPM] [--norm-stats JSON] [--default-prompt P]
 *                    [--noise NOISE.safetensors] [--seed N] [--backend auto|cpu|cuda] [--threads N]
 *                    [--steps N] [--horizon H] [--dump-inputs FILE] [--runs N]
 *
 * Raw observation file: safetensors, one tensor per '/'-joined key path (dtypes U8, BOOL, I32,
 * I64, F32, F64; F16 is widened to F32); a U8 1-D tensor named "prompt" (or listed in the
 * comma-separated metadata entry "pi0.strings") holds UTF-8 text.
 * Output: "actions" F64 [H, action_dims]; metadata infer_ms / total_ms.
 * --dump-inputs writes the model-boundary observation (docs/FORMATS.md "Observation", noise
 * included) that `pi0 infer --obs` accepts.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "pi0_policy.h"

int cmd_policy_infer(int argc, char **argv);

static int perr(const char *what, pi0_status st) {
    fprintf(stderr, "error: %s: %s: %s\n", what, pi0_status_name(st), pi0_last_error());
    return 1;
}

static void plog(pi0_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= PI0_LOG_INFO) fprintf(stderr, "pi0: %s\n", msg);
}

/* ---- raw observation files ----------------------------------------------------- */

typedef struct {
    unsigned char *buf;
    pi0_obs_item *items;
    char **strings; /* owned NUL-terminated copies for string items */
    int n;
} raw_obs;

static void raw_obs_free(raw_obs *r) {
    for (int i = 0; i < r->n; i++) {
        free((char *)r->items[i].key);
        free(r->strings[i]);
    }
    free(r->items);
    free(r->strings);
    free(r->buf);
    memset(r, 0, sizeof *r);
}

static int read_file(const char *path, unsigned char **out, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return -1;
    }
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    unsigned char *b = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "error: cannot read %s\n", path);
        fclose(f);
        free(b);
        return -1;
    }
    fclose(f);
    b[n] = 0;
    *out = b;
    *size = (size_t)n;
    return 0;
}

static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static float f16_to_f32(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Parse a raw observation safetensors file into pi0_obs_items (views into r->buf). */
static int raw_obs_load(const char *path, raw_obs *r) {
    memset(r, 0, sizeof *r);
    size_t size;
    if (read_file(path, &r->buf, &size)) return -1;
    uint64_t hl = 0;
    if (size < 8 || (memcpy(&hl, r->buf, 8), hl > size - 8)) {
        fprintf(stderr, "error: %s: not a safetensors file (bad header length)\n", path);
        return -1;
    }
    char *hdr = malloc(hl + 1);
    if (!hdr) return -1;
    memcpy(hdr, r->buf + 8, hl);
    hdr[hl] = 0;
    cJSON *root = cJSON_Parse(hdr);
    free(hdr);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "error: %s: the safetensors header is not a JSON object\n", path);
        cJSON_Delete(root);
        return -1;
    }
    const unsigned char *data = r->buf + 8 + hl;
    size_t data_size = size - 8 - hl;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    const cJSON *sl = meta ? cJSON_GetObjectItemCaseSensitive(meta, "pi0.strings") : NULL;
    const char *strings = cJSON_IsString(sl) ? sl->valuestring : NULL;
    int cap = cJSON_GetArraySize(root);
    r->items = calloc((size_t)cap + 1, sizeof *r->items);
    r->strings = calloc((size_t)cap + 1, sizeof *r->strings);
    int rc = r->items && r->strings ? 0 : -1;
    const cJSON *t;
    cJSON_ArrayForEach(t, root) {
        if (rc) break;
        if (!strcmp(t->string, "__metadata__")) continue;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(t, "shape"),
                    *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        pi0_obs_item *it = &r->items[r->n];
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
            cJSON_GetArraySize(sh) > 4) {
            fprintf(stderr, "error: %s: tensor %s: bad header entry (dtype, shape of at most 4 dims, data_offsets)\n",
                    path, t->string);
            rc = -1;
            break;
        }
        static const struct { const char *name; pi0_elem_type t; size_t size; } dts[] = {
            {"U8", PI0_ELEM_U8, 1}, {"BOOL", PI0_ELEM_BOOL, 1}, {"I32", PI0_ELEM_I32, 4}, {"I64", PI0_ELEM_I64, 8},
            {"F32", PI0_ELEM_F32, 4}, {"F64", PI0_ELEM_F64, 8}, {"F16", PI0_ELEM_F32, 2}};
        int k = -1;
        for (int i = 0; i < 7; i++)
            if (!strcmp(dt->valuestring, dts[i].name)) k = i;
        if (k < 0) {
            fprintf(stderr, "error: %s: tensor %s has dtype %s (expected U8, BOOL, I32, I64, F16, F32 or F64)\n", path,
                    t->string, dt->valuestring);
            rc = -1;
            break;
        }
        it->key = strdup(t->string);
        r->n++;
        it->kind = PI0_VALUE_ARRAY;
        it->dtype = dts[k].t;
        it->ndim = cJSON_GetArraySize(sh);
        double numel = 1;
        for (int d = 0; d < it->ndim; d++) {
            double v = cJSON_GetArrayItem(sh, d)->valuedouble;
            if (v < 0 || v > (1 << 24) || v != floor(v)) rc = -1;
            it->shape[d] = (int64_t)v;
            numel *= v;
        }
        double b = cJSON_GetArrayItem(off, 0)->valuedouble, e = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (rc || b < 0 || e < b || e > (double)data_size || e - b != numel * (double)dts[k].size) {
            fprintf(stderr, "error: %s: tensor %s: shape and data_offsets disagree or point past the end\n", path,
                    t->string);
            rc = -1;
            break;
        }
        it->data = data + (size_t)b;
        if (!strcmp(dts[k].name, "F16")) { /* widen in place into a fresh buffer */
            size_t n = (size_t)numel;
            float *w = malloc((n ? n : 1) * sizeof *w);
            if (!w) {
                rc = -1;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, (const unsigned char *)it->data + 2 * i, 2);
                w[i] = f16_to_f32(h);
            }
            r->strings[r->n - 1] = (char *)w; /* owned buffer, freed with the strings */
            it->data = w;
        } else if (it->dtype == PI0_ELEM_U8 && it->ndim == 1 && (!strcmp(t->string, "prompt") || listed(strings, t->string))) {
            size_t n = (size_t)numel;
            char *s = malloc(n + 1);
            if (!s) {
                rc = -1;
                break;
            }
            memcpy(s, it->data, n);
            s[n] = 0;
            if (strlen(s) != n) {
                fprintf(stderr, "error: %s: string tensor %s contains a NUL byte\n", path, t->string);
                free(s);
                rc = -1;
                break;
            }
            r->strings[r->n - 1] = s;
            it->kind = PI0_VALUE_STRING;
            it->str = s;
            it->data = NULL;
            it->ndim = 0;
        } else if ((uintptr_t)it->data % dts[k].size) { /* keep numeric data aligned */
            void *copy = malloc((size_t)numel * dts[k].size + 1);
            if (!copy) {
                rc = -1;
                break;
            }
            memcpy(copy, it->data, (size_t)numel * dts[k].size);
            r->strings[r->n - 1] = copy;
            it->data = copy;
        }
    }
    cJSON_Delete(root);
    if (rc) raw_obs_free(r);
    return rc;
}

/* ---- output --------------------------------------------------------------------- */

static int write_actions(const char *path, const double *a, int H, int D, double infer_ms, double total_ms) {
    char hdr[512];
    size_t nbytes = (size_t)H * D * sizeof(double);
    int n = snprintf(hdr, sizeof hdr,
                     "{\"__metadata__\":{\"format\":\"pi0-actions\",\"infer_ms\":\"%.3f\",\"total_ms\":\"%.3f\"},"
                     "\"actions\":{\"dtype\":\"F64\",\"shape\":[%d,%d],\"data_offsets\":[0,%zu]}}",
                     infer_ms, total_ms, H, D, nbytes);
    while (n % 8) hdr[n++] = ' ';
    uint64_t hl = (uint64_t)n;
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return 1;
    }
    int ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n && fwrite(a, 1, nbytes, f) == nbytes;
    ok &= fclose(f) == 0;
    if (!ok) fprintf(stderr, "error: cannot write %s\n", path);
    return ok ? 0 : 1;
}

static int dump_inputs(const char *path, const pi0_policy *p, const pi0_observation *o, const float *noise, int H) {
    const pi0_config *c = pi0_model_config(pi0_policy_model(p));
    size_t img = (size_t)c->image_size * c->image_size * 3;
    float *images = malloc(PI0_NUM_CAMERAS * img * sizeof(float));
    if (!images) return 1;
    uint8_t masks[PI0_NUM_CAMERAS];
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        memcpy(images + k * img, o->images[k], img * sizeof(float));
        masks[k] = (uint8_t)o->image_mask[k];
    }
    st_entry e[6] = {
        {"images", PI0_DT_F32, 4, {PI0_NUM_CAMERAS, c->image_size, c->image_size, 3}, images},
        {"image_masks", PI0_DT_U8, 1, {PI0_NUM_CAMERAS}, masks},
        {"tokens", PI0_DT_I32, 1, {o->n_tokens}, o->tokens},
        {"token_mask", PI0_DT_U8, 1, {o->n_tokens}, o->token_mask},
        {"state", PI0_DT_F32, 1, {c->action_dim}, o->state},
        {"noise", PI0_DT_F32, 2, {H, c->action_dim}, noise},
    };
    pi0_status st = st_save(path, e, 6, NULL, 0);
    free(images);
    return st == PI0_OK ? 0 : perr(path, st);
}

static int load_noise(const char *path, int H, int A, float *out) {
    st_file *f;
    pi0_status st = st_open(path, &f);
    if (st != PI0_OK) return perr(path, st);
    const st_tensor *t = st_find(f, "noise");
    int rc = 0;
    if (!t || t->dtype != PI0_DT_F32 || t->ndim != 2 || t->shape[0] != H || t->shape[1] != A) {
        fprintf(stderr, "error: %s: expected a tensor noise F32 [%d, %d]\n", path, H, A);
        rc = 1;
    } else {
        memcpy(out, t->data, (size_t)H * A * sizeof(float));
    }
    st_close(f);
    return rc;
}

static int usage(void) {
    fprintf(stderr,
            "usage: pi0 policy-infer (-m MODEL | --random tiny|full [--model-seed N]) --policy-config CFG\n"
            "                        --raw-obs OBS.safetensors -o ACTIONS.safetensors [--tokenizer SPM]\n"
            "                        [--norm-stats JSON] [--default-prompt P] [--noise NOISE.safetensors] [--seed N]\n"
            "                        [--backend auto|cpu|cuda] [--threads N] [--steps N] [--horizon H]\n"
            "                        [--dump-inputs FILE] [--runs N]\n");
    return 2;
}

int cmd_policy_infer(int argc, char **argv) {
    pi0_policy_params pp = pi0_policy_default_params();
    const char *obs_path = NULL, *out = NULL, *noise_path = NULL, *dump = NULL;
    uint64_t seed = 0;
    int runs = 1, have_model = 0;
    pi0_set_log(plog, NULL);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (!strcmp(a, "-m")) pp.checkpoint = v, have_model = 1;
        else if (!strcmp(a, "--random")) pp.checkpoint = NULL, pp.random_config = v, have_model = 1;
        else if (!strcmp(a, "--model-seed")) pp.random_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--policy-config")) pp.policy_config = v;
        else if (!strcmp(a, "--raw-obs")) obs_path = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--tokenizer")) pp.tokenizer = v;
        else if (!strcmp(a, "--norm-stats")) pp.norm_stats = v;
        else if (!strcmp(a, "--default-prompt")) pp.default_prompt = v;
        else if (!strcmp(a, "--noise")) noise_path = v;
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads")) pp.model.n_threads = atoi(v);
        else if (!strcmp(a, "--steps")) pp.session.num_steps = atoi(v);
        else if (!strcmp(a, "--horizon")) pp.session.action_horizon = atoi(v);
        else if (!strcmp(a, "--dump-inputs")) dump = v;
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "auto")) pp.model.backend = PI0_BACKEND_AUTO;
            else if (!strcmp(v, "cpu")) pp.model.backend = PI0_BACKEND_CPU;
            else if (!strcmp(v, "cuda")) pp.model.backend = PI0_BACKEND_CUDA;
            else return usage();
        } else return usage();
    }
    if (!have_model || !pp.policy_config || !obs_path || !out || runs < 1) return usage();

    raw_obs r;
    if (raw_obs_load(obs_path, &r)) return 1;
    pi0_policy *p = NULL;
    pi0_status st = pi0_policy_create(&pp, &p);
    if (st != PI0_OK) {
        raw_obs_free(&r);
        return perr("policy", st);
    }
    const pi0_config *c = pi0_model_config(pi0_policy_model(p));
    int H, D;
    pi0_policy_shape(p, &H, &D);
    float *noise = malloc((size_t)H * c->action_dim * sizeof(float));
    int rc = noise ? 0 : 1;
    if (!rc) {
        if (noise_path) rc = load_noise(noise_path, H, c->action_dim, noise);
        else pi0_gaussian_noise(seed, noise, (size_t)H * c->action_dim);
    }
    pi0_policy_result res = {0};
    for (int k = 0; !rc && k < runs; k++) {
        st = pi0_policy_infer(p, r.items, r.n, noise, seed, &res);
        if (st != PI0_OK) rc = perr("policy-infer", st);
        else if (runs > 1) fprintf(stderr, "run %d: %.1f ms (model %.1f ms)\n", k, res.total_ms, res.infer_ms);
    }
    if (!rc) rc = write_actions(out, res.actions, res.horizon, res.action_dims, res.infer_ms, res.total_ms);
    if (!rc && dump) {
        pi0_observation o;
        st = pi0_policy_prepare(p, r.items, r.n, &o);
        rc = st == PI0_OK ? dump_inputs(dump, p, &o, noise, H) : perr("policy-infer", st);
    }
    if (!rc) fprintf(stderr, "policy-infer: actions [%d, %d], %.1f ms (model %.1f ms)\n", res.horizon, res.action_dims,
                     res.total_ms, res.infer_ms);
    free(noise);
    pi0_policy_free(p);
    raw_obs_free(&r);
    return rc;
}
