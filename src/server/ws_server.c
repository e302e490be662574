/* The policy server's socket thread: poll() loop, HTTP upgrade, wslay framing, message sequence. */
#define _GNU_SOURCE
#include "server/ws_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "server/log.h"
#include "server/ws_http.h"

#define MAX_PENDING 2         /* complete requests a connection may have waiting behind its outstanding one */
#define MAX_QUEUED_FRAMES 64  /* outgoing frames (pongs...) before we stop reading a client that does not read */
#define LINGER_S 2.0          /* after an HTTP answer: drain the client's bytes this long before closing */

typedef enum { C_HTTP, C_HTTP_RESP, C_LINGER, C_WS, C_CLOSING, C_DEAD } conn_state;

typedef struct conn {
    ws_server *srv;
    int fd;
    uint64_t id;
    conn_state state;
    char peer[64];
    double deadline; /* 0: none */
    /* HTTP */
    char *hbuf;
    size_t hlen;
    int peer_eof; /* the client finished sending (HTTP answer still being written) */
    /* raw bytes to write before any websocket frame (HTTP responses) */
    char *raw;
    size_t raw_len, raw_off;
    /* bytes that arrived with the HTTP request, fed to wslay first */
    uint8_t *pre;
    size_t pre_len, pre_off;
    /* websocket */
    wslay_event_context_ptr ws;
    uint8_t *msg; /* message being received */
    size_t msg_len, msg_cap;
    int frame_is_data, discard;
    /* request pipeline */
    int in_flight;     /* a request of this connection is with the engine */
    int awaiting_sent; /* a response (or the metadata) is queued in wslay, not yet written */
    int metadata_pending;
    pi0_request *pending_head, *pending_tail;
    int n_pending;
    uint64_t n_requests;
    double wait_start, prev_total_ms;
    int has_prev;
    /* our close frame, queued once every data frame before it is written (wslay sends control
     * frames ahead of queued data frames, so queueing it at once would overtake the error text) */
    int close_pending;
    uint16_t close_code;
    char close_reason[124];
} conn;

typedef struct reply {
    struct reply *next;
    uint64_t conn_id;
    int kind;
    uint8_t *data;
    size_t len;
} reply;

struct ws_server {
    ws_server_params p;
    uint8_t *metadata;
    int lfd, efd, port;
    conn **conns;
    int n_conns, cap_conns;
    uint64_t next_id;
    pthread_mutex_t mu; /* replies + stats */
    reply *replies_head, *replies_tail;
    ws_server_stats stats;
    atomic_int shutdown_req; /* 0 none, 1 graceful, 2 immediate */
    int draining, final_close;
    double drain_deadline, final_deadline;
    double accept_resume;
};

double ws_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void stat_add(ws_server *s, uint64_t *field, uint64_t n) {
    pthread_mutex_lock(&s->mu);
    *field += n;
    pthread_mutex_unlock(&s->mu);
}

static void wake(ws_server *s) {
    uint64_t one = 1;
    ssize_t r;
    do r = write(s->efd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
}

/* ---- creation ---------------------------------------------------------------------------------- */

static int failf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static int failf(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

int ws_server_create(const ws_server_params *p, ws_server **out, char *err, size_t n_err) {
    *out = NULL;
    ws_server *s = calloc(1, sizeof *s);
    if (!s) return failf(err, n_err, "out of memory");
    s->p = *p;
    s->lfd = s->efd = -1;
    s->next_id = 1;
    if (!s->p.host) s->p.host = "0.0.0.0";
    if (!s->p.max_message) s->p.max_message = 64u << 20;
    if (s->p.max_connections <= 0) s->p.max_connections = 256;
    if (s->p.handshake_timeout_s <= 0) s->p.handshake_timeout_s = 10;
    if (s->p.close_timeout_s <= 0) s->p.close_timeout_s = 5;
    if (s->p.drain_timeout_s <= 0) s->p.drain_timeout_s = 60;
    pthread_mutex_init(&s->mu, NULL);
    s->metadata = malloc(p->metadata_len ? p->metadata_len : 1);
    if (!s->metadata) return ws_server_free(s), failf(err, n_err, "out of memory");
    if (p->metadata_len) memcpy(s->metadata, p->metadata, p->metadata_len);
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) return ws_server_free(s), failf(err, n_err, "eventfd: %s", strerror(errno));

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(s->p.host, port, &hints, &res);
    if (gai) return ws_server_free(s), failf(err, n_err, "cannot resolve %s: %s", s->p.host, gai_strerror(gai));
    int last_errno = 0;
    for (struct addrinfo *a = res; a && s->lfd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 128)) {
            last_errno = errno;
            close(fd);
            continue;
        }
        s->lfd = fd;
    }
    freeaddrinfo(res);
    if (s->lfd < 0)
        return ws_server_free(s), failf(err, n_err, "cannot listen on %s:%d: %s", s->p.host, p->port, strerror(last_errno));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(s->lfd, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out = s;
    return 0;
}

