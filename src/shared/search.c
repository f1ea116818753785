/* search — a BM25 inverted index in flat arrays: a term hash table over a
 * byte arena, postings in compressed-sparse-row form (chunk, tf), built in
 * one pass over the chunks, saved and mapped back as is.
 *
 * Design note. A saved index is read by the sandbox child, which maps a file
 * of the host's cache, and by the host when it checks that file; either may
 * meet a damaged or planted file, so search_load treats it as hostile input:
 * counts bounded by the documents' size, every offset checked, and the term
 * table checked for the one property lookups rely on to end — every term
 * lies within a short run of occupied slots from where its hash puts it —
 * rather than trusting probes to find an empty slot. The hash is seeded per
 * build, so that an input (which is untrusted too) cannot be written to make
 * its terms collide and the build quadratic. */
#include "search.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunks.h"
#include "util.h"

#define INDEX_MAGIC "RLMBM25"
/* Cache files: bm25-<key>.idx. Files named search-*.idx* were written by
 * versions that stored what the sandbox child sent: they are removed. */
#define CACHE_PREFIX "bm25-"
#define LEGACY_PREFIX "search-"
#define STALE_TMP_SECONDS 3600 /* a temporary file untouched this long is a killed run's */

enum { INDEX_VERSION = 2, DEFAULT_CHUNK_CHARS = SEARCH_CHUNK_CHARS, TABLE_MIN = 1 << 16 };

/* The saved layout: this header, then each array in the order below, each
 * starting at a multiple of 8. avg_len is recomputed when an index is
 * loaded, never taken from the file. */
typedef struct index_header {
    char magic[8];
    uint64_t version, chunk_chars;
    uint64_t n_docs, n_chunks, n_terms, n_postings, table_size, arena_len;
    uint64_t hash_seed;
    double avg_len;
} index_header;

struct search_index {
    index_header h;
    uint32_t *chunk_doc;
    uint64_t *chunk_off, *chunk_len;
    uint32_t *chunk_tokens;
    uint32_t *table;        /* table_size slots: term id + 1, 0 empty */
    uint64_t *term_off;     /* n_terms + 1 offsets into arena */
    char *arena;
    uint64_t *post_start;   /* n_terms + 1 */
    uint32_t *post_chunk;
    uint16_t *post_tf;
    uint64_t probe_max;     /* slots a lookup may probe: the table's size when built,
                               its longest run (checked) when loaded */
    int owned;              /* 1: arrays malloc'd (built); 0: in a caller's mapping; 2: in a cache file's mapping it owns */
};

/* FNV-1a from a seeded basis, then a 64-bit finaliser so the low bits the
 * table uses depend on every byte and on the seed. */
static uint64_t hash_bytes(uint64_t seed, const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    h ^= seed;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return h;
}

/* The table size search_build ends with for n terms: at least TABLE_MIN,
 * at most half full. */
static uint64_t table_size_for(uint64_t n_terms)
{
    uint64_t size = TABLE_MIN;
    while (size < 2 * n_terms)
        size *= 2;
    return size;
}

static uint64_t random_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts ^
           (uint64_t)getpid();
}

static int token_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

/* The next token of d[*pos..len) lower-cased into tok; its length, 0 at the
 * end. Over-long tokens are skipped whole. */
static size_t next_token(const char *d, size_t len, size_t *pos, char tok[SEARCH_TOKEN_MAX])
{
    size_t i = *pos;
    for (;;) {
        while (i < len && !token_byte((unsigned char)d[i]))
            i++;
        if (i >= len) {
            *pos = i;
            return 0;
        }
        size_t start = i;
        while (i < len && token_byte((unsigned char)d[i]))
            i++;
        size_t n = i - start;
        if (n > SEARCH_TOKEN_MAX)
            continue;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)d[start + k];
            tok[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        *pos = i;
        return n;
    }
}

/* --- building ------------------------------------------------------------- */

typedef struct builder {
    search_index *ix;
    size_t term_cap, arena_cap;
    uint32_t *last_chunk, *local_slot;   /* per term: dedupe within a chunk */
    uint32_t *df;
    uint32_t *tr_term, *tr_chunk;        /* (term, chunk, tf) triples */
    uint16_t *tr_tf;
    size_t n_tr, tr_cap;
} builder;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    void *g = realloc(*p, c * elem);
    if (!g)
        return -1;
    *p = g;
    *cap = c;
    return 0;
}

