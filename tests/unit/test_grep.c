/* Unit tests for grep.c: hits with names, line numbers, byte and character
 * offsets and lines; flags; empty matches; max_hits; one document; invalid
 * UTF-8 in the subject; a pattern that does not compile and one that hits
 * the match limit (errors with PCRE2's message, never a crash). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "grep.h"

static ingest_doc doc(const char *name, const char *text)
{
    return (ingest_doc){.name = name, .data = text, .len = strlen(text)};
}

static void test_hits_carry_positions(void **state)
{
    ingest_doc d[2] = {doc("a.txt", "first line\nsecond ERROR 42\n\xc3\xa9 ERROR 7 end"),
                       doc("b.txt", "ERROR 1\n")};
    grep *g;
    char err[256];
    assert_int_equal(grep_compile("ERROR (\\d+)", 11, "", NULL, &g, err, sizeof err), 0);
    grep_result r;
    assert_int_equal(grep_run(g, d, 2, SIZE_MAX, 100, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 3);
    assert_false(r.truncated);
    assert_string_equal(r.hits[0].name, "a.txt");
    assert_int_equal(r.hits[0].line_no, 2);
    assert_int_equal(r.hits[0].offset, 18);
    assert_int_equal(r.hits[0].match_len, 8);
    assert_int_equal(r.hits[0].line_len, strlen("second ERROR 42"));
    assert_memory_equal(r.hits[0].line, "second ERROR 42", r.hits[0].line_len);
    assert_int_equal(r.hits[1].line_no, 3);
    assert_int_equal(r.hits[1].offset, 30);
    assert_int_equal(r.hits[1].char_offset, 29);   /* é is two bytes, one character */
    assert_memory_equal(r.hits[1].line, "\xc3\xa9 ERROR 7 end", r.hits[1].line_len);
    assert_int_equal(r.hits[2].doc, 1);
    assert_int_equal(r.hits[2].line_no, 1);
    grep_result_free(&r);
    /* one document only, and max_hits */
    assert_int_equal(grep_run(g, d, 2, 1, 100, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.hits[0].name, "b.txt");
    grep_result_free(&r);
    assert_int_equal(grep_run(g, d, 2, SIZE_MAX, 2, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 2);
    assert_true(r.truncated);
    grep_result_free(&r);
    assert_int_equal(grep_run(g, d, 2, 5, 2, &r, err, sizeof err), -1);
    grep_result_free(&r);
    grep_free(g);
}

static void test_flags_and_empty_matches(void **state)
{
    ingest_doc d = doc("x", "Alpha\nbeta\nALPHA\n");
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("^alpha$", 7, "im", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.hits[1].line_no, 3);
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile("^alpha$", 7, "i", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 0);   /* without m, ^ and $ are the document's ends */
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile("a.b", 3, "s", NULL, &g, err, sizeof err), 0);
    ingest_doc nl = doc("n", "a\nb");
    assert_int_equal(grep_run(g, &nl, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile(" a  # comment\n", 14, "x", NULL, &g, err, sizeof err), 0);
    grep_free(g);
    /* empty matches step one character at a time, like finditer: 3 chars + end */
    ingest_doc e = doc("e", "\xc3\xa9xy");
    assert_int_equal(grep_compile("z*", 2, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &e, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.hits[1].offset, 2);
    grep_result_free(&r);
    grep_free(g);
    /* \w is ASCII unless u asks for Unicode classes */
    ingest_doc word = doc("w", "\xc3\xa9t\xc3\xa9");
    assert_int_equal(grep_compile("\\w+", 3, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &word, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.hits[0].match_len, 1);
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile("\\w+", 3, "u", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &word, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.hits[0].match_len, 5);
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile("a", 1, "q", NULL, &g, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown regex flag 'q'"));
}

static void test_invalid_utf8_subject(void **state)
{
    ingest_doc d = doc("bad", "ok \xff\xfe needle \xc3 end needle");
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("needle", 6, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.hits[0].offset, 6);
    grep_result_free(&r);
    grep_free(g);
}

static void test_bad_pattern_and_match_limit(void **state)
{
    grep *g = NULL;
    char err[256] = "";
    assert_int_equal(grep_compile("(unclosed", 9, "", NULL, &g, err, sizeof err), -1);
    assert_null(g);
    assert_non_null(strstr(err, "bad regex at offset 9"));
    assert_non_null(strstr(err, "missing closing parenthesis"));

    size_t len = 40;
    char *text = malloc(len + 2);
    memset(text, 'a', len);
    text[len] = 'b';
    text[len + 1] = '\0';
    ingest_doc d = {.name = "evil", .data = text, .len = len + 1};
    grep_limits limits = {.match_limit = 100000};
    assert_int_equal(grep_compile("(a+)+$", 6, "", &limits, &g, err, sizeof err), 0);
    grep_result r;
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 10, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "limit"));
    grep_result_free(&r);
    grep_free(g);
    free(text);
}

/* Line numbers and character offsets on a long mixed text, checked against
 * a byte-by-byte count (the grep walk counts sixteen bytes at a time). */
static void test_positions_on_long_text(void **state)
{
    size_t len = 100000;
    char *text = malloc(len + 1);
    static const char piece[] = "ab\xc3\xa9\n\xe2\x82\xac x\n\n";
    for (size_t i = 0; i < len; i++)
        text[i] = piece[i % (sizeof piece - 1)];
    text[len] = '\0';
    ingest_doc d = {.name = "long", .data = text, .len = len};
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("x", 1, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100000, &r, err, sizeof err), 0);
    assert_true(r.n > 1000);
    size_t line = 1, chars = 0, pos = 0;
    for (size_t h = 0; h < r.n; h++) {
        for (; pos < r.hits[h].offset; pos++) {
            line += text[pos] == '\n';
            chars += ((unsigned char)text[pos] & 0xC0) != 0x80;
        }
        assert_int_equal(r.hits[h].line_no, line);
        assert_int_equal(r.hits[h].char_offset, chars);
        assert_memory_equal(r.hits[h].line, "\xe2\x82\xac x", r.hits[h].line_len);
    }
    grep_result_free(&r);
    grep_free(g);
    free(text);
}

/* Hits far apart: the walk between them runs many full blocks of 255
 * vectors, over runs of nothing but newlines and of nothing but multi-byte
 * characters (every byte lane counts to its maximum), starting at odd
 * offsets. Positions must equal a byte-by-byte count. */
static void test_positions_across_long_gaps(void **state)
{
    size_t len = 300000;
    char *text = malloc(len + 1);
    static const char euro[] = "\xe2\x82\xac";
    for (size_t i = 0; i < len; i++) {
        size_t zone = i / 20011;
        text[i] = zone % 3 == 0 ? '\n' : zone % 3 == 1 ? euro[i % 3] : 'a';
    }
    for (size_t at = 7; at + 1 < len; at += 29989)
        text[at] = 'Z';
    text[len] = '\0';
    ingest_doc d = {.name = "gaps", .data = text, .len = len};
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("Z", 1, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100000, &r, err, sizeof err), 0);
    assert_int_equal(r.n, (len - 2 - 7) / 29989 + 1);
    size_t line = 1, chars = 0, pos = 0;
    for (size_t h = 0; h < r.n; h++) {
        for (; pos < r.hits[h].offset; pos++) {
            line += text[pos] == '\n';
            chars += ((unsigned char)text[pos] & 0xC0) != 0x80;
        }
        assert_int_equal(r.hits[h].line_no, line);
        assert_int_equal(r.hits[h].char_offset, chars);
    }
    grep_result_free(&r);
    grep_free(g);
    free(text);
}

/* With chars == len (ingest says ASCII) only newlines are counted. */
static void test_ascii_fast_path(void **state)
{
    size_t len = 50000;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++)
        text[i] = i % 37 == 36 ? '\n' : i % 37 == 20 ? 'x' : 'a';
    ingest_doc d = {.name = "ascii", .data = text, .len = len, .chars = len};
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("x", 1, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100000, &r, err, sizeof err), 0);
    assert_int_equal(r.n, len / 37 + (len % 37 > 20));
    for (size_t h = 0; h < r.n; h++) {
        assert_int_equal(r.hits[h].line_no, h + 1);
        assert_int_equal(r.hits[h].char_offset, r.hits[h].offset);
        assert_int_equal(r.hits[h].line_len, 36);
    }
    grep_result_free(&r);
    grep_free(g);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hits_carry_positions),
        cmocka_unit_test(test_flags_and_empty_matches),
        cmocka_unit_test(test_invalid_utf8_subject),
        cmocka_unit_test(test_bad_pattern_and_match_limit),
        cmocka_unit_test(test_positions_on_long_text),
        cmocka_unit_test(test_ascii_fast_path),
        cmocka_unit_test(test_positions_across_long_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