int ws_server_port(const ws_server *s) { return s->port; }

void ws_server_shutdown(ws_server *s, int immediate) {
    int want = immediate ? 2 : 1;
    int cur = atomic_load(&s->shutdown_req);
    while (cur < want && !atomic_compare_exchange_weak(&s->shutdown_req, &cur, want)) {
    }
    wake(s);
}

void ws_server_reply(ws_server *s, uint64_t conn_id, int kind, uint8_t *data, size_t len) {
    reply *r = malloc(sizeof *r);
    if (!r) { /* cannot even say so: the connection will wait; drop the data */
        free(data);
        return;
    }
    *r = (reply){NULL, conn_id, kind, data, len};
    pthread_mutex_lock(&s->mu);
    if (s->replies_tail) s->replies_tail->next = r;
    else s->replies_head = r;
    s->replies_tail = r;
    pthread_mutex_unlock(&s->mu);
    wake(s);
}

void ws_server_get_stats(ws_server *s, ws_server_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}

/* ---- connections ------------------------------------------------------------------------------- */

static void conn_free_pending(conn *c) {
    while (c->pending_head) {
        pi0_request *r = c->pending_head;
        c->pending_head = r->next;
        pi0_request_free(r);
    }
    c->pending_tail = NULL;
    c->n_pending = 0;
}

/* Close the socket and release everything; the conn is removed from the table later. */
static void conn_close(conn *c, const char *why) {
    if (c->state == C_DEAD) return;
    ws_server *s = c->srv;
    if (c->ws) {
        if (why)
            srv_log(SRV_INFO, "connection %llu from %s closed (%s)", (unsigned long long)c->id, c->peer, why);
        rq_drop(s->p.queue, c->id);
        wslay_event_context_free(c->ws);
        c->ws = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = C_DEAD;
    conn_free_pending(c);
    free(c->hbuf), c->hbuf = NULL;
    free(c->raw), c->raw = NULL;
    free(c->pre), c->pre = NULL;
    free(c->msg), c->msg = NULL;
}

static void conn_submit(conn *c, pi0_request *r) {
    r->has_prev_total = c->has_prev;
    r->prev_total_ms = c->prev_total_ms;
    c->in_flight = 1;
    rq_push(c->srv->p.queue, r);
}

/* Close with code/reason once everything queued is written; reads go on until the client's close. */
static void conn_start_close(conn *c, uint16_t code, const char *reason) {
    c->close_pending = 1;
    c->close_code = code;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason ? reason : "");
    c->state = C_CLOSING;
    c->deadline = ws_now() + c->srv->p.close_timeout_s;
}

/* Queue an error text, then the close frame (SPEC §11.6). */
static void conn_fail(conn *c, uint16_t code, const char *reason, const char *text) {
    if (c->state != C_WS) return;
    ws_server *s = c->srv;
    srv_log(SRV_WARN, "connection %llu: %s", (unsigned long long)c->id, text ? text : reason);
    stat_add(s, &s->stats.errors, 1);
    if (text) {
        struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, strlen(text)};
        wslay_event_queue_msg(c->ws, &m);
    }
    conn_start_close(c, code, reason);
    rq_drop(s->p.queue, c->id);
    conn_free_pending(c);
    c->in_flight = 0; /* an answer still on its way is dropped (state != C_WS) */
}

