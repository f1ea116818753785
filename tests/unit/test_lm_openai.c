/* test_lm_openai — the OpenAI wire format against recorded provider bodies in
 * tests/data/openai/: each case is one body file and the fields (or error) we
 * expect from it. No sockets: lm_openai is pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lm_openai.h"
#include "util.h"

#define DATA RLM_TEST_DATA "/openai/"

static char *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, DATA "%s", name);
    char *text = file_read(path, 1 << 20, len);
    if (!text)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return text;
}

/* ---- 2xx bodies ----------------------------------------------------- */

typedef struct response_case {
    const char *file;
    lm_error error;
    const char *content;       /* NULL: expect NULL */
    const char *reasoning;     /* NULL: expect NULL */
    const char *finish_reason; /* NULL: expect NULL */
    long prompt_tokens;
    long completion_tokens;
    const char *message_has;   /* substring of error_message when error != LM_OK */
} response_case;

static const response_case response_cases[] = {
    {"openai_normal.json", LM_OK, "Hello! How can I assist you today?", NULL, "stop", 19, 10, NULL},
    {"deepseek_reasoning_content_null.json", LM_OK, "",
     "The user asks for 9.11 vs 9.8. Compare the tenths digit: 1 < 8, so 9.8 is larger.", "length", 15, 64, NULL},
    {"vllm_reasoning_content.json", LM_OK, "\n\nThe capital of France is Paris.",
     "\nThe question asks for the capital of France, which is Paris.\n", "stop", 14, 38, NULL},
    {"openrouter_reasoning.json", LM_OK, "There are 3 r's in \"strawberry\".",
     "Spell it out: s-t-r-a-w-b-e-r-r-y. The letter r appears at positions 3, 8 and 9.", "stop", 12, 211, NULL},
    {"llamacpp_reasoning_content.json", LM_OK, "4", "Two plus two is four.", "stop", 18, 22, NULL},
    {"content_parts.json", LM_OK, "First part, second part.", NULL, "stop", 30, 7, NULL},
    {"finish_length.json", LM_OK, "The first ten primes are 2, 3, 5, 7, 11, 13", NULL, "length", 21, 16, NULL},
    {"ollama_no_usage.json", LM_OK, "Hello there! How can I help?", NULL, "stop", -1, -1, NULL},
    {"refusal.json", LM_OK, "I'm sorry, I cannot assist with that request.", NULL, "stop", 81, 11, NULL},
    {"empty_choices.json", LM_ERR_EMPTY, NULL, NULL, NULL, 9, 0, "no choices"},
    {"empty_content.json", LM_ERR_EMPTY, "", NULL, "length", 2048, 1, "finish_reason length"},
    {"not_json.html", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, "not valid JSON"},
    {"truncated.json", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, "not valid JSON"},
    {"ok_with_error_200.json", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, "Upstream idle timeout exceeded"},
};

static void assert_string_or_null(const char *got, const char *want, const char *what, const char *file)
{
    if (!want) {
        if (got)
            fail_msg("%s: %s: expected NULL, got \"%s\"", file, what, got);
        return;
    }
    if (!got)
        fail_msg("%s: %s: expected \"%s\", got NULL", file, what, want);
    if (strcmp(got, want) != 0)
        fail_msg("%s: %s: expected \"%s\", got \"%s\"", file, what, want, got);
}

static void test_response_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof response_cases / sizeof response_cases[0]; i++) {
        const response_case *c = &response_cases[i];
        size_t len;
        char *body = load(c->file, &len);
        lm_response r = {0};
        openai_parse_response(body, len, &r);
        if (r.error != c->error)
            fail_msg("%s: error %s, expected %s (%s)", c->file, lm_error_name(r.error),
                     lm_error_name(c->error), r.error_message ? r.error_message : "");
        assert_string_or_null(r.content, c->content, "content", c->file);
        assert_string_or_null(r.reasoning, c->reasoning, "reasoning", c->file);
        assert_string_or_null(r.finish_reason, c->finish_reason, "finish_reason", c->file);
        if (r.prompt_tokens != c->prompt_tokens || r.completion_tokens != c->completion_tokens)
            fail_msg("%s: tokens %ld/%ld, expected %ld/%ld", c->file, r.prompt_tokens,
                     r.completion_tokens, c->prompt_tokens, c->completion_tokens);
        if (c->error == LM_OK) {
            assert_null(r.error_message);
        } else {
            assert_non_null(r.error_message);
            if (!strstr(r.error_message, c->message_has))
                fail_msg("%s: message \"%s\" lacks \"%s\"", c->file, r.error_message, c->message_has);
        }
        lm_response_clear(&r);
        free(body);
    }
}

