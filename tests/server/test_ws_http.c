/* Unit tests of the HTTP handshake (src/server/ws_http.c) and the request queue. */
#include <stdlib.h>

#include "server/request_queue.h"
#include "server/ws_http.h"
#include "test_util.h"

static void test_sha1_base64(void) {
    unsigned char d[20];
    char hex[41], b64[64];
    const char *vec[][2] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
    };
    for (int i = 0; i < 3; i++) {
        ws_sha1(vec[i][0], strlen(vec[i][0]), d);
        for (int k = 0; k < 20; k++) snprintf(hex + 2 * k, 3, "%02x", d[k]);
        CHECK(!strcmp(hex, vec[i][1]), "sha1 vector %d: %s", i, hex);
    }
    char million[1000];
    memset(million, 'a', sizeof million);
    ws_base64((const unsigned char *)"foobar", 6, b64);
    CHECK(!strcmp(b64, "Zm9vYmFy"), "%s", b64);
    ws_base64((const unsigned char *)"fooba", 5, b64);
    CHECK(!strcmp(b64, "Zm9vYmE="), "%s", b64);
    ws_base64((const unsigned char *)"f", 1, b64);
    CHECK(!strcmp(b64, "Zg=="), "%s", b64);
    char accept[29];
    ws_http_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept); /* RFC 6455 §1.3 */
    CHECK(!strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "%s", accept);
}

#define OPENPI_REQ                                                                                              \
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"               \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"                          \
    "User-Agent: Python/3.11 websockets/15.0\r\n\r\n"

static void parse(const char *s, ws_http_request *r) { ws_http_parse(s, strlen(s), r); }

