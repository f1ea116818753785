/* Unit tests for describe.c: one str (empty, small, binary, multibyte, 40 MB),
 * the dict and list descriptions (names, histogram, preview, invalid UTF-8),
 * the str case of a set, and the size bound with 50,000 documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "describe.h"
#include "utf8.h"
#include "util.h"

#include "utf8_expect.h"

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + nl, needle))
        n++;
    return n;
}

static void test_str_empty(void **state)
{
    (void)state;
    char *d = describe_str(NULL, "", 0);
    assert_non_null(d);
    assert_non_null(strstr(d, "str"));
    assert_non_null(strstr(d, "0 characters"));
    assert_non_null(strstr(d, "about 0 tokens"));
    assert_non_null(strstr(d, "0 lines"));
    assert_non_null(strstr(d, "empty"));
    assert_null(strstr(d, "file"));
    free(d);
    d = describe_str("", NULL, 0);
    assert_non_null(d);
    assert_non_null(strstr(d, "0 characters"));
    free(d);
}

static void test_str_small(void **state)
{
    (void)state;
    const char *text = "first line\nsecond \xE2\x82\xAC line\nthird";
    char *d = describe_str("notes.txt", text, strlen(text));
    assert_non_null(d);
    assert_non_null(strstr(d, "30 characters"));
    assert_non_null(strstr(d, "3 lines"));
    assert_non_null(strstr(d, "about 10 tokens")); /* 32 bytes */
    assert_non_null(strstr(d, "\"notes.txt\""));
    assert_non_null(strstr(d, text)); /* short: shown whole, once */
    assert_int_equal(count_substr(d, "second"), 1);
    free(d);

    d = describe_str(NULL, "x", 1);
    assert_non_null(d);
    assert_non_null(strstr(d, "1 character "));
    assert_non_null(strstr(d, "1 line."));
    free(d);
}

/* Binary input and a long file name: the description stays valid UTF-8 and
 * small. */
static void test_str_binary(void **state)
{
    (void)state;
    char data[2048];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 37 + 11);
    data[0] = '\0';
    char name[3000];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    char *d = describe_str(name, data, sizeof data);
    assert_non_null(d);
    size_t dlen = strlen(d);
    assert_true(valid_utf8(d, dlen));
    assert_true(dlen < 8192);
    assert_non_null(strstr(d, "\xEF\xBF\xBD"));
    assert_non_null(strstr(d, "about 586 tokens"));
    assert_non_null(strstr(d, "nnnnn...\""));
    free(d);
}

/* Multibyte characters only: the preview cuts count characters, not bytes. */
static void test_str_multibyte(void **state)
{
    (void)state;
    buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_puts(&b, "\xE2\x82\xAC"), 0); /* € */
    char *d = describe_str(NULL, b.data, b.len);
    assert_non_null(d);
    assert_true(valid_utf8(d, strlen(d)));
    assert_non_null(strstr(d, "1,000 characters"));
    assert_non_null(strstr(d, "1 line"));
    assert_int_equal(count_substr(d, "\xE2\x82\xAC"), 700);
    free(d);
    buf_free(&b);
}

/* 40 MB: exact counts, a bounded description, previews of the true start
 * and end. */
static void test_str_huge(void **state)
{
    (void)state;
    const size_t len = 40u << 20;
    char *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i + 8 <= len; i += 8)
        memcpy(data + i, "abc\n\xC3\xA9\xC3\xA9", 8); /* 6 characters, 1 newline */
    data[0] = 'S';
    memcpy(data + len - 4, " END", 4); /* last unit: 8 characters, no newline */
    char *d = describe_str("big.log", data, len);
    assert_non_null(d);
    size_t dlen = strlen(d);
    assert_true(dlen < 4096);
    assert_true(valid_utf8(d, dlen));
    assert_int_equal(utf8_count_chars(data, len), len / 8 * 6 + 2);
    assert_non_null(strstr(d, "31,457,282 characters"));
    assert_non_null(strstr(d, "about 11,983,726 tokens"));
    assert_non_null(strstr(d, "5,242,881 lines"));
    assert_non_null(strstr(d, "\"big.log\""));
    assert_non_null(strstr(d, "first 500 characters"));
    assert_non_null(strstr(d, "last 200 characters"));
    assert_non_null(strstr(d, "---\nSbc\n"));
    assert_non_null(strstr(d, "abc\n END\n"));
    free(d);
    free(data);
}

