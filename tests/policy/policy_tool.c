/*
 * Test helper for the tests/policy pytest files (runs on sanitized builds too, where Python cannot load
 * the library):
 *   pi0_policy_tool infer ...                          same as `pi0 policy-infer ...`
 *   pi0_policy_tool resize IN.safetensors OUT.safetensors
 *       every U8 tensor NAME [h, w, c] of IN: with metadata "NAME.size" = "oh,ow" a plain Pillow
 *       BILINEAR resize to (oh, ow), otherwise resize_with_pad to 224x224 (c must be 3);
 *       metadata "NAME.order" = "13" selects Pillow 13's pass order (default: Pillow 11's);
 *       OUT gets NAME U8, or metadata "NAME.error" with the message.
 *   pi0_policy_tool tokenize MODEL.spm IN.safetensors OUT.safetensors MAX_LEN
 *       IN: "text" U8 (all prompts concatenated), "offsets" I64 [n + 1].
 *       OUT: "tokens" I32 [n, MAX_LEN], "mask" U8 [n, MAX_LEN], "n_ids" I32 [n] (length before
 *       truncation), "raw" I32 (plain encodes, concatenated), "raw_offsets" I64 [n + 1].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "pi0_policy.h"
#include "policy/image_resize.h"
#include "policy/tokenizer.h"

int cmd_policy_infer(int argc, char **argv);

static int fail(const char *what, pi0_status st) {
    fprintf(stderr, "error: %s: %s: %s\n", what, pi0_status_name(st), pi0_last_error());
    return 1;
}

static int cmd_resize(const char *in, const char *out) {
    st_file *f;
    pi0_status st = st_open(in, &f);
    if (st != PI0_OK) return fail(in, st);
    st_entry *e = calloc((size_t)f->n_tensors + 1, sizeof *e);
    char **meta = calloc((size_t)f->n_tensors * 2 + 1, sizeof *meta);
    char (*errkeys)[160] = calloc((size_t)f->n_tensors + 1, sizeof *errkeys);
    char (*errmsgs)[1024] = calloc((size_t)f->n_tensors + 1, sizeof *errmsgs);
    int ne = 0, nm = 0, rc = 0;
    for (int i = 0; i < f->n_tensors && !rc; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->dtype != PI0_DT_U8 || t->ndim != 3) continue;
        char key[160];
        snprintf(key, sizeof key, "%s.size", t->name);
        const char *size = st_meta(f, key);
        int oh = 224, ow = 224;
        if (size && sscanf(size, "%d,%d", &oh, &ow) != 2) {
            fprintf(stderr, "bad %s\n", key);
            rc = 1;
            break;
        }
        snprintf(key, sizeof key, "%s.order", t->name);
        const char *ord = st_meta(f, key);
        pi0_resize_order order = ord && !strcmp(ord, "13") ? PI0_RESIZE_PILLOW13 : PI0_RESIZE_PILLOW11;
        uint8_t *dst = malloc((size_t)oh * ow * t->shape[2] + 1);
        if (size)
            st = pi0_resize_bilinear_u8_order(t->data, (int)t->shape[0], (int)t->shape[1], (int)t->shape[2], dst, oh, ow,
                                              order);
        else st = pi0_resize_with_pad_u8_order(t->data, (int)t->shape[0], (int)t->shape[1], dst, oh, ow, order);
        if (st != PI0_OK) {
            free(dst);
            snprintf(errkeys[nm / 2], sizeof errkeys[0], "%s.error", t->name);
            snprintf(errmsgs[nm / 2], sizeof errmsgs[0], "%s", pi0_last_error());
            meta[nm] = errkeys[nm / 2];
            meta[nm + 1] = errmsgs[nm / 2];
            nm += 2;
            continue;
        }
        e[ne++] = (st_entry){t->name, PI0_DT_U8, 3, {oh, ow, t->shape[2]}, dst};
    }
    if (!rc) {
        st = st_save(out, e, ne, (const char *const *)meta, nm / 2);
        if (st != PI0_OK) rc = fail(out, st);
    }
    for (int i = 0; i < ne; i++) free((void *)e[i].data);
    free(e);
    free(meta);
    free(errkeys);
    free(errmsgs);
    st_close(f);
    return rc;
}

static int cmd_tokenize(const char *model, const char *in, const char *out, int max_len) {
    pi0_tokenizer *tok;
    pi0_status st = pi0_tokenizer_load(model, &tok);
    if (st != PI0_OK) return fail(model, st);
    st_file *f;
    st = st_open(in, &f);
    if (st != PI0_OK) {
        pi0_tokenizer_free(tok);
        return fail(in, st);
    }
    const st_tensor *text = st_find(f, "text"), *off = st_find(f, "offsets");
    int rc = 0;
    if (!text || !off || text->dtype != PI0_DT_U8 || off->dtype != PI0_DT_I64 || off->ndim != 1) {
        fprintf(stderr, "error: %s: expected text U8 and offsets I64\n", in);
        rc = 1;
    }
    int n = rc ? 0 : (int)off->shape[0] - 1;
    int64_t *o = calloc((size_t)n + 1, sizeof *o); /* the tensor may be unaligned in the file */
    if (!rc) memcpy(o, off->data, ((size_t)n + 1) * sizeof *o);
    int32_t *tokens = calloc((size_t)(n ? n : 1) * max_len, sizeof *tokens);
    uint8_t *mask = calloc((size_t)(n ? n : 1) * max_len, 1);
    int32_t *n_ids = calloc((size_t)(n ? n : 1), sizeof *n_ids);
    int64_t *raw_off = calloc((size_t)n + 1, sizeof *raw_off);
    size_t raw_cap = 1024, raw_n = 0;
    int32_t *raw = malloc(raw_cap * sizeof *raw);
    for (int i = 0; i < n && !rc; i++) {
        const char *s = (const char *)text->data + o[i];
        size_t len = (size_t)(o[i + 1] - o[i]);
        st = pi0_tokenize_prompt(tok, s, len, max_len, tokens + (size_t)i * max_len, mask + (size_t)i * max_len, &n_ids[i]);
        if (st != PI0_OK) {
            rc = fail("tokenize", st);
            break;
        }
        int32_t *ids;
        int m;
        st = pi0_tokenizer_encode(tok, s, len, &ids, &m);
        if (st != PI0_OK) {
            rc = fail("encode", st);
            break;
        }
        while (raw_n + (size_t)m > raw_cap) raw = realloc(raw, (raw_cap *= 2) * sizeof *raw);
        memcpy(raw + raw_n, ids, (size_t)m * sizeof *ids);
        raw_n += (size_t)m;
        raw_off[i + 1] = (int64_t)raw_n;
        free(ids);
    }
    if (!rc) {
        char vocab[32], bos[32];
        snprintf(vocab, sizeof vocab, "%d", pi0_tokenizer_vocab_size(tok));
        snprintf(bos, sizeof bos, "%d", pi0_tokenizer_bos_id(tok));
        const char *meta[] = {"vocab_size", vocab, "bos_id", bos};
        st_entry e[5] = {
            {"tokens", PI0_DT_I32, 2, {n, max_len}, tokens},
            {"mask", PI0_DT_U8, 2, {n, max_len}, mask},
            {"n_ids", PI0_DT_I32, 1, {n}, n_ids},
            {"raw", PI0_DT_I32, 1, {(int64_t)raw_n}, raw},
            {"raw_offsets", PI0_DT_I64, 1, {n + 1}, raw_off},
        };
        st = st_save(out, e, 5, meta, 2);
        if (st != PI0_OK) rc = fail(out, st);
    }
    free(tokens);
    free(mask);
    free(n_ids);
    free(raw);
    free(raw_off);
    free(o);
    st_close(f);
    pi0_tokenizer_free(tok);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "infer")) return cmd_policy_infer(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "resize")) return cmd_resize(argv[2], argv[3]);
    if (argc == 6 && !strcmp(argv[1], "tokenize")) return cmd_tokenize(argv[2], argv[3], argv[4], atoi(argv[5]));
    fprintf(stderr, "usage: pi0_policy_tool infer ... | resize IN OUT | tokenize MODEL IN OUT MAX_LEN\n");
    return 2;
}
