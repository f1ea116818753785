/* tokens — rlm's estimates of tokens from bytes, all in one place: budgets,
 * compaction, the input's description, direct mode's threshold, the REPL's
 * count_tokens and the rate limiter all count with these. rlm has no
 * tokenizer (the model's is not known, and none is linked), so a ratio of
 * bytes per token by kind of text stands in (tokens.c says why each).
 * Pure; the host and the sandbox child both link it.
 *
 * Ownership: nothing is allocated. */
#ifndef RLM_TOKENS_H
#define RLM_TOKENS_H

#include <stddef.h>

/* Kinds of text with their own bytes-per-token ratio: prose 3.5 (rlm's
 * default everywhere), code 3.0, JSON 2.5. */
typedef enum tokens_kind {
    TOKENS_PROSE = 0,
    TOKENS_CODE = 1,
    TOKENS_JSON = 2,
} tokens_kind;

/* Estimated tokens of `bytes` bytes of text of that kind, rounded up; no
 * overflow for any size_t. */
size_t tokens_estimate(size_t bytes, tokens_kind kind);

/* The kind a document's name suggests (by its extension, or a build file's
 * name such as Makefile); prose when none does. */
tokens_kind tokens_kind_of_name(const char *name);

/* The rate limiter's reckoning of a request of `bytes` bytes (its text and
 * JSON envelope): bytes / 4, what providers count for English, not rounded.
 * It paces calls against a provider's tokens-per-minute limit, so it aims
 * at the provider's count rather than erring high like the budget's. */
double tokens_for_rate(size_t bytes);

#endif