static void test_dict(void **state)
{
    ingest_doc d[3] = {
        {.name = "src/main.c", .data = "int main(void)\n{\n\treturn 0;\n}\n", .len = 30},
        {.name = "data.json", .data = "{\"a\": 1}", .len = 8},
        {.name = "bad.txt", .data = "x\xffy\x01z", .len = 5, .invalid_utf8 = 1},
    };
    char *s = describe_docset(INGEST_DICT, d, 3);
    assert_non_null(s);
    assert_non_null(strstr(s, "a dict of 3 documents"));
    assert_non_null(strstr(s, "with 43 characters"));
    /* 30 bytes of code /3 = 10, 8 of JSON /2.5 = 4, 5 of text /3.5 = 2 */
    assert_non_null(strstr(s, "about 16 tokens: 10 in code, 4 in JSON, 2 in other text"));
    assert_non_null(strstr(s, "Invalid UTF-8: 1 bytes"));
    assert_non_null(strstr(s, "All 3 names"));
    assert_non_null(strstr(s, "\"src/main.c\" 30"));
    assert_non_null(strstr(s, "1-1K: 3"));
    assert_non_null(strstr(s, "--- start of \"src/main.c\" ---\nint main"));
    assert_non_null(strstr(s, "x\xef\xbf\xbdy z"));   /* replaced and cleaned */
    free(s);
}

static void test_str_and_list(void **state)
{
    ingest_doc one = {.name = "log.txt", .data = "line\n", .len = 5, .chars = 5};
    char *s = describe_docset(INGEST_STR, &one, 1);
    assert_non_null(strstr(s, "The context is a str of 5 characters"));
    free(s);
    ingest_doc l[2] = {{.name = "t.jsonl:1", .data = "first", .len = 5},
                       {.name = "t.jsonl:2", .data = "", .len = 0}};
    s = describe_docset(INGEST_LIST, l, 2);
    assert_non_null(strstr(s, "a list of 2 str"));
    assert_non_null(strstr(s, "empty: 1"));
    free(s);
}

/* A parsed input, from the sandbox's summary: type, sizes, keys, the first
 * record's fields, lines skipped, the preview, and what the helpers see. */
static void test_parsed(void **state)
{
    ingest_doc one = {.name = "events.jsonl", .data = "x", .len = 2500};
    json_t *summary = json_pack("{s:s,s:s,s:i,s:i,s:[s],s:{s:i,s:i},s:[s,s],s:s}", "format",
                                "jsonl", "type", "list", "length", 12001, "skipped", 1,
                                "problems", "events.jsonl line 7: not valid JSON: Expecting value",
                                "item_types", "dict", 11999, "str", 1, "first_keys", "id", "text",
                                "preview", "[{'id': 1, 'text': 'a\x01" "b'}]");
    char *s = describe_parsed(&one, 1, summary);
    assert_non_null(s);
    assert_non_null(strstr(s, "The context is a list of 12,001 records, parsed from the JSON lines "
                              "of \"events.jsonl\" (2,500 bytes of JSON, about 1,000 tokens)."));
    assert_non_null(strstr(s, "Types of the items (of the first 10,000): dict 11,999, str 1."));
    assert_non_null(strstr(s, "The first item is a dict with the keys: id, text."));
    assert_non_null(strstr(s, "1 line that is not JSON was skipped (the first: events.jsonl line 7"));
    assert_non_null(strstr(s, "--- preview (Python repr, cut) ---\n[{'id': 1, 'text': 'a b'}]"));
    assert_non_null(strstr(s, "grep, chunks and search work on the JSON text"));
    free(s);
    json_decref(summary);

    summary = json_pack("{s:s,s:s,s:i,s:[s,s],s:{s:i}}", "format", "json", "type", "dict", "length",
                        45, "keys", "users", "meta", "item_types", "list", 45);
    s = describe_parsed(&one, 1, summary);
    assert_non_null(strstr(s, "The context is a dict of 45 keys, parsed from the JSON of"));
    assert_non_null(strstr(s, "Keys, in order: users, meta and 43 more."));
    free(s);
    json_decref(summary);
    summary = json_pack("{s:s,s:s}", "format", "json", "type", "float");
    s = describe_parsed(&one, 1, summary);
    assert_non_null(strstr(s, "The context is a float, parsed from the JSON of"));
    free(s);
    json_decref(summary);
}

static void test_bounded_with_50000_documents(void **state)
{
    size_t n = 50000;
    ingest_doc *d = calloc(n, sizeof *d);
    char (*names)[64] = calloc(n, 64);
    static const char text[] = "some text of a file\n";
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], 64, "dir%03zu/file%05zu.py", i / 100, i);
        d[i] = (ingest_doc){.name = names[i], .data = text, .len = sizeof text - 1};
    }
    char *s = describe_docset(INGEST_DICT, d, n);
    assert_non_null(s);
    assert_true(strlen(s) < 24 * 1024);
    assert_non_null(strstr(s, "a dict of 50,000 documents"));
    assert_non_null(strstr(s, "The first 100 names"));
    assert_non_null(strstr(s, "... and 49,900 more"));
    assert_null(strstr(s, "file00100.py"));
    free(s);
    free(names);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_empty),
        cmocka_unit_test(test_str_small),
        cmocka_unit_test(test_str_binary),
        cmocka_unit_test(test_str_multibyte),
        cmocka_unit_test(test_str_huge),
        cmocka_unit_test(test_dict),
        cmocka_unit_test(test_str_and_list),
        cmocka_unit_test(test_parsed),
        cmocka_unit_test(test_bounded_with_50000_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