static int table_rehash(search_index *ix, size_t size)
{
    uint32_t *t = calloc(size, sizeof *t);
    if (!t)
        return -1;
    for (uint64_t id = 0; id < ix->h.n_terms; id++) {
        const char *s = ix->arena + ix->term_off[id];
        size_t n = ix->term_off[id + 1] - ix->term_off[id];
        size_t at = hash_bytes(ix->h.hash_seed, s, n) & (size - 1);
        while (t[at])
            at = (at + 1) & (size - 1);
        t[at] = (uint32_t)id + 1;
    }
    free(ix->table);
    ix->table = t;
    ix->h.table_size = size;
    ix->probe_max = size;
    return 0;
}

/* The term's id, or -(empty slot where it would go) - 1. At most
 * probe_max slots are probed: a loaded table's runs were checked to be
 * shorter, a built one is at most half full; past that the term is absent
 * (and there is no slot: INT64_MIN). */
static int64_t term_find(const search_index *ix, const char *s, size_t n)
{
    size_t mask = ix->h.table_size - 1;
    size_t at = hash_bytes(ix->h.hash_seed, s, n) & mask;
    for (uint64_t probes = 0; probes < ix->probe_max; probes++, at = (at + 1) & mask) {
        uint32_t slot = ix->table[at];
        if (!slot)
            return -(int64_t)at - 1;
        uint64_t id = slot - 1;
        if (ix->term_off[id + 1] - ix->term_off[id] == n && !memcmp(ix->arena + ix->term_off[id], s, n))
            return (int64_t)id;
    }
    return INT64_MIN;
}

static int64_t term_intern(builder *b, const char *s, size_t n)
{
    search_index *ix = b->ix;
    int64_t found = term_find(ix, s, n);
    if (found >= 0)
        return found;
    if ((ix->h.n_terms + 1) * 2 > ix->h.table_size) {
        if (table_rehash(ix, ix->h.table_size * 2) != 0)
            return -1;
        found = term_find(ix, s, n);
    }
    if (found == INT64_MIN)
        return -1; /* cannot happen in a table at most half full */
    uint64_t id = ix->h.n_terms;
    if (id >= UINT32_MAX - 1)
        return -1;
    size_t old_cap = b->term_cap;
    if (grow((void **)&ix->term_off, &b->term_cap, id + 2, sizeof *ix->term_off) != 0)
        return -1;
    if (b->term_cap != old_cap) {
        size_t c1 = old_cap, c2 = old_cap, c3 = old_cap;
        if (grow((void **)&b->last_chunk, &c1, b->term_cap, sizeof *b->last_chunk) != 0 ||
            grow((void **)&b->local_slot, &c2, b->term_cap, sizeof *b->local_slot) != 0 ||
            grow((void **)&b->df, &c3, b->term_cap, sizeof *b->df) != 0)
            return -1;
    }
    if (grow((void **)&ix->arena, &b->arena_cap, ix->term_off[id] + n, 1) != 0)
        return -1;
    memcpy(ix->arena + ix->term_off[id], s, n);
    ix->term_off[id + 1] = ix->term_off[id] + n;
    b->last_chunk[id] = UINT32_MAX;
    b->df[id] = 0;
    ix->table[-found - 1] = (uint32_t)id + 1;
    ix->h.n_terms++;
    return (int64_t)id;
}

/* Tokenises one chunk, counting each distinct term once into the triples. */
static int index_chunk(builder *b, uint32_t c, const char *d, size_t len, uint32_t **local,
                       size_t *local_cap, uint16_t **local_tf, size_t *local_tf_cap)
{
    size_t pos = 0, n_local = 0, tokens = 0;
    char tok[SEARCH_TOKEN_MAX];
    size_t n;
    while ((n = next_token(d, len, &pos, tok)) > 0) {
        int64_t id = term_intern(b, tok, n);
        if (id < 0)
            return -1;
        tokens++;
        if (b->last_chunk[id] == c) {
            uint16_t *tf = &(*local_tf)[b->local_slot[id]];
            if (*tf < UINT16_MAX)
                (*tf)++;
            continue;
        }
        if (grow((void **)local, local_cap, n_local + 1, sizeof **local) != 0 ||
            grow((void **)local_tf, local_tf_cap, n_local + 1, sizeof **local_tf) != 0)
            return -1;
        b->last_chunk[id] = c;
        b->local_slot[id] = (uint32_t)n_local;
        (*local)[n_local] = (uint32_t)id;
        (*local_tf)[n_local] = 1;
        n_local++;
    }
    size_t old_cap = b->tr_cap;
    if (grow((void **)&b->tr_term, &b->tr_cap, b->n_tr + n_local, sizeof *b->tr_term) != 0)
        return -1;
    if (b->tr_cap != old_cap) {
        /* the three triple arrays share tr_cap */
        uint32_t *tc = realloc(b->tr_chunk, b->tr_cap * sizeof *tc);
        if (tc)
            b->tr_chunk = tc;
        uint16_t *tt = realloc(b->tr_tf, b->tr_cap * sizeof *tt);
        if (tt)
            b->tr_tf = tt;
        if (!tc || !tt)
            return -1;
    }
    for (size_t i = 0; i < n_local; i++) {
        b->tr_term[b->n_tr] = (*local)[i];
        b->tr_chunk[b->n_tr] = c;
        b->tr_tf[b->n_tr] = (*local_tf)[i];
        b->df[(*local)[i]]++;
        b->n_tr++;
    }
    b->ix->chunk_tokens[c] = tokens > UINT32_MAX ? UINT32_MAX : (uint32_t)tokens;
    return 0;
}

