/* HTTP/1.1 opening handshake of the websocket server (RFC 6455 §4.2) and GET /healthz. */
#define _POSIX_C_SOURCE 200809L
#include "server/ws_http.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept only ---------------------------- */

static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void ws_sha1(const void *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const unsigned char *p = data;
    size_t n = len;
    while (n >= 64) sha1_block(h, p), p += 64, n -= 64;
    unsigned char last[128] = {0};
    memcpy(last, p, n);
    last[n] = 0x80;
    size_t total = n + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) last[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, last);
    if (total == 128) sha1_block(h, last + 64);
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 4; k++) out[4 * i + k] = (unsigned char)(h[i] >> (24 - 8 * k));
}

size_t ws_base64(const unsigned char *in, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
    return o;
}

void ws_http_accept_key(const char *key, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[64 + sizeof guid];
    size_t n = strlen(key);
    if (n > 64) n = 64;
    memcpy(buf, key, n);
    memcpy(buf + n, guid, sizeof guid - 1);
    unsigned char d[20];
    ws_sha1(buf, n + sizeof guid - 1, d);
    ws_base64(d, 20, out);
}

/* ---- request parsing ---------------------------------------------------------------------- */

static int reject(ws_http_request *r, int status, const char *reason) {
    r->kind = WS_HTTP_REJECT;
    r->status = status;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    return 0;
}

static int is_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

/* Does a comma-separated header value contain token (case-insensitive)? */
static int has_token(const char *v, size_t n, const char *token) {
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t s = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
        if (e - s == tl && !strncasecmp(v + s, token, tl)) return 1;
    }
    return 0;
}

