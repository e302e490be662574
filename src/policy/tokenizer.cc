// PaliGemma prompt tokenization (SPEC §10.3) over libsentencepiece, with a C interface.
#include "policy/tokenizer.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

extern "C" {
#include "util/error.h"
}

#ifdef PI0_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

struct pi0_tokenizer {
#ifdef PI0_HAVE_SENTENCEPIECE
    sentencepiece::SentencePieceProcessor sp;
#endif
    int vocab = 0, bos = -1;
};

extern "C" int pi0_utf8_valid(const char *s, size_t len, size_t *bad_at) {
    const unsigned char *u = reinterpret_cast<const unsigned char *>(s);
    size_t i = 0;
    while (i < len) {
        unsigned c = u[i];
        size_t n;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            break;
        }
        size_t k = 1;
        for (; k <= n; k++) {
            if (i + k >= len || (u[i + k] & 0xC0) != 0x80) break;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (k <= n) break;
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) break;
        i += n + 1;
    }
    if (i < len) {
        if (bad_at) *bad_at = i;
        return 0;
    }
    return 1;
}

/* Python's str.isspace() code points. */
static bool py_space(unsigned cp) {
    if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return true;
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* Decode the code point at s[i] (valid UTF-8 assumed; invalid bytes count as themselves). */
static unsigned cp_at(const unsigned char *s, size_t len, size_t i, size_t *n) {
    unsigned c = s[i];
    size_t k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
    if (i + k >= len) k = 0; /* truncated: take the byte alone */
    unsigned cp = k == 0 ? c : k == 1 ? (c & 0x1F) : k == 2 ? (c & 0x0F) : (c & 0x07);
    for (size_t j = 1; j <= k; j++) cp = (cp << 6) | (s[i + j] & 0x3F);
    *n = k + 1;
    return cp;
}

extern "C" size_t pi0_prompt_clean(const char *prompt, size_t len, char *out) {
    const unsigned char *s = reinterpret_cast<const unsigned char *>(prompt);
    size_t begin = 0, end = 0, i = 0, n;
    bool seen = false;
    while (i < len) { /* [begin, end) = first to last non-space code point */
        unsigned cp = cp_at(s, len, i, &n);
        if (!py_space(cp)) {
            if (!seen) begin = i, seen = true;
            end = i + n;
        }
        i += n;
    }
    size_t o = 0;
    for (i = begin; seen && i < end; i++) {
        char c = prompt[i];
        out[o++] = (c == '_' || c == '\n') ? ' ' : c;
    }
    out[o] = 0;
    return o;
}

extern "C" pi0_status pi0_tokenizer_load(const char *path, pi0_tokenizer **out) {
    if (!path || !out) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_tokenizer_load: NULL argument");
    *out = nullptr;
#ifdef PI0_HAVE_SENTENCEPIECE
    pi0_tokenizer *t = new (std::nothrow) pi0_tokenizer();
    if (!t) return pi0_fail(PI0_ERR_OOM, "out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        delete t;
        return pi0_fail(PI0_ERR_IO, "tokenizer: cannot open %s", path);
    }
    fclose(f);
    try {
        auto st = t->sp.Load(path);
        if (!st.ok()) {
            std::string msg = st.ToString();
            delete t;
            return pi0_fail(PI0_ERR_FORMAT, "tokenizer %s is not a SentencePiece model: %s", path, msg.c_str());
        }
    } catch (const std::exception &e) {
        delete t;
        return pi0_fail(PI0_ERR_FORMAT, "tokenizer %s: %s", path, e.what());
    }
    t->vocab = t->sp.GetPieceSize();
    t->bos = t->sp.bos_id();
    if (t->bos < 0) {
        delete t;
        return pi0_fail(PI0_ERR_FORMAT, "tokenizer %s has no BOS piece (openpi prepends BOS to every prompt)", path);
    }
    *out = t;
    return PI0_OK;
#else
    return pi0_fail(PI0_ERR_UNSUPPORTED, "this build has no SentencePiece tokenizer (install libsentencepiece-dev and reconfigure)");
#endif
}

extern "C" void pi0_tokenizer_free(pi0_tokenizer *t) { delete t; }
extern "C" int pi0_tokenizer_vocab_size(const pi0_tokenizer *t) { return t ? t->vocab : 0; }
extern "C" int pi0_tokenizer_bos_id(const pi0_tokenizer *t) { return t ? t->bos : -1; }

extern "C" pi0_status pi0_tokenizer_encode(const pi0_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n) {
    if (!t || (!text && len) || !ids || !n) return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_tokenizer_encode: NULL argument");
    *ids = nullptr;
    *n = 0;
#ifdef PI0_HAVE_SENTENCEPIECE
    std::vector<int> v;
    try {
        auto st = t->sp.Encode(std::string(text ? text : "", len), &v);
        if (!st.ok()) return pi0_fail(PI0_ERR_INVALID_ARG, "tokenizer: %s", st.ToString().c_str());
    } catch (const std::bad_alloc &) {
        return pi0_fail(PI0_ERR_OOM, "out of memory");
    } catch (const std::exception &e) {
        return pi0_fail(PI0_ERR_INVALID_ARG, "tokenizer: %s", e.what());
    }
    int32_t *r = static_cast<int32_t *>(malloc((v.size() ? v.size() : 1) * sizeof(int32_t)));
    if (!r) return pi0_fail(PI0_ERR_OOM, "out of memory");
    for (size_t i = 0; i < v.size(); i++) r[i] = v[i];
    *ids = r;
    *n = static_cast<int>(v.size());
    return PI0_OK;
#else
    return pi0_fail(PI0_ERR_UNSUPPORTED, "this build has no SentencePiece tokenizer");
#endif
}

extern "C" pi0_status pi0_tokenize_prompt(const pi0_tokenizer *t, const char *prompt, size_t len, int max_len,
                                          int32_t *tokens, uint8_t *mask, int *n_ids) {
    if (!t || (!prompt && len) || !tokens || !mask || max_len <= 0)
        return pi0_fail(PI0_ERR_INVALID_ARG, "pi0_tokenize_prompt: bad argument");
    size_t bad;
    if (!pi0_utf8_valid(prompt, len, &bad))
        return pi0_fail(PI0_ERR_INVALID_ARG, "prompt is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                        (unsigned)(unsigned char)prompt[bad], bad);
    char *clean = static_cast<char *>(malloc(len + 1));
    if (!clean) return pi0_fail(PI0_ERR_OOM, "out of memory");
    size_t cl = pi0_prompt_clean(prompt ? prompt : "", len, clean);
    int32_t *a = nullptr, *b = nullptr;
    int na = 0, nb = 0;
    pi0_status st = pi0_tokenizer_encode(t, clean, cl, &a, &na);
    if (st == PI0_OK) st = pi0_tokenizer_encode(t, "\n", 1, &b, &nb);
    free(clean);
    if (st == PI0_OK) {
        int total = 1 + na + nb;
        if (n_ids) *n_ids = total;
        if (total > max_len)
            pi0_log(PI0_LOG_WARN, "Token length (%d) exceeds max length (%d), truncating the prompt", total, max_len);
        for (int i = 0; i < max_len; i++) {
            int32_t id = 0;
            if (i == 0) id = t->bos;
            else if (i < 1 + na) id = a[i - 1];
            else if (i < total) id = b[i - 1 - na];
            tokens[i] = id;
            mask[i] = i < total;
        }
    }
    free(a);
    free(b);
    return st;
}
