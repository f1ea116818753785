/* Unit tests for search.c: BM25 ranking (rare terms beat common ones, tf
 * and length matter, case folding), top-k order, the content key, saving
 * and mapping an index back, the on-disk cache, damaged cache files, and
 * poisoned ones: every way a planted index could hang a lookup, read out
 * of bounds or rank chosen chunks first is refused when it is loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "search.h"

static ingest_doc doc(const char *name, const char *text)
{
    return (ingest_doc){.name = name, .data = text, .len = strlen(text)};
}

static ingest_doc corpus[5];

static int setup(void **state)
{
    corpus[0] = doc("cats", "The cat sat on the mat. Cats purr.");
    corpus[1] = doc("dogs", "The dog barked at the mailman. Dogs bark loudly.");
    corpus[2] = doc("both", "A cat and a dog met the zebra.");
    corpus[3] = doc("empty", "");
    corpus[4] = doc("many", "cat cat cat cat the the the the the the the the the the the the");
    return 0;
}

static void test_ranking(void **state)
{
    search_index *ix;
    char err[256];
    assert_int_equal(search_build(corpus, 5, 1000, 0, NULL, &ix, err, sizeof err), 0);
    assert_int_equal(search_chunk_count(ix), 5);
    search_hit hits[10];
    size_t n;
    assert_int_equal(search_query(ix, "ZEBRA", 5, 10, hits, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hits[0].doc, 2);
    assert_true(hits[0].score > 0);
    const char q[] = "cat zebra";
    assert_int_equal(search_query(ix, q, strlen(q), 10, hits, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(hits[0].doc, 2);   /* the rare term decides */
    for (size_t i = 1; i < n; i++)
        assert_true(hits[i - 1].score >= hits[i].score);
    assert_int_equal(search_query(ix, q, strlen(q), 1, hits, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hits[0].doc, 2);
    assert_int_equal(search_query(ix, "nothing here", 12, 10, hits, &n), 0);
    assert_int_equal(n, 0);
    search_free(ix);
}

static void test_long_documents_are_chunked(void **state)
{
    size_t len = 200000;
    char *text = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        text[i] = i % 50 == 49 ? '\n' : 'a' + (char)(i % 7);
    memcpy(text + 150000, " needle ", 8);
    text[len] = '\0';
    ingest_doc d = {.name = "long", .data = text, .len = len};
    search_index *ix;
    char err[256];
    assert_int_equal(search_build(&d, 1, 1000, 0, NULL, &ix, err, sizeof err), 0);
    assert_true(search_chunk_count(ix) >= 200);
    search_hit hit;
    size_t n;
    assert_int_equal(search_query(ix, "needle", 6, 1, &hit, &n), 0);
    assert_int_equal(n, 1);
    assert_true(hit.off <= 150000 && hit.off + hit.len >= 150008);
    search_free(ix);
    assert_int_equal(search_build(&d, 1, 1000, 10, NULL, &ix, err, sizeof err), -1);
    free(text);
}

static void test_save_load_and_cache(void **state)
{
    char key1[33], key2[33];
    search_content_key(corpus, 5, 1000, key1);
    search_content_key(corpus, 5, 2000, key2);
    assert_int_equal(strlen(key1), 32);
    assert_string_not_equal(key1, key2);
    ingest_doc changed[5];
    memcpy(changed, corpus, sizeof changed);
    changed[1] = doc("dogs", "The dog barked at the mailman. Dogs bark loudlY.");
    search_content_key(changed, 5, 1000, key2);
    assert_string_not_equal(key1, key2);

    char dir[] = "/tmp/rlm-search-XXXXXX";
    assert_non_null(mkdtemp(dir));
    search_index *ix;
    int from_cache;
    char err[256];
    assert_int_equal(search_open_cached(dir, corpus, 5, 1000, &ix, &from_cache, err, sizeof err), 0);
    assert_false(from_cache);
    search_hit a[5], b[5];
    size_t na, nb;
    assert_int_equal(search_query(ix, "the cat", 7, 5, a, &na), 0);
    search_free(ix);
    assert_int_equal(search_open_cached(dir, corpus, 5, 1000, &ix, &from_cache, err, sizeof err), 0);
    assert_true(from_cache);
    assert_int_equal(search_term_count(ix) > 10, 1);
    assert_int_equal(search_query(ix, "the cat", 7, 5, b, &nb), 0);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_int_equal(a[i].chunk, b[i].chunk);
        assert_true(a[i].score == b[i].score);
    }
    search_free(ix);

    /* a damaged cache file is rebuilt, not trusted */
    char path[128];
    snprintf(path, sizeof path, "%s/bm25-%s.idx", dir, key1);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, sizeof(uint64_t) * 6), 8);
    close(fd);
    assert_int_equal(search_open_cached(dir, corpus, 5, 1000, &ix, &from_cache, err, sizeof err), 0);
    assert_false(from_cache);
    search_free(ix);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    void *map = malloc((size_t)st.st_size);
    fd = open(path, O_RDONLY);
    assert_int_equal(read(fd, map, (size_t)st.st_size), st.st_size);
    close(fd);
    /* truncated, and for other documents: refused */
    assert_int_equal(search_load(map, (size_t)st.st_size / 2, corpus, 5, &ix, err, sizeof err), -1);
    assert_int_equal(search_load(map, (size_t)st.st_size, corpus, 4, &ix, err, sizeof err), -1);
    assert_int_equal(search_load(map, (size_t)st.st_size, corpus, 5, &ix, err, sizeof err), 0);
    search_free(ix);
    free(map);
    unlink(path);
    rmdir(dir);
}

