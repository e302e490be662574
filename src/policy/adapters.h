/*
 * Robot adapters (SPEC §10.5): raw observation items -> uint8 HWC camera images and the
 * robot state (ALOHA joint flips and gripper conversions), and the output side
 * (delta -> absolute actions, ALOHA conversions, cut to the robot's action dims).
 */
#ifndef PI0_POLICY_ADAPTERS_H
#define PI0_POLICY_ADAPTERS_H
#include <stdint.h>

#include "pi0_policy.h"
#include "policy/policy_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The item named key, or NULL. */
const pi0_obs_item *pi0_obs_find(const pi0_obs_item *items, int n, const char *key);

/* Check the items themselves (unique keys, sane shapes) and the adapter's key rules
 * (ALOHA: every key under images/ must be a known camera). */
pi0_status pi0_adapter_check_items(const pi0_policy_config *c, const pi0_obs_item *items, int n);

/* One camera image -> malloc'ed HWC uint8 (*h, *w, 3): float images become (255 * x) cast to
 * uint8 as numpy does (truncation; out-of-range values wrap, with a warning), CHW layouts are
 * transposed. Errors name the key and what was expected. */
pi0_status pi0_adapter_image(const pi0_policy_config *c, const pi0_obs_item *it, uint8_t **hwc, int *h, int *w);

/* The robot state (unnormalized, after the adapter's input conversion) into state[0..*d),
 * at most max_d values. */
pi0_status pi0_adapter_state(const pi0_policy_config *c, const pi0_obs_item *items, int n, double *state, int *d,
                             int max_d);

/* Output side after unnormalisation: actions (H, A) and the unnormalized state (A) ->
 * delta -> absolute (mask), then the adapter's conversion, into out (H, dims). */
pi0_status pi0_adapter_outputs(const pi0_policy_config *c, const double *state, double *actions, int H, int A,
                               double *out, int dims);

/* ALOHA conversions (exposed for tests). */
double pi0_aloha_gripper_to_angular(double v);
double pi0_aloha_gripper_from_angular(double v);
extern const int pi0_aloha_joint_flip[14];

#ifdef __cplusplus
}
#endif
#endif