static int conn_paused(const conn *c) {
    return c->n_pending >= MAX_PENDING || (c->ws && wslay_event_get_queued_msg_count(c->ws) > MAX_QUEUED_FRAMES);
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    conn *c = user;
    (void)flags;
    if (c->pre_off < c->pre_len) {
        size_t n = c->pre_len - c->pre_off < len ? c->pre_len - c->pre_off : len;
        memcpy(buf, c->pre + c->pre_off, n);
        c->pre_off += n;
        return (ssize_t)n;
    }
    if (conn_paused(c)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    ssize_t r;
    do r = recv(c->fd, buf, len, 0);
    while (r < 0 && errno == EINTR);
    if (r > 0) return r;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); /* EOF or reset */
    return -1;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    conn *c = user;
    ssize_t r;
    do r = send(c->fd, data, len, MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));
    while (r < 0 && errno == EINTR);
    if (r >= 0) return r;
    wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static void ws_frame_start_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *a, void *user) {
    conn *c = user;
    (void)ctx;
    if (wslay_is_ctrl_frame(a->opcode)) {
        c->frame_is_data = 0;
        return;
    }
    c->frame_is_data = 1;
    if (a->opcode != WSLAY_CONTINUATION_FRAME) { /* a new message */
        c->msg_len = 0;
        c->discard = 0;
    }
    if (c->discard) return;
    if (c->state != C_WS) {
        c->discard = 1;
        return;
    }
    const size_t max = c->srv->p.max_message;
    if (a->payload_length > (uint64_t)(max - c->msg_len)) {
        char text[256];
        snprintf(text, sizeof text,
                 "message too big: at least %llu bytes, the server accepts at most %zu (pi0 serve --max-message)",
                 (unsigned long long)(c->msg_len + a->payload_length), max);
        c->discard = 1;
        conn_fail(c, WSLAY_CODE_MESSAGE_TOO_BIG, "Message too big", text);
        return;
    }
    size_t need = c->msg_len + (size_t)a->payload_length;
    if (need > c->msg_cap) {
        size_t cap = c->msg_cap && need < 2 * c->msg_cap ? 2 * c->msg_cap : need;
        if (cap > max) cap = max;
        uint8_t *m = realloc(c->msg, cap ? cap : 1);
        if (!m) {
            c->discard = 1;
            conn_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, WS_CLOSE_REASON_1011, "server out of memory for the message");
            return;
        }
        c->msg = m;
        c->msg_cap = cap;
    }
}

static void ws_frame_chunk_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_chunk_arg *a, void *user) {
    conn *c = user;
    (void)ctx;
    if (!c->frame_is_data || c->discard || !a->data_length) return;
    if (a->data_length > c->msg_cap - c->msg_len) { /* cannot happen: the frame's length was reserved */
        c->discard = 1;
        return;
    }
    memcpy(c->msg + c->msg_len, a->data, a->data_length);
    c->msg_len += a->data_length;
}

static void conn_message(conn *c) {
    ws_server *s = c->srv;
    if (s->draining) {
        conn_fail(c, WSLAY_CODE_GOING_AWAY, "server shutting down", "the server is shutting down; request not processed");
        return;
    }
    pi0_request *r = calloc(1, sizeof *r);
    if (!r) {
        conn_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, WS_CLOSE_REASON_1011, "server out of memory");
        return;
    }
    r->conn_id = c->id;
    r->seq = c->n_requests++;
    r->data = c->msg ? c->msg : malloc(1);
    r->len = c->msg_len;
    c->msg = NULL;
    c->msg_len = c->msg_cap = 0;
    if (!r->data) {
        free(r);
        conn_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, WS_CLOSE_REASON_1011, "server out of memory");
        return;
    }
    stat_add(s, &s->stats.requests, 1);
    if (s->p.verbose)
        srv_log(SRV_DEBUG, "connection %llu: request %llu (%zu bytes)", (unsigned long long)c->id,
                (unsigned long long)r->seq, r->len);
    if (c->in_flight || c->awaiting_sent || c->n_pending) {
        if (c->pending_tail) c->pending_tail->next = r;
        else c->pending_head = r;
        c->pending_tail = r;
        c->n_pending++;
    } else {
        conn_submit(c, r);
    }
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *user) {
    conn *c = user;
    (void)ctx;
    switch (a->opcode) {
    case WSLAY_BINARY_FRAME:
        if (c->state == C_WS && !c->discard) conn_message(c);
        else c->msg_len = 0;
        break;
    case WSLAY_TEXT_FRAME:
        c->msg_len = 0;
        conn_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, WS_CLOSE_REASON_1011,
                  "expected a binary message (msgpack), got a text frame");
        break;
    case WSLAY_CONNECTION_CLOSE:
        if (c->srv->p.verbose)
            srv_log(SRV_DEBUG, "connection %llu: close frame %u", (unsigned long long)c->id, a->status_code);
        break;
    default: break; /* pings are answered by wslay; pongs ignored */
    }
}

