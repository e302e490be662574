/* libFuzzer target: the HTTP opening-handshake parser (every prefix, as bytes arrive) and the
 * JSON -> msgpack converter used for the policy metadata. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/msgpack_numpy.h"
#include "server/ws_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size && data[0] & 1) {
        ws_http_request r;
        for (size_t n = 1; n <= size; n += 1 + n / 4) {
            ws_http_parse((const char *)data + 1, n - 1, &r);
            if (r.kind == WS_HTTP_UPGRADE) {
                size_t len;
                char *resp = ws_http_upgrade_response(r.key, &len);
                free(resp);
            }
            if (r.kind != WS_HTTP_INCOMPLETE) break;
        }
    } else if (size) {
        char *s = malloc(size);
        memcpy(s, data + 1, size - 1);
        s[size - 1] = 0;
        uint8_t *out;
        size_t len;
        char err[128];
        if (mpn_json_to_msgpack(s, &out, &len, err, sizeof err) == 0) {
            mpn_obs o; /* the converted metadata is valid msgpack */
            if (mpn_scan(out, len, err, sizeof err) && !strstr(err, "more than") && !strstr(err, "nesting"))
                __builtin_trap();
            (void)o;
            free(out);
        }
        free(s);
    }
    return 0;
}
