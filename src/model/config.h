#ifndef PI0_CONFIG_H
#define PI0_CONFIG_H
#include <stddef.h>

#include "pi0.h"

/* Config fields as stored in the safetensors __metadata__ ("pi0.vit_width": "1152", ...). */
typedef struct {
    const char *key;
    size_t offset; /* of an int field in pi0_config */
} pi0_config_field;
extern const pi0_config_field pi0_config_fields[];
extern const int pi0_config_num_fields;

pi0_status pi0_config_check(const pi0_config *c);
int pi0_config_num_patches(const pi0_config *c);
#endif