static const struct wslay_event_callbacks k_callbacks = {
    ws_recv_cb, ws_send_cb, NULL, ws_frame_start_cb, ws_frame_chunk_cb, NULL, ws_msg_cb,
};

static int conn_add(ws_server *s, int fd, const char *peer) {
    if (s->n_conns == s->cap_conns) {
        int cap = s->cap_conns ? 2 * s->cap_conns : 16;
        conn **n = realloc(s->conns, (size_t)cap * sizeof *n);
        if (!n) return -1;
        s->conns = n;
        s->cap_conns = cap;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->hbuf = malloc(WS_HTTP_MAX_REQUEST);
    if (!c->hbuf) return free(c), -1;
    c->srv = s;
    c->fd = fd;
    c->id = s->next_id++;
    c->state = C_HTTP;
    c->deadline = ws_now() + s->p.handshake_timeout_s;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    s->conns[s->n_conns++] = c;
    return 0;
}

static void set_raw(conn *c, char *data, size_t len) {
    free(c->raw);
    c->raw = data;
    c->raw_len = data ? len : 0;
    c->raw_off = 0;
}

/* After an HTTP-only answer: write it, then linger (drain input) and close. */
static void conn_http_answer(conn *c, char *resp, size_t len) {
    set_raw(c, resp, len);
    c->state = C_HTTP_RESP;
    c->deadline = ws_now() + LINGER_S;
    if (!resp) conn_close(c, NULL);
}

static void conn_upgrade(conn *c, const ws_http_request *req) {
    ws_server *s = c->srv;
    size_t len;
    char *resp = ws_http_upgrade_response(req->key, &len);
    if (!resp || wslay_event_context_server_init(&c->ws, &k_callbacks, c)) {
        free(resp);
        c->ws = NULL;
        conn_close(c, NULL);
        return;
    }
    set_raw(c, resp, len);
    wslay_event_config_set_no_buffering(c->ws, 1);
    wslay_event_config_set_max_recv_msg_length(c->ws, (uint64_t)INT64_MAX); /* our own limit, with a message */
    if (c->hlen > req->consumed) { /* frames that came with the request */
        c->pre_len = c->hlen - req->consumed;
        c->pre = malloc(c->pre_len);
        if (!c->pre) c->pre_len = 0;
        else memcpy(c->pre, c->hbuf + req->consumed, c->pre_len);
    }
    free(c->hbuf);
    c->hbuf = NULL;
    c->state = C_WS;
    c->deadline = 0;
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, s->metadata, s->p.metadata_len};
    wslay_event_queue_msg(c->ws, &m);
    c->awaiting_sent = 1;
    c->metadata_pending = 1;
    stat_add(s, &s->stats.connections, 1);
    srv_log(SRV_INFO, "connection %llu from %s opened", (unsigned long long)c->id, c->peer);
}

static void conn_read_http(conn *c) {
    ws_server *s = c->srv;
    for (;;) {
        if (c->hlen == WS_HTTP_MAX_REQUEST) break;
        ssize_t r = recv(c->fd, c->hbuf + c->hlen, WS_HTTP_MAX_REQUEST - c->hlen, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
            conn_close(c, NULL);
            return;
        }
        c->hlen += (size_t)r;
    }
    ws_http_request req;
    ws_http_parse(c->hbuf, c->hlen, &req);
    size_t len = 0;
    char *resp;
    switch (req.kind) {
    case WS_HTTP_INCOMPLETE: return;
    case WS_HTTP_HEALTH:
        stat_add(s, &s->stats.health_checks, 1);
        resp = ws_http_health_response(&len);
        conn_http_answer(c, resp, len);
        return;
    case WS_HTTP_REJECT:
        stat_add(s, &s->stats.rejected_http, 1);
        srv_log(SRV_WARN, "rejected an HTTP request from %s: %d %s", c->peer, req.status, req.reason);
        resp = ws_http_error_response(req.status, req.reason, &len);
        conn_http_answer(c, resp, len);
        return;
    case WS_HTTP_UPGRADE:
        if (s->draining) {
            resp = ws_http_error_response(503, "the server is shutting down", &len);
            conn_http_answer(c, resp, len);
            return;
        }
        conn_upgrade(c, &req);
        return;
    }
}

