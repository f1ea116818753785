/* long_strings — the long string values of a JSON request body (a document
 * sent inline, megabytes in one "content") decoded apart from jansson, whose
 * lexer reads a string a character at a time and then copies it (about 10 ms
 * a megabyte here, the most of rlm serve's CPU under load). jansson still
 * parses the body, in which each long string is replaced by a short
 * placeholder: everything but those strings' bytes is checked as before.
 *
 * Ownership: long_strings_split returns a skeleton body (malloc'd, the
 * caller frees it) and a long_strings the caller frees with
 * long_strings_free. long_strings_find borrows; long_strings_take hands a
 * decoded text over to the caller (free). */
#ifndef RLM_SERVE_LONG_STRINGS_H
#define RLM_SERVE_LONG_STRINGS_H

#include <stddef.h>

typedef struct long_strings long_strings;

/* Finds the string tokens of body[0..len) (keys and values) whose encoded
 * form is at least min_bytes long and decodes each as RFC 8259 says, as
 * jansson would: the escapes, \uXXXX with surrogate pairs, the raw bytes
 * valid UTF-8. Returns 1 with *skeleton (NUL-terminated, *skeleton_len
 * bytes: the body with each such token replaced by a placeholder string that
 * no client can write, it holds a random nonce) and *out; 0 when there is
 * none, or one of them is not a string jansson would accept (\u0000, a lone
 * surrogate, a control character, bad UTF-8, no closing quote): the caller
 * then parses the body as it is, and jansson says what is wrong with it;
 * -1 when out of memory. */
int long_strings_split(const char *body, size_t len, size_t min_bytes, char **skeleton,
                       size_t *skeleton_len, long_strings **out);

/* The index of the long string that s[0..len) (a string value of the
 * skeleton) stands for, or -1 when it is an ordinary string. ls may be NULL
 * (there are none). */
long long long_strings_find(const long_strings *ls, const char *s, size_t len);

/* The decoded text of long string i (borrowed; NUL-terminated) and its
 * length; NULL once taken. */
const char *long_strings_text(const long_strings *ls, size_t i, size_t *len);

/* Hands long string i over to the caller (who frees it), or NULL when it was
 * taken already. */
char *long_strings_take(long_strings *ls, size_t i, size_t *len);

/* The offset of the quote that closes the JSON string token whose opening
 * quote is body[start] (escapes honoured), or len when none does. */
size_t long_strings_token_end(const char *body, size_t len, size_t start);

/* NULL is a no-op. */
void long_strings_free(long_strings *ls);

#endif
