/* Policy configuration JSON (docs/POLICY.md). */
#include "policy/policy_config.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

const char *const pi0_camera_slot_names[PI0_NUM_CAMERAS] = {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"};

const char *pi0_adapter_name(pi0_adapter_kind k) {
    switch (k) {
    case PI0_ADAPTER_ALOHA: return "aloha";
    case PI0_ADAPTER_DROID: return "droid";
    case PI0_ADAPTER_LIBERO: return "libero";
    default: return "generic";
    }
}

static char *dupstr(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void pi0_policy_config_free(pi0_policy_config *c) {
    if (!c) return;
    free(c->name);
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) free(c->image_keys[k]);
    free(c->image_namespace);
    for (int i = 0; i < c->n_ignored; i++) free(c->ignored_keys[i]);
    for (int i = 0; i < c->n_state_keys; i++) free(c->state_keys[i]);
    free(c->prompt_key);
    free(c->default_prompt);
    free(c->norm_stats_path);
    free(c->tokenizer_path);
    free(c->metadata_json);
    free(c->dir);
    free(c->source);
    memset(c, 0, sizeof *c);
}

/* ---- paths ---------------------------------------------------------------------- */

static char *dirname_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return dupstr(".");
    if (slash == path) return dupstr("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

char *pi0_policy_resolve_path(const char *p, const char *dir, const char *checkpoint, const char *what) {
    char buf[4096];
    size_t o = 0;
    const char *home = getenv("HOME");
    /* a path that starts with a variable or ~ is not relative to the config's folder */
    int anchored = (p[0] == '$' && p[1] == '{') || p[0] == '~';
    if (p[0] == '~' && (p[1] == '/' || !p[1])) {
        if (!home) return pi0_fail(PI0_ERR_INVALID_ARG, "%s: %s uses ~ but HOME is not set", what, p), NULL;
        o += (size_t)snprintf(buf, sizeof buf, "%s", home);
        p++;
    }
    while (*p && o < sizeof buf - 1) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p, '}');
            if (!end) return pi0_fail(PI0_ERR_FORMAT, "%s: unterminated ${ in path", what), NULL;
            char var[64];
            size_t n = (size_t)(end - p - 2);
            if (n >= sizeof var) n = sizeof var - 1;
            memcpy(var, p + 2, n);
            var[n] = 0;
            char *owned = NULL;
            const char *val = NULL;
            if (!strcmp(var, "CHECKPOINT")) {
                if (!checkpoint)
                    return pi0_fail(PI0_ERR_INVALID_ARG, "%s: a path uses ${CHECKPOINT} but no checkpoint was given", what),
                           NULL;
                val = owned = dirname_of(checkpoint);
            } else if (!strcmp(var, "CONFIG")) {
                val = dir ? dir : ".";
            } else if (!strcmp(var, "OPENPI_DATA_HOME")) {
                val = getenv("OPENPI_DATA_HOME");
                if (!val) {
                    if (!home)
                        return pi0_fail(PI0_ERR_INVALID_ARG, "%s: neither OPENPI_DATA_HOME nor HOME is set", what), NULL;
                    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s/.cache/openpi", home);
                    val = "";
                }
            } else if (!strcmp(var, "HOME")) {
                val = home;
                if (!val) return pi0_fail(PI0_ERR_INVALID_ARG, "%s: HOME is not set", what), NULL;
            } else {
                return pi0_fail(PI0_ERR_FORMAT,
                                "%s: unknown variable ${%s} in a path (expected CHECKPOINT, CONFIG, OPENPI_DATA_HOME or HOME)",
                                what, var),
                       NULL;
            }
            if (!val) return pi0_fail(PI0_ERR_OOM, "out of memory"), NULL;
            if (o < sizeof buf) o += (size_t)snprintf(buf + o, sizeof buf - o, "%s", val);
            free(owned);
            p = end + 1;
        } else {
            buf[o++] = *p++;
        }
    }
    if (o >= sizeof buf - 1) return pi0_fail(PI0_ERR_INVALID_ARG, "%s: path too long", what), NULL;
    buf[o] = 0;
    if (anchored || buf[0] == '/' || !dir) return dupstr(buf);
    size_t n = strlen(dir) + 1 + o + 1;
    char *r = malloc(n);
    if (r) snprintf(r, n, "%s/%s", dir, buf);
    return r;
}

