/*
 * openpi norm_stats.json (SPEC §9.3): {"norm_stats": {"state": {mean, std, q01, q99},
 * "actions": {...}}}, and the Normalize / Unnormalize transforms, in double.
 */
#ifndef PI0_POLICY_NORM_STATS_H
#define PI0_POLICY_NORM_STATS_H
#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int present;        /* the key exists in the file */
    int n;              /* vector length */
    double *mean, *std; /* n each */
    double *q01, *q99;  /* n each, or NULL when absent / null */
} pi0_norm_vec;

typedef struct {
    pi0_norm_vec state, actions;
} pi0_norm_stats;

/* Parse a norm_stats.json file / string (what names the source in error messages). */
pi0_status pi0_norm_stats_load(const char *path, pi0_norm_stats *out);
pi0_status pi0_norm_stats_parse(const char *json, const char *what, pi0_norm_stats *out);
void pi0_norm_stats_free(pi0_norm_stats *s);

/* Normalize x[0..d) in place: z-score (x - mean[:d]) / (std[:d] + 1e-6) or quantile
 * (x - q01[:d]) / (q99[:d] - q01[:d] + 1e-6) * 2 - 1. Fails if the stats are shorter than d
 * or lack the quantiles. what names the stats in messages ("state"). */
pi0_status pi0_normalize(const pi0_norm_vec *s, int quantile, double *x, int d, const char *what);

/* Unnormalize rows x (rows, d) in place, d = the model's action_dim: z-score with the stats
 * padded to d with mean 0 / std 1: x * (std + 1e-6) + mean; quantile on the first len(q01)
 * dims: (x + 1) / 2 * (q99 - q01 + 1e-6) + q01, the rest unchanged. Stats longer than d fail. */
pi0_status pi0_unnormalize(const pi0_norm_vec *s, int quantile, double *x, int rows, int d, const char *what);

#ifdef __cplusplus
}
#endif
#endif
