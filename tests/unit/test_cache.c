/* Unit tests for cache: SHA-256 keys, store and fetch in a temp directory,
 * replacing an entry, two handles on one file, and a corrupt file refused
 * with a message (callers then run without the cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"

static char *make_dir(void)
{
    char tmpl[] = "/tmp/rlm-test-cache-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void remove_dir(const char *dir)
{
    static const char *files[] = {"cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm"};
    static const char *places[] = {"", "/sub/deeper"};
    char path[512];
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s%s/%s", dir, places[p], files[i]);
            unlink(path);
        }
    }
    snprintf(path, sizeof path, "%s/sub/deeper", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

static void test_hash_known_vectors(void **state)
{
    char key[CACHE_KEY_LEN];
    assert_int_equal(cache_hash("", 0, key), 0);
    assert_string_equal(key, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(cache_hash("abc", 3, key), 0);
    assert_string_equal(key, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* Parts are length-prefixed: where one ends is part of the identity. */
static void test_hash_parts(void **state)
{
    char a[CACHE_KEY_LEN], b[CACHE_KEY_LEN], c[CACHE_KEY_LEN];
    const void *ab_c[] = {"ab", "c"}, *a_bc[] = {"a", "bc"};
    size_t l21[] = {2, 1}, l12[] = {1, 2};
    assert_int_equal(cache_hash_parts(ab_c, l21, 2, a), 0);
    assert_int_equal(cache_hash_parts(a_bc, l12, 2, b), 0);
    assert_int_equal(cache_hash_parts(ab_c, l21, 2, c), 0);
    assert_string_not_equal(a, b);
    assert_string_equal(a, c);
    assert_int_equal(strlen(a), 64);
    /* Bytes past a NUL count: a part is its length, not a C string. */
    const void *nul[] = {"x\0y"}, *nul2[] = {"x\0z"};
    size_t l3[] = {3};
    assert_int_equal(cache_hash_parts(nul, l3, 1, a), 0);
    assert_int_equal(cache_hash_parts(nul2, l3, 1, b), 0);
    assert_string_not_equal(a, b);
}

static void test_put_get_replace(void **state)
{
    char *dir = make_dir();
    char sub[512];
    snprintf(sub, sizeof sub, "%s/sub/deeper", dir);
    char err[512];
    cache *c = cache_open(sub, err, sizeof err);
    assert_non_null(c);
    cache_entry e;
    assert_int_equal(cache_get(c, "k1", &e, err, sizeof err), 0);
    cache_entry in = {.content = "the answer", .reasoning = NULL, .finish_reason = "stop",
                      .prompt_tokens = 12, .completion_tokens = 3};
    assert_int_equal(cache_put(c, "k1", &in, err, sizeof err), 0);
    assert_int_equal(cache_get(c, "k1", &e, err, sizeof err), 1);
    assert_string_equal(e.content, "the answer");
    assert_null(e.reasoning);
    assert_string_equal(e.finish_reason, "stop");
    assert_int_equal(e.prompt_tokens, 12);
    assert_int_equal(e.completion_tokens, 3);
    cache_entry_clear(&e);
    cache_entry in2 = {.content = "newer", .reasoning = "thought", .prompt_tokens = -1, .completion_tokens = -1};
    assert_int_equal(cache_put(c, "k1", &in2, err, sizeof err), 0);

    /* A second handle (another process in real life) sees the same rows. */
    cache *c2 = cache_open(sub, err, sizeof err);
    assert_non_null(c2);
    assert_int_equal(cache_get(c2, "k1", &e, err, sizeof err), 1);
    assert_string_equal(e.content, "newer");
    assert_string_equal(e.reasoning, "thought");
    assert_null(e.finish_reason);
    assert_int_equal(e.prompt_tokens, -1);
    cache_entry_clear(&e);
    assert_int_equal(cache_put(c2, "k2", &in, err, sizeof err), 0);
    assert_int_equal(cache_get(c, "k2", &e, err, sizeof err), 1);
    cache_entry_clear(&e);
    /* a reply with NUL bytes is stored and read back whole */
    cache_entry nul = {.content = "a\0b", .content_len = 3, .prompt_tokens = -1,
                       .completion_tokens = -1};
    assert_int_equal(cache_put(c, "k3", &nul, err, sizeof err), 0);
    assert_int_equal(cache_get(c2, "k3", &e, err, sizeof err), 1);
    assert_int_equal(e.content_len, 3);
    assert_memory_equal(e.content, "a\0b", 3);
    cache_entry_clear(&e);
    cache_close(c2);
    cache_close(c);
    cache_close(NULL);
    remove_dir(dir);
    free(dir);
}

static void test_corrupt_file_and_bad_dir(void **state)
{
    char *dir = make_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/cache.sqlite", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database, just some bytes\n", f);
    fclose(f);
    char err[512] = "";
    assert_null(cache_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "unusable"));
    /* A file where the directory should be. */
    assert_null(cache_open(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot create cache directory"));
    remove_dir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_known_vectors),
        cmocka_unit_test(test_hash_parts),
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_corrupt_file_and_bad_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
