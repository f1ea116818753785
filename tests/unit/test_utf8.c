/* test_utf8 — utf8.c: what reaches a terminal (utf8_escape_terminal) as a
 * table of inputs and what must be shown, plus the validator's edge cases
 * that escaping relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_terminal_table),
        cmocka_unit_test(test_escape_terminal_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