/* ---- poisoned indexes ---- */

/* The saved layout (search.c): the header, then ten arrays, each padded
 * to a multiple of 8. */
typedef struct saved_header {
    char magic[8];
    uint64_t version, chunk_chars;
    uint64_t n_docs, n_chunks, n_terms, n_postings, table_size, arena_len;
    uint64_t hash_seed;
    double avg_len;
} saved_header;

enum { S_CHUNK_DOC, S_CHUNK_OFF, S_CHUNK_LEN, S_CHUNK_TOKENS, S_TABLE, S_TERM_OFF, S_ARENA,
       S_POST_START, S_POST_CHUNK, S_POST_TF };

typedef struct saved {
    char *buf;
    size_t len;
    saved_header *h;
    size_t at[10];
} saved;

static size_t pad8(size_t n) { return n + (8 - n % 8) % 8; }

/* The index of docs as saved, with where each array starts. */
static saved save_of(const ingest_doc *docs, size_t n)
{
    search_index *ix;
    char err[256];
    assert_int_equal(search_build(docs, n, 1000, 0, NULL, &ix, err, sizeof err), 0);
    char path[] = "/tmp/rlm-search-save-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(search_save(ix, fd, err, sizeof err), 0);
    search_free(ix);
    saved sv = {0};
    sv.len = (size_t)lseek(fd, 0, SEEK_END);
    sv.buf = aligned_alloc(8, pad8(sv.len));
    assert_int_equal(pread(fd, sv.buf, sv.len, 0), (ssize_t)sv.len);
    close(fd);
    sv.h = (saved_header *)sv.buf;
    const saved_header *h = sv.h;
    size_t bytes[10] = {h->n_chunks * 4, h->n_chunks * 8, h->n_chunks * 8, h->n_chunks * 4,
                        h->table_size * 4, (h->n_terms + 1) * 8, h->arena_len,
                        (h->n_terms + 1) * 8, h->n_postings * 4, h->n_postings * 2};
    size_t at = sizeof *h;
    for (int i = 0; i < 10; i++) {
        sv.at[i] = at;
        at += pad8(bytes[i]);
    }
    assert_int_equal(at, sv.len);
    return sv;
}

#define ARRAY(sv, which, type) ((type *)((sv).buf + (sv).at[which]))

static int loads_len(const saved *sv, size_t len, const ingest_doc *docs, size_t n)
{
    search_index *ix;
    char err[256];
    if (search_load(sv->buf, len, docs, n, &ix, err, sizeof err) != 0)
        return 0;
    search_free(ix);
    return 1;
}

static int loads(const saved *sv, const ingest_doc *docs, size_t n)
{
    return loads_len(sv, sv->len, docs, n);
}

/* The term id of `word` in a saved index, by scanning the arena. */
static uint64_t term_id(const saved *sv, const char *word)
{
    const uint64_t *off = ARRAY(*sv, S_TERM_OFF, uint64_t);
    const char *arena = ARRAY(*sv, S_ARENA, char);
    for (uint64_t t = 0; t < sv->h->n_terms; t++)
        if (off[t + 1] - off[t] == strlen(word) && !memcmp(arena + off[t], word, strlen(word)))
            return t;
    fail_msg("no term %s", word);
    return 0;
}