/* Turns the triples into postings grouped by term (a counting sort). */
static int build_postings(builder *b)
{
    search_index *ix = b->ix;
    ix->post_start = calloc(ix->h.n_terms + 1, sizeof *ix->post_start);
    ix->post_chunk = malloc((b->n_tr ? b->n_tr : 1) * sizeof *ix->post_chunk);
    ix->post_tf = malloc((b->n_tr ? b->n_tr : 1) * sizeof *ix->post_tf);
    if (!ix->post_start || !ix->post_chunk || !ix->post_tf)
        return -1;
    uint64_t at = 0;
    for (uint64_t t = 0; t < ix->h.n_terms; t++) {
        ix->post_start[t] = at;
        at += b->df[t];
    }
    ix->post_start[ix->h.n_terms] = at;
    for (uint64_t t = 0; t < ix->h.n_terms; t++)
        b->df[t] = 0;   /* reused as the fill cursor */
    for (size_t i = 0; i < b->n_tr; i++) {
        uint32_t t = b->tr_term[i];
        uint64_t slot = ix->post_start[t] + b->df[t]++;
        ix->post_chunk[slot] = b->tr_chunk[i];
        ix->post_tf[slot] = b->tr_tf[i];
    }
    ix->h.n_postings = b->n_tr;
    return 0;
}

int search_build(const ingest_doc *docs, size_t n_docs, size_t chunk_chars, size_t max_chunks,
                 const atomic_int *stop, search_index **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!chunk_chars)
        chunk_chars = DEFAULT_CHUNK_CHARS;
    if (!max_chunks || max_chunks > UINT32_MAX - 1)
        max_chunks = UINT32_MAX - 1;
    chunk_list cl = {0};
    builder b = {0};
    uint32_t *local = NULL;
    uint16_t *local_tf = NULL;
    size_t local_cap = 0, local_tf_cap = 0;
    search_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        goto oom;
    ix->owned = 1;
    ix->h.hash_seed = random_seed();
    b.ix = ix;
    if (chunks_split(docs, n_docs, chunk_chars, 0, CHUNKS_BY_DOCS, max_chunks, &cl, err, errlen) != 0)
        goto fail;
    size_t nc = cl.n;
    ix->chunk_doc = malloc((nc ? nc : 1) * sizeof *ix->chunk_doc);
    ix->chunk_off = malloc((nc ? nc : 1) * sizeof *ix->chunk_off);
    ix->chunk_len = malloc((nc ? nc : 1) * sizeof *ix->chunk_len);
    ix->chunk_tokens = calloc(nc ? nc : 1, sizeof *ix->chunk_tokens);
    ix->term_off = calloc(1, sizeof *ix->term_off);
    b.term_cap = 1;
    if (!ix->chunk_doc || !ix->chunk_off || !ix->chunk_len || !ix->chunk_tokens || !ix->term_off ||
        table_rehash(ix, TABLE_MIN) != 0)
        goto oom;
    uint64_t total_tokens = 0;
    for (size_t i = 0; i < nc; i++) {
        const chunk *c = &cl.items[i];
        if (stop && i % 256 == 0 && atomic_load(stop)) {
            snprintf(err, errlen, "search index: stopped");
            goto fail;
        }
        ix->chunk_doc[i] = (uint32_t)c->doc;
        ix->chunk_off[i] = c->off;
        ix->chunk_len[i] = c->len;
        if (index_chunk(&b, (uint32_t)i, docs[c->doc].data + c->off, c->len, &local, &local_cap,
                        &local_tf, &local_tf_cap) != 0)
            goto oom;
        total_tokens += ix->chunk_tokens[i];
    }
    if (build_postings(&b) != 0)
        goto oom;
    memcpy(ix->h.magic, INDEX_MAGIC, sizeof ix->h.magic);
    ix->h.version = INDEX_VERSION;
    ix->h.chunk_chars = chunk_chars;
    ix->h.n_docs = n_docs;
    ix->h.n_chunks = nc;
    ix->h.arena_len = ix->term_off[ix->h.n_terms];
    ix->h.avg_len = nc ? (double)total_tokens / (double)nc : 0.0;
    if (!ix->arena)
        ix->arena = malloc(1);
    if (!ix->arena)
        goto oom;
    *out = ix;
    ix = NULL;
    goto done;