/* Write pending raw bytes; returns 1 when all are out. */
static int conn_write_raw(conn *c) {
    while (c->raw_off < c->raw_len) {
        ssize_t r = send(c->fd, c->raw + c->raw_off, c->raw_len - c->raw_off, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (r <= 0) {
            conn_close(c, "write failed");
            return 0;
        }
        c->raw_off += (size_t)r;
    }
    set_raw(c, NULL, 0);
    return 1;
}

/* Everything after websocket I/O: send, timing bookkeeping, the next request, the end. */
static void conn_pump(conn *c) {
    ws_server *s = c->srv;
    if (c->state != C_WS && c->state != C_CLOSING) return;
    if (c->raw && !conn_write_raw(c)) return;
    if (c->state == C_DEAD) return;
    if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws)) {
        conn_close(c, "connection lost");
        return;
    }
    if (c->close_pending && wslay_event_get_queued_msg_count(c->ws) == 0) {
        c->close_pending = 0;
        wslay_event_queue_close(c->ws, c->close_code, (const uint8_t *)c->close_reason, strlen(c->close_reason));
        if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws)) {
            conn_close(c, "connection lost");
            return;
        }
    }
    if (c->awaiting_sent && wslay_event_get_queued_msg_count(c->ws) == 0 && c->state == C_WS) {
        double t = ws_now();
        if (c->metadata_pending) c->metadata_pending = 0;
        else { /* openpi: from the start of the wait for the previous request until its answer went out */
            c->prev_total_ms = (t - c->wait_start) * 1e3;
            c->has_prev = 1;
            stat_add(s, &s->stats.responses, 1);
        }
        c->wait_start = t;
        c->awaiting_sent = 0;
        if (c->pending_head && !c->in_flight) {
            pi0_request *r = c->pending_head;
            c->pending_head = r->next;
            if (!c->pending_head) c->pending_tail = NULL;
            c->n_pending--;
            conn_submit(c, r);
        }
    }
    if (!wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)) {
        uint16_t code = wslay_event_get_close_received(c->ws) ? wslay_event_get_status_code_received(c->ws)
                                                               : wslay_event_get_status_code_sent(c->ws);
        char why[64];
        snprintf(why, sizeof why, "close %u", code);
        conn_close(c, why);
    }
}

static void conn_on_readable(conn *c) {
    switch (c->state) {
    case C_HTTP: conn_read_http(c); break;
    case C_HTTP_RESP:
    case C_LINGER: {
        char buf[4096];
        for (;;) {
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (r <= 0) {
                if (c->state == C_LINGER || r < 0) conn_close(c, NULL);
                else c->peer_eof = 1; /* stop polling for input while the answer goes out */
                break;
            }
        }
        break;
    }
    case C_WS:
    case C_CLOSING:
        if (wslay_event_recv(c->ws)) {
            conn_close(c, "connection lost");
            return;
        }
        conn_pump(c);
        break;
    default: break;
    }
}

static void conn_on_writable(conn *c) {
    switch (c->state) {
    case C_HTTP_RESP:
        if (conn_write_raw(c) && c->state == C_HTTP_RESP) {
            shutdown(c->fd, SHUT_WR);
            c->state = C_LINGER;
            c->deadline = ws_now() + LINGER_S;
        }
        break;
    case C_WS:
    case C_CLOSING: conn_pump(c); break;
    default: break;
    }
}

static conn *find_conn(ws_server *s, uint64_t id) {
    for (int i = 0; i < s->n_conns; i++)
        if (s->conns[i]->id == id && s->conns[i]->state != C_DEAD) return s->conns[i];
    return NULL;
}