/* prompt_tokens_details.cached_tokens, as OpenAI documents it: part of
 * prompt_tokens; 0 when nothing was cached; -1 when the server says nothing. */
static void test_cached_tokens(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        long prompt, cached;
    } cases[] = {{"prompt_cached.json", 2006, 1920}, {"openai_normal.json", 19, 0},
                 {"ollama_no_usage.json", -1, -1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *body = load(cases[i].file, &len);
        lm_response r = {0};
        openai_parse_response(body, len, &r);
        assert_int_equal(r.error, LM_OK);
        assert_int_equal(r.prompt_tokens, cases[i].prompt);
        assert_int_equal(r.cached_tokens, cases[i].cached);
        assert_int_equal(r.cache_write_tokens, -1);
        lm_response_clear(&r);
        free(body);
    }
}

/* A reused response is overwritten, not leaked (ASan checks the leak). */
static void test_response_reuse(void **state)
{
    (void)state;
    size_t len;
    char *body = load("openrouter_reasoning.json", &len);
    lm_response r = {0};
    openai_parse_response(body, len, &r);
    openai_parse_response("{}", 2, &r);
    assert_int_equal(r.error, LM_ERR_PARSE);
    assert_null(r.content);
    assert_null(r.reasoning);
    assert_int_equal(r.prompt_tokens, -1);
    lm_response_clear(&r);
    free(body);
}

static void test_response_bad_shapes(void **state)
{
    (void)state;
    static const struct { const char *body; lm_error error; } cases[] = {
        {"[1,2]", LM_ERR_PARSE},
        {"{\"choices\": {}}", LM_ERR_PARSE},
        {"{\"choices\": [42]}", LM_ERR_PARSE},
        {"{\"choices\": [{\"message\": {\"content\": 7}}]}", LM_ERR_PARSE},
        {"{\"choices\": [{\"message\": {\"content\": [3]}}]}", LM_ERR_PARSE},
        {"{\"choices\": [{\"message\": {\"content\": null}}]}", LM_ERR_EMPTY},
        {"{\"choices\": [{\"message\": {\"content\": \"x\"}}], \"usage\": {\"prompt_tokens\": \"9\"}}", LM_OK},
        {"", LM_ERR_PARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lm_response r = {0};
        openai_parse_response(cases[i].body, strlen(cases[i].body), &r);
        if (r.error != cases[i].error)
            fail_msg("case %zu (%s): got %s", i, cases[i].body, lm_error_name(r.error));
        assert_int_equal(r.prompt_tokens, -1);
        lm_response_clear(&r);
    }
}

/* ---- error bodies --------------------------------------------------- */

typedef struct error_case {
    const char *file;
    long status;
    const char *expected; /* the whole message */
} error_case;

static const error_case error_cases[] = {
    {"error_openai_401.json", 401,
     "HTTP 401 Unauthorized: Incorrect API key provided: sk-proj-********************************************abcd. "
     "You can find your API key at https://platform.openai.com/account/api-keys. (invalid_api_key)"},
    {"error_openai_404.json", 404,
     "HTTP 404 Not Found: The model `gpt-5-ultra` does not exist or you do not have access to it. (model_not_found)"},
    {"error_openai_429.json", 429,
     "HTTP 429 Too Many Requests: Rate limit reached for gpt-4o in organization org-AbCdEf123456 on tokens per min "
     "(TPM): Limit 30000, Used 29800, Requested 1200. Please try again in 2.0s. Visit "
     "https://platform.openai.com/account/rate-limits to learn more. (rate_limit_exceeded)"},
    {"error_openai_500.json", 500,
     "HTTP 500 Internal Server Error: The server had an error while processing your request. Sorry about that!"},
    {"error_openrouter_502.json", 502,
     "HTTP 502 Bad Gateway: Provider returned error: Together said "
     "{\"error\":{\"message\":\"upstream connect error\"}}"},
    {"error_vllm_400.json", 400,
     "HTTP 400 Bad Request: This model's maximum context length is 32768 tokens. However, you requested 40123 "
     "tokens (39123 in the messages, 1000 in the completion). Please reduce the length of the messages or completion."},
    {"error_llamacpp_401.json", 401, "HTTP 401 Unauthorized: Invalid API Key"},
    {"error_string_ollama.json", 404, "HTTP 404 Not Found: model \"llama9\" not found, try pulling it first"},
    {"error_detail_string.json", 404, "HTTP 404 Not Found: Not Found"},
    {"error_detail_list.json", 422, "HTTP 422 Unprocessable Entity: Field required"},
    {"error_html_502.html", 502, "HTTP 502 Bad Gateway: 502 Bad Gateway"},
    {"error_plain_504.txt", 504, "HTTP 504 Gateway Timeout: upstream request timeout"},
    {"error_empty_503.txt", 503, "HTTP 503 Service Unavailable (empty body)"},
    {"not_json.html", 418, "HTTP 418: OK"},
    {"truncated.json", 500,
     "HTTP 500 Internal Server Error: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\","
     "\"created\":1741569952,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
     "\"content\":\"Hello! How can I ass"},
};

static void test_error_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        const error_case *c = &error_cases[i];
        size_t len;
        char *body = load(c->file, &len);
        char *msg = lm_http_error_message(c->status, body, len);
        assert_non_null(msg);
        if (strcmp(msg, c->expected) != 0)
            fail_msg("%s:\n  got      %s\n  expected %s", c->file, msg, c->expected);
        free(msg);
        free(body);
    }
}

