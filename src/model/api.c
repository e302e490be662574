/* Public API: handles, argument and observation checks, backend dispatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/pi0_math.h"
#include "model/tensor_table.h"
#include "pi0_policy.h"
#include "util/error.h"

static const char *const k_camera_names[PI0_NUM_CAMERAS] = {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"};

pi0_model_params pi0_model_default_params(void) {
    pi0_model_params p = {0};
    p.backend = PI0_BACKEND_AUTO;
    return p;
}

pi0_session_params pi0_session_default_params(void) {
    pi0_session_params p = {0};
    return p;
}

const pi0_config *pi0_model_config(const pi0_model *m) { return m ? &m->cfg : NULL; }

pi0_backend pi0_model_backend(const pi0_model *m) {
    return m && m->ops == &pi0_cpu_backend ? PI0_BACKEND_CPU : PI0_BACKEND_CUDA;
}

void pi0_model_free(pi0_model *m) {
    if (!m) return;
    if (m->ops && m->ops->model_free) m->ops->model_free(m);
    st_close(m->file);
    free(m->arena);
    pi0_weights_free(&m->w);
    free(m);
}

static pi0_model *model_new(const pi0_model_params *p) {
    pi0_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->n_threads = p->n_threads;
    m->device = p->device;
    return m;
}

#ifdef PI0_HAVE_CUDA
/* Bring up the CUDA backend on m. Under AUTO a failure is logged and *fallback set, so the
 * caller continues on the CPU; with an explicit CUDA backend it is returned. */
static pi0_status try_cuda(pi0_model *m, const pi0_model_params *p, int random, uint64_t seed, int *fallback) {
    *fallback = 0;
    m->ops = &pi0_cuda_backend;
    pi0_status st = random ? m->ops->model_init_random(m, seed) : m->ops->model_init(m);
    if (st == PI0_OK) return PI0_OK;
    if (m->ops->model_free) m->ops->model_free(m);
    m->ops = NULL;
    m->backend = NULL;
    if (p->backend == PI0_BACKEND_CUDA) return st;
    pi0_log(PI0_LOG_INFO, "CUDA backend unavailable (%s); using the CPU backend", pi0_last_error());
    pi0_clear_error();
    *fallback = 1;
    return PI0_OK;
}
#endif

static pi0_status check_backend(const pi0_model_params *p) {
    if (p->backend == PI0_BACKEND_CUDA) {
#ifndef PI0_HAVE_CUDA
        return pi0_fail(PI0_ERR_UNSUPPORTED, "this build has no CUDA backend (configure with nvcc present)");
#endif
    } else if (p->backend != PI0_BACKEND_AUTO && p->backend != PI0_BACKEND_CPU) {
        return pi0_fail(PI0_ERR_INVALID_ARG, "unknown backend %d", (int)p->backend);
    }
    return PI0_OK;
}

static pi0_status finish_cpu(pi0_model *m) {
    m->ops = &pi0_cpu_backend;
    return m->ops->model_init ? m->ops->model_init(m) : PI0_OK;
}