static void handle_replies(ws_server *s) {
    pthread_mutex_lock(&s->mu);
    reply *r = s->replies_head;
    s->replies_head = s->replies_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (r) {
        reply *next = r->next;
        conn *c = find_conn(s, r->conn_id);
        if (!c || c->state != C_WS || !c->in_flight) {
            stat_add(s, &s->stats.dropped, 1);
            if (s->p.verbose)
                srv_log(SRV_DEBUG, "answer for connection %llu dropped (connection gone)", (unsigned long long)r->conn_id);
        } else {
            c->in_flight = 0;
            if (r->kind == WS_REPLY_BINARY) {
                struct wslay_event_msg m = {WSLAY_BINARY_FRAME, r->data, r->len};
                if (wslay_event_queue_msg(c->ws, &m)) conn_close(c, "cannot queue the answer");
                else c->awaiting_sent = 1;
            } else {
                conn_fail(c, WSLAY_CODE_INTERNAL_SERVER_ERROR, WS_CLOSE_REASON_1011, (const char *)r->data);
            }
            conn_pump(c);
        }
        free(r->data);
        free(r);
        r = next;
    }
}

static void accept_all(ws_server *s) {
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                srv_log(SRV_WARN, "accept: %s (pausing new connections for 100 ms)", strerror(errno));
                s->accept_resume = ws_now() + 0.1;
            }
            return;
        }
        char host[48] = "?", serv[16] = "?", peer[64];
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(peer, sizeof peer, "%s:%s", host, serv);
        int live = 0;
        for (int i = 0; i < s->n_conns; i++) live += s->conns[i]->state != C_DEAD;
        if (live >= s->p.max_connections) {
            size_t len;
            char *resp = ws_http_error_response(503, "too many connections", &len);
            if (resp) (void)!send(fd, resp, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            free(resp);
            close(fd);
            srv_log(SRV_WARN, "refused %s: %d connections open (--max-connections)", peer, live);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (conn_add(s, fd, peer)) {
            close(fd);
            srv_log(SRV_ERROR, "out of memory accepting %s", peer);
        }
    }
}

static int conn_busy(const conn *c) { return c->state == C_WS && (c->in_flight || c->n_pending); }

static void begin_final_close(ws_server *s) {
    s->final_close = 1;
    s->final_deadline = ws_now() + s->p.close_timeout_s + 0.5;
    size_t dropped = rq_drop(s->p.queue, 0);
    if (dropped) srv_log(SRV_WARN, "dropped %zu queued requests", dropped);
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = s->conns[i];
        if (c->state == C_WS) {
            conn_free_pending(c);
            conn_start_close(c, WSLAY_CODE_GOING_AWAY, "server shutting down");
            conn_pump(c);
        } else if (c->state == C_HTTP) {
            conn_close(c, NULL);
        }
    }
}