static void test_poisoned_indexes_are_refused(void **state)
{
    saved good = save_of(corpus, 5);
    assert_true(loads(&good, corpus, 5));
    saved sv = good;
    sv.buf = aligned_alloc(8, pad8(good.len));
    sv.h = (saved_header *)sv.buf;
#define RESET() memcpy(sv.buf, good.buf, good.len)

    /* a full table: no empty slot would end a probe */
    RESET();
    uint32_t *table = ARRAY(sv, S_TABLE, uint32_t);
    for (uint64_t i = 0; i < sv.h->table_size; i++)
        if (!table[i])
            table[i] = 1;
    assert_false(loads(&sv, corpus, 5));
    /* a term moved away from where its hash puts it (behind an empty slot) */
    RESET();
    uint64_t from = 0;
    while (!table[from])
        from++;
    uint64_t to = (from + sv.h->table_size / 2) % sv.h->table_size;
    while (table[to] || table[(to + sv.h->table_size - 1) % sv.h->table_size])
        to = (to + 7) % sv.h->table_size;
    table[to] = table[from];
    table[from] = 0;
    assert_false(loads(&sv, corpus, 5));
    /* a term twice, a term missing, an id out of range */
    RESET();
    table[to] = table[from];
    assert_false(loads(&sv, corpus, 5));
    RESET();
    table[from] = 0;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    table[from] = (uint32_t)sv.h->n_terms + 1;
    assert_false(loads(&sv, corpus, 5));
    /* a table of another size than the term count gives */
    RESET();
    sv.h->table_size *= 2;
    assert_false(loads(&sv, corpus, 5));

    /* ranking a chosen chunk first: "zebra" is only in chunk 2; claiming
     * it for chunk 0, or a higher tf, or a shorter chunk, breaks the sums */
    uint64_t zebra = term_id(&good, "zebra");
    uint64_t at = ARRAY(good, S_POST_START, uint64_t)[zebra];
    RESET();
    ARRAY(sv, S_POST_CHUNK, uint32_t)[at] = 0;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_POST_TF, uint16_t)[at] = 50;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_CHUNK_TOKENS, uint32_t)[2] = 1;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_POST_TF, uint16_t)[at] = 0;
    assert_false(loads(&sv, corpus, 5));
    /* postings out of order, and pointing past the chunks */
    uint64_t the = term_id(&good, "the");
    at = ARRAY(good, S_POST_START, uint64_t)[the];
    RESET();
    uint32_t *pc = ARRAY(sv, S_POST_CHUNK, uint32_t);
    uint32_t swap = pc[at];
    pc[at] = pc[at + 1];
    pc[at + 1] = swap;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_POST_CHUNK, uint32_t)[at] = 99;
    assert_false(loads(&sv, corpus, 5));
    /* chunks outside their document, overlapping, more than the input has */
    RESET();
    ARRAY(sv, S_CHUNK_LEN, uint64_t)[1] = 1000;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_CHUNK_DOC, uint32_t)[1] = 0;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    sv.h->n_chunks = 1u << 30;
    assert_false(loads(&sv, corpus, 5));
    /* a term no query can produce, an empty term, an over-long one */
    RESET();
    ARRAY(sv, S_ARENA, char)[0] = 'A';
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_ARENA, char)[0] = ' ';
    assert_false(loads(&sv, corpus, 5));
    RESET();
    ARRAY(sv, S_TERM_OFF, uint64_t)[1] = 0;
    assert_false(loads(&sv, corpus, 5));
    /* counts beyond the input, bytes after the last array */
    RESET();
    sv.h->n_postings = (uint64_t)1 << 40;
    assert_false(loads(&sv, corpus, 5));
    RESET();
    assert_false(loads_len(&sv, sv.len - 8, corpus, 5));
    for (size_t len = 0; len < sv.at[S_TABLE]; len++)
        assert_false(loads_len(&sv, len, corpus, 5));
    /* a stored average length is not believed: the scores are the honest ones */
    RESET();
    sv.h->avg_len = 1e-300;
    search_index *ix, *honest;
    char err[256];
    assert_int_equal(search_load(sv.buf, sv.len, corpus, 5, &ix, err, sizeof err), 0);
    assert_int_equal(search_load(good.buf, good.len, corpus, 5, &honest, err, sizeof err), 0);
    search_hit a[5], b[5];
    size_t na, nb;
    assert_int_equal(search_query(ix, "cat the", 7, 5, a, &na), 0);
    assert_int_equal(search_query(honest, "cat the", 7, 5, b, &nb), 0);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_true(a[i].chunk == b[i].chunk && a[i].score == b[i].score);
    search_free(ix);
    search_free(honest);

    /* Random damage: every load either fails or gives an index whose
     * queries end (AddressSanitizer checks they stay in bounds). */
    unsigned seed = 12345;
    size_t accepted = 0;
    for (int round = 0; round < 3000; round++) {
        RESET();
        for (int k = 0; k < 1 + round % 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 4) % sv.len;
            /* most of the file is the term table: aim half the hits at the rest */
            if (round % 2 && sv.at[S_TABLE] + sv.h->table_size * 4 < sv.len)
                pos = sv.at[S_TERM_OFF] + (seed >> 8) % (sv.len - sv.at[S_TERM_OFF]);
            if (pos < sv.at[S_TABLE])
                pos = (seed >> 8) % sv.at[S_TABLE];
            sv.buf[pos] ^= (char)(1 + (seed >> 16) % 255);
        }
        if (search_load(sv.buf, sv.len, corpus, 5, &ix, err, sizeof err) == 0) {
            accepted++;
            search_hit hits[5];
            size_t n;
            search_query(ix, "cat zebra the dog mailman nothing", 33, 5, hits, &n);
            search_free(ix);
        }
    }
    print_message("random damage: %zu of 3000 damaged indexes still loaded\n", accepted);
