/*
 * The queue between the socket thread and the engine thread: FIFO of raw requests, many
 * producers, one consumer. A request of a connection that goes away is removed while still
 * queued; one already taken by the engine finishes and its answer is dropped by the socket thread.
 */
#ifndef PI0_SERVER_REQUEST_QUEUE_H
#define PI0_SERVER_REQUEST_QUEUE_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pi0_request {
    struct pi0_request *next;
    uint64_t conn_id;
    uint64_t seq;          /* index of this request on its connection (0, 1, ...) */
    uint8_t *data;         /* the msgpack message, owned */
    size_t len;
    int has_prev_total;    /* server_timing.prev_total_ms of this response (absent on the first) */
    double prev_total_ms;
} pi0_request;

void pi0_request_free(pi0_request *r);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pi0_request *head, *tail;
    size_t queued;       /* in the list */
    size_t outstanding;  /* queued + taken by the consumer and not yet marked done */
    int closed;
} request_queue;

int rq_init(request_queue *q);
void rq_destroy(request_queue *q); /* frees what is still queued */
void rq_push(request_queue *q, pi0_request *r);
/* Blocks until a request is there (returns it) or the queue is closed and empty (NULL). */
pi0_request *rq_pop(request_queue *q);
/* The consumer finished the request it popped. */
void rq_done(request_queue *q);
/* Drop the queued requests of a connection (conn_id) or all (conn_id == 0); returns how many. */
size_t rq_drop(request_queue *q, uint64_t conn_id);
void rq_close(request_queue *q);
size_t rq_outstanding(request_queue *q);
size_t rq_queued(request_queue *q);
#endif