oom:
    snprintf(err, errlen, "search index: out of memory");
fail:
    search_free(ix);
done:
    chunk_list_free(&cl);
    free(b.last_chunk);
    free(b.local_slot);
    free(b.df);
    free(b.tr_term);
    free(b.tr_chunk);
    free(b.tr_tf);
    free(local);
    free(local_tf);
    return *out ? 0 : -1;
}

typedef struct cached_index cached_index;
static void cached_release(search_index *ix);

void search_free(search_index *ix)
{
    if (!ix)
        return;
    if (ix->owned == 2) {
        cached_release(ix);
        return;
    }
    if (ix->owned) {
        free(ix->chunk_doc);
        free(ix->chunk_off);
        free(ix->chunk_len);
        free(ix->chunk_tokens);
        free(ix->table);
        free(ix->term_off);
        free(ix->arena);
        free(ix->post_start);
        free(ix->post_chunk);
        free(ix->post_tf);
    }
    free(ix);
}

size_t search_chunk_count(const search_index *ix) { return ix->h.n_chunks; }
size_t search_term_count(const search_index *ix) { return ix->h.n_terms; }

/* --- querying ------------------------------------------------------------ */

static int hit_better(const search_hit *a, const search_hit *b)
{
    return a->score > b->score || (a->score == b->score && a->chunk < b->chunk);
}

/* Keeps the k best in a min-heap at hits[0..*n) (worst at the root). */
static void heap_offer(search_hit *heap, size_t *n, size_t k, const search_hit *h)
{
    size_t i;
    if (*n < k) {
        i = (*n)++;
        while (i > 0 && hit_better(&heap[(i - 1) / 2], h)) {
            heap[i] = heap[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        heap[i] = *h;
        return;
    }
    if (!hit_better(h, &heap[0]))
        return;
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const search_hit *best = h;
        if (l < *n && hit_better(best, &heap[l])) {
            m = l;
            best = &heap[l];
        }
        if (r < *n && hit_better(best, &heap[r]))
            m = r;
        if (m == i)
            break;
        heap[i] = heap[m];
        i = m;
    }
    heap[i] = *h;
}

static int compare_hits(const void *a, const void *b)
{
    return hit_better(a, b) ? -1 : hit_better(b, a) ? 1 : 0;
}

int search_query(const search_index *ix, const char *query, size_t len, size_t k,
                 search_hit *hits, size_t *n_hits)
{
    *n_hits = 0;
    if (k == 0 || ix->h.n_chunks == 0)
        return 0;
    float *score = calloc(ix->h.n_chunks, sizeof *score);
    uint32_t *touched = NULL;
    size_t n_touched = 0, touched_cap = 0;
    uint64_t seen_terms[64];
    size_t n_seen = 0;
    if (!score)
        return -1;
    const double k1 = 1.2, bb = 0.75, n = (double)ix->h.n_chunks;
    double avg = ix->h.avg_len > 0 ? ix->h.avg_len : 1.0;
    size_t pos = 0, tl;
    char tok[SEARCH_TOKEN_MAX];
    while ((tl = next_token(query, len, &pos, tok)) > 0 && n_seen < 64) {
        int64_t id = term_find(ix, tok, tl);
        int dup = 0;
        for (size_t i = 0; i < n_seen; i++)
            dup |= seen_terms[i] == (uint64_t)id;
        if (id < 0 || dup)
            continue;
        seen_terms[n_seen++] = (uint64_t)id;
        uint64_t from = ix->post_start[id], to = ix->post_start[id + 1];
        double df = (double)(to - from);
        double idf = log(1.0 + (n - df + 0.5) / (df + 0.5));
        for (uint64_t p = from; p < to; p++) {
            uint32_t c = ix->post_chunk[p];
            double tf = ix->post_tf[p];
            double norm = k1 * (1.0 - bb + bb * ix->chunk_tokens[c] / avg);
            if (score[c] == 0.0f) {
                if (grow((void **)&touched, &touched_cap, n_touched + 1, sizeof *touched) != 0) {
                    free(score);
                    free(touched);
                    return -1;
                }
                touched[n_touched++] = c;
            }
            score[c] += (float)(idf * tf * (k1 + 1.0) / (tf + norm));
        }
    }
    size_t n_out = 0;
    for (size_t i = 0; i < n_touched; i++) {
        uint32_t c = touched[i];
        search_hit h = {.chunk = c, .doc = ix->chunk_doc[c], .off = ix->chunk_off[c],
                        .len = ix->chunk_len[c], .score = score[c]};
        heap_offer(hits, &n_out, k, &h);
    }
    qsort(hits, n_out, sizeof *hits, compare_hits);
    *n_hits = n_out;
    free(score);
    free(touched);
    return 0;
}

/* --- content key, saving, loading ------------------------------------------ */

/* Two multiply-rotate lanes over 8-byte words: several GB/s, and 128 bits so
 * accidental collisions between inputs do not happen in practice. */
typedef struct key_state {
    uint64_t a, b;
} key_state;

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static void key_mix(key_state *k, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t a = k->a ^ len, b = k->b + len;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        uint64_t w1, w2;
        memcpy(&w1, p + i, 8);
        memcpy(&w2, p + i + 8, 8);
        a = rotl(a ^ (w1 * 0x9E3779B97F4A7C15ULL), 31) * 0xC2B2AE3D27D4EB4FULL;
        b = rotl(b ^ (w2 * 0xC2B2AE3D27D4EB4FULL), 29) * 0x165667B19E3779F9ULL;
    }
    for (; i < len; i++) {
        a = (a ^ p[i]) * 0x100000001B3ULL;
        b = rotl(b + p[i], 7) * 0x9E3779B97F4A7C15ULL;
    }
    k->a = a ^ (b >> 29);
    k->b = b ^ (a >> 31);
}

