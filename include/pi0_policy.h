/*
 * pi0_policy.h — from a robot's raw observation to unnormalized actions (openpi's Policy.infer).
 *
 * A pi0_policy wraps a pi0_model + pi0_session with what openpi does around the model
 * (SPEC §9.3-9.4, §10): robot adapter (ALOHA / DROID / LIBERO key layouts, or a generic one),
 * state normalisation (norm_stats.json), image resize-with-pad to 224x224 and [-1,1] scaling,
 * prompt tokenization (PaliGemma SentencePiece model), the model, then unnormalisation and
 * the adapter's output transform.
 *
 * Thread-safety: a pi0_policy is used by one thread at a time (a server serialises calls).
 * Errors: every call returns a pi0_status; pi0_last_error() names the key and what was expected.
 */
#ifndef PI0_POLICY_H
#define PI0_POLICY_H

#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of raw observation arrays (numpy dtype.str in brackets). */
typedef enum {
    PI0_ELEM_U8 = 0, /* |u1 */
    PI0_ELEM_BOOL,   /* |b1 */
    PI0_ELEM_I32,    /* <i4 */
    PI0_ELEM_I64,    /* <i8 */
    PI0_ELEM_F32,    /* <f4 */
    PI0_ELEM_F64     /* <f8 */
} pi0_elem_type;

typedef enum { PI0_VALUE_ARRAY = 0, PI0_VALUE_STRING } pi0_value_kind;

/* One entry of a raw observation: a '/'-joined key path ("observation/image",
 * "images/cam_high", "state", "prompt") and an array or a UTF-8 string.
 * Scalars are arrays with ndim 0. */
typedef struct {
    const char *key;
    pi0_value_kind kind;
    pi0_elem_type dtype;  /* arrays */
    int ndim;             /* arrays, 0..4 */
    int64_t shape[4];     /* arrays */
    const void *data;     /* arrays: C-order, little-endian */
    const char *str;      /* strings (NUL-terminated UTF-8) */
} pi0_obs_item;

typedef struct {
    const char *checkpoint;        /* model.safetensors; NULL: random weights of random_config */
    const char *random_config;     /* "tiny" or "full" when checkpoint is NULL */
    uint64_t random_seed;
    const char *policy_config;     /* policy config JSON (camera/state/prompt keys, action dims,
                                      norm stats path, default prompt, adapter) */
    const char *tokenizer;         /* SentencePiece model (overrides the policy config's) */
    pi0_model_params model;
    pi0_session_params session;
    /* Added after the first version (zero = unset): */
    const char *norm_stats;        /* norm_stats.json (overrides the policy config's) */
    const char *default_prompt;    /* used when the observation has no prompt (overrides the
                                      policy config's, like openpi's --default-prompt) */
} pi0_policy_params;
pi0_policy_params pi0_policy_default_params(void);

typedef struct pi0_policy pi0_policy;

pi0_status pi0_policy_create(const pi0_policy_params *params, pi0_policy **out);
void pi0_policy_free(pi0_policy *p);

typedef struct {
    const double *actions;  /* (horizon, action_dims), unnormalized, owned by the policy,
                               valid until the next infer call */
    int horizon, action_dims;
    double infer_ms;        /* model call only (openpi policy_timing.infer_ms) */
    double total_ms;        /* transforms + model */
} pi0_policy_result;

/* noise: optional (horizon, 32) normalized-space noise (NULL: drawn from noise_seed). */
pi0_status pi0_policy_infer(pi0_policy *p, const pi0_obs_item *items, int n_items, const float *noise,
                            uint64_t noise_seed, pi0_policy_result *out);

/* Only the input transforms: fills obs with the model-boundary observation (SPEC §10.2:
 * 224x224 images in [-1, 1] with masks, tokens + mask, normalized zero-padded state), as views
 * into the policy's buffers valid until the next call. obs->noise is NULL. */
pi0_status pi0_policy_prepare(pi0_policy *p, const pi0_obs_item *items, int n_items, pi0_observation *obs);

/* Action chunk shape of this policy: horizon and the robot's action dims. */
void pi0_policy_shape(const pi0_policy *p, int *horizon, int *action_dims);

/* The policy metadata sent to clients on connect, as a JSON object ("{}" when none). */
const char *pi0_policy_metadata_json(const pi0_policy *p);
/* The underlying model (for its config). */
const pi0_model *pi0_policy_model(const pi0_policy *p);

#ifdef __cplusplus
}
#endif
#endif /* PI0_POLICY_H */
