#include "model/pi0_math.h"

#include <math.h>

void pi0_time_embedding(float t, int width, float *out) {
    /* SPEC §6.2: period_i = 4e-3 * (4/4e-3)^(i/(half-1)); sines first, then cosines. */
    int half = width / 2;
    for (int i = 0; i < half; i++) {
        double frac = half > 1 ? (double)i / (double)(half - 1) : 0.0;
        double period = 4e-3 * pow(4.0 / 4e-3, frac);
        double a = (double)t * 2.0 * 3.14159265358979323846 / period;
        out[i] = (float)sin(a);
        out[half + i] = (float)cos(a);
    }
}

float pi0_step_dt(int num_steps) { return -1.0f / (float)num_steps; }

void pi0_time_schedule(int num_steps, float *ts) {
    float dt = pi0_step_dt(num_steps), t = 1.0f;
    for (int k = 0; k < num_steps; k++) {
        ts[k] = t;
        t = t + dt; /* f32 accumulation, as openpi */
    }
}

double pi0_rope_inv_freq(int i, int head_dim) { return pow(10000.0, -2.0 * (double)i / (double)head_dim); }

int pi0_prefix_len(const pi0_config *cfg, const pi0_observation *obs) {
    int g = cfg->image_size / cfg->patch_size, n = 0;
    for (int c = 0; c < PI0_NUM_CAMERAS; c++)
        if (obs->image_mask[c]) n += g * g;
    for (int i = 0; i < obs->n_tokens; i++)
        if (obs->token_mask[i]) n++;
    return n;
}