void search_content_key(const ingest_doc *docs, size_t n_docs, size_t chunk_chars, char out[33])
{
    key_state k = {0x243F6A8885A308D3ULL, 0x13198A2E03707344ULL};
    uint64_t params[3] = {INDEX_VERSION, chunk_chars, n_docs};
    key_mix(&k, params, sizeof params);
    for (size_t i = 0; i < n_docs; i++) {
        key_mix(&k, docs[i].name, strlen(docs[i].name));
        if (docs[i].data)
            key_mix(&k, docs[i].data, docs[i].len);
    }
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)k.a, (unsigned long long)k.b);
}

typedef struct section {
    void *ptr;
    size_t bytes;
} section;

static void sections_of(const search_index *ix, section s[10])
{
    const index_header *h = &ix->h;
    s[0] = (section){ix->chunk_doc, h->n_chunks * sizeof(uint32_t)};
    s[1] = (section){ix->chunk_off, h->n_chunks * sizeof(uint64_t)};
    s[2] = (section){ix->chunk_len, h->n_chunks * sizeof(uint64_t)};
    s[3] = (section){ix->chunk_tokens, h->n_chunks * sizeof(uint32_t)};
    s[4] = (section){ix->table, h->table_size * sizeof(uint32_t)};
    s[5] = (section){ix->term_off, (h->n_terms + 1) * sizeof(uint64_t)};
    s[6] = (section){ix->arena, h->arena_len};
    s[7] = (section){ix->post_start, (h->n_terms + 1) * sizeof(uint64_t)};
    s[8] = (section){ix->post_chunk, h->n_postings * sizeof(uint32_t)};
    s[9] = (section){ix->post_tf, h->n_postings * sizeof(uint16_t)};
}

