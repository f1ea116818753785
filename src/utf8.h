/* utf8 — validating and repairing UTF-8: jansson refuses invalid UTF-8, and
 * the bytes rlm handles (inputs, model output, sandbox output) are arbitrary.
 *
 * Ownership: utf8_sanitize returns a malloc'd string owned by the caller. */
#ifndef RLM_UTF8_H
#define RLM_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s[0..len) (len >= 1), or 0 if it is
 * invalid: overlong forms, surrogates and code points past U+10FFFF included. */
size_t utf8_sequence_length(const unsigned char *s, size_t len);

/* A NUL-terminated copy of s[0..len) with each byte that does not start a
 * valid sequence replaced by U+FFFD. Embedded NULs are kept. *out_len (may be
 * NULL) receives the copy's length. NULL only when out of memory. */
char *utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* A copy of s[0..len) to show on a terminal: what a terminal would act on
 * instead of showing is written as an escape — control characters but
 * newline and tab (C0 and DEL as \x1b, C1 as \u009b: escape sequences that
 * could clear the screen, set the title or write the clipboard), the
 * bidirectional embeddings, overrides and isolates that reorder what follows
 * (\u202e), and bytes that are not UTF-8 (\xff). Everything else is kept,
 * backslashes included (it is for reading, not for parsing back). NUL
 * terminated; *out_len (may be NULL) receives its length. NULL only when out
 * of memory. */
char *utf8_escape_terminal(const char *s, size_t len, size_t *out_len);

/* The largest prefix length <= max of s[0..len) that does not split a
 * sequence. */
size_t utf8_cut(const char *s, size_t len, size_t max);

/* For text read in blocks: the length of s[0..len) without a trailing
 * sequence that is cut short (a lead byte whose continuation bytes are all
 * valid so far but not all there), which the next block completes. An
 * invalid tail is not held back: it is invalid whatever follows. */
size_t utf8_complete_prefix(const char *s, size_t len);

#endif
