/* test_utf8 — utf8.c: what reaches a terminal (utf8_escape_terminal) as a
 * table of inputs and what must be shown, plus the validator's edge cases
 * that escaping relies on; character counting, and head + tail bounding on
 * UTF-8 boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "util.h"

#include "utf8_expect.h"

static void test_escape_terminal_table(void **state)
{
    (void)state;
#define T(in, out) {in, sizeof in - 1, out}
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        T("plain text, a \\ backslash", "plain text, a \\ backslash"),
        T("two\nlines\tand a tab", "two\nlines\tand a tab"),
        T("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
        /* clear screen, set the title, write the clipboard (OSC 52), bell */
        T("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        T("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
        T("\x1b]52;c;cm0gLXJm\x1b\\", "\\x1b]52;c;cm0gLXJm\\x1b\\"),
        T("surv\0ived", "surv\\x00ived"),
        T("over\rwrite\b", "over\\x0dwrite\\x08"),
        T("del\x7f", "del\\x7f"),
        /* C1 controls in UTF-8 (CSI is U+009B), and bytes that are not UTF-8 */
        T("\xC2\x9B" "31m", "\\u009b31m"),
        T("\xC2\x85", "\\u0085"),
        T("bad \xFF\xC3", "bad \\xff\\xc3"),
        /* bidirectional overrides and isolates reorder what follows */
        T("a\xE2\x80\xAE" "cba", "a\\u202ecba"),
        T("\xE2\x81\xA6x\xE2\x81\xA9", "\\u2066x\\u2069"),
        /* marks that RTL text uses are left alone */
        T("\xE2\x80\x8F", "\xE2\x80\x8F"),
        T("", ""),
    };
#undef T
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 99;
        char *out = utf8_escape_terminal(cases[i].in, cases[i].len, &len);
        assert_non_null(out);
        if (strcmp(out, cases[i].out) != 0)
            print_message("case %zu: got '%s'\n", i, out);
        assert_string_equal(out, cases[i].out);
        assert_int_equal(len, strlen(cases[i].out));
        free(out);
    }
}

/* Nothing a terminal acts on survives, whatever the bytes. */
static void test_escape_terminal_every_byte(void **state)
{
    (void)state;
    unsigned char all[256 * 2];
    for (int i = 0; i < 256; i++) {
        all[2 * i] = (unsigned char)i;
        all[2 * i + 1] = 'x';
    }
    size_t len;
    char *out = utf8_escape_terminal((const char *)all, sizeof all, &len);
    assert_non_null(out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        assert_true(c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7F));
    }
    free(out);
}

static void test_count_chars(void **state)
{
    (void)state;
    assert_int_equal(utf8_count_chars("", 0), 0);
    assert_int_equal(utf8_count_chars(NULL, 0), 0);
    assert_int_equal(utf8_count_chars("abc\n", 4), 4);
    assert_int_equal(utf8_count_chars("h\xC3\xA9llo", 6), 5);             /* héllo */
    assert_int_equal(utf8_count_chars("\xE6\x97\xA5\xE6\x9C\xAC", 6), 2); /* 日本 */
    assert_int_equal(utf8_count_chars("\xF0\x9F\x98\x80!", 5), 2);        /* 😀! */
    /* only the given length counts */
    assert_int_equal(utf8_count_chars("h\xC3\xA9llo", 3), 2);
    /* Eight bytes at a time and the rest one by one: every byte value, at
     * every offset and length, against the plain definition. */
    unsigned char all[300];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (unsigned char)(i * 37 + 11);
    for (size_t from = 0; from < 9; from++)
        for (size_t len = 0; from + len <= sizeof all; len += 7) {
            size_t want = 0;
            for (size_t i = from; i < from + len; i++)
                want += (all[i] & 0xC0) != 0x80;
            assert_int_equal(utf8_count_chars((const char *)all + from, len), want);
        }
    /* Long texts: every byte of 5,001 a continuation byte, and 2,500
     * two-byte characters. */
    static char cont[5001], two[5000];
    memset(cont, 0x80, sizeof cont);
    assert_int_equal(utf8_count_chars(cont, sizeof cont), 0);
    for (size_t i = 0; i < sizeof two; i += 2)
        memcpy(two + i, "\xC3\xA9", 2);
    assert_int_equal(utf8_count_chars(two, sizeof two), 2500);
}

/* Eight bytes at a time: the same counts as a byte at a time, for every
 * length and alignment, with the bytes that sit next to the patterns it
 * looks for (0x0A and its neighbours, 0x80-0xBF and the lead bytes around). */
