/* rlm serve's request bodies: long string values (a document sent inline)
 * decoded apart from jansson give exactly what jansson gives, refuse exactly
 * what it refuses, and a placeholder cannot be forged by a client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "long_strings.h"
#include "util.h"

/* Encoded JSON string tokens (quotes included) jansson accepts. */
static const char *const accepted[] = {
    "\"\"",
    "\"plain ascii\"",
    "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t end\"",
    "\"\\u00e9t\\u00C9 \\u20ac \\uD83D\\uDE00 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
    "\"del \x7f and \\u0001\"",
    "\"\\\\u0000 is a backslash and text\"",
    "\"run \\\\\\\" q [{ \\\\\"",   /* an escaped backslash, then an escaped quote */
};

/* Tokens jansson refuses. */
static const char *const refused[] = {
    "\"\\u0000\"",           /* NUL without JSON_ALLOW_NUL */
    "\"lone \\uD83D high\"", /* surrogates alone */
    "\"lone \\uDE00 low\"",
    "\"pair \\uD83D\\u0041\"",
    "\"ctl \x01 raw\"",
    "\"tab \t raw\"",
    "\"bad \xff utf8\"",
    "\"overlong \xc0\xaf\"",
    "\"cut \\u12\"",
    "\"bad \\x escape\"",
    "\"bad \\uZZZZ hex\"",
};

/* The decoder's text for a token, via the smallest threshold. */
static char *decoded(const char *token, size_t *len, int *found)
{
    char *skeleton = NULL;
    size_t skeleton_len = 0;
    long_strings *ls = NULL;
    int rc = long_strings_split(token, strlen(token), 1, &skeleton, &skeleton_len, &ls);
    assert_true(rc >= 0);
    *found = rc;
    char *text = NULL;
    if (rc == 1) {
        long long i = long_strings_find(ls, skeleton + 1, skeleton_len - 2);
        assert_int_equal(i, 0);
        text = long_strings_take(ls, 0, len);
        free(skeleton);
        long_strings_free(ls);
    }
    return text;
}

static void test_decodes_as_jansson_does(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof accepted / sizeof accepted[0]; k++) {
        json_error_t jerr;
        json_t *want = json_loads(accepted[k], JSON_DECODE_ANY, &jerr);
        assert_non_null(want);
        size_t len = 0;
        int found = 0;
        char *text = decoded(accepted[k], &len, &found);
        assert_int_equal(found, 1);
        assert_int_equal(len, json_string_length(want));
        assert_memory_equal(text, json_string_value(want), len);
        free(text);
        json_decref(want);
    }
}

static void test_refuses_what_jansson_refuses(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        assert_null(json_loads(refused[k], JSON_DECODE_ANY, NULL));
        size_t len = 0;
        int found = 1;
        assert_null(decoded(refused[k], &len, &found));
        assert_int_equal(found, 0);   /* left to jansson, which says what is wrong */
    }
}

/* A request whose first message is text repeated to over n bytes. */
static char *request(const char *piece, size_t n, const char *question)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "{\"model\":\"rlm\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    while (b.len < n)
        buf_puts(&b, piece);
    buf_printf(&b, "\"},{\"role\":\"user\",\"content\":\"%s\"}]}", question);
    return buf_take(&b);
}

static void test_inline_document_is_the_input(void **state)
{
    (void)state;
    const char *piece = "line \\\"quoted\\\" caf\xc3\xa9 \\u20ac\\n";
    char *body = request(piece, 100000, "what?");
    json_t *want = json_loads(body, 0, NULL);
    assert_non_null(want);
    const json_t *text = json_object_get(json_array_get(json_object_get(want, "messages"), 0), "content");
    chat_request req;
    chat_error err;
    assert_int_equal(chat_parse(body, strlen(body), &req, &err), 0);
    assert_int_equal(req.context_len, json_string_length(text));
    assert_memory_equal(req.context, json_string_value(text), req.context_len);
    assert_string_equal(req.question, "what?");
    chat_request_clear(&req);
    json_decref(want);
    free(body);
}

static void test_long_question_and_parts(void **state)
{
    (void)state;
    /* A long question, and a long text part among several messages. */
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_puts(&b, "{\"model\":\"rlm\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"");
    for (int i = 0; i < 3000; i++)
        buf_puts(&b, "part text\\t");
    buf_puts(&b, "\"}]},{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 3000; i++)
        buf_puts(&b, "question?\\n");
    buf_puts(&b, "\"}]}");
    chat_request req;
    chat_error err;
    assert_int_equal(chat_parse(b.data, b.len, &req, &err), 0);
    assert_int_equal(strncmp(req.question, "be brief\n\nquestion?\n", 20), 0);
    assert_int_equal(strlen(req.question), strlen("be brief\n\n") + 3000 * 10);
    assert_non_null(strstr(req.context, "[user]\npart text\tpart text\t"));
    assert_non_null(strstr(req.context, "\n\n[assistant]\nok"));
    chat_request_clear(&req);
    buf_free(&b);
}

static void test_bad_long_string_is_refused_as_before(void **state)
{
    (void)state;
    static const char *const bad[] = {"\\uD800x", "\\u0000", "\x01", "\xff"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char *body = request(bad[k], 40000, "q");
        json_error_t jerr;
        assert_null(json_loads(body, 0, &jerr));
        char want[512];
        snprintf(want, sizeof want, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        chat_request req;
        chat_error err;
        assert_int_equal(chat_parse(body, strlen(body), &req, &err), -1);
        assert_int_equal(err.status, 400);
        assert_string_equal(err.message, want);
        free(body);
    }
}

static void test_placeholder_cannot_be_forged(void **state)
{
    (void)state;
    /* A client writing what a placeholder looks like gets its own text: the
     * nonce is new for every body. */
    char *skeleton = NULL;
    size_t skeleton_len = 0;
    long_strings *ls = NULL;
    const char *token = "\"some long enough text\"";
    assert_int_equal(long_strings_split(token, strlen(token), 1, &skeleton, &skeleton_len, &ls), 1);
    char forged[128];
    snprintf(forged, sizeof forged, "%.*s", (int)(skeleton_len - 2), skeleton + 1);
    free(skeleton);
    long_strings_free(ls);

    buf b;
    buf_init(&b, SIZE_MAX / 2);
    buf_printf(&b, "{\"model\":\"rlm\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"},"
                   "{\"role\":\"user\",\"content\":\"", forged);
    for (int i = 0; i < 2000; i++)
        buf_puts(&b, "long question ");
    buf_puts(&b, "\"}]}");
    chat_request req;
    chat_error err;
    assert_int_equal(chat_parse(b.data, b.len, &req, &err), 0);
    assert_string_equal(req.context, forged);
    chat_request_clear(&req);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_as_jansson_does),
        cmocka_unit_test(test_refuses_what_jansson_refuses),
        cmocka_unit_test(test_inline_document_is_the_input),
        cmocka_unit_test(test_long_question_and_parts),
        cmocka_unit_test(test_bad_long_string_is_refused_as_before),
        cmocka_unit_test(test_placeholder_cannot_be_forged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
