/* Unit tests for chunks.c: by lines (whole lines, overlap in whole lines, a
 * line longer than max_chars cut), by chars on UTF-8 boundaries with
 * overlap, by docs, and the argument errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "chunks.h"

static ingest_doc doc(const char *name, const char *text)
{
    return (ingest_doc){.name = name, .data = text, .len = strlen(text)};
}

static void test_by_lines(void **state)
{
    ingest_doc d = doc("a", "aaaa\nbbbb\ncccc\ndddd\n");
    chunk_list l = {0};
    char err[128];
    assert_int_equal(chunks_split(&d, 1, 10, 0, CHUNKS_BY_LINES, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].off, 0);
    assert_int_equal(l.items[0].len, 10);
    assert_int_equal(l.items[1].off, 10);
    assert_int_equal(l.items[1].len, 10);
    chunk_list_free(&l);
    /* overlap of 5 characters: the last whole line of a chunk starts the next */
    assert_int_equal(chunks_split(&d, 1, 10, 5, CHUNKS_BY_LINES, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.items[1].off, 5);
    assert_int_equal(l.items[2].off, 10);
    assert_int_equal(l.items[2].len, 10);
    chunk_list_free(&l);
    /* a line alone longer than max_chars is cut, the rest stays whole */
    ingest_doc longer = doc("b", "0123456789abcdef\nxy\n");
    assert_int_equal(chunks_split(&longer, 1, 8, 0, CHUNKS_BY_LINES, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.items[0].len, 8);
    assert_int_equal(l.items[1].off, 8);
    assert_int_equal(l.items[1].len, 8);
    assert_int_equal(l.items[2].off, 16);
    assert_int_equal(l.items[2].len, 4);   /* "\nxy\n" */
    chunk_list_free(&l);
}

static void test_by_chars_utf8_and_overlap(void **state)
{
    /* five two-byte characters */
    ingest_doc d = doc("u", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    chunk_list l = {0};
    char err[128];
    assert_int_equal(chunks_split(&d, 1, 2, 0, CHUNKS_BY_CHARS, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.items[0].len, 4);
    assert_int_equal(l.items[0].chars, 2);
    assert_int_equal(l.items[2].off, 8);
    assert_int_equal(l.items[2].len, 2);
    chunk_list_free(&l);
    assert_int_equal(chunks_split(&d, 1, 3, 1, CHUNKS_BY_CHARS, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[1].off, 4);   /* starts one character before the first's end */
    assert_int_equal(l.items[1].chars, 3);
    chunk_list_free(&l);
}

static void test_by_docs_and_errors(void **state)
{
    ingest_doc d[3] = {doc("small", "tiny\n"), doc("empty", ""), doc("big", "line one\nline two\n")};
    chunk_list l = {0};
    char err[128];
    assert_int_equal(chunks_split(d, 3, 10, 0, CHUNKS_BY_DOCS, 100, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.items[0].doc, 0);
    assert_int_equal(l.items[1].doc, 1);
    assert_int_equal(l.items[1].len, 0);
    assert_int_equal(l.items[2].doc, 2);
    assert_int_equal(l.items[2].len, 9);
    assert_int_equal(l.items[3].off, 9);
    chunk_list_free(&l);
    assert_int_equal(chunks_split(d, 3, 0, 0, CHUNKS_BY_LINES, 100, &l, err, sizeof err), -1);
    assert_int_equal(chunks_split(d, 3, 5, 5, CHUNKS_BY_LINES, 100, &l, err, sizeof err), -1);
    assert_int_equal(chunks_split(d, 3, 1, 0, CHUNKS_BY_CHARS, 4, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than 4 chunks"));
    chunk_list_free(&l);
    chunks_by by;
    assert_int_equal(chunks_parse_by("docs", &by), 0);
    assert_int_equal(by, CHUNKS_BY_DOCS);
    assert_int_equal(chunks_parse_by("words", &by), -1);
}

static void test_large_covers_everything(void **state)
{
    size_t len = 1 << 20;
    char *text = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        text[i] = i % 61 == 60 ? '\n' : 'a' + (char)(i % 26);
    text[len] = '\0';
    ingest_doc d = {.name = "big", .data = text, .len = len};
    chunk_list l = {0};
    char err[128];
    assert_int_equal(chunks_split(&d, 1, 1000, 0, CHUNKS_BY_LINES, 1 << 20, &l, err, sizeof err), 0);
    size_t next = 0;
    for (size_t i = 0; i < l.n; i++) {
        assert_int_equal(l.items[i].off, next);
        assert_true(l.items[i].chars <= 1000);
        next += l.items[i].len;
        if (next < len)
            assert_int_equal(text[next - 1], '\n');
    }
    assert_int_equal(next, len);
    chunk_list_free(&l);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_by_lines),
        cmocka_unit_test(test_by_chars_utf8_and_overlap),
        cmocka_unit_test(test_by_docs_and_errors),
        cmocka_unit_test(test_large_covers_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