char *pi0_policy_config_path(const pi0_policy_config *c, const char *raw, const char *checkpoint) {
    if (!raw) return pi0_fail(PI0_ERR_INVALID_ARG, "no path configured"), NULL;
    char *r = pi0_policy_resolve_path(raw, c->dir, checkpoint, c->source ? c->source : "policy config");
    if (!r && !pi0_last_error()[0]) pi0_fail(PI0_ERR_OOM, "out of memory");
    return r;
}

/* ---- parsing -------------------------------------------------------------------- */

/* The raw text of the top-level member "key" of a JSON object, whitespace outside strings
 * removed (cJSON would reprint 1.0 as 1; clients see the numbers as written). NULL if absent. */
static char *raw_member(const char *json, const char *key) {
    const char *p = json;
    int depth = 0;
    size_t klen = strlen(key);
    while (*p) {
        char ch = *p;
        if (ch == '"') {
            const char *start = p + 1;
            p++;
            while (*p && *p != '"') p += (*p == '\\' && p[1]) ? 2 : 1;
            const char *end = p;
            if (*p) p++;
            if (depth == 1 && (size_t)(end - start) == klen && !strncmp(start, key, klen)) {
                const char *q = p;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                if (*q != ':') continue;
                q++;
                while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
                /* scan one value */
                const char *v = q;
                int d = 0;
                do {
                    if (*q == '"') {
                        q++;
                        while (*q && *q != '"') q += (*q == '\\' && q[1]) ? 2 : 1;
                        if (*q) q++;
                    } else {
                        if (*q == '{' || *q == '[') d++;
                        else if (*q == '}' || *q == ']') d--;
                        if (*q) q++;
                    }
                    while (d == 0 && *q && *q != ',' && *q != '}' && *q != ']' && *q != '"' && *q != '{' && *q != '[') q++;
                } while (d > 0 && *q);
                char *out = malloc((size_t)(q - v) + 1);
                if (!out) return NULL;
                size_t o = 0;
                for (const char *r = v; r < q;) {
                    if (*r == '"') {
                        const char *s0 = r++;
                        while (r < q && *r != '"') r += (*r == '\\' && r + 1 < q) ? 2 : 1;
                        if (r < q) r++;
                        memcpy(out + o, s0, (size_t)(r - s0));
                        o += (size_t)(r - s0);
                    } else {
                        if (*r != ' ' && *r != '\t' && *r != '\n' && *r != '\r') out[o++] = *r;
                        r++;
                    }
                }
                out[o] = 0;
                return out;
            }
            continue;
        }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') depth--;
        p++;
    }
    return NULL;
}

static pi0_status get_string(const cJSON *v, const char *what, const char *key, int nullable, char **out) {
    free(*out);
    *out = NULL;
    if (cJSON_IsNull(v) && nullable) return PI0_OK;
    if (!cJSON_IsString(v))
        return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" must be a string%s", what, key, nullable ? " or null" : "");
    *out = dupstr(v->valuestring);
    return *out ? PI0_OK : pi0_fail(PI0_ERR_OOM, "out of memory");
}

static pi0_status get_int(const cJSON *v, const char *what, const char *key, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < lo || v->valuedouble > hi)
        return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" must be an integer in [%d, %d]", what, key, lo, hi);
    *out = (int)v->valuedouble;
    return PI0_OK;
}

static pi0_status get_bool(const cJSON *v, const char *what, const char *key, int *out) {
    if (!cJSON_IsBool(v)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(v);
    return PI0_OK;
}

static pi0_status get_string_list(const cJSON *v, const char *what, const char *key, char **list, int *n) {
    for (int i = 0; i < *n; i++) free(list[i]);
    *n = 0;
    if (cJSON_IsString(v)) {
        list[0] = dupstr(v->valuestring);
        *n = 1;
        return list[0] ? PI0_OK : pi0_fail(PI0_ERR_OOM, "out of memory");
    }
    if (!cJSON_IsArray(v)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" must be an array of strings", what, key);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" must be an array of strings", what, key);
        if (*n >= PI0_POLICY_MAX_KEYS)
            return pi0_fail(PI0_ERR_FORMAT, "%s: \"%s\" has more than %d entries", what, key, PI0_POLICY_MAX_KEYS);
        if (!(list[(*n)++] = dupstr(e->valuestring))) return pi0_fail(PI0_ERR_OOM, "out of memory");
    }
    return PI0_OK;
}

