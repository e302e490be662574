/* Thread-local last-error message and the library's log sink. */
#ifndef PI0_ERROR_H
#define PI0_ERROR_H
#include "pi0.h"

#if defined(__GNUC__)
#define PI0_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PI0_PRINTF(a, b)
#endif

/* Record a formatted message as the thread's last error and return s. */
pi0_status pi0_fail(pi0_status s, const char *fmt, ...) PI0_PRINTF(2, 3);
/* Send a message to the log callback (if any). */
void pi0_log(pi0_log_level level, const char *fmt, ...) PI0_PRINTF(2, 3);
void pi0_clear_error(void);

/* Propagate a failing status. */
#define PI0_TRY(expr)                         \
    do {                                      \
        pi0_status _st = (expr);              \
        if (_st != PI0_OK) return _st;        \
    } while (0)
#endif
