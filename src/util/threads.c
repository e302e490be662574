#include "util/threads.h"

#include <pthread.h>
#include <unistd.h>

typedef struct {
    pi0_range_fn fn;
    void *ctx;
    int begin, end;
} chunk;

static void *run_chunk(void *p) {
    chunk *c = p;
    c->fn(c->ctx, c->begin, c->end);
    return NULL;
}

int pi0_num_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void pi0_parallel_for(int n, int n_threads, pi0_range_fn fn, void *ctx) {
    if (n_threads > 64) n_threads = 64;
    if (n_threads > n) n_threads = n;
    if (n_threads <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    pthread_t tid[64];
    chunk ch[64];
    int started[64] = {0};
    for (int i = 0; i < n_threads; i++) {
        ch[i] = (chunk){fn, ctx, (int)((long long)n * i / n_threads), (int)((long long)n * (i + 1) / n_threads)};
        if (i > 0) started[i] = pthread_create(&tid[i], NULL, run_chunk, &ch[i]) == 0;
    }
    fn(ctx, ch[0].begin, ch[0].end);
    for (int i = 1; i < n_threads; i++) {
        if (started[i]) pthread_join(tid[i], NULL);
        else fn(ctx, ch[i].begin, ch[i].end); /* thread creation failed: do it here */
    }
}