static int slot_index(const char *name) {
    for (int k = 0; k < PI0_NUM_CAMERAS; k++)
        if (!strcmp(name, pi0_camera_slot_names[k])) return k;
    return -1;
}

static pi0_status set_keys(pi0_policy_config *c, const char *const *imgs, const int *req, const char *const *state) {
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        c->image_keys[k] = dupstr(imgs[k]);
        if (imgs[k] && !c->image_keys[k]) return pi0_fail(PI0_ERR_OOM, "out of memory");
        c->image_required[k] = req[k];
    }
    for (int i = 0; state[i]; i++)
        if (!(c->state_keys[c->n_state_keys++] = dupstr(state[i]))) return pi0_fail(PI0_ERR_OOM, "out of memory");
    return PI0_OK;
}

/* openpi's robot adapters (SPEC §10.5) as defaults. */
static pi0_status adapter_defaults(pi0_policy_config *c) {
    switch (c->adapter) {
    case PI0_ADAPTER_ALOHA: {
        const char *imgs[3] = {"images/cam_high", "images/cam_left_wrist", "images/cam_right_wrist"};
        const int req[3] = {1, 0, 0};
        const char *state[] = {"state", NULL};
        c->layout = PI0_LAYOUT_CHW;
        c->action_dims = 14;
        c->adapt_to_pi = 1;
        if (!(c->image_namespace = dupstr("images/")) || !(c->ignored_keys[0] = dupstr("images/cam_low")))
            return pi0_fail(PI0_ERR_OOM, "out of memory");
        c->n_ignored = 1;
        return set_keys(c, imgs, req, state);
    }
    case PI0_ADAPTER_DROID: {
        const char *imgs[3] = {"observation/exterior_image_1_left", "observation/wrist_image_left", NULL};
        const int req[3] = {1, 1, 0};
        const char *state[] = {"observation/joint_position", "observation/gripper_position", NULL};
        c->layout = PI0_LAYOUT_AUTO;
        c->action_dims = 8;
        return set_keys(c, imgs, req, state);
    }
    case PI0_ADAPTER_LIBERO: {
        const char *imgs[3] = {"observation/image", "observation/wrist_image", NULL};
        const int req[3] = {1, 1, 0};
        const char *state[] = {"observation/state", NULL};
        c->layout = PI0_LAYOUT_AUTO;
        c->action_dims = 7;
        return set_keys(c, imgs, req, state);
    }
    default: {
        const char *imgs[3] = {NULL, NULL, NULL};
        const int req[3] = {0, 0, 0};
        const char *state[] = {"state", NULL};
        c->layout = PI0_LAYOUT_HWC;
        return set_keys(c, imgs, req, state);
    }
    }
}