/* A megabyte of non-JSON is quoted as a short excerpt with its size, and a
 * megabyte-long provider message is cut, both on a character boundary. */
static void test_error_huge_body(void **state)
{
    (void)state;
    size_t len = 1 << 20;
    char *body = malloc(len);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = "é<>x\n"[i % 6]; /* 'é' is two bytes: cuts land mid-character */
    char *msg = lm_http_error_message(500, body, len);
    assert_non_null(msg);
    assert_true(strlen(msg) < 600);
    assert_non_null(strstr(msg, "(1048576 bytes)"));
    assert_null(strchr(msg, '\n'));
    json_t *valid = json_string(msg); /* NULL if the cut split a character */
    assert_non_null(valid);
    json_decref(valid);
    free(msg);

    static const char head[] = "{\"error\":{\"message\":\"";
    static const char tail[] = "\",\"code\":\"x\"}}";
    memcpy(body, head, sizeof head - 1);
    for (size_t i = sizeof head - 1; i < len - (sizeof tail - 1); i++)
        body[i] = (i % 2) ? 'a' : ' ';
    memcpy(body + len - (sizeof tail - 1), tail, sizeof tail - 1);
    msg = lm_http_error_message(429, body, len);
    assert_non_null(msg);
    assert_true(strlen(msg) < 1200);
    assert_true(strncmp(msg, "HTTP 429 Too Many Requests: a a a", 33) == 0);
    assert_non_null(strstr(msg, "…"));
    free(msg);
    free(body);
}

static void test_error_binary_body(void **state)
{
    (void)state;
    const char body[] = "\xff\xfe\x01\x02oops\x80";
    char *msg = lm_http_error_message(502, body, sizeof body - 1);
    assert_string_equal(msg, "HTTP 502 Bad Gateway: \xEF\xBF\xBD\xEF\xBF\xBD oops\xEF\xBF\xBD");
    free(msg);
    msg = lm_http_error_message(502, NULL, 0);
    assert_string_equal(msg, "HTTP 502 Bad Gateway (empty body)");
    free(msg);
}

/* ---- request -------------------------------------------------------- */

static void test_request_body(void **state)
{
    (void)state;
    lm_message msgs[] = {
        {.role = "system", .content = "You are terse."},
        {.role = "user", .content = "Quote: \"hi\"\n\ttab \\ back"},
        {.role = "assistant", .content = "ok"},
    };
    lm_request req = {.model = "gpt-4o-mini", .messages = msgs, .n_messages = 3};
    char *body = openai_request_body(&req);
    assert_non_null(body);
    json_error_t err;
    json_t *root = json_loads(body, 0, &err);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "model")), "gpt-4o-mini");
    json_t *arr = json_object_get(root, "messages");
    assert_int_equal(json_array_size(arr), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *m = json_array_get(arr, i);
        assert_string_equal(json_string_value(json_object_get(m, "role")), msgs[i].role);
        assert_string_equal(json_string_value(json_object_get(m, "content")), msgs[i].content);
        assert_int_equal(json_object_size(m), 2);
    }
    assert_int_equal(json_object_size(root), 2);
    json_decref(root);
    free(body);
}