static int base64_16(const char *v, size_t n) { /* a base64 encoding of 16 bytes */
    if (n != 24 || v[22] != '=' || v[23] != '=') return 0;
    for (size_t i = 0; i < 22; i++)
        if (!((v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '+' ||
              v[i] == '/'))
            return 0;
    return 1;
}

void ws_http_parse(const char *buf, size_t len, ws_http_request *r) {
    memset(r, 0, sizeof *r);
    r->kind = WS_HTTP_INCOMPLETE;
    /* method token: reject garbage before the request line is complete */
    size_t i = 0;
    while (i < len && is_tchar(buf[i])) i++;
    if (i < len && (buf[i] != ' ' || i == 0)) {
        reject(r, 400, "invalid HTTP request line");
        return;
    }
    if (i == len && len > 16) {
        reject(r, 400, "invalid HTTP request line");
        return;
    }
    const char *end = NULL;
    for (size_t k = 3; k < len; k++)
        if (buf[k] == '\n' && buf[k - 1] == '\r' && buf[k - 2] == '\n' && buf[k - 3] == '\r') {
            end = buf + k + 1;
            break;
        }
    if (!end) {
        if (len >= WS_HTTP_MAX_REQUEST) reject(r, 431, "request headers too large");
        return;
    }
    r->consumed = (size_t)(end - buf);
    /* request line */
    const char *eol = memchr(buf, '\r', r->consumed);
    const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol[1] != '\n') {
        reject(r, 400, "invalid HTTP request line");
        return;
    }
    size_t pl = (size_t)(sp2 - sp1 - 1);
    snprintf(r->path, sizeof r->path, "%.*s", (int)(pl < sizeof r->path ? pl : sizeof r->path - 1), sp1 + 1);
    const char *ver = sp2 + 1;
    if ((size_t)(eol - ver) != 8 || strncmp(ver, "HTTP/1.", 7) || (ver[7] != '1' && ver[7] != '0') || pl == 0) {
        reject(r, 400, "invalid HTTP request line");
        return;
    }
    for (const char *c = sp1 + 1; c < sp2; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            reject(r, 400, "invalid request target");
            return;
        }
    int is_get = (size_t)(sp1 - buf) == 3 && !strncmp(buf, "GET", 3);
    /* headers */
    int upgrade = 0, connection = 0, version = 0, n_key = 0, n_headers = 0;
    const char *p = eol + 2;
    while (p < end - 2) {
        const char *le = memchr(p, '\r', (size_t)(end - p));
        if (!le || le[1] != '\n') {
            reject(r, 400, "invalid HTTP header line");
            return;
        }
        if (++n_headers > 128) {
            reject(r, 431, "too many HTTP headers");
            return;
        }
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p) {
            reject(r, 400, "invalid HTTP header line");
            return;
        }
        for (const char *c = p; c < colon; c++)
            if (!is_tchar(*c)) {
                reject(r, 400, "invalid HTTP header name");
                return;
            }
        size_t nl = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t')) v++;
        const char *ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t vl = (size_t)(ve - v);
        for (const char *c = v; c < ve; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t') {
                reject(r, 400, "invalid HTTP header value");
                return;
            }
#define NAME_IS(s) (nl == sizeof(s) - 1 && !strncasecmp(p, s, nl))
        if (NAME_IS("Upgrade")) upgrade |= has_token(v, vl, "websocket");
        else if (NAME_IS("Connection")) connection |= has_token(v, vl, "upgrade");
        else if (NAME_IS("Sec-WebSocket-Version")) version = vl == 2 && !strncmp(v, "13", 2) ? 1 : -1;
        else if (NAME_IS("Sec-WebSocket-Key")) {
            if (++n_key > 1 || !base64_16(v, vl)) {
                reject(r, 400, "invalid Sec-WebSocket-Key header");
                return;
            }
            memcpy(r->key, v, vl);
            r->key[vl] = 0;
        }
#undef NAME_IS
        p = le + 2;
    }
    if (!strcmp(r->path, "/healthz")) {
        if (is_get) r->kind = WS_HTTP_HEALTH;
        else reject(r, 405, "only GET is supported");
        return;
    }
    if (!is_get) reject(r, 405, "only GET is supported");
    else if (ver[7] != '1') reject(r, 400, "the websocket handshake needs HTTP/1.1");
    else if (!connection) reject(r, 400, "missing Connection: Upgrade header (this is a websocket server)");
    else if (!upgrade) reject(r, 400, "missing Upgrade: websocket header (this is a websocket server)");
    else if (version != 1) reject(r, 426, "Sec-WebSocket-Version must be 13");
    else if (!n_key) reject(r, 400, "missing Sec-WebSocket-Key header");
    else r->kind = WS_HTTP_UPGRADE;
}

/* ---- responses ------------------------------------------------------------------------------- */

static void http_date(char *out, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static char *fmt_response(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *fmt_response(size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len = (size_t)n;
    return s;
}

char *ws_http_upgrade_response(const char *key, size_t *len) {
    char accept[29], date[64];
    ws_http_accept_key(key, accept);
    http_date(date, sizeof date);
    return fmt_response(len,
                        "HTTP/1.1 101 Switching Protocols\r\nDate: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %s\r\n\r\n",
                        date, accept);
}

char *ws_http_health_response(size_t *len) {
    char date[64];
    http_date(date, sizeof date);
    return fmt_response(len,
                        "HTTP/1.1 200 OK\r\nDate: %s\r\nConnection: close\r\nContent-Length: 3\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n\r\nOK\n",
                        date);
}

char *ws_http_error_response(int status, const char *reason, size_t *len) {
    const char *phrase = status == 400   ? "Bad Request"
                         : status == 405 ? "Method Not Allowed"
                         : status == 426 ? "Upgrade Required"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    char date[64], body[256];
    http_date(date, sizeof date);
    int bl = snprintf(body, sizeof body, "Failed to open a WebSocket connection: %s.\n", reason);
    if (bl < 0 || (size_t)bl >= sizeof body) bl = (int)strlen(body);
    return fmt_response(len,
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\nContent-Length: %d\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n%s\r\n%s",
                        status, phrase, date, bl, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", body);
}