static pi0_status parse_body(const cJSON *root, const char *json, const char *dir, const char *checkpoint,
                             const char *what, pi0_policy_config *c) {
    if (!cJSON_IsObject(root)) return pi0_fail(PI0_ERR_FORMAT, "%s: the policy config must be a JSON object", what);
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(root, "adapter");
    c->adapter = PI0_ADAPTER_GENERIC;
    if (ad) {
        const char *names[] = {"generic", "aloha", "droid", "libero"};
        int found = -1;
        for (int i = 0; i < 4 && cJSON_IsString(ad); i++)
            if (!strcmp(ad->valuestring, names[i])) found = i;
        if (found < 0)
            return pi0_fail(PI0_ERR_FORMAT, "%s: \"adapter\" must be one of \"aloha\", \"droid\", \"libero\", \"generic\"",
                            what);
        c->adapter = (pi0_adapter_kind)found;
    }
    (void)checkpoint;
    PI0_TRY(adapter_defaults(c));
    if (!(c->dir = dupstr(dir ? dir : ".")) || !(c->source = dupstr(what)) || !(c->prompt_key = dupstr("prompt")) || !(c->metadata_json = dupstr("{}")))
        return pi0_fail(PI0_ERR_OOM, "out of memory");

    const cJSON *req_list = NULL;
    const cJSON *v;
    cJSON_ArrayForEach(v, root) {
        const char *k = v->string;
        if (!strcmp(k, "adapter") || !strcmp(k, "description") || k[0] == '_') {
            continue;
        } else if (!strcmp(k, "name")) {
            PI0_TRY(get_string(v, what, k, 1, &c->name));
        } else if (!strcmp(k, "images")) {
            if (!cJSON_IsObject(v))
                return pi0_fail(PI0_ERR_FORMAT, "%s: \"images\" must map camera slots to observation keys", what);
            for (int s = 0; s < PI0_NUM_CAMERAS; s++) {
                free(c->image_keys[s]);
                c->image_keys[s] = NULL;
                c->image_required[s] = 0;
            }
            const cJSON *e;
            cJSON_ArrayForEach(e, v) {
                int s = slot_index(e->string);
                if (s < 0)
                    return pi0_fail(PI0_ERR_FORMAT,
                                    "%s: unknown camera slot \"%s\" in \"images\" (expected base_0_rgb, left_wrist_0_rgb, "
                                    "right_wrist_0_rgb)",
                                    what, e->string);
                PI0_TRY(get_string(e, what, e->string, 1, &c->image_keys[s]));
                c->image_required[s] = c->image_keys[s] != NULL;
            }
        } else if (!strcmp(k, "required_images")) {
            req_list = v;
        } else if (!strcmp(k, "image_layout")) {
            if (!cJSON_IsString(v)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"image_layout\" must be a string", what);
            if (!strcmp(v->valuestring, "HWC")) c->layout = PI0_LAYOUT_HWC;
            else if (!strcmp(v->valuestring, "CHW")) c->layout = PI0_LAYOUT_CHW;
            else if (!strcmp(v->valuestring, "auto")) c->layout = PI0_LAYOUT_AUTO;
            else return pi0_fail(PI0_ERR_FORMAT, "%s: \"image_layout\" must be \"HWC\", \"CHW\" or \"auto\"", what);
        } else if (!strcmp(k, "image_namespace")) {
            PI0_TRY(get_string(v, what, k, 1, &c->image_namespace));
        } else if (!strcmp(k, "ignored_keys")) {
            PI0_TRY(get_string_list(v, what, k, c->ignored_keys, &c->n_ignored));
        } else if (!strcmp(k, "state_keys")) {
            PI0_TRY(get_string_list(v, what, k, c->state_keys, &c->n_state_keys));
            if (!c->n_state_keys) return pi0_fail(PI0_ERR_FORMAT, "%s: \"state_keys\" is empty", what);
        } else if (!strcmp(k, "prompt_key")) {
            PI0_TRY(get_string(v, what, k, 0, &c->prompt_key));
        } else if (!strcmp(k, "default_prompt")) {
            PI0_TRY(get_string(v, what, k, 1, &c->default_prompt));
        } else if (!strcmp(k, "action_dims")) {
            PI0_TRY(get_int(v, what, k, 0, PI0_POLICY_MAX_DIMS, &c->action_dims));
        } else if (!strcmp(k, "action_horizon")) {
            PI0_TRY(get_int(v, what, k, 0, 1024, &c->action_horizon));
        } else if (!strcmp(k, "num_steps")) {
            PI0_TRY(get_int(v, what, k, 0, 1000, &c->num_steps));
        } else if (!strcmp(k, "max_token_len")) {
            PI0_TRY(get_int(v, what, k, 0, 4096, &c->max_token_len));
        } else if (!strcmp(k, "normalization")) {
            if (!cJSON_IsString(v) || (strcmp(v->valuestring, "zscore") && strcmp(v->valuestring, "quantile")))
                return pi0_fail(PI0_ERR_FORMAT, "%s: \"normalization\" must be \"zscore\" or \"quantile\"", what);
            c->quantile = !strcmp(v->valuestring, "quantile");
        } else if (!strcmp(k, "delta_action_mask")) {
            c->n_delta = 0;
            if (cJSON_IsNull(v)) continue;
            if (!cJSON_IsArray(v)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"delta_action_mask\" must be an array of booleans", what);
            const cJSON *e;
            cJSON_ArrayForEach(e, v) {
                if (!cJSON_IsBool(e) || c->n_delta >= PI0_POLICY_MAX_DIMS)
                    return pi0_fail(PI0_ERR_FORMAT, "%s: \"delta_action_mask\" must be an array of at most %d booleans",
                                    what, PI0_POLICY_MAX_DIMS);
                c->delta_mask[c->n_delta++] = cJSON_IsTrue(e);
            }
        } else if (!strcmp(k, "adapt_to_pi")) {
            PI0_TRY(get_bool(v, what, k, &c->adapt_to_pi));
            if (c->adapter != PI0_ADAPTER_ALOHA)
                return pi0_fail(PI0_ERR_FORMAT, "%s: \"adapt_to_pi\" only applies to the aloha adapter", what);
        } else if (!strcmp(k, "norm_stats") || !strcmp(k, "tokenizer")) {
            PI0_TRY(get_string(v, what, k, 1, !strcmp(k, "norm_stats") ? &c->norm_stats_path : &c->tokenizer_path));
        } else if (!strcmp(k, "resize_pass_order")) {
            if (!cJSON_IsString(v) || (strcmp(v->valuestring, "pillow11") && strcmp(v->valuestring, "pillow13")))
                return pi0_fail(PI0_ERR_FORMAT, "%s: \"resize_pass_order\" must be \"pillow11\" or \"pillow13\"", what);
            c->resize_pillow13 = !strcmp(v->valuestring, "pillow13");
        } else if (!strcmp(k, "metadata")) {
            if (!cJSON_IsObject(v)) return pi0_fail(PI0_ERR_FORMAT, "%s: \"metadata\" must be a JSON object", what);
            free(c->metadata_json);
            c->metadata_json = raw_member(json, "metadata");
            if (!c->metadata_json && !(c->metadata_json = cJSON_PrintUnformatted(v)))
                return pi0_fail(PI0_ERR_OOM, "out of memory");
        } else {
            return pi0_fail(PI0_ERR_FORMAT, "%s: unknown key \"%s\" in the policy config (see docs/POLICY.md)", what, k);
        }
    }
    if (req_list) {
        if (!cJSON_IsArray(req_list))
            return pi0_fail(PI0_ERR_FORMAT, "%s: \"required_images\" must be an array of camera slot names", what);
        for (int s = 0; s < PI0_NUM_CAMERAS; s++) c->image_required[s] = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, req_list) {
            int s = cJSON_IsString(e) ? slot_index(e->valuestring) : -1;
            if (s < 0) return pi0_fail(PI0_ERR_FORMAT, "%s: \"required_images\" has an unknown camera slot", what);
            if (!c->image_keys[s])
                return pi0_fail(PI0_ERR_FORMAT, "%s: required camera slot %s has no key in \"images\"", what,
                                pi0_camera_slot_names[s]);
            c->image_required[s] = 1;
        }
    }
    int any = 0;
    for (int s = 0; s < PI0_NUM_CAMERAS; s++) any |= c->image_keys[s] != NULL;
    if (!any) return pi0_fail(PI0_ERR_FORMAT, "%s: no camera: \"images\" maps no slot to an observation key", what);
    if (c->n_delta && c->action_dims && c->n_delta > PI0_POLICY_MAX_DIMS)
        return pi0_fail(PI0_ERR_FORMAT, "%s: \"delta_action_mask\" is too long", what);
    return PI0_OK;
}

