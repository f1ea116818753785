/* chunks — splitting a document set into pieces of at most max_chars
 * characters without copying it: by lines (never splitting a line unless it
 * alone is too long), by characters (on UTF-8 boundaries), or by documents
 * (a document too long is split by lines). Pure.
 *
 * Ownership: a chunk_list owns its array; chunk_list_free releases it. The
 * chunks are offsets into the caller's documents, which they do not own. */
#ifndef RLM_CHUNKS_H
#define RLM_CHUNKS_H

#include <stddef.h>

#include "docs.h"

typedef enum chunks_by {
    CHUNKS_BY_LINES = 0,
    CHUNKS_BY_CHARS = 1,
    CHUNKS_BY_DOCS = 2,
} chunks_by;

/* Bytes docs[doc].data[off .. off+len), holding `chars` characters. */
typedef struct chunk {
    size_t doc;
    size_t off;
    size_t len;
    size_t chars;
} chunk;

typedef struct chunk_list {
    chunk *items;
    size_t n, cap;
} chunk_list;

/* "lines", "chars" or "docs" → 0 and *out; anything else → -1. */
int chunks_parse_by(const char *s, chunks_by *out);

/* Appends the chunks of docs[0..n_docs) to out (initialised to zeroes by the
 * caller). Consecutive chunks of one document overlap by at most `overlap`
 * characters (by lines: the whole lines that fit in it). Chunks never span
 * two documents. An empty document gives no chunk, except by docs (one empty
 * chunk, so every document is represented). Errors: max_chars 0, overlap >=
 * max_chars, more than max_chunks chunks, out of memory → -1 with err. */
int chunks_split(const ingest_doc *docs, size_t n_docs, size_t max_chars, size_t overlap,
                 chunks_by by, size_t max_chunks, chunk_list *out, char *err, size_t errlen);

void chunk_list_free(chunk_list *list);

#endif