static void test_request_invalid_utf8(void **state)
{
    (void)state;
    static const struct { const char *in, *out; } cases[] = {
        {"ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},
        {"a\xFF" "b", "a\xEF\xBF\xBD" "b"},
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong '/' */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
        {"cut \xE2\x82", "cut \xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lm_message msg = {.role = "user", .content = cases[i].in};
        lm_request req = {.model = "m\xFF", .messages = &msg, .n_messages = 1};
        char *body = openai_request_body(&req);
        assert_non_null(body);
        json_t *root = json_loads(body, 0, NULL);
        assert_non_null(root);
        json_t *m = json_array_get(json_object_get(root, "messages"), 0);
        assert_string_equal(json_string_value(json_object_get(m, "content")), cases[i].out);
        assert_string_equal(json_string_value(json_object_get(root, "model")), "m\xEF\xBF\xBD");
        json_decref(root);
        free(body);
    }
}

/* A text with NUL bytes goes out and comes back whole, by its length. */
static void test_nul_bytes(void **state)
{
    (void)state;
    lm_message msg = {.role = "user", .content = "a\0b\0", .content_len = 4};
    lm_request req = {.model = "m", .messages = &msg, .n_messages = 1};
    char *body = openai_request_body(&req);
    assert_non_null(strstr(body, "\"content\":\"a\\u0000b\\u0000\""));
    free(body);
    static const char reply[] =
        "{\"choices\":[{\"message\":{\"content\":\"\\u0000x\\u0000y\"},\"finish_reason\":\"stop\"}]}";
    lm_response r = {0};
    openai_parse_response(reply, sizeof reply - 1, &r);
    assert_int_equal(r.error, LM_OK);
    assert_int_equal(r.content_len, 4);
    assert_memory_equal(r.content, "\0x\0y", 4);
    assert_int_equal(lm_content_len(&r), 4);
    lm_response_clear(&r);
    /* a stream's deltas too */
    lm_stream s;
    lm_stream_init(&s, 0);
    static const char *events[] = {
        "{\"choices\":[{\"delta\":{\"content\":\"p\\u0000\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"q\"},\"finish_reason\":\"stop\"}]}", "[DONE]"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(openai_stream_event(&s, events[i], strlen(events[i])), 0);
    lm_stream_finish(&s, &r);
    assert_int_equal(r.error, LM_OK);
    assert_int_equal(r.content_len, 3);
    assert_memory_equal(r.content, "p\0q", 3);
    lm_response_clear(&r);
    lm_stream_free(&s);
}

/* The body's strings are written straight from the bytes: for any bytes at
 * all, what a JSON parser reads back is what frame_string keeps (invalid
 * UTF-8 as U+FFFD, NUL and control characters escaped). */
static void test_json_put_string_any_bytes(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char bytes[64];
        size_t len = (size_t)(round % 64);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* Mostly ASCII with runs of high bytes and controls. */
            unsigned r = seed >> 16;
            bytes[i] = (char)(r % 4 == 0 ? 0x80 + r % 0x80 : r % 4 == 1 ? r % 0x20 : 0x20 + r % 0x60);
        }
        buf b;
        buf_init(&b, 1 << 20);
        assert_int_equal(lm_json_put_string(&b, bytes, len), 0);
        assert_int_equal(buf_append(&b, "", 1), 0);
        json_t *want = frame_string(bytes, len);
        json_error_t err;
        json_t *got = json_loads(b.data, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!got)
            fail_msg("round %d: not JSON (%s): %s", round, err.text, b.data);
        assert_int_equal(json_string_length(got), json_string_length(want));
        assert_memory_equal(json_string_value(got), json_string_value(want), json_string_length(want));
        json_decref(got);
        json_decref(want);
        buf_free(&b);
    }
}

static void test_request_no_messages(void **state)
{
    (void)state;
    lm_request req = {.model = NULL, .messages = NULL, .n_messages = 0};
    char *body = openai_request_body(&req);
    assert_string_equal(body, "{\"model\":\"\",\"messages\":[]}");
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_response_table),
        cmocka_unit_test(test_json_put_string_any_bytes),
        cmocka_unit_test(test_response_reuse),
        cmocka_unit_test(test_cached_tokens),
        cmocka_unit_test(test_response_bad_shapes),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_error_huge_body),
        cmocka_unit_test(test_error_binary_body),
        cmocka_unit_test(test_request_body),
        cmocka_unit_test(test_request_invalid_utf8),
        cmocka_unit_test(test_request_no_messages),
        cmocka_unit_test(test_nul_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
