/* A minimal parallel-for over [0, n) on n_threads pthreads (the CPU backend's only threading). */
#ifndef PI0_THREADS_H
#define PI0_THREADS_H
typedef void (*pi0_range_fn)(void *ctx, int begin, int end);
/* Runs fn over [0, n) split in contiguous chunks; falls back to one thread if threads fail. */
void pi0_parallel_for(int n, int n_threads, pi0_range_fn fn, void *ctx);
int pi0_num_cores(void);
#endif