int search_save(const search_index *ix, int fd, char *err, size_t errlen)
{
    static const char zeros[8];
    section s[10];
    sections_of(ix, s);
    if (write_full(fd, &ix->h, sizeof ix->h) != 0)
        goto fail;
    for (size_t i = 0; i < 10; i++) {
        if (s[i].bytes && write_full(fd, s[i].ptr, s[i].bytes) != 0)
            goto fail;
        size_t pad = (8 - s[i].bytes % 8) % 8;
        if (pad && write_full(fd, zeros, pad) != 0)
            goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot save the search index: %s", strerror(errno));
    return -1;
}

/* The arrays' values, checked against each other and the documents. The
 * counts were bounded by the caller; sums and the per-chunk scratch are
 * 64-bit, so nothing here overflows. */
static int check_chunks(search_index *ix, const ingest_doc *docs, size_t n_docs)
{
    const index_header *h = &ix->h;
    uint64_t prev_doc = 0, prev_end = 0, prev_len = 1, total_tokens = 0;
    for (uint64_t c = 0; c < h->n_chunks; c++) {
        uint64_t d = ix->chunk_doc[c], off = ix->chunk_off[c], len = ix->chunk_len[c];
        if (d >= n_docs)
            return -1;
        uint64_t doc_len = docs[d].data ? docs[d].len : 0;
        if (off > doc_len || len > doc_len - off)
            return -1;
        /* In document order, apart, and empty only as a whole empty
         * document: at most one chunk per byte of the input. */
        if (c > 0 && (d < prev_doc || (d == prev_doc && (off < prev_end || prev_len == 0 ||
                                                         len == 0))))
            return -1;
        if (ix->chunk_tokens[c] > len)
            return -1;
        total_tokens += ix->chunk_tokens[c];
        prev_doc = d;
        prev_end = off + len;
        prev_len = len;
    }
    ix->h.avg_len = h->n_chunks ? (double)total_tokens / (double)h->n_chunks : 0.0;
    return 0;
}

static int check_terms(const search_index *ix)
{
    const index_header *h = &ix->h;
    if (ix->term_off[0] != 0 || ix->term_off[h->n_terms] != h->arena_len)
        return -1;
    for (uint64_t t = 0; t < h->n_terms; t++) {
        uint64_t from = ix->term_off[t], to = ix->term_off[t + 1];
        if (to <= from || to - from > SEARCH_TOKEN_MAX || to > h->arena_len)
            return -1;
    }
    /* Only what next_token can produce: a term the tokenizer never yields
     * could never be asked for. */
    for (uint64_t i = 0; i < h->arena_len; i++) {
        unsigned char c = (unsigned char)ix->arena[i];
        if (!token_byte(c) || (c >= 'A' && c <= 'Z'))
            return -1;
    }
    return 0;
}

/* Postings: grouped by term, each term in at least one chunk, chunks
 * ascending, tf >= 1; each chunk's tfs add up to its tokens (exactly,
 * unless a count saturated), so no chunk can claim terms it lacks without
 * a length to match. */
static int check_postings(const search_index *ix)
{
    const index_header *h = &ix->h;
    if (ix->post_start[0] != 0 || ix->post_start[h->n_terms] != h->n_postings)
        return -1;
    uint64_t *sum = calloc(h->n_chunks ? h->n_chunks : 1, sizeof *sum);
    if (!sum)
        return -1;
    int rc = -1;
    const uint64_t saturated = (uint64_t)1 << 63;
    for (uint64_t t = 0; t < h->n_terms; t++) {
        uint64_t from = ix->post_start[t], to = ix->post_start[t + 1];
        if (to <= from || to > h->n_postings)
            goto done;
        for (uint64_t p = from; p < to; p++) {
            uint32_t c = ix->post_chunk[p];
            if (c >= h->n_chunks || (p > from && c <= ix->post_chunk[p - 1]) || ix->post_tf[p] == 0)
                goto done;
            sum[c] += ix->post_tf[p];
            if (ix->post_tf[p] == UINT16_MAX)
                sum[c] |= saturated;
        }
    }
    for (uint64_t c = 0; c < h->n_chunks; c++) {
        uint64_t tokens = ix->chunk_tokens[c], tfs = sum[c] & ~saturated;
        int exact = !(sum[c] & saturated) && tokens < UINT32_MAX;
        if (tfs > tokens || (exact && tfs != tokens))
            goto done;
    }
    rc = 0;
done:
    free(sum);
    return rc;
}

/* The table holds each term once, nothing else, and every term where
 * linear probing from its hash reaches it without crossing an empty slot;
 * no run of occupied slots is longer than SEARCH_PROBE_MAX. Then a lookup
 * ends within SEARCH_PROBE_MAX probes and finds every term. Linear in the
 * table and the arena. */
static int check_table(search_index *ix)
{
    const index_header *h = &ix->h;
    uint64_t size = h->table_size, mask = size - 1;
    unsigned char *seen = calloc(h->n_terms / 8 + 1, 1);
    if (!seen)
        return -1;
    int rc = -1;
    uint64_t occupied = 0, empty = size;
    for (uint64_t i = 0; i < size; i++) {
        uint32_t slot = ix->table[i];
        if (!slot) {
            empty = i;
            continue;
        }
        uint64_t id = slot - 1;
        if (id >= h->n_terms || (seen[id / 8] & (1u << (id % 8))))
            goto done;
        seen[id / 8] |= (unsigned char)(1u << (id % 8));
        occupied++;
    }
    if (occupied != h->n_terms || empty == size)
        goto done;
    /* Walk once around the table from an empty slot, tracking where the
     * current run began. */
    uint64_t run_start = 1, longest = 0;
    for (uint64_t k = 1; k <= size; k++) {
        uint64_t at = (empty + k) & mask;
        uint32_t slot = ix->table[at];
        if (!slot) {
            run_start = k + 1;
            continue;
        }
        uint64_t run = k - run_start + 1;
        if (run > SEARCH_PROBE_MAX)
            goto done;
        if (run > longest)
            longest = run;
        uint64_t id = slot - 1;
        const char *s = ix->arena + ix->term_off[id];
        size_t n = ix->term_off[id + 1] - ix->term_off[id];
        uint64_t home = hash_bytes(h->hash_seed, s, n) & mask;
        if (((at - home) & mask) >= run)
            goto done;
    }
    ix->probe_max = longest + 1;
    rc = 0;
done:
    free(seen);
    return rc;
}

int search_load(const void *map, size_t len, const ingest_doc *docs, size_t n_docs,
                search_index **out, char *err, size_t errlen)
{
    *out = NULL;
    search_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *p = map;
    uint64_t input_bytes = 0;
    for (size_t i = 0; i < n_docs; i++)
        input_bytes += docs[i].data ? docs[i].len : 0;
    if (len < sizeof ix->h)
        goto bad;
    memcpy(&ix->h, p, sizeof ix->h);
    const index_header *h = &ix->h;
    /* Every count is bounded by the input: a chunk per byte (or per empty
     * document), distinct terms and postings no more than its bytes. */
    if (memcmp(h->magic, INDEX_MAGIC, sizeof h->magic) != 0 || h->version != INDEX_VERSION ||
        h->n_docs != n_docs || h->n_chunks > input_bytes + n_docs ||
        h->n_chunks > UINT32_MAX - 1 || h->arena_len > input_bytes || h->n_terms > h->arena_len ||
        h->n_postings > input_bytes || h->table_size != table_size_for(h->n_terms))
        goto bad;
    /* point each array into the mapping, checking it fits */
    void **ptrs[10] = {(void **)&ix->chunk_doc,  (void **)&ix->chunk_off, (void **)&ix->chunk_len,
                       (void **)&ix->chunk_tokens, (void **)&ix->table,    (void **)&ix->term_off,
                       (void **)&ix->arena,      (void **)&ix->post_start, (void **)&ix->post_chunk,
                       (void **)&ix->post_tf};
    section s[10];
    sections_of(ix, s);
    size_t at = sizeof ix->h;
    for (size_t i = 0; i < 10; i++) {
        if (s[i].bytes > len - at)
            goto bad;
        *ptrs[i] = (void *)(p + at);
        at += s[i].bytes + (8 - s[i].bytes % 8) % 8;
        if (at > len)
            goto bad;
    }
    if (at != len || check_chunks(ix, docs, n_docs) != 0 || check_terms(ix) != 0 ||
        check_postings(ix) != 0 || check_table(ix) != 0)
        goto bad;
    *out = ix;
    return 0;
bad:
    snprintf(err, errlen, "the saved search index is damaged or does not match the input");
    free(ix);
    return -1;
}

/* A loaded index owns the mapping of its cache file: it is kept in a
 * wrapper so search_free can release it. */
typedef struct cached_index {
    search_index ix;   /* first, so a search_index * is a cached_index * */
    void *map;
    size_t map_len;
} cached_index;

/* Maps fd and loads the index in it; the index owns the mapping. */
static int load_fd(int fd, const ingest_doc *docs, size_t n_docs, search_index **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        snprintf(err, errlen, "the saved search index is not a file with data");
        return -1;
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the saved search index: %s", strerror(errno));
        return -1;
    }
    search_index *loaded;
    if (search_load(map, len, docs, n_docs, &loaded, err, errlen) != 0) {
        munmap(map, len);
        return -1;
    }
    cached_index *ci = realloc(loaded, sizeof *ci);
    if (!ci) {
        free(loaded);
        munmap(map, len);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ci->ix.owned = 2;
    ci->map = map;
    ci->map_len = len;
    *out = &ci->ix;
    return 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Removes what earlier runs left in the cache directory: indexes of the
 * format that stored the sandbox's bytes (search-*.idx and their
 * temporaries), and our temporary files untouched for an hour (a run
 * killed while writing one). */
static void sweep_cache_dir(const char *cache_dir)
{
    DIR *dir = opendir(cache_dir);
    if (!dir)
        return;
    time_t now = time(NULL);
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        const char *name = entry->d_name;
        int legacy = strncmp(name, LEGACY_PREFIX, strlen(LEGACY_PREFIX)) == 0 &&
                     (has_suffix(name, ".idx") || has_suffix(name, ".tmp"));
        int ours_tmp = strncmp(name, CACHE_PREFIX, strlen(CACHE_PREFIX)) == 0 &&
                       has_suffix(name, ".tmp");
        struct stat st;
        if ((!legacy && !ours_tmp) ||
            fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (legacy || now - st.st_mtime > STALE_TMP_SECONDS)
            unlinkat(dirfd(dir), name, 0);
    }
    closedir(dir);
}

/* Writes ix to path through an unnamed file linked into place when
 * complete. Returns a read-only descriptor of what was written (served even
 * when it could not be linked), or -1 with errno EOPNOTSUPP when the named
 * fallback should be tried (no O_TMPFILE here, or no /proc to link
 * through), another errno from open, or EIO with err set. */
static int store_unnamed(const search_index *ix, const char *cache_dir, const char *path,
                         char *err, size_t errlen)
{
    int fd = open(cache_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EISDIR || errno == EINVAL)
            errno = EOPNOTSUPP; /* kernels or file systems without O_TMPFILE */
        return -1;
    }
    if (search_save(ix, fd, err, errlen) != 0) {
        close(fd);
        errno = EIO;
        return -1;
    }
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    /* A file already there failed validation and was removed, or another
     * run stored the same index meanwhile: ours is as good. */
    int linked = linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0;
    if (!linked && errno == EEXIST && unlink(path) == 0)
        linked = linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0;
    int ro = open(self, O_RDONLY | O_CLOEXEC);
    if (ro < 0 && linked)
        ro = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    close(fd);
    if (ro < 0)
        errno = linked ? EIO : EOPNOTSUPP;
    if (ro < 0 && linked)
        snprintf(err, errlen, "cannot reopen the stored search index: %s", strerror(errno));
    return ro;
}