pi0_status pi0_policy_config_parse(const char *json, const char *dir, const char *checkpoint, const char *what,
                                   pi0_policy_config *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_Parse(json);
    if (!root) return pi0_fail(PI0_ERR_FORMAT, "%s: invalid JSON near byte %ld", what,
                               cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - json) : 0L);
    pi0_clear_error();
    pi0_status st = parse_body(root, json, dir, checkpoint, what, out);
    cJSON_Delete(root);
    if (st != PI0_OK) pi0_policy_config_free(out);
    return st;
}

pi0_status pi0_policy_config_load(const char *path, const char *checkpoint, pi0_policy_config *out) {
    memset(out, 0, sizeof *out);
    if (!path) return pi0_fail(PI0_ERR_INVALID_ARG, "no policy config given");
    FILE *f = fopen(path, "rb");
    if (!f) return pi0_fail(PI0_ERR_IO, "cannot open policy config %s", path);
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size >= 0 && size < (1L << 26) && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)size + 1);
    pi0_status st = PI0_OK;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) st = pi0_fail(PI0_ERR_IO, "cannot read policy config %s", path);
    fclose(f);
    if (st == PI0_OK) {
        buf[size] = 0;
        char *dir = dirname_of(path);
        st = dir ? pi0_policy_config_parse(buf, dir, checkpoint, path, out) : pi0_fail(PI0_ERR_OOM, "out of memory");
        free(dir);
    }
    free(buf);
    return st;
}
