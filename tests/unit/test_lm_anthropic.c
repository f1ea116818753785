/* test_lm_anthropic — the Anthropic Messages wire format against recorded
 * bodies in tests/data/anthropic/: request bodies built from lm_request,
 * replies and error bodies parsed into lm_response. No sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm_anthropic.h"
#include "lm_openai.h"
#include "util.h"

#define DATA RLM_TEST_DATA "/anthropic/"

static char *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, DATA "%s", name);
    char *text = file_read(path, 1 << 20, len);
    if (!text)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return text;
}

/* ---- requests ------------------------------------------------------- */

static void assert_json_equal(const char *got, const char *want)
{
    json_t *g = json_loads(got, 0, NULL);
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(g);
    assert_non_null(w);
    if (!json_equal(g, w))
        fail_msg("got %s\nwant %s", got, want);
    json_decref(g);
    json_decref(w);
}

static void test_request_bodies(void **state)
{
    (void)state;
    lm_message msgs[] = {
        {.role = "system", .content = "You are terse."},
        {.role = "user", .content = "Question one"},
        {.role = "assistant", .content = "```repl\nprint(1)\n```"},
        {.role = "user", .content = "Output: 1"},
        {.role = "user", .content = "Go on."},
        {.role = "developer", .content = "Be exact."},
    };
    lm_request req = {.model = "claude-sonnet-4-20250514", .messages = msgs, .n_messages = 6};

    char *body = anthropic_request_body(&req, NULL);
    assert_json_equal(body,
        "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":8192,"
        "\"system\":\"You are terse.\\n\\nBe exact.\","
        "\"messages\":[{\"role\":\"user\",\"content\":\"Question one\"},"
        "{\"role\":\"assistant\",\"content\":\"```repl\\nprint(1)\\n```\"},"
        "{\"role\":\"user\",\"content\":\"Output: 1\\n\\nGo on.\"}]}");
    free(body);

    lm_wire_options wire = {.stream = 1, .max_tokens = 1000, .send_temperature = 1, .temperature = 0.5};
    body = anthropic_request_body(&req, &wire);
    json_t *root = json_loads(body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(root, "max_tokens")), 1000);
    assert_true(json_is_true(json_object_get(root, "stream")));
    assert_true(json_real_value(json_object_get(root, "temperature")) == 0.5);
    assert_null(json_object_get(root, "thinking"));
    assert_null(json_object_get(root, "stream_options")); /* an OpenAI field */
    json_decref(root);
    free(body);

    /* Reasoning effort becomes a thinking budget; max_tokens must exceed it
     * and temperature is not allowed with thinking. */
    wire = (lm_wire_options){.max_tokens = 1000, .reasoning_effort = "high", .send_temperature = 1};
    body = anthropic_request_body(&req, &wire);
    root = json_loads(body, 0, NULL);
    json_t *thinking = json_object_get(root, "thinking");
    assert_string_equal(json_string_value(json_object_get(thinking, "type")), "enabled");
    assert_int_equal(json_integer_value(json_object_get(thinking, "budget_tokens")), 24576);
    assert_true(json_integer_value(json_object_get(root, "max_tokens")) > 24576);
    assert_null(json_object_get(root, "temperature"));
    json_decref(root);
    free(body);

    /* Invalid UTF-8 is repaired, not refused; no system field without system messages. */
    lm_message bad[] = {{.role = "user", .content = "caf\xE9"}};
    lm_request req2 = {.model = "m", .messages = bad, .n_messages = 1};
    body = anthropic_request_body(&req2, NULL);
    assert_non_null(body);
    assert_non_null(strstr(body, "caf\xEF\xBF\xBD"));
    assert_null(strstr(body, "\"system\""));
    free(body);
}

/* Prompt-cache breakpoints become cache_control on text blocks, in the shape
 * Anthropic's prompt caching guide gives, and every content of such a
 * request is a list of blocks (a request without any keeps plain strings:
 * test_request_bodies); past four only the first and the last three are
 * sent. */
