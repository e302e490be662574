/* norm_stats.json parsing and the (un)normalisation transforms (SPEC §9.3). */
#include "policy/norm_stats.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

static void vec_free(pi0_norm_vec *v) {
    free(v->mean);
    free(v->std);
    free(v->q01);
    free(v->q99);
    memset(v, 0, sizeof *v);
}

void pi0_norm_stats_free(pi0_norm_stats *s) {
    if (!s) return;
    vec_free(&s->state);
    vec_free(&s->actions);
}

/* A numeric array of length n (n < 0: any length, returned in *n). NULL/absent -> *out NULL. */
static pi0_status num_array(const cJSON *a, const char *what, const char *key, const char *field, int optional, int *n,
                            double **out) {
    *out = NULL;
    if (!a || cJSON_IsNull(a)) {
        if (optional) return PI0_OK;
        return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s.%s is missing (expected an array of numbers)", what, key, field);
    }
    if (!cJSON_IsArray(a))
        return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s.%s is not an array of numbers", what, key, field);
    int len = cJSON_GetArraySize(a);
    if (len == 0) return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s.%s is empty", what, key, field);
    if (*n >= 0 && len != *n)
        return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s.%s has %d entries, mean has %d", what, key, field, len, *n);
    double *v = malloc((size_t)len * sizeof *v);
    if (!v) return pi0_fail(PI0_ERR_OOM, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) {
            free(v);
            return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s.%s[%d] is not a finite number", what, key, field, i);
        }
        v[i++] = e->valuedouble;
    }
    *n = len;
    *out = v;
    return PI0_OK;
}

static pi0_status parse_vec(const cJSON *ns, const char *key, const char *what, pi0_norm_vec *v) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(ns, key);
    if (!o) return PI0_OK;
    if (!cJSON_IsObject(o)) return pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s is not an object", what, key);
    int n = -1;
    pi0_status st = num_array(cJSON_GetObjectItemCaseSensitive(o, "mean"), what, key, "mean", 0, &n, &v->mean);
    if (st == PI0_OK) st = num_array(cJSON_GetObjectItemCaseSensitive(o, "std"), what, key, "std", 0, &n, &v->std);
    if (st == PI0_OK) st = num_array(cJSON_GetObjectItemCaseSensitive(o, "q01"), what, key, "q01", 1, &n, &v->q01);
    if (st == PI0_OK) st = num_array(cJSON_GetObjectItemCaseSensitive(o, "q99"), what, key, "q99", 1, &n, &v->q99);
    if (st == PI0_OK && (!v->q01) != (!v->q99))
        st = pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats.%s has only one of q01 and q99", what, key);
    if (st != PI0_OK) {
        vec_free(v);
        return st;
    }
    v->n = n;
    v->present = 1;
    return PI0_OK;
}

pi0_status pi0_norm_stats_parse(const char *json, const char *what, pi0_norm_stats *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_Parse(json);
    if (!root) return pi0_fail(PI0_ERR_FORMAT, "%s: invalid JSON", what);
    pi0_status st = PI0_OK;
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(root, "norm_stats");
    if (!cJSON_IsObject(ns))
        st = pi0_fail(PI0_ERR_FORMAT, "%s: no \"norm_stats\" object (expected openpi's norm_stats.json)", what);
    if (st == PI0_OK) st = parse_vec(ns, "state", what, &out->state);
    if (st == PI0_OK) st = parse_vec(ns, "actions", what, &out->actions);
    if (st == PI0_OK && !out->actions.present)
        st = pi0_fail(PI0_ERR_FORMAT, "%s: norm_stats has no \"actions\" entry", what);
    if (st == PI0_OK && !out->state.present)
        pi0_log(PI0_LOG_WARN, "%s: norm_stats has no \"state\" entry: the state is passed unnormalized", what);
    cJSON_Delete(root);
    if (st != PI0_OK) pi0_norm_stats_free(out);
    return st;
}

pi0_status pi0_norm_stats_load(const char *path, pi0_norm_stats *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return pi0_fail(PI0_ERR_IO, "cannot open norm stats %s", path);
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size >= 0 && size < (1L << 30) && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)size + 1);
    pi0_status st = PI0_OK;
    if (!buf) st = pi0_fail(PI0_ERR_IO, "cannot read norm stats %s", path);
    else if (fread(buf, 1, (size_t)size, f) != (size_t)size) st = pi0_fail(PI0_ERR_IO, "cannot read norm stats %s", path);
    fclose(f);
    if (st == PI0_OK) {
        buf[size] = 0;
        st = pi0_norm_stats_parse(buf, path, out);
    }
    free(buf);
    return st;
}

pi0_status pi0_normalize(const pi0_norm_vec *s, int quantile, double *x, int d, const char *what) {
    if (!s || !s->present) return PI0_OK;
    if (d > s->n)
        return pi0_fail(PI0_ERR_INVALID_ARG, "%s has %d values but its norm stats have only %d", what, d, s->n);
    if (quantile && !s->q01)
        return pi0_fail(PI0_ERR_INVALID_ARG, "quantile normalization needs q01/q99 in the norm stats of %s", what);
    for (int i = 0; i < d; i++) {
        if (quantile) x[i] = (x[i] - s->q01[i]) / (s->q99[i] - s->q01[i] + 1e-6) * 2.0 - 1.0;
        else x[i] = (x[i] - s->mean[i]) / (s->std[i] + 1e-6);
    }
    return PI0_OK;
}

pi0_status pi0_unnormalize(const pi0_norm_vec *s, int quantile, double *x, int rows, int d, const char *what) {
    if (!s || !s->present) return PI0_OK;
    if (s->n > d)
        return pi0_fail(PI0_ERR_INVALID_ARG, "norm stats of %s have %d values, more than the model's action_dim %d", what,
                        s->n, d);
    if (quantile && !s->q01)
        return pi0_fail(PI0_ERR_INVALID_ARG, "quantile normalization needs q01/q99 in the norm stats of %s", what);
    for (int r = 0; r < rows; r++) {
        double *v = x + (size_t)r * d;
        if (quantile) {
            for (int i = 0; i < s->n; i++) v[i] = (v[i] + 1.0) / 2.0 * (s->q99[i] - s->q01[i] + 1e-6) + s->q01[i];
        } else {
            for (int i = 0; i < d; i++) {
                double m = i < s->n ? s->mean[i] : 0.0, sd = i < s->n ? s->std[i] : 1.0;
                v[i] = v[i] * (sd + 1e-6) + m;
            }
        }
    }
    return PI0_OK;
}