static void test_parse(void) {
    ws_http_request r;
    parse(OPENPI_REQ, &r);
    CHECK(r.kind == WS_HTTP_UPGRADE && !strcmp(r.key, "dGhlIHNhbXBsZSBub25jZQ==") && r.consumed == strlen(OPENPI_REQ),
          "openpi client handshake: kind %d", r.kind);
    /* frames after the request are not consumed */
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\x82\x80", OPENPI_REQ);
    parse(buf, &r);
    CHECK(r.kind == WS_HTTP_UPGRADE && r.consumed == strlen(OPENPI_REQ), "consumed");
    /* every prefix is incomplete, never an error */
    int bad = 0;
    for (size_t n = 0; n < strlen(OPENPI_REQ); n++) {
        ws_http_request p;
        ws_http_parse(OPENPI_REQ, n, &p);
        bad += p.kind != WS_HTTP_INCOMPLETE;
    }
    CHECK(bad == 0, "%d prefixes not incomplete", bad);
    parse("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    CHECK(r.kind == WS_HTTP_HEALTH, "healthz");
    parse("GET /any/path?q=1 HTTP/1.1\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
          "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nsec-websocket-version: 13\r\n"
          "Sec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Api-Key xyz\r\n\r\n",
          &r);
    CHECK(r.kind == WS_HTTP_UPGRADE && !strcmp(r.path, "/any/path?q=1"), "case-insensitive headers, any path");
    struct {
        const char *req;
        int status;
        const char *reason;
    } rej[] = {
        {"\x16\x03\x01\x02\x00\x01", 400, "invalid HTTP request line"}, /* a TLS ClientHello */
        {"\x00\x01garbage", 400, "invalid HTTP request line"},
        {"GET\r\n\r\n", 400, "invalid HTTP request line"},
        {"POST / HTTP/1.1\r\n\r\n", 405, "only GET"},
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "missing Connection: Upgrade"},
        {"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n", 400, "missing Upgrade: websocket"},
        {"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n", 426, "13"},
        {"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", 400,
         "missing Sec-WebSocket-Key"},
        {"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: short\r\n\r\n", 400,
         "invalid Sec-WebSocket-Key"},
        {"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400, "HTTP/1.1"},
        {"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400, "invalid HTTP header line"},
        {"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400, "invalid HTTP header value"},
        {"GET /a b HTTP/1.1\r\n\r\n", 400, "invalid HTTP request line"},
    };
    for (size_t i = 0; i < sizeof rej / sizeof rej[0]; i++) {
        ws_http_parse(rej[i].req, strlen(rej[i].req) + (rej[i].req[0] == 0 ? 9 : 0), &r);
        CHECK(r.kind == WS_HTTP_REJECT && r.status == rej[i].status && strstr(r.reason, rej[i].reason),
              "reject case %zu: kind %d status %d '%s'", i, r.kind, r.status, r.reason);
    }
    /* headers that never end */
    char *big = malloc(WS_HTTP_MAX_REQUEST + 10);
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    memset(big + 16, 'a', WS_HTTP_MAX_REQUEST - 6);
    ws_http_parse(big, WS_HTTP_MAX_REQUEST, &r);
    CHECK(r.kind == WS_HTTP_REJECT && r.status == 431, "too large: %d", r.kind);
    free(big);
}

static void test_responses(void) {
    size_t n;
    char *s = ws_http_health_response(&n);
    CHECK(!strncmp(s, "HTTP/1.1 200 OK\r\n", 17) && strstr(s, "\r\nContent-Type: text/plain; charset=utf-8\r\n") &&
              strstr(s, "\r\nContent-Length: 3\r\n") && strstr(s, "\r\nConnection: close\r\n") && strstr(s, "\r\nDate: ") &&
              n > 7 && !strcmp(s + n - 7, "\r\n\r\nOK\n"),
          "health: %s", s);
    free(s);
    s = ws_http_upgrade_response("dGhlIHNhbXBsZSBub25jZQ==", &n);
    CHECK(!strncmp(s, "HTTP/1.1 101 Switching Protocols\r\n", 34) && strstr(s, "\r\nUpgrade: websocket\r\n") &&
              strstr(s, "\r\nConnection: Upgrade\r\n") && strstr(s, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") &&
              !strstr(s, "Extensions") && !strstr(s, "Protocol:") && !strcmp(s + n - 4, "\r\n\r\n"),
          "upgrade: %s", s);
    free(s);
    s = ws_http_error_response(426, "Sec-WebSocket-Version must be 13", &n);
    CHECK(!strncmp(s, "HTTP/1.1 426 Upgrade Required\r\n", 31) && strstr(s, "Sec-WebSocket-Version: 13\r\n"), "%s", s);
    const char *body = strstr(s, "\r\n\r\n") + 4;
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    CHECK(strstr(s, cl) != NULL, "content length of '%s'", body);
    free(s);
}

static void test_queue(void) {
    request_queue q;
    CHECK(rq_init(&q) == 0, "init");
    for (int i = 0; i < 6; i++) {
        pi0_request *r = calloc(1, sizeof *r);
        r->conn_id = 1 + (uint64_t)(i % 3);
        r->seq = (uint64_t)i;
        r->data = malloc(4);
        rq_push(&q, r);
    }
    CHECK(rq_queued(&q) == 6 && rq_outstanding(&q) == 6, "counts");
    CHECK(rq_drop(&q, 2) == 2 && rq_queued(&q) == 4 && rq_outstanding(&q) == 4, "drop one connection");
    pi0_request *r = rq_pop(&q);
    CHECK(r && r->seq == 0 && rq_outstanding(&q) == 4 && rq_queued(&q) == 3, "FIFO");
    pi0_request_free(r);
    rq_done(&q);
    CHECK(rq_outstanding(&q) == 3, "done");
    r = rq_pop(&q);
    CHECK(r && r->seq == 2, "order after drop: %llu", r ? (unsigned long long)r->seq : 99ull);
    pi0_request_free(r);
    rq_done(&q);
    CHECK(rq_drop(&q, 0) == 2 && rq_outstanding(&q) == 0, "drop all");
    pi0_request *last = calloc(1, sizeof *last);
    rq_push(&q, last); /* the tail is right after a drop */
    CHECK(rq_pop(&q) == last, "push after drop");
    free(last);
    rq_done(&q);
    rq_close(&q);
    CHECK(rq_pop(&q) == NULL, "closed and empty");
    rq_destroy(&q);
}

int main(void) {
    test_sha1_base64();
    test_parse();
    test_responses();
    test_queue();
    return test_summary("test_ws_http");
}
