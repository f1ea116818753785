/* docs — a document set as both processes see it: the types the host's walk
 * (ingest.h) fills and the sandbox child reads back from the pack (pack.h),
 * and the helpers (chunks, search, grep) work on.
 *
 * Ownership: a document borrows its name and bytes from whoever made the
 * set (the host's mappings, or the child's mapping of the pack). */
#ifndef RLM_DOCS_H
#define RLM_DOCS_H

#include <stddef.h>

/* The Python type `context` gets: one file or stdin → str, JSONL → list of
 * str, several files, a directory or a glob → dict path → str. */
typedef enum ingest_kind {
    INGEST_STR = 0,
    INGEST_LIST = 1,
    INGEST_DICT = 2,
} ingest_kind;

/* How the sandbox reads the documents' text. TEXT: each is a str (the kind
 * above says how they are put together). JSON: each is one JSON value,
 * parsed in the sandbox: `context` is the value (one document) or a dict
 * name -> value. JSONL: each is JSON lines, every line a record: `context`
 * is the list of all records, documents in order. The kind then says how
 * the helpers (grep, chunks, search) see the raw text: one document (STR)
 * or several (DICT). */
typedef enum ingest_format {
    INGEST_TEXT = 0,
    INGEST_JSON = 1,
    INGEST_JSONL = 2,
} ingest_format;

/* One document: a name and a byte range. data points into a mapping the set
 * owns (NULL when len is 0). The bytes are UTF-8 except for invalid_utf8
 * bytes that start no valid sequence (the sandbox replaces them). */
typedef struct ingest_doc {
    const char *name;
    const char *data;
    size_t len;
    size_t chars;          /* UTF-8 characters (each invalid byte counts as one) */
    size_t invalid_utf8;
} ingest_doc;

#endif