void ws_server_run(ws_server *s) {
    struct pollfd *pfd = NULL;
    conn **pconn = NULL;
    int cap = 0;
    srv_log(SRV_DEBUG, "socket thread started");
    for (;;) {
        /* ---- shutdown requests ---- */
        int req = atomic_load(&s->shutdown_req);
        if (req == 2) break;
        if (req == 1 && !s->draining) {
            s->draining = 1;
            s->drain_deadline = ws_now() + s->p.drain_timeout_s;
            if (s->lfd >= 0) close(s->lfd);
            s->lfd = -1;
            size_t n = rq_outstanding(s->p.queue);
            srv_log(SRV_INFO, "shutting down: answering %zu outstanding request(s), then closing", n);
        }
        if (s->draining && !s->final_close) {
            int busy = rq_outstanding(s->p.queue) > 0;
            for (int i = 0; i < s->n_conns && !busy; i++) busy = conn_busy(s->conns[i]);
            if (!busy || ws_now() > s->drain_deadline) begin_final_close(s);
        }
        if (s->final_close) {
            int live = 0;
            for (int i = 0; i < s->n_conns; i++) live += s->conns[i]->state != C_DEAD;
            if (!live || ws_now() > s->final_deadline) break;
        }
        /* ---- drop dead connections ---- */
        int k = 0;
        for (int i = 0; i < s->n_conns; i++) {
            if (s->conns[i]->state == C_DEAD) free(s->conns[i]);
            else s->conns[k++] = s->conns[i];
        }
        s->n_conns = k;
        /* ---- poll set ---- */
        if (cap < s->n_conns + 2) {
            cap = 2 * (s->n_conns + 2);
            struct pollfd *np = realloc(pfd, (size_t)cap * sizeof *np);
            conn **nc = np ? realloc(pconn, (size_t)cap * sizeof *nc) : NULL;
            if (np) pfd = np;
            if (nc) pconn = nc;
            if (!np || !nc) {
                srv_log(SRV_ERROR, "out of memory in the socket loop");
                cap = 0;
                usleep(100000);
                continue;
            }
        }
        int n = 0;
        double now = ws_now(), next = now + 1.0;
        pfd[n] = (struct pollfd){s->efd, POLLIN, 0}, pconn[n++] = NULL;
        if (s->lfd >= 0 && now >= s->accept_resume) pfd[n] = (struct pollfd){s->lfd, POLLIN, 0}, pconn[n++] = NULL;
        else if (s->lfd >= 0 && s->accept_resume < next) next = s->accept_resume;
        for (int i = 0; i < s->n_conns; i++) {
            conn *c = s->conns[i];
            short ev = 0;
            switch (c->state) {
            case C_HTTP:
            case C_LINGER: ev = POLLIN; break;
            case C_HTTP_RESP: ev = (short)(POLLOUT | (c->peer_eof ? 0 : POLLIN)); break;
            case C_WS:
            case C_CLOSING:
                ev = POLLRDHUP; /* a client that goes away while we do not read it */
                if (wslay_event_want_read(c->ws) && !conn_paused(c)) ev |= POLLIN;
                if (c->raw || wslay_event_want_write(c->ws)) ev |= POLLOUT;
                break;
            default: break;
            }
            if (c->deadline > 0 && c->deadline < next) next = c->deadline;
            pfd[n] = (struct pollfd){c->fd, ev, 0}, pconn[n++] = c;
        }
        if (s->draining && s->drain_deadline < next) next = s->drain_deadline;
        if (s->final_close && s->final_deadline < next) next = s->final_deadline;
        int timeout = (int)((next - now) * 1e3) + 1;
        if (timeout < 0) timeout = 0;
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0 && errno != EINTR) {
            srv_log(SRV_ERROR, "poll: %s", strerror(errno));
            usleep(10000);
        }
        if (r < 0) continue;
        /* ---- events ---- */
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            while (read(s->efd, &v, sizeof v) > 0) {
            }
        }
        handle_replies(s);
        for (int i = 1; i < n; i++) {
            conn *c = pconn[i];
            if (!c) {
                if (pfd[i].revents & POLLIN) accept_all(s);
                continue;
            }
            short re = pfd[i].revents;
            if (!re || c->state == C_DEAD) continue;
            if (re & (POLLIN | POLLHUP | POLLERR)) conn_on_readable(c);
            if (c->state != C_DEAD && (re & POLLOUT)) conn_on_writable(c);
            /* POLLHUP: both directions are gone. POLLRDHUP while not reading (paused, or after the
             * close handshake): the client left; its waiting requests are dropped, and the poll
             * would otherwise report it in a loop. */
            if (c->state != C_DEAD && ((re & (POLLERR | POLLNVAL | POLLHUP)) ||
                                       ((re & POLLRDHUP) && !(pfd[i].events & POLLIN))))
                conn_close(c, re & POLLERR ? "socket error" : "connection lost");
        }
        /* ---- deadlines ---- */
        now = ws_now();
        for (int i = 0; i < s->n_conns; i++) {
            conn *c = s->conns[i];
            if (c->state == C_DEAD || c->deadline <= 0 || now < c->deadline) continue;
            if (c->state == C_HTTP) srv_log(SRV_WARN, "%s: no complete HTTP request within %.0f s", c->peer, s->p.handshake_timeout_s);
            conn_close(c, c->state == C_CLOSING ? "no close frame from the client" : NULL);
        }
    }
    /* ---- teardown ---- */
    for (int i = 0; i < s->n_conns; i++) {
        conn_close(s->conns[i], s->final_close ? "server shut down" : "server stopped");
        free(s->conns[i]);
    }
    s->n_conns = 0;
    if (s->lfd >= 0) close(s->lfd);
    s->lfd = -1;
    rq_drop(s->p.queue, 0);
    free(pfd);
    free(pconn);
    srv_log(SRV_DEBUG, "socket thread stopped");
}

void ws_server_free(ws_server *s) {
    if (!s) return;
    for (int i = 0; i < s->n_conns; i++) {
        conn_close(s->conns[i], NULL);
        free(s->conns[i]);
    }
    free(s->conns);
    reply *r = s->replies_head;
    while (r) {
        reply *n = r->next;
        free(r->data);
        free(r);
        r = n;
    }
    if (s->lfd >= 0) close(s->lfd);
    if (s->efd >= 0) close(s->efd);
    free(s->metadata);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
