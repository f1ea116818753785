/* utf8 — validating and repairing UTF-8: jansson refuses invalid UTF-8, and
 * the bytes rlm handles (inputs, model output, sandbox output) are arbitrary.
 * Also the text helpers every part of rlm shares: counting characters,
 * cutting on character boundaries, bounding a text to a number of characters
 * with a marker, and appending bytes for display inside a message.
 *
 * Ownership: utf8_sanitize returns a malloc'd string owned by the caller. */
#ifndef RLM_UTF8_H
#define RLM_UTF8_H

#include <stddef.h>

#include "util.h"

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

/* 1 when s holds only valid UTF-8 (no overlong forms, surrogates or code
 * points past U+10FFFF), else 0. */
int utf8_valid(const char *s, size_t len);

/* Characters and invalid bytes (bytes that start no valid UTF-8 sequence,
 * each counted as one character) of data[0..len). Fast on ASCII. */
void utf8_count(const char *data, size_t len, size_t *chars, size_t *invalid);

/* Characters (UTF-8 code points) in data[0..len): every byte that is not a
 * continuation byte starts one (invalid bytes count one each). */
size_t utf8_count_chars(const char *data, size_t len);
/* The same count, and the newline bytes in *newlines (may be NULL), in one
 * pass. */
size_t utf8_count_chars_newlines(const char *data, size_t len, size_t *newlines);

/* The byte offset after the first `chars` characters of data[0..len), and
 * the byte offset where its last `chars` characters begin. */
size_t utf8_head_end(const char *data, size_t len, size_t chars);
size_t utf8_tail_start(const char *data, size_t len, size_t chars);

/* Cuts text to at most max_chars characters, keeping the head and the tail
 * (half each, on UTF-8 boundaries) with a marker between them saying how many
 * characters were cut. Text within the limit is returned unchanged (a copy).
 * The marker counts toward max_chars; a limit too small to hold it (under ~40)
 * gets a plain head cut without one. NULL only when out of memory. */
char *utf8_bound(const char *text, size_t len, size_t max_chars);
/* utf8_bound for text that may hold NUL bytes: *out_len receives the
 * result's length. */
char *utf8_bound_n(const char *text, size_t len, size_t max_chars, size_t *out_len);

/* Appends data[0..len) for display inside a message: invalid UTF-8 and
 * control characters other than tab, newline and carriage return become
 * U+FFFD (3 bytes), so a binary file or a stray byte in output cannot make the
 * request's JSON invalid or hide the rest of a message behind a NUL. 0, or -1
 * when out's limit is reached. */
int utf8_append_clean(buf *out, const char *data, size_t len);

#endif
