/* grep — regular-expression search over a document set's raw bytes with
 * PCRE2 and its JIT: Python-like semantics (finditer over each document),
 * hard match and depth limits, a cap on hits. Pure: no I/O.
 *
 * Ownership: grep_compile returns a handle freed by grep_free. A grep_result
 * owns its hit array (grep_result_free); each hit's name and line point into
 * the caller's documents, which must outlive the result. grep_scan hands
 * each hit to a callback instead and keeps nothing. */
#ifndef RLM_GREP_H
#define RLM_GREP_H

#include <stddef.h>
#include <stdint.h>

#include "docs.h"

typedef struct grep grep;

typedef struct grep_limits {
    uint32_t match_limit;   /* PCRE2 match limit per match attempt (0: 10,000,000) */
    uint32_t depth_limit;   /* PCRE2 depth limit, used by the interpreter (0: 10,000) */
} grep_limits;

/* Compiles pattern[0..len) with flags, a string of Python re letters: i
 * (ignore case), m (^ and $ at lines), s (. matches newline), x (verbose),
 * and u: Unicode classes for \w, \d, \s, \b. Without u those classes are
 * ASCII (Python's re.ASCII) because Unicode properties cost PCRE2's JIT a
 * factor 10-25 here; letters still match case-insensitively across
 * Unicode. Patterns are UTF-8 and match invalid UTF-8 in the subject safely.
 * limits may be NULL. Returns 0, or -1 with err set to
 * PCRE2's message and the offset, for a bad pattern or an unknown flag. */
int grep_compile(const char *pattern, size_t len, const char *flags, const grep_limits *limits,
                 grep **out, char *err, size_t errlen);
void grep_free(grep *g);

typedef struct grep_hit {
    size_t doc;             /* index into the documents */
    const char *name;       /* the document's name */
    size_t line_no;         /* 1-based line of the match's start */
    size_t offset;          /* byte offset of the match in the document */
    size_t char_offset;     /* the same in characters */
    size_t match_len;       /* bytes */
    const char *line;       /* the line holding the match's start, without its '\n' */
    size_t line_len;        /* (a '\r' before the '\n' stays, as in Python's slices) */
} grep_hit;

typedef struct grep_result {
    grep_hit *hits;
    size_t n;
    int truncated;          /* a match beyond max_hits exists */
} grep_result;

/* Called by grep_scan for each hit, in order. The hit is valid only during
 * the call; its name and line point into the documents. Return 0 to go on,
 * anything else to stop the scan. */
typedef int (*grep_hit_fn)(void *ctx, const grep_hit *hit);

/* Finds matches left to right in docs[0..n_docs), or only in docs[only] when
 * only != SIZE_MAX, and hands each to on_hit(ctx, hit) as it is found, up to
 * max_hits. Empty matches advance by one character, as Python's finditer.
 * *truncated (may be NULL) is set when a match beyond max_hits exists.
 * Nothing is allocated per hit, so the caller can build its own results
 * without a hit array in between. Returns 0; 1 when on_hit stopped the scan
 * (err untouched); -1 with err set for a bad `only`, no memory, or the
 * match or depth limit (the hits before it were handed over). */
int grep_scan(const grep *g, const ingest_doc *docs, size_t n_docs, size_t only, size_t max_hits,
              grep_hit_fn on_hit, void *ctx, int *truncated, char *err, size_t errlen);

/* grep_scan collecting the hits into out, which the caller frees with
 * grep_result_free whatever the outcome. Returns 0, or -1 with err set as
 * grep_scan (and "out of memory" when the array cannot grow); the hits found
 * before an error are kept in out. */
int grep_run(const grep *g, const ingest_doc *docs, size_t n_docs, size_t only, size_t max_hits,
             grep_result *out, char *err, size_t errlen);

void grep_result_free(grep_result *r);

#endif
