/*
 * Model and session handles (opaque in pi0.h) and the backend interface.
 */
#ifndef PI0_MODEL_H
#define PI0_MODEL_H
#include "model/weights.h"

struct st_file;
typedef struct pi0_backend_ops pi0_backend_ops;

struct pi0_model {
    pi0_config cfg;
    pi0_weights w;            /* host views */
    struct st_file *file;     /* mmapped checkpoint, or NULL */
    void *arena;              /* host arena of random weights, or NULL */
    int n_threads;
    int device;
    const pi0_backend_ops *ops;
    void *backend;            /* backend-private (device weights ...) */
};

struct pi0_session {
    pi0_model *model;
    int horizon, num_steps, max_tokens;
    int profile_stages;
    unsigned experimental; /* PI0_EXP_* */
    void *backend;            /* backend-private run state */
};

/*
 * A backend. All entries receive validated arguments (see api.c).
 * model_init_random may be NULL: then random weights are made on the host and
 * model_init uploads them.
 */
struct pi0_backend_ops {
    const char *name;
    pi0_status (*model_init)(pi0_model *m);
    pi0_status (*model_init_random)(pi0_model *m, uint64_t seed);
    void (*model_free)(pi0_model *m);
    pi0_status (*session_init)(pi0_session *s);
    void (*session_free)(pi0_session *s);
    pi0_status (*infer)(pi0_session *s, const pi0_observation *obs, const float *noise, float *actions,
                        pi0_timing *timing);
    pi0_status (*vit)(pi0_session *s, const float *image, float *out);
    pi0_status (*prefill)(pi0_session *s, const pi0_observation *obs, int *prefix_len);
    pi0_status (*kv)(pi0_session *s, int layer, float *k, float *v);
    pi0_status (*velocity)(pi0_session *s, const float *state, const float *x, float t, float *v);
};

extern const pi0_backend_ops pi0_cpu_backend;
#ifdef PI0_HAVE_CUDA
extern const pi0_backend_ops pi0_cuda_backend;
#endif
#endif