#undef RESET
    free(sv.buf);
    free(good.buf);
}

/* ---- the host's cache ---- */

static size_t count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void touch(const char *dir, const char *name, time_t age)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "planted", 7), 7);
    struct timespec times[2] = {{time(NULL) - age, 0}, {time(NULL) - age, 0}};
    assert_int_equal(futimens(fd, times), 0);
    close(fd);
}

static void test_cache_files(void **state)
{
    char dir[] = "/tmp/rlm-search-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char key[33], path[256], err[256];
    search_content_key(corpus, 5, 1000, key);
    snprintf(path, sizeof path, "%s/bm25-%s.idx", dir, key);
    /* what earlier versions stored for the sandbox (and a killed run's
     * temporaries) is removed; a fresh temporary file is someone's write */
    touch(dir, "search-0123456789abcdef0123456789abcdef.idx", 0);
    touch(dir, "search-0123456789abcdef0123456789abcdef.idx.77.tmp", 0);
    touch(dir, "bm25-0123456789abcdef0123456789abcdef.idx.77.0000.tmp", 7200);
    touch(dir, "bm25-0123456789abcdef0123456789abcdef.idx.78.0000.tmp", 10);
    touch(dir, "responses.db", 7200);
    int built;
    int fd = search_cache_fd(dir, corpus, 5, 1000, NULL, &built, err, sizeof err);
    assert_true(fd >= 0);
    assert_true(built);
    assert_int_equal(count_files(dir, "search-"), 0);
    assert_int_equal(count_files(dir, "bm25-"), 2); /* ours, and the fresh temporary */
    assert_int_equal(count_files(dir, "responses.db"), 1);
    /* read-only: whoever gets the descriptor cannot change the file */
    assert_int_equal(write(fd, "x", 1), -1);
    assert_int_equal(errno, EBADF);
    struct stat first, again;
    assert_int_equal(fstat(fd, &first), 0);
    close(fd);
    fd = search_cache_fd(dir, corpus, 5, 1000, NULL, &built, err, sizeof err);
    assert_true(fd >= 0);
    assert_false(built);
    assert_int_equal(fstat(fd, &again), 0);
    assert_true(first.st_ino == again.st_ino);
    close(fd);

    /* a damaged file, a symbolic link, a FIFO in its place: rebuilt */
    fd = open(path, O_WRONLY);
    assert_int_equal(pwrite(fd, "\xff\xff\xff\xff", 4, 200), 4);
    close(fd);
    fd = search_cache_fd(dir, corpus, 5, 1000, NULL, &built, err, sizeof err);
    assert_true(fd >= 0 && built);
    close(fd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink("/dev/zero", path), 0);
    fd = search_cache_fd(dir, corpus, 5, 1000, NULL, &built, err, sizeof err);
    assert_true(fd >= 0 && built);
    close(fd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    fd = search_cache_fd(dir, corpus, 5, 1000, NULL, &built, err, sizeof err);
    assert_true(fd >= 0 && built);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    close(fd);

    /* a stopped build stores nothing */
    assert_int_equal(unlink(path), 0);
    atomic_int stop;
    atomic_init(&stop, 1);
    assert_int_equal(search_cache_fd(dir, corpus, 5, 1000, &stop, &built, err, sizeof err), -1);
    assert_non_null(strstr(err, "stopped"));
    assert_int_equal(count_files(dir, "bm25-"), 1); /* the fresh temporary only */
    /* a directory that cannot be written: an error, not a crash */
    assert_int_equal(search_cache_fd("/proc/rlm-no-such-dir", corpus, 5, 1000, NULL, &built, err,
                                     sizeof err), -1);
    assert_true(err[0] != '\0');

    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            char p[600];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranking),
        cmocka_unit_test(test_long_documents_are_chunked),
        cmocka_unit_test(test_save_load_and_cache),
        cmocka_unit_test(test_poisoned_indexes_are_refused),
        cmocka_unit_test(test_cache_files),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
