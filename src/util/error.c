#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_last_error[1024];
static pi0_log_fn g_log_fn;
static void *g_log_user;

const char *pi0_status_name(pi0_status s) {
    switch (s) {
    case PI0_OK: return "PI0_OK";
    case PI0_ERR_INVALID_ARG: return "PI0_ERR_INVALID_ARG";
    case PI0_ERR_IO: return "PI0_ERR_IO";
    case PI0_ERR_FORMAT: return "PI0_ERR_FORMAT";
    case PI0_ERR_TENSOR: return "PI0_ERR_TENSOR";
    case PI0_ERR_OOM: return "PI0_ERR_OOM";
    case PI0_ERR_CANCELLED: return "PI0_ERR_CANCELLED";
    case PI0_ERR_BACKEND: return "PI0_ERR_BACKEND";
    case PI0_ERR_UNSUPPORTED: return "PI0_ERR_UNSUPPORTED";
    }
    return "PI0_ERR_UNKNOWN";
}

const char *pi0_last_error(void) { return g_last_error; }
void pi0_clear_error(void) { g_last_error[0] = 0; }

pi0_status pi0_fail(pi0_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    pi0_log(PI0_LOG_DEBUG, "%s: %s", pi0_status_name(s), g_last_error);
    return s;
}

void pi0_set_log(pi0_log_fn fn, void *user) {
    g_log_fn = fn;
    g_log_user = user;
}

void pi0_log(pi0_log_level level, const char *fmt, ...) {
    if (!g_log_fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}
