/* Shared pieces of the `pi0` command-line tool. */
#ifndef PI0_CLI_H
#define PI0_CLI_H
#include <stdint.h>

#include "pi0.h"

/* An observation read from a safetensors file (docs/FORMATS.md). */
typedef struct {
    pi0_observation obs;
    float *images;    /* (3, S, S, 3) */
    int32_t *tokens;
    uint8_t *token_mask;
    float *state;
    float *noise;     /* NULL when the file has none */
    int horizon;      /* from noise, else 0 */
} cli_obs;

int cli_obs_load(const char *path, const pi0_config *cfg, cli_obs *o);
void cli_obs_free(cli_obs *o);
/* Random observation: n_cams valid cameras, n_tokens valid tokens of max_len. */
int cli_obs_random(const pi0_config *cfg, uint64_t seed, int n_cams, int n_tokens, int max_len, cli_obs *o);

/* Print "error: <what>: <status>: <message>" and return 1. */
int cli_error(const char *what, pi0_status st);
/* Progress bar on stderr when it is a terminal; the callback never cancels. */
int cli_progress(float fraction, void *user);

int cli_parse_backend(const char *s, pi0_backend *b);
int cmd_mkweights(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_policy_infer(int argc, char **argv);
int cmd_serve(int argc, char **argv);
#endif
