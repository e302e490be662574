/* pi0_policy: openpi's Policy.infer around the engine (SPEC §10): adapter, normalisation,
 * resize-with-pad, tokenization, model, unnormalisation, adapter outputs. */
#include "pi0_policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/adapters.h"
#include "policy/image_resize.h"
#include "policy/norm_stats.h"
#include "policy/policy_config.h"
#include "policy/tokenizer.h"
#include "util/error.h"

struct pi0_policy {
    pi0_policy_config cfg;
    pi0_norm_stats ns;
    int has_ns;
    pi0_tokenizer *tok;
    char *default_prompt;      /* params override, else the config's (may be NULL) */
    pi0_model *model;
    pi0_session *sess;
    int S, A, H, max_tokens, dims;
    float *images;             /* (3, S, S, 3) */
    int image_mask[PI0_NUM_CAMERAS];
    int32_t *tokens;           /* (max_tokens) */
    uint8_t *token_mask;
    float *state;              /* (A) normalized, zero-padded: the model input */
    float *model_out;          /* (H, A) */
    double *work;              /* (H, A) */
    double *actions;           /* (H, dims) */
};

pi0_policy_params pi0_policy_default_params(void) {
    pi0_policy_params p;
    memset(&p, 0, sizeof p);
    p.random_config = "tiny";
    p.model = pi0_model_default_params();
    p.session = pi0_session_default_params();
    return p;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

void pi0_policy_free(pi0_policy *p) {
    if (!p) return;
    pi0_session_free(p->sess);
    pi0_model_free(p->model);
    pi0_tokenizer_free(p->tok);
    pi0_norm_stats_free(&p->ns);
    pi0_policy_config_free(&p->cfg);
    free(p->default_prompt);
    free(p->images);
    free(p->tokens);
    free(p->token_mask);
    free(p->state);
    free(p->model_out);
    free(p->work);
    free(p->actions);
    free(p);
}

/* Prepend "<what>: " to the current error message. */
static pi0_status prefix_error(pi0_status st, const char *fmt, const char *arg) {
    char msg[1024], what[256];
    snprintf(msg, sizeof msg, "%s", pi0_last_error());
    snprintf(what, sizeof what, fmt, arg);
    return pi0_fail(st, "%s: %s", what, msg);
}

static char *dupstr(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static pi0_status create(const pi0_policy_params *pp, pi0_policy *p) {
    if (!pp->policy_config) return pi0_fail(PI0_ERR_INVALID_ARG, "no policy config given (policy_config is NULL)");
    PI0_TRY(pi0_policy_config_load(pp->policy_config, pp->checkpoint, &p->cfg));
    pi0_policy_config *c = &p->cfg;

    /* norm stats */
    char *ns_path = NULL;
    if (pp->norm_stats || c->norm_stats_path) {
        ns_path = pp->norm_stats ? dupstr(pp->norm_stats) : pi0_policy_config_path(c, c->norm_stats_path, pp->checkpoint);
        if (!ns_path) return pi0_last_error()[0] ? PI0_ERR_INVALID_ARG : pi0_fail(PI0_ERR_OOM, "out of memory");
        pi0_status st = pi0_norm_stats_load(ns_path, &p->ns);
        if (st == PI0_OK && c->quantile && (!p->ns.actions.q01 || (p->ns.state.present && !p->ns.state.q01)))
            st = pi0_fail(PI0_ERR_FORMAT, "%s: quantile normalization needs q01 and q99 for state and actions", ns_path);
        if (st == PI0_OK && p->ns.actions.n > PI0_POLICY_MAX_DIMS)
            st = pi0_fail(PI0_ERR_FORMAT, "%s: norm stats for actions have %d values (at most %d)", ns_path,
                          p->ns.actions.n, PI0_POLICY_MAX_DIMS);
        free(ns_path);
        if (st != PI0_OK) return st;
        p->has_ns = 1;
    } else {
        pi0_log(PI0_LOG_WARN, "policy %s: no norm stats configured: state and actions are not (un)normalized",
                pp->policy_config);
    }

    /* tokenizer */
    if (!pp->tokenizer && !c->tokenizer_path)
        return pi0_fail(PI0_ERR_INVALID_ARG, "policy %s: no tokenizer: set \"tokenizer\" in the policy config or pass one",
                        pp->policy_config);
    char *tok_path = pp->tokenizer ? dupstr(pp->tokenizer) : pi0_policy_config_path(c, c->tokenizer_path, pp->checkpoint);
    if (!tok_path) return pi0_last_error()[0] ? PI0_ERR_INVALID_ARG : pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_status tst = pi0_tokenizer_load(tok_path, &p->tok);
    free(tok_path);
    if (tst != PI0_OK) return tst;
    const char *dp = pp->default_prompt ? pp->default_prompt : c->default_prompt;
    if (dp && !(p->default_prompt = dupstr(dp))) return pi0_fail(PI0_ERR_OOM, "out of memory");

    /* model */
    if (pp->checkpoint) {
        PI0_TRY(pi0_model_load(pp->checkpoint, &pp->model, &p->model));
    } else {
        pi0_config mc;
        PI0_TRY(pi0_config_by_name(pp->random_config ? pp->random_config : "tiny", &mc));
        PI0_TRY(pi0_model_random(&mc, pp->random_seed, &pp->model, &p->model));
    }
    const pi0_config *mc = pi0_model_config(p->model);
    if (pi0_tokenizer_vocab_size(p->tok) > mc->vocab_size)
        return pi0_fail(PI0_ERR_INVALID_ARG, "the tokenizer has %d pieces but the model's vocabulary has only %d",
                        pi0_tokenizer_vocab_size(p->tok), mc->vocab_size);
    p->S = mc->image_size;
    p->A = mc->action_dim;
    if (p->A > PI0_POLICY_MAX_DIMS)
        return pi0_fail(PI0_ERR_UNSUPPORTED, "the model's action_dim %d exceeds the policy layer's limit %d", p->A,
                        PI0_POLICY_MAX_DIMS);
    p->dims = c->action_dims ? c->action_dims : p->A;
    if (p->dims > p->A)
        return pi0_fail(PI0_ERR_INVALID_ARG, "%s: action_dims %d exceeds the model's action_dim %d", pp->policy_config,
                        p->dims, p->A);
    if (c->adapter == PI0_ADAPTER_ALOHA && p->dims != 14)
        return pi0_fail(PI0_ERR_INVALID_ARG, "%s: the aloha adapter returns 14 action dims, not %d", pp->policy_config,
                        p->dims);
    if (c->n_delta > p->A)
        return pi0_fail(PI0_ERR_INVALID_ARG, "%s: delta_action_mask has %d entries, more than the model's action_dim %d",
                        pp->policy_config, c->n_delta, p->A);
    if (p->has_ns && p->ns.actions.n > p->A)
        return pi0_fail(PI0_ERR_INVALID_ARG, "norm stats for actions have %d values, more than the model's action_dim %d",
                        p->ns.actions.n, p->A);

    pi0_session_params sp = pp->session;
    if (!sp.action_horizon) sp.action_horizon = c->action_horizon;
    if (!sp.num_steps) sp.num_steps = c->num_steps;
    if (!sp.max_token_len) sp.max_token_len = c->max_token_len;
    PI0_TRY(pi0_session_create(p->model, &sp, &p->sess));
    p->H = sp.action_horizon ? sp.action_horizon : mc->action_horizon;
    p->max_tokens = sp.max_token_len ? sp.max_token_len : mc->max_token_len;

    size_t img = (size_t)p->S * p->S * 3;
    p->images = malloc(PI0_NUM_CAMERAS * img * sizeof(float));
    p->tokens = malloc((size_t)p->max_tokens * sizeof(int32_t));
    p->token_mask = malloc((size_t)p->max_tokens);
    p->state = malloc((size_t)p->A * sizeof(float));
    p->model_out = malloc((size_t)p->H * p->A * sizeof(float));
    p->work = malloc((size_t)p->H * p->A * sizeof(double));
    p->actions = malloc((size_t)p->H * p->dims * sizeof(double));
    if (!p->images || !p->tokens || !p->token_mask || !p->state || !p->model_out || !p->work || !p->actions)
        return pi0_fail(PI0_ERR_OOM, "out of memory");
    return PI0_OK;
}

pi0_status pi0_policy_create(const pi0_policy_params *params, pi0_policy **out) {
    if (!params || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_policy_create: NULL argument");
    *out = NULL;
    pi0_policy *p = calloc(1, sizeof *p);
    if (!p) return pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_status st = create(params, p);
    if (st != PI0_OK) {
        pi0_policy_free(p);
        return st;
    }
    *out = p;
    return PI0_OK;
}

/* The prompt: the observation's, else the default; a string or a 1-D uint8 array of UTF-8. */
static pi0_status get_prompt(const pi0_policy *p, const pi0_obs_item *items, int n, const char **s, size_t *len) {
    const char *key = p->cfg.prompt_key;
    const pi0_obs_item *it = pi0_obs_find(items, n, key);
    if (!it) {
        if (!p->default_prompt)
            return pi0_fail(PI0_ERR_INVALID_ARG,
                            "missing key '%s': a prompt is required (a UTF-8 string) and the policy has no default prompt",
                            key);
        *s = p->default_prompt;
        *len = strlen(p->default_prompt);
        return PI0_OK;
    }
    if (it->kind == PI0_VALUE_STRING) {
        *s = it->str;
        *len = strlen(it->str);
        return PI0_OK;
    }
    if (it->dtype == PI0_ELEM_U8 && it->ndim == 1) { /* bytes, as DROID clients may send */
        *s = (const char *)it->data;
        *len = (size_t)it->shape[0];
        for (size_t i = 0; i < *len; i++)
            if (!(*s)[i]) return pi0_fail(PI0_ERR_INVALID_ARG, "prompt '%s' contains a NUL byte at offset %zu", key, i);
        return PI0_OK;
    }
    return pi0_fail(PI0_ERR_INVALID_ARG, "prompt '%s': expected a string (UTF-8 text), got an array", key);
}

pi0_status pi0_policy_prepare(pi0_policy *p, const pi0_obs_item *items, int n, pi0_observation *obs) {
    if (!p || !obs) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_policy_prepare: NULL argument");
    const pi0_policy_config *c = &p->cfg;
    PI0_TRY(pi0_adapter_check_items(c, items, n));

    /* state: adapter -> normalize -> float32, zero-padded */
    double state[PI0_POLICY_MAX_DIMS];
    int d = 0;
    PI0_TRY(pi0_adapter_state(c, items, n, state, &d, p->A));
    if (p->has_ns) PI0_TRY(pi0_normalize(&p->ns.state, c->quantile, state, d, "state"));
    for (int i = 0; i < p->A; i++) p->state[i] = i < d ? (float)state[i] : 0.f;

    /* images */
    size_t img = (size_t)p->S * p->S * 3;
    uint8_t *resized = malloc(img);
    if (!resized) return pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_status st = PI0_OK;
    for (int k = 0; k < PI0_NUM_CAMERAS && st == PI0_OK; k++) {
        float *dst = p->images + k * img;
        const pi0_obs_item *it = c->image_keys[k] ? pi0_obs_find(items, n, c->image_keys[k]) : NULL;
        p->image_mask[k] = it != NULL;
        if (!it) {
            if (c->image_keys[k] && c->image_required[k]) {
                st = pi0_fail(PI0_ERR_INVALID_ARG, "missing key '%s' (camera %s: expected a uint8 image of shape %s)",
                              c->image_keys[k], pi0_camera_slot_names[k],
                              c->layout == PI0_LAYOUT_CHW ? "[3, H, W]" : "[H, W, 3]");
                break;
            }
            memset(resized, 0, img); /* openpi: zeros_like(base image), mask False */
        } else {
            uint8_t *hwc = NULL;
            int h = 0, w = 0;
            st = pi0_adapter_image(c, it, &hwc, &h, &w);
            if (st == PI0_OK) {
                st = pi0_resize_with_pad_u8_order(hwc, h, w, resized, p->S, p->S,
                                                  c->resize_pillow13 ? PI0_RESIZE_PILLOW13 : PI0_RESIZE_PILLOW11);
                if (st != PI0_OK) st = prefix_error(st, "image '%s'", it->key);
            }
            free(hwc);
            if (st != PI0_OK) break;
        }
        pi0_image_u8_to_unit(resized, img, dst);
    }
    free(resized);
    if (st != PI0_OK) return st;

    /* prompt */
    const char *prompt = NULL;
    size_t plen = 0;
    PI0_TRY(get_prompt(p, items, n, &prompt, &plen));
    st = pi0_tokenize_prompt(p->tok, prompt, plen, p->max_tokens, p->tokens, p->token_mask, NULL);
    if (st != PI0_OK) return prefix_error(st, "prompt '%s'", c->prompt_key);

    memset(obs, 0, sizeof *obs);
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        obs->images[k] = p->images + k * img;
        obs->image_mask[k] = p->image_mask[k];
    }
    obs->tokens = p->tokens;
    obs->token_mask = p->token_mask;
    obs->n_tokens = p->max_tokens;
    obs->state = p->state;
    return PI0_OK;
}

pi0_status pi0_policy_infer(pi0_policy *p, const pi0_obs_item *items, int n_items, const float *noise,
                            uint64_t noise_seed, pi0_policy_result *out) {
    if (!p || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_policy_infer: NULL argument");
    double t0 = now_ms();
    pi0_observation obs;
    PI0_TRY(pi0_policy_prepare(p, items, n_items, &obs));
    obs.noise = noise;
    obs.noise_seed = noise_seed;
    double t1 = now_ms();
    PI0_TRY(pi0_infer(p->sess, &obs, p->model_out, NULL));
    double t2 = now_ms();

    /* outputs: unnormalize actions and state (openpi's output dict has both), adapter */
    size_t n = (size_t)p->H * p->A;
    for (size_t i = 0; i < n; i++) p->work[i] = p->model_out[i];
    double state[PI0_POLICY_MAX_DIMS];
    int A = p->A;
    for (int i = 0; i < A; i++) state[i] = p->state[i]; /* the float32 model input, as openpi (JAX) */
    if (p->has_ns) {
        PI0_TRY(pi0_unnormalize(&p->ns.actions, p->cfg.quantile, p->work, p->H, p->A, "actions"));
        PI0_TRY(pi0_unnormalize(&p->ns.state, p->cfg.quantile, state, 1, A, "state"));
    }
    PI0_TRY(pi0_adapter_outputs(&p->cfg, state, p->work, p->H, p->A, p->actions, p->dims));
    out->actions = p->actions;
    out->horizon = p->H;
    out->action_dims = p->dims;
    out->infer_ms = t2 - t1;
    out->total_ms = now_ms() - t0;
    return PI0_OK;
}

void pi0_policy_shape(const pi0_policy *p, int *horizon, int *action_dims) {
    if (horizon) *horizon = p ? p->H : 0;
    if (action_dims) *action_dims = p ? p->dims : 0;
}

const char *pi0_policy_metadata_json(const pi0_policy *p) { return p && p->cfg.metadata_json ? p->cfg.metadata_json : "{}"; }

const pi0_model *pi0_policy_model(const pi0_policy *p) { return p ? p->model : NULL; }
