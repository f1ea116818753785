/* grep — regular-expression search over a document set's raw bytes with
 * PCRE2 and its JIT: Python-like semantics (finditer over each document),
 * hard match and depth limits, a cap on hits. Pure: no I/O.
 *
 * Ownership: grep_compile returns a handle freed by grep_free. A grep_result
 * owns its hit array (grep_result_free); each hit's name and line point into
 * the caller's documents, which must outlive the result. */
#ifndef RLM_GREP_H
#define RLM_GREP_H

#include <stddef.h>
#include <stdint.h>

#include "ingest.h"

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
    const char *line;       /* the line holding the match's start, without '\n' */
    size_t line_len;
} grep_hit;

typedef struct grep_result {
    grep_hit *hits;
    size_t n;
    int truncated;          /* max_hits was reached; more matches may exist */
} grep_result;

/* Finds matches left to right in docs[0..n_docs), or only in docs[only] when
 * only != SIZE_MAX, stopping after max_hits. Empty matches advance by one
 * character, as Python's finditer. Returns 0, or -1 with err set when the
 * match limit, depth limit or memory runs out (hits found so far are kept in
 * out, which the caller frees either way). */
int grep_run(const grep *g, const ingest_doc *docs, size_t n_docs, size_t only, size_t max_hits,
             grep_result *out, char *err, size_t errlen);

void grep_result_free(grep_result *r);

#endif
