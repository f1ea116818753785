/* Unit tests for grep.c: hits with names, line numbers, byte and character
 * offsets and lines; flags; empty matches; max_hits; one document; invalid
 * UTF-8 in the subject; a pattern that does not compile and one that hits
 * the match limit (errors with PCRE2's message, never a crash); grep_scan's
 * callback; CRLF and a last line without a newline; the vector counts at
 * every block boundary, both widths against a byte-by-byte count.
 *
 * grep.c is included rather than linked so that its two counting loops
 * (16-byte vectors everywhere, 32-byte ones where AVX2 is available) can be
 * checked against each other on any machine; the public functions are
 * the same code the library builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "grep.c"

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

/* grep_scan's callback: records up to 16 hits; stops after `stop_at`. */
typedef struct seen {
    grep_hit hits[16];
    size_t n, stop_at;
} seen;

static int record_hit(void *ctx, const grep_hit *h)
{
    seen *s = ctx;
    if (s->n < 16)
        s->hits[s->n] = *h;
    s->n++;
    return s->n == s->stop_at;
}

static void test_scan_callback(void **state)
{
    ingest_doc d[2] = {doc("a", "x1 x2\nx3"), doc("b", "x4")};
    grep *g;
    char err[256] = "";
    assert_int_equal(grep_compile("x\\d", 3, "", NULL, &g, err, sizeof err), 0);
    seen s = {.stop_at = SIZE_MAX};
    int truncated = -1;
    assert_int_equal(
        grep_scan(g, d, 2, SIZE_MAX, 100, record_hit, &s, &truncated, err, sizeof err), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(truncated, 0);
    assert_int_equal(s.hits[1].offset, 3);
    assert_int_equal(s.hits[2].line_no, 2);
    assert_memory_equal(s.hits[2].line, "x3", s.hits[2].line_len);
    assert_string_equal(s.hits[3].name, "b");
    /* exactly max_hits matches: not truncated; one more exists: truncated */
    s = (seen){.stop_at = SIZE_MAX};
    assert_int_equal(
        grep_scan(g, d, 2, SIZE_MAX, 4, record_hit, &s, &truncated, err, sizeof err), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(truncated, 0);
    s = (seen){.stop_at = SIZE_MAX};
    assert_int_equal(
        grep_scan(g, d, 2, SIZE_MAX, 3, record_hit, &s, &truncated, err, sizeof err), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(truncated, 1);
    /* the callback stops the scan: 1, err untouched, no further hits */
    s = (seen){.stop_at = 2};
    assert_int_equal(grep_scan(g, d, 2, SIZE_MAX, 100, record_hit, &s, NULL, err, sizeof err), 1);
    assert_int_equal(s.n, 2);
    assert_string_equal(err, "");
    /* a document that does not exist */
    assert_int_equal(grep_scan(g, d, 2, 2, 100, record_hit, &s, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "no document 2"));
    grep_free(g);
}

/* The match limit stops the scan with an error after the hits before it
 * were handed over. */
static void test_scan_match_limit_keeps_earlier_hits(void **state)
{
    char text[128];
    snprintf(text, sizeof text, "x\nx\n%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab");
    ingest_doc d = doc("evil", text);
    grep_limits limits = {.match_limit = 100000};
    grep *g;
    char err[256];
    assert_int_equal(grep_compile("x|(a+)+$", 8, "", &limits, &g, err, sizeof err), 0);
    seen s = {.stop_at = SIZE_MAX};
    assert_int_equal(grep_scan(g, &d, 1, SIZE_MAX, 100, record_hit, &s, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "limit"));
    assert_int_equal(s.n, 2);
    assert_int_equal(s.hits[1].line_no, 2);
    grep_result r;
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100, &r, err, sizeof err), -1);
    assert_int_equal(r.n, 2);
    grep_result_free(&r);
    grep_free(g);
}

/* A line keeps its '\r' (as context[a:b] would), and the last line needs
 * no newline; a hit at the very start and an empty match at the very end. */
static void test_crlf_and_last_line(void **state)
{
    ingest_doc d = doc("crlf", "hit one\r\n\r\nsecond hit\r\nlast hit");
    grep *g;
    char err[256];
    grep_result r;
    assert_int_equal(grep_compile("hit", 3, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.hits[0].offset, 0);
    assert_int_equal(r.hits[0].line_no, 1);
    assert_int_equal(r.hits[0].line_len, strlen("hit one\r"));
    assert_memory_equal(r.hits[0].line, "hit one\r", r.hits[0].line_len);
    assert_int_equal(r.hits[1].line_no, 3);
    assert_memory_equal(r.hits[1].line, "second hit\r", r.hits[1].line_len);
    assert_int_equal(r.hits[2].line_no, 4);
    assert_int_equal(r.hits[2].line_len, strlen("last hit"));
    assert_memory_equal(r.hits[2].line, "last hit", r.hits[2].line_len);
    grep_result_free(&r);
    grep_free(g);
    assert_int_equal(grep_compile("$", 1, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 100, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.hits[0].offset, d.len);
    assert_int_equal(r.hits[0].line_no, 4);
    assert_int_equal(r.hits[0].line_len, strlen("last hit"));
    grep_result_free(&r);
    grep_free(g);
    /* a document ending in '\n': $ matches before it and at the very end */
    ingest_doc nl = doc("nl", "a\n");
    assert_int_equal(grep_compile("$", 1, "", NULL, &g, err, sizeof err), 0);
    assert_int_equal(grep_run(g, &nl, 1, SIZE_MAX, 100, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.hits[0].line_no, 1);
    assert_int_equal(r.hits[1].offset, 2);
    assert_int_equal(r.hits[1].line_no, 2);
    assert_int_equal(r.hits[1].line_len, 0);
    grep_result_free(&r);
    grep_free(g);
}

/* tally16 and tally32 against a byte loop. */
static void check_tally(const unsigned char *p, size_t n, int ascii)
{
    tally want = {0};
    for (size_t i = 0; i < n; i++) {
        want.lines += p[i] == '\n';
        want.continuations += (p[i] & 0xC0) == 0x80;
    }
    for (int width = 16; width <= 32; width += 16) {
        tally got = {0};
        size_t i;
        if (width == 16) {
            i = tally16(p, n, ascii, &got);
        } else {
#ifdef GREP_HAVE_AVX2
            if (!__builtin_cpu_supports("avx2"))
                return;
            i = tally32(p, n, ascii, &got);
#else
            return;
#endif
        }
        assert_int_equal(i, n / (size_t)width * (size_t)width);
        for (; i < n; i++) {
            got.lines += p[i] == '\n';
            got.continuations += (p[i] & 0xC0) == 0x80;
        }
        assert_int_equal(got.lines, want.lines);
        if (!ascii)
            assert_int_equal(got.continuations, want.continuations);
    }
}

/* Both vector widths over every length up to a few hundred bytes and then
 * across several blocks of 255 vectors, at several alignments: in random
 * mixed text, random ASCII, and runs of nothing but newlines or nothing
 * but continuation bytes (every lane counts to its maximum, so a block
 * one vector too long would wrap). */
static void test_tally_widths_agree(void **state)
{
    size_t len = 32 * 255 * 2 + 200;
    unsigned char *buf[4];
    for (int b = 0; b < 4; b++)
        buf[b] = malloc(len + 32);
    unsigned x = 7;
    for (size_t i = 0; i < len + 32; i++) {
        x = x * 1103515245u + 12345u;
        unsigned r = (x >> 16) % 8;
        buf[0][i] = r == 0 ? '\n' : r == 1 ? 0x80 + (x >> 8) % 64 : r == 2 ? 0xC3 : 'a' + r;
        buf[1][i] = buf[0][i] == '\n' ? '\n' : buf[0][i] & 0x7F;
        buf[2][i] = '\n';
        buf[3][i] = 0x80 + i % 64;
    }
    static const int ascii[4] = {0, 1, 1, 0};
    static const size_t boundaries[] = {16 * 255, 32 * 255, 16 * 255 * 3, 32 * 255 * 2};
    for (int b = 0; b < 4; b++)
        for (size_t align = 0; align < 32; align += 5) {
            for (size_t n = 0; n < len; n = n < 300 ? n + 1 : n + 97)
                check_tally(buf[b] + align, n, ascii[b]);
            for (size_t k = 0; k < 4; k++)
                for (size_t n = boundaries[k] - 33; n <= boundaries[k] + 33; n++)
                    check_tally(buf[b] + align, n, ascii[b]);
        }
    for (int b = 0; b < 4; b++)
        free(buf[b]);
}

/* Through the public API: one hit after a gap of every length around the
 * vector and block sizes, in mixed text; line number and character offset
 * equal a byte-by-byte count, and so does the line. */
static void test_gaps_of_every_length(void **state)
{
    size_t max_gap = 32 * 255 + 70;
    char *text = malloc(max_gap + 8);
    static const char piece[] = "a\xc3\xa9\nbc\xe2\x82\xac\n\nd";
    grep *g;
    char err[256];
    assert_int_equal(grep_compile("Z", 1, "", NULL, &g, err, sizeof err), 0);
    for (size_t gap = 0; gap < max_gap; gap = gap < 100 ? gap + 1 : gap + 61) {
        for (size_t i = 0; i < gap; i++)
            text[i] = piece[i % (sizeof piece - 1)];
        memcpy(text + gap, "Z\nq", 3);
        ingest_doc d = {.name = "g", .data = text, .len = gap + 3};
        size_t line = 1, chars = 0, line_start = 0;
        for (size_t i = 0; i < gap; i++) {
            chars += ((unsigned char)text[i] & 0xC0) != 0x80;
            if (text[i] == '\n') {
                line++;
                line_start = i + 1;
            }
        }
        grep_result r;
        assert_int_equal(grep_run(g, &d, 1, SIZE_MAX, 10, &r, err, sizeof err), 0);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.hits[0].offset, gap);
        assert_int_equal(r.hits[0].line_no, line);
        assert_int_equal(r.hits[0].char_offset, chars);
        assert_ptr_equal(r.hits[0].line, text + line_start);
        assert_int_equal(r.hits[0].line_len, gap + 1 - line_start);
        grep_result_free(&r);
    }
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
        cmocka_unit_test(test_scan_callback),
        cmocka_unit_test(test_scan_match_limit_keeps_earlier_hits),
        cmocka_unit_test(test_crlf_and_last_line),
        cmocka_unit_test(test_tally_widths_agree),
        cmocka_unit_test(test_gaps_of_every_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
