/* search — BM25 ranking over the chunks of a document set with a
 * purpose-built in-memory inverted index (measured against SQLite FTS5 in
 * bench/helpers_bench.sh: it builds several times faster and answers in well
 * under a millisecond). The index is flat arrays, so it is saved to a cache
 * file as is and loaded back by mapping that file, without parsing.
 *
 * Ownership: search_build / search_load / search_open_cached return an index
 * freed by search_free; it borrows the documents (they must outlive it) and,
 * when loaded, the mapping it was given. Hits are written to caller arrays.
 * search_cache_fd returns a descriptor the caller closes. */
#ifndef RLM_SEARCH_H
#define RLM_SEARCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "docs.h"

typedef struct search_index search_index;

/* Limits: tokens longer than SEARCH_TOKEN_MAX bytes are not indexed; at most
 * max_chunks chunks. A saved index whose term table has a run of more than
 * SEARCH_PROBE_MAX occupied slots is refused, so that no lookup in a loaded
 * index probes more slots than that. */
enum { SEARCH_TOKEN_MAX = 64, SEARCH_PROBE_MAX = 1024 };

/* The chunk size of the sandbox's search() (and of its cached indexes). */
enum { SEARCH_CHUNK_CHARS = 2000 };

typedef struct search_hit {
    size_t chunk;     /* index of the chunk */
    size_t doc;       /* its document */
    size_t off, len;  /* its bytes in the document */
    double score;     /* BM25, k1 = 1.2, b = 0.75 */
} search_hit;

/* Indexes docs[0..n) split into chunks of at most chunk_chars characters
 * (documents that fit are one chunk each; longer ones split by lines).
 * Tokens: runs of ASCII letters, digits and '_' and of non-ASCII bytes,
 * ASCII lower-cased. The term table hashes with a seed drawn at random for
 * each build (kept in the index), so an input cannot be written to make
 * its terms collide. `stop` may be NULL; when another thread sets it the
 * build ends early with -1 ("stopped"). Returns 0, or -1 with err (limits,
 * memory, stopped). */
int search_build(const ingest_doc *docs, size_t n_docs, size_t chunk_chars, size_t max_chunks,
                 const atomic_int *stop, search_index **out, char *err, size_t errlen);

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
 * lives. The bytes are untrusted: every count is bounded by the documents'
 * size, every array is checked against len, the documents and the others
 * (chunks in order and inside their documents, terms well formed, postings
 * sorted, each chunk's term frequencies adding up to its length in tokens,
 * a term table where every term lies within SEARCH_PROBE_MAX slots of where
 * its hash puts it), so that no query on it reads out of bounds or runs
 * longer than on an index search_build made. Work and memory are linear in
 * len. Returns 0, or -1 with err. */
int search_load(const void *map, size_t len, const ingest_doc *docs, size_t n_docs,
                search_index **out, char *err, size_t errlen);

/* The host's cache: a read-only descriptor of a valid saved index of docs
 * (chunk_chars) in cache_dir, named after search_content_key. When there is
 * none, or the file there does not pass search_load, the index is built
 * (search_build with `stop`) and stored: written to an unnamed file
 * (O_TMPFILE) linked into place once complete, so no partial file is ever
 * seen or left behind, even when the process is killed; on file systems
 * without O_TMPFILE, a temporary name renamed into place, and temporary
 * files older than an hour (left by killed runs) are removed. *built says
 * which happened. Returns the descriptor, or -1 with err (the index could
 * not be built or stored). */
int search_cache_fd(const char *cache_dir, const ingest_doc *docs, size_t n_docs,
                     size_t chunk_chars, const atomic_int *stop, int *built, char *err,
                     size_t errlen);

/* search_cache_fd, then the index loaded from it (for tools and tests).
 * *from_cache is 1 when the file was there already. A cache that cannot be
 * written is not an error: the index is built in memory. */
int search_open_cached(const char *cache_dir, const ingest_doc *docs, size_t n_docs,
                       size_t chunk_chars, search_index **out, int *from_cache, char *err,
                       size_t errlen);

void search_free(search_index *ix);

#endif