static void test_request_cache_control(void **state)
{
    (void)state;
    lm_message msgs[] = {
        {.role = "system", .content = "You are terse.", .cache_point = 1},
        {.role = "user", .content = "Question one"},
        {.role = "assistant", .content = "Reply one"},
        {.role = "user", .content = "Output: 1", .cache_point = 1},
        {.role = "user", .content = "Go on."},
        {.role = "assistant", .content = "Reply two"},
        {.role = "user", .content = "Output: 2", .cache_point = 1},
    };
    lm_request req = {.model = "claude-sonnet-4-5", .messages = msgs, .n_messages = 7};
    char *body = anthropic_request_body(&req, NULL);
    assert_json_equal(body,
        "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":8192,"
        "\"system\":[{\"type\":\"text\",\"text\":\"You are terse.\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Question one\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Reply one\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Output: 1\","
        "\"cache_control\":{\"type\":\"ephemeral\"}},{\"type\":\"text\",\"text\":\"\\n\\nGo on.\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Reply two\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Output: 2\","
        "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}");
    free(body);

    /* A shared preamble of a sub-call is a block of its own, cached. */
    lm_message sub = {.role = "user", .content = "Label each line:\nline one", .cache_prefix = 17};
    lm_request one = {.model = "claude-haiku-4-5", .messages = &sub, .n_messages = 1};
    body = anthropic_request_body(&one, NULL);
    json_t *root = json_loads(body, 0, NULL);
    json_t *content = json_object_get(json_array_get(json_object_get(root, "messages"), 0), "content");
    assert_int_equal(json_array_size(content), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(content, 0), "text")),
                        "Label each line:\n");
    assert_non_null(json_object_get(json_array_get(content, 0), "cache_control"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(content, 1), "text")), "line one");
    assert_null(json_object_get(json_array_get(content, 1), "cache_control"));
    json_decref(root);
    free(body);

    /* Six breakpoints asked: the system's and the last three are sent. */
    lm_message many[] = {
        {.role = "system", .content = "S", .cache_point = 1},
        {.role = "user", .content = "u1", .cache_point = 1},
        {.role = "assistant", .content = "a1", .cache_point = 1},
        {.role = "user", .content = "u2", .cache_point = 1},
        {.role = "assistant", .content = "a2", .cache_point = 1},
        {.role = "user", .content = "u3", .cache_point = 1},
    };
    lm_request lots = {.model = "claude-sonnet-4-5", .messages = many, .n_messages = 6};
    body = anthropic_request_body(&lots, NULL);
    root = json_loads(body, 0, NULL);
    char *text = json_dumps(root, JSON_COMPACT);
    size_t marks = 0;
    for (const char *p = text; (p = strstr(p, "cache_control")); p++)
        marks++;
    assert_int_equal(marks, LM_CACHE_POINTS);
    json_t *msgs_json = json_object_get(root, "messages");
    /* u1 and a1 lost their marks; u2 kept its. */
    assert_null(json_object_get(json_array_get(json_object_get(json_array_get(msgs_json, 0), "content"), 0),
                                "cache_control"));
    assert_null(json_object_get(json_array_get(json_object_get(json_array_get(msgs_json, 1), "content"), 0),
                                "cache_control"));
    assert_non_null(json_object_get(
        json_array_get(json_object_get(json_array_get(msgs_json, 2), "content"), 0), "cache_control"));
    free(text);
    json_decref(root);
    free(body);
}

