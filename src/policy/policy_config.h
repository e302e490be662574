/*
 * Policy configuration files (docs/POLICY.md): which observation keys feed which model
 * camera slot, the state keys, the prompt key, the robot adapter, norm stats, tokenizer,
 * action dims and the metadata sent to clients.
 */
#ifndef PI0_POLICY_CONFIG_H
#define PI0_POLICY_CONFIG_H
#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PI0_ADAPTER_GENERIC = 0, PI0_ADAPTER_ALOHA, PI0_ADAPTER_DROID, PI0_ADAPTER_LIBERO } pi0_adapter_kind;
typedef enum { PI0_LAYOUT_HWC = 0, PI0_LAYOUT_CHW, PI0_LAYOUT_AUTO } pi0_image_layout;

#define PI0_POLICY_MAX_KEYS 16
#define PI0_POLICY_MAX_DIMS 64

typedef struct {
    char *name;                                /* optional label */
    pi0_adapter_kind adapter;
    char *image_keys[PI0_NUM_CAMERAS];         /* observation key per model slot; NULL: slot always empty */
    int image_required[PI0_NUM_CAMERAS];       /* a missing optional camera -> black image, mask 0 */
    pi0_image_layout layout;                   /* HWC, CHW, or AUTO (CHW when shape[0] == 3) */
    char *image_namespace;                     /* "images/": every key under it must be a camera or ignored */
    char *ignored_keys[PI0_POLICY_MAX_KEYS];   /* accepted and unused (ALOHA's cam_low) */
    int n_ignored;
    char *state_keys[PI0_POLICY_MAX_KEYS];     /* concatenated in order (0-d or 1-d each) */
    int n_state_keys;
    char *prompt_key;                          /* default "prompt" */
    char *default_prompt;                      /* NULL: none */
    int action_dims;                           /* actions returned per step; 0: the model's action_dim */
    int action_horizon, num_steps, max_token_len; /* 0: model / session default */
    int quantile;                              /* quantile normalisation instead of z-score */
    int delta_mask[PI0_POLICY_MAX_DIMS];       /* AbsoluteActions mask (1 = add the state) */
    int n_delta;                               /* 0: no delta -> absolute conversion */
    int adapt_to_pi;                           /* ALOHA: joint flips + gripper conversions */
    int resize_pillow13;                       /* resize pass order of Pillow 13 (default: Pillow 11's) */
    char *norm_stats_path;                     /* as written (resolve with pi0_policy_config_path); NULL: none */
    char *tokenizer_path;                      /* as written; NULL: none configured */
    char *dir;                                 /* folder of the config file (relative paths) */
    char *source;                              /* the config file's path (error messages) */
    char *metadata_json;                       /* unformatted JSON object, "{}" when none */
} pi0_policy_config;

/* Parse a config file. checkpoint (may be NULL) resolves ${CHECKPOINT} in paths. */
pi0_status pi0_policy_config_load(const char *path, const char *checkpoint, pi0_policy_config *out);
/* Parse JSON text; dir is the folder relative paths are resolved against. */
pi0_status pi0_policy_config_parse(const char *json, const char *dir, const char *checkpoint, const char *what,
                                   pi0_policy_config *out);
void pi0_policy_config_free(pi0_policy_config *c);

/* A configured path (c->norm_stats_path or c->tokenizer_path) resolved for this checkpoint
 * (malloc'ed; NULL with the error set on failure). */
char *pi0_policy_config_path(const pi0_policy_config *c, const char *raw, const char *checkpoint);

/* Expand ${CHECKPOINT}, ${CONFIG}, ${OPENPI_DATA_HOME}, ${HOME} and a leading ~/, and make a
 * relative path relative to dir. Returns a malloc'ed string or NULL (error set). */
char *pi0_policy_resolve_path(const char *p, const char *dir, const char *checkpoint, const char *what);

const char *pi0_adapter_name(pi0_adapter_kind k);
extern const char *const pi0_camera_slot_names[PI0_NUM_CAMERAS];

#ifdef __cplusplus
}
#endif
#endif