pi0_status pi0_model_load(const char *path, const pi0_model_params *params, pi0_model **out) {
    pi0_model_params p = params ? *params : pi0_model_default_params();
    if (!path || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_model_load: NULL argument");
    *out = NULL;
    PI0_TRY(check_backend(&p));
    pi0_model *m = model_new(&p);
    if (!m) return pi0_fail(PI0_ERR_OOM, "out of memory");
    pi0_status st = pi0_load_checkpoint(m, path, p.progress, p.progress_user);
    int cpu = p.backend == PI0_BACKEND_CPU;
#ifdef PI0_HAVE_CUDA
    if (st == PI0_OK && !cpu) st = try_cuda(m, &p, 0, 0, &cpu);
#else
    cpu = 1;
#endif
    if (st == PI0_OK && cpu) st = finish_cpu(m);
    if (st != PI0_OK) {
        pi0_model_free(m);
        return st;
    }
    *out = m;
    return PI0_OK;
}

pi0_status pi0_model_random(const pi0_config *cfg, uint64_t seed, const pi0_model_params *params, pi0_model **out) {
    pi0_model_params p = params ? *params : pi0_model_default_params();
    if (!cfg || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_model_random: NULL argument");
    *out = NULL;
    PI0_TRY(check_backend(&p));
    PI0_TRY(pi0_config_check(cfg));
    pi0_model *m = model_new(&p);
    if (!m) return pi0_fail(PI0_ERR_OOM, "out of memory");
    m->cfg = *cfg;
    pi0_status st = PI0_OK;
    int cpu = p.backend == PI0_BACKEND_CPU;
#ifdef PI0_HAVE_CUDA
    if (!cpu) {
        st = pi0_bind_shapes(m);
        if (st == PI0_OK) st = try_cuda(m, &p, 1, seed, &cpu);
        if (st == PI0_OK && cpu) pi0_weights_free(&m->w);
    }
#else
    cpu = 1;
#endif
    if (st == PI0_OK && cpu) {
        st = pi0_make_random_host(m, seed, p.progress, p.progress_user);
        if (st == PI0_OK) st = finish_cpu(m);
    }
    if (st != PI0_OK) {
        pi0_model_free(m);
        return st;
    }
    *out = m;
    return PI0_OK;
}

pi0_status pi0_session_create(pi0_model *m, const pi0_session_params *params, pi0_session **out) {
    pi0_session_params p = params ? *params : pi0_session_default_params();
    if (!m || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_session_create: NULL argument");
    *out = NULL;
    if (p.action_horizon < 0 || p.action_horizon > 1024)
        return pi0_fail(PI0_ERR_INVALID_ARG, "action_horizon %d is out of range [1, 1024]", p.action_horizon);
    if (p.num_steps < 0 || p.num_steps > 1000)
        return pi0_fail(PI0_ERR_INVALID_ARG, "num_steps %d is out of range [1, 1000]", p.num_steps);
    if (p.max_token_len < 0 || p.max_token_len > 4096)
        return pi0_fail(PI0_ERR_INVALID_ARG, "max_token_len %d is out of range [1, 4096]", p.max_token_len);
    pi0_session *s = calloc(1, sizeof *s);
    if (!s) return pi0_fail(PI0_ERR_OOM, "out of memory");
    s->model = m;
    s->horizon = p.action_horizon ? p.action_horizon : m->cfg.action_horizon;
    s->num_steps = p.num_steps ? p.num_steps : m->cfg.num_steps;
    s->max_tokens = p.max_token_len ? p.max_token_len : m->cfg.max_token_len;
    s->profile_stages = p.profile_stages;
    s->experimental = p.experimental;
    pi0_status st = m->ops->session_init(s);
    if (st != PI0_OK) {
        free(s);
        return st;
    }
    *out = s;
    return PI0_OK;
}

void pi0_session_free(pi0_session *s) {
    if (!s) return;
    if (s->model->ops->session_free) s->model->ops->session_free(s);
    free(s);
}

static pi0_status check_finite(const float *v, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return pi0_fail(PI0_ERR_INVALID_ARG, "%s has a non-finite value (%g) at index %zu", what, (double)v[i], i);
    return PI0_OK;
}

static pi0_status check_image(const pi0_config *c, const float *img, const char *what) {
    if (!img) return pi0_fail(PI0_ERR_INVALID_ARG, "%s: image pointer is NULL", what);
    return check_finite(img, (size_t)c->image_size * c->image_size * 3, what);
}

static pi0_status check_observation(const pi0_session *s, const pi0_observation *o) {
    const pi0_config *c = &s->model->cfg;
    if (!o) return pi0_fail(PI0_ERR_INVALID_ARG, "observation is NULL");
    int valid = 0;
    char what[96];
    for (int k = 0; k < PI0_NUM_CAMERAS; k++) {
        if (!o->image_mask[k]) continue;
        valid++;
        snprintf(what, sizeof what, "image %d (%s)", k, k_camera_names[k]);
        PI0_TRY(check_image(c, o->images[k], what));
    }
    if (!valid) return pi0_fail(PI0_ERR_INVALID_ARG, "no valid camera: every image_mask entry is 0");
    if (o->n_tokens < 0) return pi0_fail(PI0_ERR_INVALID_ARG, "n_tokens %d is negative", o->n_tokens);
    if (o->n_tokens > s->max_tokens)
        return pi0_fail(PI0_ERR_INVALID_ARG, "prompt has %d tokens, more than max_token_len %d", o->n_tokens, s->max_tokens);
    if (o->n_tokens && (!o->tokens || !o->token_mask))
        return pi0_fail(PI0_ERR_INVALID_ARG, "tokens or token_mask is NULL with n_tokens %d", o->n_tokens);
    for (int i = 0; i < o->n_tokens; i++)
        if (o->token_mask[i] && (o->tokens[i] < 0 || o->tokens[i] >= c->vocab_size))
            return pi0_fail(PI0_ERR_INVALID_ARG, "token %d at position %d is outside the vocabulary [0, %d)", o->tokens[i], i,
                            c->vocab_size);
    if (!o->state) return pi0_fail(PI0_ERR_INVALID_ARG, "state is NULL");
    PI0_TRY(check_finite(o->state, (size_t)c->action_dim, "state"));
    if (o->noise) PI0_TRY(check_finite(o->noise, (size_t)s->horizon * c->action_dim, "noise"));
    return PI0_OK;
}

void pi0_gaussian_noise(uint64_t seed, float *out, size_t n) {
    uint64_t ts = pi0_spec_seed(seed, "noise");
    for (size_t i = 0; i < n; i++) out[i] = pi0_random_value(ts, i, 0.f, 1.f);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

pi0_status pi0_infer(pi0_session *s, const pi0_observation *obs, float *actions, pi0_timing *timing) {
    if (!s || !actions) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_infer: NULL argument");
    PI0_TRY(check_observation(s, obs));
    size_t n = (size_t)s->horizon * s->model->cfg.action_dim;
    float *noise = NULL;
    if (!obs->noise) {
        noise = malloc(n * sizeof *noise);
        if (!noise) return pi0_fail(PI0_ERR_OOM, "out of memory");
        pi0_gaussian_noise(obs->noise_seed, noise, n);
    }
    pi0_timing t = {0};
    double t0 = now_ms();
    pi0_status st = s->model->ops->infer(s, obs, obs->noise ? obs->noise : noise, actions, &t);
    if (t.total_ms == 0) t.total_ms = now_ms() - t0;
    free(noise);
    if (timing) *timing = t;
    return st;
}

pi0_status pi0_stage_vit(pi0_session *s, const float *image, float *out) {
    if (!s || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_stage_vit: NULL argument");
    PI0_TRY(check_image(&s->model->cfg, image, "image"));
    return s->model->ops->vit(s, image, out);
}

pi0_status pi0_stage_prefill(pi0_session *s, const pi0_observation *obs, int *prefix_len) {
    if (!s) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_stage_prefill: NULL session");
    PI0_TRY(check_observation(s, obs));
    int p = 0;
    PI0_TRY(s->model->ops->prefill(s, obs, &p));
    if (prefix_len) *prefix_len = p;
    return PI0_OK;
}

pi0_status pi0_stage_kv(pi0_session *s, int layer, float *k, float *v) {
    if (!s || !k || !v) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_stage_kv: NULL argument");
    if (layer < 0 || layer >= s->model->cfg.llm_depth)
        return pi0_fail(PI0_ERR_INVALID_ARG, "layer %d is out of range [0, %d)", layer, s->model->cfg.llm_depth);
    return s->model->ops->kv(s, layer, k, v);
}

pi0_status pi0_stage_velocity(pi0_session *s, const float *state, const float *x, float t, float *v) {
    if (!s || !state || !x || !v) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_stage_velocity: NULL argument");
    const pi0_config *c = &s->model->cfg;
    PI0_TRY(check_finite(state, (size_t)c->action_dim, "state"));
    PI0_TRY(check_finite(x, (size_t)s->horizon * c->action_dim, "x"));
    if (!isfinite(t)) return pi0_fail(PI0_ERR_INVALID_ARG, "time t is not finite");
    return s->model->ops->velocity(s, state, x, t, v);
}

size_t pi0_struct_size(const char *name) {
#define PI0_SIZE(T) \
    if (name && !strcmp(name, #T)) return sizeof(T)
    PI0_SIZE(pi0_config);
    PI0_SIZE(pi0_model_params);
    PI0_SIZE(pi0_session_params);
    PI0_SIZE(pi0_observation);
    PI0_SIZE(pi0_timing);
    PI0_SIZE(pi0_policy_params);
    PI0_SIZE(pi0_obs_item);
    PI0_SIZE(pi0_policy_result);
#undef PI0_SIZE
    return 0;
}
