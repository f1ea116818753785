/* Unit tests for describe.c: the dict and list descriptions (names,
 * histogram, preview, invalid UTF-8), the str case, and the size bound with
 * 50,000 documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "describe.h"

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
        cmocka_unit_test(test_dict),
        cmocka_unit_test(test_str_and_list),
        cmocka_unit_test(test_parsed),
        cmocka_unit_test(test_bounded_with_50000_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
