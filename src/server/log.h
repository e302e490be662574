/* Server log lines on stderr ("pi0 serve: ..."), thread-safe. */
#ifndef PI0_SERVER_LOG_H
#define PI0_SERVER_LOG_H

#if defined(__GNUC__)
#define SRV_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SRV_PRINTF(a, b)
#endif

enum { SRV_DEBUG = 0, SRV_INFO, SRV_WARN, SRV_ERROR };
void srv_log(int level, const char *fmt, ...) SRV_PRINTF(2, 3);
void srv_log_set_level(int level); /* default SRV_INFO */
#endif
