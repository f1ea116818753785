/* Unit tests for search.c: BM25 ranking (rare terms beat common ones, tf
 * and length matter, case folding), top-k order, the content key, saving
 * and mapping an index back, the on-disk cache, and damaged cache files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
    assert_int_equal(search_build(corpus, 5, 1000, 0, &ix, err, sizeof err), 0);
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
    assert_int_equal(search_build(&d, 1, 1000, 0, &ix, err, sizeof err), 0);
    assert_true(search_chunk_count(ix) >= 200);
    search_hit hit;
    size_t n;
    assert_int_equal(search_query(ix, "needle", 6, 1, &hit, &n), 0);
    assert_int_equal(n, 1);
    assert_true(hit.off <= 150000 && hit.off + hit.len >= 150008);
    search_free(ix);
    assert_int_equal(search_build(&d, 1, 1000, 10, &ix, err, sizeof err), -1);
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
    snprintf(path, sizeof path, "%s/search-%s.idx", dir, key1);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranking),
        cmocka_unit_test(test_long_documents_are_chunked),
        cmocka_unit_test(test_save_load_and_cache),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
