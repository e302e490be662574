/* Small pieces of Pi0 math shared by every backend (SPEC §4.4, §6.2, §7). */
#ifndef PI0_MATH_H
#define PI0_MATH_H
#include "pi0.h"

/* Sinusoidal time embedding of width w (sines then cosines), computed in double. */
void pi0_time_embedding(float t, int width, float *out);
/* The f32 times fed to the model: t_0 = 1, t_{k+1} = t_k + dt, dt = -1/num_steps in f32. */
float pi0_step_dt(int num_steps);
void pi0_time_schedule(int num_steps, float *ts);
/* RoPE inverse frequencies for head_dim: inv[i] = 10000^(-2i/hd), i < hd/2 (double). */
double pi0_rope_inv_freq(int i, int head_dim);
/* Number of prefix tokens after compaction (valid image patches + real tokens). */
int pi0_prefix_len(const pi0_config *cfg, const pi0_observation *obs);
#endif