static void test_openai_wire_options(void **state)
{
    (void)state;
    lm_message msgs[] = {{.role = "user", .content = "hi"}};
    lm_request req = {.model = "o3-mini", .messages = msgs, .n_messages = 1};
    char *body = openai_request_body_with(&req, NULL);
    assert_json_equal(body, "{\"model\":\"o3-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    free(body);
    lm_wire_options wire = {.stream = 1, .max_tokens = 500, .max_completion_tokens = 1,
                            .reasoning_effort = "low"};
    body = openai_request_body_with(&req, &wire);
    assert_json_equal(body, "{\"model\":\"o3-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                            "\"max_completion_tokens\":500,\"reasoning_effort\":\"low\",\"stream\":true,"
                            "\"stream_options\":{\"include_usage\":true}}");
    free(body);
    wire = (lm_wire_options){.max_tokens = 64, .send_temperature = 1, .temperature = 0};
    body = openai_request_body_with(&req, &wire);
    assert_json_equal(body, "{\"model\":\"o3-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                            "\"max_tokens\":64,\"temperature\":0.0}");
    free(body);
}

/* ---- replies -------------------------------------------------------- */

typedef struct response_case {
    const char *file;
    lm_error error;
    const char *content;
    const char *reasoning;
    const char *finish_reason;
    long prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens;
    const char *message_has;
} response_case;

static const response_case response_cases[] = {
    {"message_basic.json", LM_OK, "Hello! How can I help you today?", NULL, "stop", 12, 12, 0, 0, NULL},
    {"message_thinking.json", LM_OK, "27 × 453 = 12,231", "The user asks 27 * 453. 27 * 453 = 12231.", "stop",
     51, 213, 0, 0, NULL},
    {"message_max_tokens.json", LM_OK, "The first ten primes are 2, 3, 5", NULL, "length", 20, 16, -1, -1, NULL},
    {"message_cache_usage.json", LM_OK, "Chapter 3 introduces the narrator's brother.", NULL, "stop",
     21 + 188086 + 2048, 393, 2048, 188086, NULL},
    {"message_tool_use.json", LM_OK, "I'll check the weather.", NULL, "tool_calls", 472, 89, -1, -1, NULL},
    {"message_two_text_blocks.json", LM_OK, "Part one. Part two.", NULL, "stop", 9, 6, -1, -1, NULL},
    {"message_refusal.json", LM_OK, "I can't help with that.", NULL, "content_filter", 30, 8, -1, -1, NULL},
    {"message_empty.json", LM_ERR_EMPTY, NULL, NULL, NULL, 9, 0, -1, -1, "empty reply"},
    {"message_no_content.json", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, -1, -1, "no \"content\" array"},
    {"error_in_200.json", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, -1, -1, "Internal server error"},
    {"not_json.html", LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, -1, -1, "not valid JSON"},
};

static void test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof response_cases / sizeof response_cases[0]; i++) {
        const response_case *rc = &response_cases[i];
        size_t len;
        char *body = load(rc->file, &len);
        lm_response r;
        memset(&r, 0, sizeof r);
        anthropic_parse_response(body, len, &r);
        if (r.error != rc->error)
            fail_msg("%s: %s (%s)", rc->file, lm_error_name(r.error), r.error_message ? r.error_message : "");
        if (rc->error == LM_OK) {
            assert_string_equal(r.content, rc->content);
            if (rc->reasoning)
                assert_string_equal(r.reasoning, rc->reasoning);
            else
                assert_null(r.reasoning);
            assert_string_equal(r.finish_reason, rc->finish_reason);
        } else if (!strstr(r.error_message, rc->message_has)) {
            fail_msg("%s: [%s] lacks [%s]", rc->file, r.error_message, rc->message_has);
        }
        assert_int_equal(r.prompt_tokens, rc->prompt_tokens);
        assert_int_equal(r.completion_tokens, rc->completion_tokens);
        assert_int_equal(r.cached_tokens, rc->cached_tokens);
        assert_int_equal(r.cache_write_tokens, rc->cache_write_tokens);
        lm_response_clear(&r);
        free(body);
    }
}

typedef struct error_case {
    const char *file;
    long status;
    const char *message;
} error_case;

static const error_case error_cases[] = {
    {"error_401.json", 401, "HTTP 401 Unauthorized: invalid x-api-key (authentication_error)"},
    {"error_404_model.json", 404, "HTTP 404 Not Found: model: claude-nope (not_found_error)"},
    {"error_400_max_tokens.json", 400, "HTTP 400 Bad Request: max_tokens: Field required (invalid_request_error)"},
    {"error_429.json", 429, "HTTP 429 Too Many Requests: This request would exceed the rate limit for your "
                            "organization of 50 requests per minute. (rate_limit_error)"},
    {"error_529_overloaded.json", 529, "HTTP 529: Overloaded (overloaded_error)"},
    {"not_json.html", 502, "HTTP 502 Bad Gateway: 502 Bad Gateway"},
};

static void test_error_messages(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        size_t len;
        char *body = load(error_cases[i].file, &len);
        char *msg = anthropic_error_message(error_cases[i].status, body, len);
        assert_non_null(msg);
        if (strcmp(msg, error_cases[i].message) != 0)
            fail_msg("%s: got [%s]", error_cases[i].file, msg);
        free(msg);
        free(body);
    }
    char *msg = anthropic_error_message(503, NULL, 0);
    assert_string_equal(msg, "HTTP 503 Service Unavailable (empty body)");
    free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_bodies),
        cmocka_unit_test(test_request_cache_control),
        cmocka_unit_test(test_openai_wire_options),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_error_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