static void test_count_chars_newlines_by_words(void **state)
{
    (void)state;
    static const unsigned char alphabet[] = {'\n', 0x0B, 0x09, 0x8A, 0x80, 0xBF, 0xC0, 0x7F,
                                             0xC3, 0xA9, 0xE6, 0xF0, 'a', 0x00, 0xFF, 0x0A};
    unsigned char text[200];
    unsigned seed = 12345;
    for (int round = 0; round < 400; round++) {
        for (size_t i = 0; i < sizeof text; i++) {
            seed = seed * 1103515245u + 12345u;
            text[i] = alphabet[(seed >> 16) % sizeof alphabet];
        }
        size_t off = (size_t)round % 8, len = (size_t)round % (sizeof text - 8);
        size_t want_chars = 0, want_lines = 0;
        for (size_t i = off; i < off + len; i++) {
            want_chars += (text[i] & 0xC0) != 0x80;
            want_lines += text[i] == '\n';
        }
        size_t lines = 0;
        assert_int_equal(utf8_count_chars_newlines((const char *)text + off, len, &lines), want_chars);
        assert_int_equal(lines, want_lines);
        assert_int_equal(utf8_count_chars((const char *)text + off, len), want_chars);
    }
}

/* utf8_valid agrees with the repair: valid text is left alone, and every
 * kind of invalid sequence is found wherever it sits. */
static void test_valid(void **state)
{
    (void)state;
    assert_int_equal(utf8_valid("", 0), 1);
    assert_int_equal(utf8_valid("plain ascii", 11), 1);
    assert_int_equal(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14), 1);
    static const char *const bad[] = {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "\x80", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[32];
        int n = snprintf(text, sizeof text, "ok %s ok", bad[i]);
        assert_int_equal(utf8_valid(text, (size_t)n), 0);
        size_t out_len;
        char *fixed = utf8_sanitize(text, (size_t)n, &out_len);
        assert_non_null(fixed);
        assert_int_equal(utf8_valid(fixed, out_len), 1);
        free(fixed);
    }
}

static void test_bound_within_limit(void **state)
{
    (void)state;
    const char *text = "d\xC3\xA9j\xC3\xA0 vu"; /* déjà vu: 7 characters, 9 bytes */
    char *out = utf8_bound(text, strlen(text), 7);
    assert_non_null(out);
    assert_string_equal(out, text);
    assert_ptr_not_equal(out, text);
    free(out);
    out = utf8_bound("", 0, 0);
    assert_non_null(out);
    assert_string_equal(out, "");
    free(out);
}

/* Reads N from the "[... N characters cut ...]" marker; -1 if absent. */
static long marker_count(const char *s)
{
    const char *m = strstr(s, "[... ");
    if (!m)
        return -1;
    char *end;
    long n = strtol(m + 5, &end, 10);
    if (strncmp(end, " characters cut ...]", 20) != 0)
        return -1;
    return n;
}

/* Mixed 1- to 4-byte characters: whatever the limit, the cut lands on
 * character boundaries, stays within the limit, and the marker's count plus
 * what was kept adds up to the whole. */
static void test_bound_multibyte_cuts(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_puts(&b, "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"), 0); /* aé€😀 */
    size_t total = utf8_count_chars(b.data, b.len);
    assert_int_equal(total, 1200);
    for (size_t max = 0; max <= 400; max++) {
        char *out = utf8_bound(b.data, b.len, max);
        assert_non_null(out);
        size_t out_len = strlen(out);
        if (!valid_utf8(out, out_len))
            fail_msg("max %zu: result is not valid UTF-8", max);
        size_t out_chars = utf8_count_chars(out, out_len);
        if (out_chars > max)
            fail_msg("max %zu: result has %zu characters", max, out_chars);
        long cut = marker_count(out);
        if (max >= 40) {
            assert_true(cut > 0);
            const char *marker = strstr(out, "\n[... ");
            const char *after = strstr(marker, "...]\n") + 5;
            size_t head = utf8_count_chars(out, (size_t)(marker - out));
            size_t tail = utf8_count_chars(after, strlen(after));
            assert_int_equal(head + tail + (size_t)cut, total);
            assert_true(head >= tail && head - tail <= 1); /* half each */
            assert_memory_equal(out, b.data, (size_t)(marker - out));
            assert_string_equal(after, b.data + b.len - strlen(after));
        } else if (cut < 0) {
            /* too small for the marker: a plain head cut */
            assert_int_equal(out_chars, max);
            assert_memory_equal(out, b.data, out_len);
        }
        free(out);
    }
    buf_free(&b);
}

static void test_bound_states_count(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 50000; i++)
        assert_int_equal(buf_puts(&b, "\xC3\xA9"), 0);
    char *out = utf8_bound(b.data, b.len, 1000);
    assert_non_null(out);
    long cut = marker_count(out);
    assert_true(cut > 49000 && cut < 50000);
    assert_true(utf8_count_chars(out, strlen(out)) <= 1000);
    assert_true(utf8_count_chars(out, strlen(out)) >= 990);
    free(out);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_terminal_table),
        cmocka_unit_test(test_escape_terminal_every_byte),
        cmocka_unit_test(test_count_chars),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_count_chars_newlines_by_words),
        cmocka_unit_test(test_bound_within_limit),
        cmocka_unit_test(test_bound_multibyte_cuts),
        cmocka_unit_test(test_bound_states_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
