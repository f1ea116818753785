/* Unit tests for reply.c: a table of replies (text in, expected code blocks and
 * final answer out), covering every parsing failure known from the reference
 * implementation, plus size and memory properties. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "util.h"

#define MAX_BLOCKS 4

typedef struct reply_case {
    const char *name;
    const char *input;
    size_t n_blocks;
    const char *blocks[MAX_BLOCKS];
    reply_final_kind kind;
    const char *final_text;
    int after_code;
    int unclosed;
} reply_case;

static const reply_case cases[] = {
    {"empty", "", 0, {0}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"only whitespace", "  \n\r\n\t\n", 0, {0}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"prose only", "Let me think about this.\nI will look at the context.", 0, {0},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"one repl block", "Look first.\n```repl\nprint(len(context))\n```\nDone.", 1,
     {"print(len(context))"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"multiple blocks in order",
     "```repl\na = 1\n```\ntext\n```python\nb = 2\nc = 3\n```\n```py\nprint(a + b)\n```\n", 3,
     {"a = 1", "b = 2\nc = 3", "print(a + b)"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"language names", "```Python3\nx = 1\n```\n```PY\ny = 2\n```\n```REPL\nz = 3\n```\n", 3,
     {"x = 1", "y = 2", "z = 3"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"info string with attributes", "``` python title=\"x\"\nx = 1\n```\n", 1, {"x = 1"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"json text and bare fences are not code",
     "```json\n{\"a\": 1}\n```\n```text\nFINAL(no)\n```\n```\nprint(1)\n```\n", 0, {0},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"other fence contents ignored for FINAL",
     "```\nFINAL(inside)\n```\nFINAL(outside)\n", 0, {0}, REPLY_FINAL_VALUE, "outside", 0, 0},
    {"inline triple backticks are not a fence", "```print(1)```\nFINAL(7)\n", 0, {0},
     REPLY_FINAL_VALUE, "7", 0, 0},
    {"FINAL inside a code fence is code",
     "```repl\nresult = 6 * 7\nFINAL(result)\n```\n", 1, {"result = 6 * 7\nFINAL(result)"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"FINAL_VAR inside a code fence is code", "```python\nFINAL_VAR(\"x\")\n```", 1,
     {"FINAL_VAR(\"x\")"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"unclosed fence runs to the end", "Here:\n```repl\nx = 1\nprint(x)\n", 1,
     {"x = 1\nprint(x)"}, REPLY_FINAL_NONE, NULL, 0, 1},
    {"unclosed fence swallows a FINAL", "```repl\nx = 1\nFINAL(x)", 1, {"x = 1\nFINAL(x)"},
     REPLY_FINAL_NONE, NULL, 0, 1},
    {"an unclosed second block", "```repl\na = 1\n```\n```repl\nb = 2", 2, {"a = 1", "b = 2"},
     REPLY_FINAL_NONE, NULL, 0, 1},
    {"an unclosed empty block is not one", "```repl\na = 1\n```\n```repl\n  \n", 1, {"a = 1"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"four-backtick fence holds a three-backtick line",
     "````repl\ns = '''\n```\n'''\nprint(s)\n````\nafter\n", 1, {"s = '''\n```\n'''\nprint(s)"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"three backticks do not close four", "````python\na = 1\n```\nb = 2\n", 1,
     {"a = 1\n```\nb = 2"}, REPLY_FINAL_NONE, NULL, 0, 1},
    {"longer closing fence closes", "```repl\na = 1\n`````\nFINAL(a)\n", 1, {"a = 1"},
     REPLY_FINAL_VALUE, "a", 1, 0},
    {"CRLF line endings",
     "Plan:\r\n```repl\r\nx = 1\r\nprint(x)\r\n```\r\nFINAL(1)\r\n", 1, {"x = 1\nprint(x)"},
     REPLY_FINAL_VALUE, "1", 1, 0},
    {"indented fence in a list item",
     "1. Count:\n   ```repl\n   n = 0\n   for c in context:\n       n += 1\n   ```\n", 1,
     {"n = 0\nfor c in context:\n    n += 1"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"empty block dropped", "```repl\n\n```\n```repl\nx = 1\n```\n", 1, {"x = 1"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"FINAL value", "The answer is known.\nFINAL(42)\n", 0, {0}, REPLY_FINAL_VALUE, "42", 0, 0},
    {"FINAL at end without newline", "FINAL(Paris)", 0, {0}, REPLY_FINAL_VALUE, "Paris", 0, 0},
    {"FINAL with space before paren", "FINAL (yes)\n", 0, {0}, REPLY_FINAL_VALUE, "yes", 0, 0},
    {"FINAL nested parentheses", "FINAL(f(a, (b)))\n", 0, {0}, REPLY_FINAL_VALUE,
     "f(a, (b))", 0, 0},
    {"FINAL parenthesis inside a string", "FINAL(\"a ) b\")\n", 0, {0}, REPLY_FINAL_VALUE,
     "a ) b", 0, 0},
    {"FINAL single quotes removed", "FINAL('x (y')", 0, {0}, REPLY_FINAL_VALUE, "x (y", 0, 0},
    {"FINAL escapes decoded", "FINAL(\"say \\\"hi\\\"\\n\")", 0, {0}, REPLY_FINAL_VALUE,
     "say \"hi\"\n", 0, 0},
    {"FINAL not one literal keeps quotes", "FINAL(\"a\" + \"b\")", 0, {0}, REPLY_FINAL_VALUE,
     "\"a\" + \"b\"", 0, 0},
    {"FINAL with apostrophes", "FINAL(It's John's (the tall one))\nmore", 0, {0},
     REPLY_FINAL_VALUE, "It's John's (the tall one)", 0, 0},
    {"FINAL with unbalanced quote", "FINAL(5\" screen)\n", 0, {0}, REPLY_FINAL_VALUE,
     "5\" screen", 0, 0},
    {"FINAL multi-line argument", "FINAL(First line\nsecond (line)\r\nthird)\nTrailing prose",
     0, {0}, REPLY_FINAL_VALUE, "First line\nsecond (line)\nthird", 0, 0},
    {"FINAL triple-quoted", "FINAL(\"\"\"a\nb ) c\"\"\")", 0, {0}, REPLY_FINAL_VALUE,
     "a\nb ) c", 0, 0},
    {"FINAL unbalanced takes the rest", "FINAL(the answer is 3\nand more  \n", 0, {0},
     REPLY_FINAL_VALUE, "the answer is 3\nand more", 0, 0},
    {"FINAL empty argument", "FINAL()", 0, {0}, REPLY_FINAL_VALUE, "", 0, 0},
    {"markdown bold", "**FINAL(42)**\n", 0, {0}, REPLY_FINAL_VALUE, "42", 0, 0},
    {"markdown quote and bullet", "> - FINAL(yes)\n", 0, {0}, REPLY_FINAL_VALUE, "yes", 0, 0},
    {"markdown inline code", "`FINAL_VAR(result)`\n", 0, {0}, REPLY_FINAL_VAR, "result", 0, 0},
    {"indented FINAL", "    FINAL(x)\n", 0, {0}, REPLY_FINAL_VALUE, "x", 0, 0},
    {"plan mentioning FINAL is prose",
     "First I will count the records.\nAfter that I will call FINAL(answer) with the result.\n"
     "```repl\nn = len(context)\n```\n",
     1, {"n = len(context)"}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"FINAL_ANSWER is not FINAL", "FINAL_ANSWER(3)\nFINAL answer: 3\n", 0, {0},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"lower case is not FINAL", "final(3)\n", 0, {0}, REPLY_FINAL_NONE, NULL, 0, 0},
    {"FINAL_VAR bare name", "FINAL_VAR(result)\n", 0, {0}, REPLY_FINAL_VAR, "result", 0, 0},
    {"FINAL_VAR quoted name", "FINAL_VAR(\"result\")\n", 0, {0}, REPLY_FINAL_VAR, "result", 0, 0},
    {"FINAL_VAR single-quoted name", "FINAL_VAR( 'out' )", 0, {0}, REPLY_FINAL_VAR, "out", 0, 0},
    {"FINAL after code", "```repl\nx = 6 * 7\nprint(x)\n```\nFINAL_VAR(x)\n", 1,
     {"x = 6 * 7\nprint(x)"}, REPLY_FINAL_VAR, "x", 1, 0},
    {"FINAL before code", "FINAL(7)\n```repl\nprint(7)\n```\n", 1, {"print(7)"},
     REPLY_FINAL_VALUE, "7", 0, 0},
    {"first FINAL wins", "FINAL(a)\nFINAL(b)\n", 0, {0}, REPLY_FINAL_VALUE, "a", 0, 0},
    {"fence inside a FINAL argument is not code",
     "FINAL(Use this:\n```python\nprint(1)\n```\n)\n```repl\nx = 2\n```\n", 1, {"x = 2"},
     REPLY_FINAL_VALUE, "Use this:\n```python\nprint(1)\n```", 0, 0},
    {"text after a code fence's close is prose",
     "```repl\nx = 1\n```Now I wait for the output.\nThen y = 2\n", 1, {"x = 1"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"text after the close, then more code",
     "```repl\nx = 1\n``` not code\ny = 2\n```repl\nz = 3\n```\n", 2, {"x = 1", "z = 3"},
     REPLY_FINAL_NONE, NULL, 0, 0},
    {"a FINAL after a code fence's close",
     "```python\nx = 6 * 7\n``` FINAL_VAR(x)\n", 1, {"x = 6 * 7"}, REPLY_FINAL_VAR, "x", 1, 0},
    {"text after an other fence's close: still inside it",
     "```text\nFINAL(no)\n``` more\nFINAL(still no)\n```\nFINAL(yes)\n", 0, {0},
     REPLY_FINAL_VALUE, "yes", 0, 0},
};

static void check_case(const reply_case *c)
{
    reply r;
    int rc = reply_parse(c->input, strlen(c->input), &r);
    if (rc != 0)
        fail_msg("case '%s': reply_parse returned %d", c->name, rc);
    if (r.n_blocks != c->n_blocks)
        fail_msg("case '%s': %zu blocks, expected %zu", c->name, r.n_blocks, c->n_blocks);
    for (size_t i = 0; i < c->n_blocks; i++)
        if (strcmp(r.blocks[i], c->blocks[i]) != 0)
            fail_msg("case '%s': block %zu is [%s], expected [%s]", c->name, i, r.blocks[i],
                     c->blocks[i]);
    if (r.final_kind != c->kind)
        fail_msg("case '%s': final kind %d, expected %d", c->name, (int)r.final_kind,
                 (int)c->kind);
    if (c->final_text == NULL) {
        if (r.final_text != NULL)
            fail_msg("case '%s': unexpected final text [%s]", c->name, r.final_text);
    } else if (r.final_text == NULL || strcmp(r.final_text, c->final_text) != 0) {
        fail_msg("case '%s': final text [%s], expected [%s]", c->name,
                 r.final_text ? r.final_text : "(null)", c->final_text);
    }
    if (r.final_after_code != c->after_code)
        fail_msg("case '%s': after_code %d, expected %d", c->name, r.final_after_code,
                 c->after_code);
    if (r.unclosed != c->unclosed)
        fail_msg("case '%s': unclosed %d, expected %d", c->name, r.unclosed, c->unclosed);
    reply_clear(&r);
}

static void test_reply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
}

/* Without a trailing NUL: the parser must honour len, not strlen. */
static void test_reply_respects_length(void **state)
{
    (void)state;
    const char text[] = "```repl\nx = 1\n```\nFINAL(1)XXXX";
    size_t len = sizeof text - 1 - 4 - 2; /* ends with "FINAL(" */
    char *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, text, len);
    reply r;
    assert_int_equal(reply_parse(copy, len, &r), 0);
    assert_int_equal(r.n_blocks, 1);
    assert_string_equal(r.blocks[0], "x = 1");
    assert_int_equal(r.final_kind, REPLY_FINAL_VALUE);
    assert_string_equal(r.final_text, "");
    reply_clear(&r);
    free(copy);

    assert_int_equal(reply_parse(NULL, 0, &r), 0);
    assert_int_equal(r.n_blocks, 0);
    assert_int_equal(r.final_kind, REPLY_FINAL_NONE);
    reply_clear(&r);
    reply_clear(&r); /* clearing twice is harmless */
    reply_clear(NULL);
}

