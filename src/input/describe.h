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

/* What the root model is told about an input: docs NULL (no input) is an
 * empty str; with summary (what the sandbox found parsing a JSON or JSON
 * lines input, sandbox_input_summary) describe_parsed's; else
 * describe_docset's. NULL only when out of memory. */
char *describe_input(const ingest_set *docs, const json_t *summary);

/* A description of a str context data[0..len) (UTF-8): type, total characters,
 * estimated tokens, lines, and a short preview of its start and end. Bounded
 * (a few KB) whatever len is. `name` is the file name or NULL. NULL only
 * when out of memory. */
char *describe_str(const char *name, const char *data, size_t len);

/* The description of docs[0..n) of the given kind. For INGEST_STR (one
 * document) it is describe_str's, plus a note on invalid UTF-8.
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
