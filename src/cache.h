/* cache — the optional response cache: model replies stored in SQLite under
 * the SHA-256 of the full canonical request, so rerunning a question over the
 * same input costs nothing. Also the hashing used for record/replay keys.
 *
 * Ownership: cache_open returns a handle freed by cache_close. cache_get fills
 * a cache_entry whose strings are malloc'd (cache_entry_clear frees them).
 *
 * Concurrency: the database runs in WAL mode with a busy timeout, so several
 * rlm processes may share one cache file; one handle is used by one thread at
 * a time. Only successful replies are stored: errors are never cached.
 * Failures (a corrupt file, a full disk) are reported as -1 with a message, and
 * callers run on without the cache: it is an optimisation, never a reason to
 * fail a run. */
#ifndef RLM_CACHE_H
#define RLM_CACHE_H

#include <stddef.h>

/* A SHA-256 as 64 lowercase hex digits and a NUL. */
#define CACHE_KEY_LEN 65

typedef struct cache cache;

typedef struct cache_entry {
    char *content;
    size_t content_len;     /* its bytes (it may hold NUL bytes); 0: up to the first NUL */
    char *reasoning;        /* NULL if none */
    char *finish_reason;    /* NULL if none */
    long prompt_tokens;     /* -1 if not reported */
    long completion_tokens;
} cache_entry;

/* Hex SHA-256 of data[0..len) into key. 0, or -1 if the digest failed. */
int cache_hash(const void *data, size_t len, char key[CACHE_KEY_LEN]);

/* Hex SHA-256 of n byte strings, each preceded by its length as 8 bytes, so
 * that ("ab", "c") and ("a", "bc") differ: an identity for a request without
 * encoding it first. 0, or -1 if the digest failed. */
int cache_hash_parts(const void *const *parts, const size_t *lens, size_t n, char key[CACHE_KEY_LEN]);

/* Opens (creating the directory and file if needed) DIR/cache.sqlite. NULL
 * with err set when the directory cannot be made or the file is not a usable
 * SQLite database. */
cache *cache_open(const char *dir, char *err, size_t errlen);

/* 1 with *out filled on a hit, 0 on a miss, -1 on a database error (err set). */
int cache_get(cache *c, const char *key, cache_entry *out, char *err, size_t errlen);

/* Stores (or replaces) the entry for key. 0, or -1 with err set. */
int cache_put(cache *c, const char *key, const cache_entry *entry, char *err, size_t errlen);

void cache_entry_clear(cache_entry *e);
/* NULL is a no-op. */
void cache_close(cache *c);

#endif
