/* Binding a checkpoint (or random weights) to a model's pi0_weights. */
#ifndef PI0_LOADER_H
#define PI0_LOADER_H
#include "model/model.h"

/* Read config from the file's __metadata__ (openpi defaults for missing keys), check
 * every expected tensor's presence, dtype and shape, and point m->w into the mapping. */
pi0_status pi0_load_checkpoint(pi0_model *m, const char *path, pi0_progress_fn progress, void *user);
/* Allocate a host arena and fill it with the random weights of m->cfg (BF16). */
pi0_status pi0_make_random_host(pi0_model *m, uint64_t seed, pi0_progress_fn progress, void *user);
/* Set only the shapes of m->w (data NULL): for weights made on a device. */
pi0_status pi0_bind_shapes(pi0_model *m);
#endif
