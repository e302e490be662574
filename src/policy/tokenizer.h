/*
 * The PaliGemma SentencePiece tokenizer (SPEC §9.4, §10.3) behind a C interface.
 * Implemented in tokenizer.cc over libsentencepiece (C++); when the library is not
 * available at build time every call fails with PI0_ERR_UNSUPPORTED.
 */
#ifndef PI0_POLICY_TOKENIZER_H
#define PI0_POLICY_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#include "pi0.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pi0_tokenizer pi0_tokenizer;

/* Load a SentencePiece .model file. */
pi0_status pi0_tokenizer_load(const char *path, pi0_tokenizer **out);
void pi0_tokenizer_free(pi0_tokenizer *t);
int pi0_tokenizer_vocab_size(const pi0_tokenizer *t);
int pi0_tokenizer_bos_id(const pi0_tokenizer *t);

/* Plain SentencePiece encode of len bytes of UTF-8 text: *ids is malloc'ed (free() it). */
pi0_status pi0_tokenizer_encode(const pi0_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);

/* openpi's PaligemmaTokenizer.tokenize for pi0 (SPEC §10.3): clean the prompt (strip Python
 * whitespace at both ends, '_' -> ' ', '\n' -> ' '), ids = [bos] + encode(cleaned) + encode("\n"),
 * then pad with 0 (mask 0) or truncate to max_len (a warning is logged when ids are dropped).
 * tokens and mask have max_len entries; *n_ids (optional) gets the length before truncation. */
pi0_status pi0_tokenize_prompt(const pi0_tokenizer *t, const char *prompt, size_t len, int max_len, int32_t *tokens,
                               uint8_t *mask, int *n_ids);

/* The cleaning step alone: out (at least len + 1 bytes) gets a NUL-terminated string. */
size_t pi0_prompt_clean(const char *prompt, size_t len, char *out);

/* 1 when s[0..len) is valid UTF-8; otherwise 0 and *bad_at = offset of the first bad byte. */
int pi0_utf8_valid(const char *s, size_t len, size_t *bad_at);

#ifdef __cplusplus
}
#endif
#endif