/* Writes ix to path through a temporary name renamed into place (file
 * systems without O_TMPFILE). Returns a read-only descriptor, or -1. */
static int store_named(const search_index *ix, const char *path, char *err, size_t errlen)
{
    char tmp[4200];
    uint32_t tag = (uint32_t)random_seed();
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.%08x.tmp", path, (long)getpid(), tag) >=
        sizeof tmp) {
        snprintf(err, errlen, "the search cache path is too long");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write the search cache: %s", strerror(errno));
        return -1;
    }
    int ok = search_save(ix, fd, err, errlen) == 0;
    if (close(fd) != 0 && ok) {
        snprintf(err, errlen, "cannot write the search cache: %s", strerror(errno));
        ok = 0;
    }
    if (ok && rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot store the search index: %s", strerror(errno));
        ok = 0;
    }
    if (!ok) {
        unlink(tmp);
        return -1;
    }
    int ro = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (ro < 0)
        snprintf(err, errlen, "cannot reopen the stored search index: %s", strerror(errno));
    return ro;
}

/* 1 when fd holds a valid index of docs. */
static int cache_file_valid(int fd, const ingest_doc *docs, size_t n_docs)
{
    search_index *ix;
    char ignored[256];
    if (load_fd(fd, docs, n_docs, &ix, ignored, sizeof ignored) != 0)
        return 0;
    search_free(ix);
    return 1;
}

