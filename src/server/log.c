/* Server log lines on stderr, one fprintf per line. */
#define _POSIX_C_SOURCE 200809L
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int g_level = SRV_INFO;

void srv_log_set_level(int level) { g_level = level; }

void srv_log(int level, const char *fmt, ...) {
    if (level < g_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "%02d:%02d:%02d.%03ld pi0 serve %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            names[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}
