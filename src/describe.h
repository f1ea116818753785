/* describe — what the root model is told about a document set: its Python
 * type, characters, estimated tokens (per kind of text), a size histogram,
 * the first names with sizes and a short preview. Bounded (about 16 KB)
 * whatever the input, 50,000 files included. Pure.
 *
 * Ownership: returned strings are malloc'd and owned by the caller. */
#ifndef RLM_DESCRIBE_H
#define RLM_DESCRIBE_H

#include <jansson.h>
#include <stddef.h>

#include "ingest.h"

/* Kinds of text with their own bytes-per-token ratio: prose 3.5 (rlm's
 * default everywhere), code 3.0, JSON 2.5 (see describe.c for why). */
typedef enum describe_text {
    DESCRIBE_PROSE = 0,
    DESCRIBE_CODE = 1,
    DESCRIBE_JSON = 2,
} describe_text;

/* The kind a document's name suggests (by extension). */
describe_text describe_text_of_name(const char *name);

/* Estimated tokens of `bytes` bytes of text of that kind, rounded up. */
size_t describe_estimate_tokens(size_t bytes, describe_text kind);

/* count_tokens(text) of the REPL: the prose estimate, bytes / 3.5. */
size_t describe_count_tokens(const char *text, size_t len);

/* The description of docs[0..n) of the given kind. For INGEST_STR (one
 * document) it is prompt_describe_context's, plus a note on invalid UTF-8.
 * Document character counts are taken from ingest_doc.chars when set,
 * counted otherwise. NULL only when out of memory. */
char *describe_docset(ingest_kind kind, const ingest_doc *docs, size_t n);

/* The description of a JSON or JSON lines input the sandbox parsed:
 * docs[0..n) are its files (names, bytes), summary what the sandbox found
 * (sandbox_input_summary: the value's type and size, a dict's keys, a
 * list's item types and first record's keys, lines skipped, a preview).
 * NULL only when out of memory. */
char *describe_parsed(const ingest_doc *docs, size_t n, const json_t *summary);

#endif
