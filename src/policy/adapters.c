/* Robot adapters: ALOHA, DROID, LIBERO and generic key layouts (SPEC §10.5). */
#include "policy/adapters.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

const int pi0_aloha_joint_flip[14] = {1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1};

static const char *dtype_name(pi0_elem_type t) {
    switch (t) {
    case PI0_ELEM_U8: return "uint8";
    case PI0_ELEM_BOOL: return "bool";
    case PI0_ELEM_I32: return "int32";
    case PI0_ELEM_I64: return "int64";
    case PI0_ELEM_F32: return "float32";
    case PI0_ELEM_F64: return "float64";
    }
    return "unknown";
}

static const char *describe(const pi0_obs_item *it, char *buf, size_t n) {
    if (it->kind == PI0_VALUE_STRING) {
        snprintf(buf, n, "a string");
        return buf;
    }
    size_t o = (size_t)snprintf(buf, n, "%s [", dtype_name(it->dtype));
    for (int i = 0; i < it->ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, i ? ", %lld" : "%lld", (long long)it->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

static size_t numel(const pi0_obs_item *it) {
    size_t m = 1;
    for (int i = 0; i < it->ndim; i++) m *= (size_t)it->shape[i];
    return m;
}

const pi0_obs_item *pi0_obs_find(const pi0_obs_item *items, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (items[i].key && !strcmp(items[i].key, key)) return &items[i];
    return NULL;
}

static int is_camera_key(const pi0_policy_config *c, const char *key) {
    for (int k = 0; k < PI0_NUM_CAMERAS; k++)
        if (c->image_keys[k] && !strcmp(c->image_keys[k], key)) return 1;
    for (int i = 0; i < c->n_ignored; i++)
        if (!strcmp(c->ignored_keys[i], key)) return 1;
    return 0;
}

pi0_status pi0_adapter_check_items(const pi0_policy_config *c, const pi0_obs_item *items, int n) {
    if (n < 0 || (n > 0 && !items)) return pi0_fail(PI0_ERR_INVALID_ARG, "observation: no items");
    for (int i = 0; i < n; i++) {
        const pi0_obs_item *it = &items[i];
        if (!it->key) return pi0_fail(PI0_ERR_INVALID_ARG, "observation item %d has no key", i);
        for (int j = 0; j < i; j++)
            if (!strcmp(items[j].key, it->key))
                return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s' appears twice", it->key);
        if (it->kind == PI0_VALUE_STRING) {
            if (!it->str) return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s': string is NULL", it->key);
            continue;
        }
        if (it->kind != PI0_VALUE_ARRAY)
            return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s': unknown value kind %d", it->key, (int)it->kind);
        if (it->dtype < PI0_ELEM_U8 || it->dtype > PI0_ELEM_F64)
            return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s': unknown element type %d", it->key, (int)it->dtype);
        if (it->ndim < 0 || it->ndim > 4)
            return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s' has %d dimensions (at most 4)", it->key, it->ndim);
        for (int d = 0; d < it->ndim; d++)
            if (it->shape[d] < 0 || it->shape[d] > (1 << 24))
                return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s' has a bad shape entry %lld", it->key,
                                (long long)it->shape[d]);
        if (!it->data && numel(it) > 0)
            return pi0_fail(PI0_ERR_INVALID_ARG, "observation key '%s': data pointer is NULL", it->key);
    }
    if (c->image_namespace && c->image_namespace[0]) {
        size_t ns = strlen(c->image_namespace);
        for (int i = 0; i < n; i++) {
            if (strncmp(items[i].key, c->image_namespace, ns) || is_camera_key(c, items[i].key)) continue;
            char expected[512];
            size_t o = 0;
            for (int k = 0; k < PI0_NUM_CAMERAS; k++)
                if (c->image_keys[k] && !strncmp(c->image_keys[k], c->image_namespace, ns))
                    o += (size_t)snprintf(expected + o, sizeof expected - o, "%s%s", o ? ", " : "", c->image_keys[k] + ns);
            for (int j = 0; j < c->n_ignored && o < sizeof expected; j++)
                if (!strncmp(c->ignored_keys[j], c->image_namespace, ns))
                    o += (size_t)snprintf(expected + o, sizeof expected - o, "%s%s", o ? ", " : "", c->ignored_keys[j] + ns);
            return pi0_fail(PI0_ERR_INVALID_ARG, "unknown camera '%s' (key '%s'): expected cameras are %s",
                            items[i].key + ns, items[i].key, expected);
        }
    }
    return PI0_OK;
}

/* numpy's (255 * x).astype(np.uint8) on x86-64: truncation toward zero into int32, low byte;
 * values beyond the int32 range give 0. */
static inline uint8_t f2u8(double v) {
    if (!(fabs(v) < 2147483648.0)) return 0;
    return (uint8_t)(uint32_t)(int32_t)v;
}

pi0_status pi0_adapter_image(const pi0_policy_config *c, const pi0_obs_item *it, uint8_t **hwc, int *h, int *w) {
    char d[128];
    *hwc = NULL;
    const char *lay = c->layout == PI0_LAYOUT_CHW ? "[3, H, W] (CHW)" : c->layout == PI0_LAYOUT_HWC ? "[H, W, 3] (HWC)"
                                                                                                     : "[H, W, 3] or [3, H, W]";
    if (it->kind != PI0_VALUE_ARRAY || it->ndim != 3 ||
        (it->dtype != PI0_ELEM_U8 && it->dtype != PI0_ELEM_F32 && it->dtype != PI0_ELEM_F64))
        return pi0_fail(PI0_ERR_INVALID_ARG, "image '%s': expected a uint8 (or float in [0, 1]) array of shape %s, got %s",
                        it->key, lay, describe(it, d, sizeof d));
    int chw = c->layout == PI0_LAYOUT_CHW || (c->layout == PI0_LAYOUT_AUTO && it->shape[0] == 3);
    int64_t H = chw ? it->shape[1] : it->shape[0], W = chw ? it->shape[2] : it->shape[1];
    int64_t C = chw ? it->shape[0] : it->shape[2];
    if (C != 3 || H <= 0 || W <= 0)
        return pi0_fail(PI0_ERR_INVALID_ARG, "image '%s': expected a uint8 (or float in [0, 1]) array of shape %s, got %s",
                        it->key, lay, describe(it, d, sizeof d));
    size_t n = (size_t)H * W * 3;
    uint8_t *out = malloc(n);
    if (!out) return pi0_fail(PI0_ERR_OOM, "out of memory");
    int out_of_range = 0;
    for (size_t i = 0; i < n; i++) {
        /* i indexes the source in its own layout */
        size_t dst = i;
        if (chw) {
            size_t ch = i / ((size_t)H * W), rem = i % ((size_t)H * W);
            dst = rem * 3 + ch;
        }
        uint8_t v;
        if (it->dtype == PI0_ELEM_U8) {
            v = ((const uint8_t *)it->data)[i];
        } else if (it->dtype == PI0_ELEM_F32) {
            float x = ((const float *)it->data)[i];
            if (!isfinite(x)) {
                free(out);
                return pi0_fail(PI0_ERR_INVALID_ARG, "image '%s' has a non-finite value (%g) at flat index %zu", it->key,
                                (double)x, i);
            }
            volatile float p = 255.0f * x; /* float32 product, as numpy */
            out_of_range |= x < 0.f || x > 1.f;
            v = f2u8(p);
        } else {
            double x = ((const double *)it->data)[i];
            if (!isfinite(x)) {
                free(out);
                return pi0_fail(PI0_ERR_INVALID_ARG, "image '%s' has a non-finite value (%g) at flat index %zu", it->key, x, i);
            }
            out_of_range |= x < 0.0 || x > 1.0;
            v = f2u8(255.0 * x);
        }
        out[dst] = v;
    }
    if (out_of_range)
        pi0_log(PI0_LOG_WARN, "image '%s': float pixels outside [0, 1] wrap around when converted to uint8 (as in openpi)",
                it->key);
    *hwc = out;
    *h = (int)H;
    *w = (int)W;
    return PI0_OK;
}

double pi0_aloha_gripper_to_angular(double v) {
    /* Aloha linear gripper position -> Interbotix horn angle -> pi0's normalised angle. */
    double lin = v * (0.05800 - 0.01844) + 0.01844;
    const double arm = 0.036, horn = 0.022;
    double x = (horn * horn + lin * lin - arm * arm) / (2 * horn * lin);
    if (x < -1.0) x = -1.0;
    if (x > 1.0) x = 1.0;
    double rad = asin(x);
    return (rad - 0.5476) / (1.6296 - 0.5476);
}

double pi0_aloha_gripper_from_angular(double v) {
    double a = v + 0.5476;
    return (a - -0.6213) / (1.4910 - -0.6213);
}

pi0_status pi0_adapter_state(const pi0_policy_config *c, const pi0_obs_item *items, int n, double *state, int *d,
                             int max_d) {
    int o = 0;
    char desc[128];
    for (int k = 0; k < c->n_state_keys; k++) {
        const char *key = c->state_keys[k];
        const pi0_obs_item *it = pi0_obs_find(items, n, key);
        if (!it)
            return pi0_fail(PI0_ERR_INVALID_ARG, "missing key '%s' (expected the robot state: a 1-D numeric array%s)", key,
                            c->n_state_keys > 1 ? ", concatenated with the other state keys" : "");
        if (it->kind != PI0_VALUE_ARRAY || it->ndim > 1)
            return pi0_fail(PI0_ERR_INVALID_ARG, "state '%s': expected a 1-D numeric array (or a scalar), got %s", key,
                            describe(it, desc, sizeof desc));
        size_t m = numel(it);
        if (o + (int64_t)m > max_d)
            return pi0_fail(PI0_ERR_INVALID_ARG, "state: %d values from %s%s exceed the model's action_dim %d",
                            o + (int)m, key, k ? " and the keys before it" : "", max_d);
        for (size_t i = 0; i < m; i++) {
            double v = 0;
            switch (it->dtype) {
            case PI0_ELEM_U8: v = ((const uint8_t *)it->data)[i]; break;
            case PI0_ELEM_BOOL: v = ((const uint8_t *)it->data)[i] != 0; break;
            case PI0_ELEM_I32: v = ((const int32_t *)it->data)[i]; break;
            case PI0_ELEM_I64: v = (double)((const int64_t *)it->data)[i]; break;
            case PI0_ELEM_F32: v = ((const float *)it->data)[i]; break;
            case PI0_ELEM_F64: v = ((const double *)it->data)[i]; break;
            }
            if (!isfinite(v))
                return pi0_fail(PI0_ERR_INVALID_ARG, "state '%s' has a non-finite value (%g) at index %zu", key, v, i);
            state[o++] = v;
        }
    }
    if (c->adapter == PI0_ADAPTER_ALOHA) {
        if (o != 14)
            return pi0_fail(PI0_ERR_INVALID_ARG, "state '%s': the ALOHA adapter expects 14 values (2 x [6 joints, gripper]), got %d",
                            c->state_keys[0], o);
        if (c->adapt_to_pi) {
            for (int i = 0; i < 14; i++) state[i] = pi0_aloha_joint_flip[i] * state[i];
            state[6] = pi0_aloha_gripper_to_angular(state[6]);
            state[13] = pi0_aloha_gripper_to_angular(state[13]);
        }
    }
    *d = o;
    return PI0_OK;
}

pi0_status pi0_adapter_outputs(const pi0_policy_config *c, const double *state, double *actions, int H, int A,
                               double *out, int dims) {
    if (c->n_delta > A)
        return pi0_fail(PI0_ERR_INVALID_ARG, "delta_action_mask has %d entries, more than the model's action_dim %d",
                        c->n_delta, A);
    if (dims > A) return pi0_fail(PI0_ERR_INVALID_ARG, "action_dims %d exceeds the model's action_dim %d", dims, A);
    for (int t = 0; t < H; t++) {
        double *a = actions + (size_t)t * A;
        for (int j = 0; j < c->n_delta; j++)
            if (c->delta_mask[j]) a[j] += state[j];
        double *o = out + (size_t)t * dims;
        for (int j = 0; j < dims; j++) o[j] = a[j];
        if (c->adapter == PI0_ADAPTER_ALOHA && c->adapt_to_pi && dims == 14) {
            for (int j = 0; j < 14; j++) o[j] = pi0_aloha_joint_flip[j] * o[j];
            o[6] = pi0_aloha_gripper_from_angular(o[6]);
            o[13] = pi0_aloha_gripper_from_angular(o[13]);
        }
    }
    return PI0_OK;
}