/* A big reply: many blocks and long lines. Exercises growth of the block
 * array and the single-pass scan (a quadratic scan would take minutes here
 * under the sanitizers; correctness is what is asserted). */
static void test_reply_large(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 8u << 20);
    const size_t n = 2000;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(buf_printf(&b, "Step %zu.\n```repl\nx%zu = %zu\n```\n", i, i, i), 0);
    /* an unbalanced FINAL followed by a megabyte of parentheses and quotes */
    assert_int_equal(buf_puts(&b, "FINAL(\"start"), 0);
    for (size_t i = 0; i < 100000; i++)
        assert_int_equal(buf_puts(&b, "( ' \" "), 0);
    reply r;
    assert_int_equal(reply_parse(b.data, b.len, &r), 0);
    assert_int_equal(r.n_blocks, n);
    assert_string_equal(r.blocks[0], "x0 = 0");
    assert_string_equal(r.blocks[n - 1], "x1999 = 1999");
    assert_int_equal(r.final_kind, REPLY_FINAL_VALUE);
    assert_int_equal(r.final_after_code, 1);
    assert_true(strncmp(r.final_text, "\"start( ' \"", 11) == 0);
    reply_clear(&r);
    buf_free(&b);
}

/* Every prefix of a tricky reply parses without error (no reads past len). */
static void test_reply_all_prefixes(void **state)
{
    (void)state;
    const char *text = "> **FINAL_VAR(\"a\\\"b\")**\r\n````PY\r\nx = '''(\r\n```\r\n''')\r\n````\r\n"
                       "FINAL(f\"{x})\" + ('y'))";
    size_t len = strlen(text);
    for (size_t i = 0; i <= len; i++) {
        char *copy = malloc(i ? i : 1);
        assert_non_null(copy);
        memcpy(copy, text, i);
        reply r;
        assert_int_equal(reply_parse(copy, i, &r), 0);
        reply_clear(&r);
        free(copy);
    }
    reply r;
    assert_int_equal(reply_parse(text, len, &r), 0);
    assert_int_equal(r.final_kind, REPLY_FINAL_VAR);
    assert_string_equal(r.final_text, "a\"b");
    assert_int_equal(r.n_blocks, 1);
    assert_string_equal(r.blocks[0], "x = '''(\n```\n''')");
    reply_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_reply_respects_length),
        cmocka_unit_test(test_reply_large),
        cmocka_unit_test(test_reply_all_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
