/* search — BM25 ranking over the chunks of a document set with a
 * purpose-built in-memory inverted index (measured against SQLite FTS5 in
 * bench/helpers_bench.sh: it builds several times faster and answers in well
 * under a millisecond). The index is flat arrays, so it is saved to a cache
 * file as is and loaded back by mapping that file, without parsing.
 *
 * Ownership: search_build / search_load / search_open_cached return an index
 * freed by search_free; it borrows the documents (they must outlive it) and,
 * when loaded, the mapping it was given. Hits are written to caller arrays. */
#ifndef RLM_SEARCH_H
#define RLM_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "ingest.h"

typedef struct search_index search_index;

/* Limits: tokens longer than SEARCH_TOKEN_MAX bytes are not indexed; at most
 * max_chunks chunks. */
enum { SEARCH_TOKEN_MAX = 64 };

typedef struct search_hit {
    size_t chunk;     /* index of the chunk */
    size_t doc;       /* its document */
    size_t off, len;  /* its bytes in the document */
    double score;     /* BM25, k1 = 1.2, b = 0.75 */
} search_hit;

/* Indexes docs[0..n) split into chunks of at most chunk_chars characters
 * (documents that fit are one chunk each; longer ones split by lines).
 * Tokens: runs of ASCII letters, digits and '_' and of non-ASCII bytes,
 * ASCII lower-cased. Returns 0, or -1 with err (limits, memory). */
int search_build(const ingest_doc *docs, size_t n_docs, size_t chunk_chars, size_t max_chunks,
                 search_index **out, char *err, size_t errlen);

/* The k best chunks for the query (its tokens are OR-ed, as BM25 does),
 * best first; *n_hits <= k receives how many. Chunks sharing no token with
 * the query are not returned. -1 only when out of memory. */
int search_query(const search_index *ix, const char *query, size_t len, size_t k,
                 search_hit *hits, size_t *n_hits);

size_t search_chunk_count(const search_index *ix);
size_t search_term_count(const search_index *ix);

/* A key for the documents' content and the chunk size: a 128-bit hash of
 * every name and byte (written for speed, not security: it names a cache
 * file, it guards nothing) as 32 hex digits. */
void search_content_key(const ingest_doc *docs, size_t n_docs, size_t chunk_chars, char out[33]);

/* Writes the index to fd. 0, or -1 with err. */
int search_save(const search_index *ix, int fd, char *err, size_t errlen);

/* Uses a saved index in place: map[0..len) must stay mapped while the index
 * lives. Every array is bounds-checked against len and the documents. */
int search_load(const void *map, size_t len, const ingest_doc *docs, size_t n_docs,
                search_index **out, char *err, size_t errlen);

/* The cache: loads <cache_dir>/search-<key>.idx when present and valid,
 * otherwise builds the index and saves it there (atomically: a temporary
 * file renamed). *from_cache tells which happened. A cache that cannot be
 * written is not an error; the built index is returned. */
int search_open_cached(const char *cache_dir, const ingest_doc *docs, size_t n_docs,
                       size_t chunk_chars, search_index **out, int *from_cache, char *err,
                       size_t errlen);

void search_free(search_index *ix);

#endif
