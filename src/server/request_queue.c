/* FIFO between the socket thread (producer) and the engine thread (consumer). */
#include "server/request_queue.h"

#include <stdlib.h>

void pi0_request_free(pi0_request *r) {
    if (!r) return;
    free(r->data);
    free(r);
}

int rq_init(request_queue *q) {
    q->head = q->tail = NULL;
    q->queued = q->outstanding = 0;
    q->closed = 0;
    if (pthread_mutex_init(&q->mu, NULL)) return -1;
    if (pthread_cond_init(&q->cv, NULL)) {
        pthread_mutex_destroy(&q->mu);
        return -1;
    }
    return 0;
}

void rq_destroy(request_queue *q) {
    rq_drop(q, 0);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

void rq_push(request_queue *q, pi0_request *r) {
    r->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = r;
    else q->head = r;
    q->tail = r;
    q->queued++;
    q->outstanding++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

pi0_request *rq_pop(request_queue *q) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->closed) pthread_cond_wait(&q->cv, &q->mu);
    pi0_request *r = q->head;
    if (r) {
        q->head = r->next;
        if (!q->head) q->tail = NULL;
        q->queued--;
        r->next = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return r;
}

void rq_done(request_queue *q) {
    pthread_mutex_lock(&q->mu);
    if (q->outstanding) q->outstanding--;
    pthread_mutex_unlock(&q->mu);
}

size_t rq_drop(request_queue *q, uint64_t conn_id) {
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    pi0_request **pp = &q->head, *prev = NULL;
    while (*pp) {
        pi0_request *r = *pp;
        if (conn_id == 0 || r->conn_id == conn_id) {
            *pp = r->next;
            pi0_request_free(r);
            q->queued--;
            q->outstanding--;
            n++;
        } else {
            prev = r;
            pp = &r->next;
        }
    }
    q->tail = prev;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void rq_close(request_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

size_t rq_outstanding(request_queue *q) {
    pthread_mutex_lock(&q->mu);
    size_t n = q->outstanding;
    pthread_mutex_unlock(&q->mu);
    return n;
}

size_t rq_queued(request_queue *q) {
    pthread_mutex_lock(&q->mu);
    size_t n = q->queued;
    pthread_mutex_unlock(&q->mu);
    return n;
}
