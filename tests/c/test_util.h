/* Minimal test harness: CHECK counts, and the run ends with "N passed, N failed". */
#ifndef PI0_TEST_UTIL_H
#define PI0_TEST_UTIL_H
#include <stdio.h>
#include <string.h>

#include "pi0.h"

static int g_pass, g_fail;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (cond) {                                               \
            g_pass++;                                             \
        } else {                                                  \
            g_fail++;                                             \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                  \
            printf("\n");                                         \
        }                                                         \
    } while (0)

/* A call must fail with status want and an error message containing msg. */
#define CHECK_ERR(call, want, msg)                                                                              \
    do {                                                                                                        \
        pi0_status _s = (call);                                                                                 \
        CHECK(_s == (want) && strstr(pi0_last_error(), (msg)) != NULL, "%s -> %s '%s' (expected %s '%s')", #call, \
              pi0_status_name(_s), pi0_last_error(), pi0_status_name(want), (msg));                             \
    } while (0)

static int test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}
#endif