int search_cache_fd(const char *cache_dir, const ingest_doc *docs, size_t n_docs,
                     size_t chunk_chars, const atomic_int *stop, int *built, char *err,
                     size_t errlen)
{
    *built = 0;
    if (!chunk_chars)
        chunk_chars = DEFAULT_CHUNK_CHARS;
    char key[33], path[4096];
    search_content_key(docs, n_docs, chunk_chars, key);
    if ((size_t)snprintf(path, sizeof path, "%s/" CACHE_PREFIX "%s.idx", cache_dir, key) >=
        sizeof path) {
        snprintf(err, errlen, "the search cache path is too long");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd >= 0) {
        if (cache_file_valid(fd, docs, n_docs))
            return fd;
        close(fd);
        unlink(path);
    }
    search_index *ix;
    if (search_build(docs, n_docs, chunk_chars, 0, stop, &ix, err, errlen) != 0)
        return -1;
    if (dir_make_all(cache_dir) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", cache_dir, strerror(errno));
        search_free(ix);
        return -1;
    }
    sweep_cache_dir(cache_dir);
    fd = store_unnamed(ix, cache_dir, path, err, errlen);
    if (fd < 0 && errno == EOPNOTSUPP)
        fd = store_named(ix, path, err, errlen);
    else if (fd < 0 && errno != EIO)
        snprintf(err, errlen, "cannot write the search cache in %s: %s", cache_dir,
                 strerror(errno));
    search_free(ix);
    *built = fd >= 0;
    return fd;
}

int search_open_cached(const char *cache_dir, const ingest_doc *docs, size_t n_docs,
                       size_t chunk_chars, search_index **out, int *from_cache, char *err,
                       size_t errlen)
{
    *out = NULL;
    *from_cache = 0;
    if (cache_dir) {
        int built;
        char why[256];
        int fd = search_cache_fd(cache_dir, docs, n_docs, chunk_chars, NULL, &built, why,
                                 sizeof why);
        if (fd >= 0) {
            int rc = load_fd(fd, docs, n_docs, out, why, sizeof why);
            close(fd);
            if (rc == 0) {
                *from_cache = !built;
                return 0;
            }
        }
    }
    return search_build(docs, n_docs, chunk_chars ? chunk_chars : DEFAULT_CHUNK_CHARS, 0, NULL,
                        out, err, errlen);
}

static void cached_release(search_index *ix)
{
    cached_index *ci = (cached_index *)ix;
    munmap(ci->map, ci->map_len);
    free(ci);
}
