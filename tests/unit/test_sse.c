/* test_sse — the SSE parser and both providers' stream assembly. Every case
 * is fed whole, byte by byte and split in two at every position: the result
 * must not depend on how the network cut the stream. Streams recorded from
 * the providers are in tests/data/sse/. */
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
#include "sse.h"
#include "util.h"

#define DATA RLM_TEST_DATA "/sse/"

static char *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, DATA "%s", name);
    char *text = file_read(path, 1 << 20, len);
    if (!text)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return text;
}

/* ---- the parser ----------------------------------------------------- */

/* Events as "type|id|data" lines, to compare with one string. */
typedef struct collected {
    buf out;
    int stop_after;     /* > 0: return 7 from the callback at this event */
    int count;
} collected;

static int collect(void *ctx, const sse_event *ev)
{
    collected *c = ctx;
    buf_printf(&c->out, "%s|%s|", ev->type, ev->id);
    buf_append(&c->out, ev->data, ev->data_len);
    buf_puts(&c->out, "\n");
    c->count++;
    return c->stop_after > 0 && c->count == c->stop_after ? 7 : 0;
}

typedef struct parse_case {
    const char *name;
    const char *input;
    const char *events;
} parse_case;

static const parse_case parse_cases[] = {
    {"one event", "data: a\n\n", "message||a\n"},
    {"multi-line data", "data: a\ndata: b\n\n", "message||a\nb\n"},
    {"CRLF", "data: x\r\n\r\ndata: y\r\n\r\n", "message||x\nmessage||y\n"},
    {"CR", "data: x\r\rdata: y\r\r", "message||x\nmessage||y\n"},
    {"mixed line ends", "data: a\r\ndata: b\rdata: c\n\r\n", "message||a\nb\nc\n"},
    {"comments", ": keep-alive\ndata: x\n: more\n\n:\n\n", "message||x\n"},
    {"event names", "event: foo\ndata: x\n\nevent: bar\ndata:y\n\n", "foo||x\nbar||y\n"},
    {"no space, two spaces", "data:x\n\ndata:  x\n\n", "message||x\nmessage|| x\n"},
    {"field without colon", "data\n\n", "message||\n"},
    {"empty data lines", "data:\ndata:\n\n", "message||\n\n"},
    {"event without data is dropped", "event: foo\n\ndata: x\n\n", "message||x\n"},
    {"ids persist", "id: 7\ndata: x\n\ndata: y\n\nid\ndata: z\n\n", "message|7|x\nmessage|7|y\nmessage||z\n"},
    {"BOM", "\xEF\xBB\xBF" "data: x\n\n", "message||x\n"},
    {"unterminated last event", "data: x\n\ndata: y\n", "message||x\n"},
    {"unknown fields and retry", "retry: 1000\nfoo: bar\ndata: x\n\n", "message||x\n"},
    {"leading blank lines", "\n\n\ndata: x\n\n", "message||x\n"},
    {"colon in value", "data: {\"a\":\"b:c\"}\n\n", "message||{\"a\":\"b:c\"}\n"},
    {"utf-8", "event: é\ndata: wörld ✓\n\n", "é||wörld ✓\n"},
};

static void feed_split(const char *input, size_t len, size_t split, int bytewise, buf *out)
{
    collected c = {.stop_after = 0};
    buf_init(&c.out, 1 << 20);
    sse_parser p;
    sse_parser_init(&p, 0, 0, collect, &c);
    if (bytewise) {
        for (size_t i = 0; i < len; i++)
            assert_int_equal(sse_feed(&p, input + i, 1), 0);
    } else {
        assert_int_equal(sse_feed(&p, input, split), 0);
        assert_int_equal(sse_feed(&p, input + split, len - split), 0);
    }
    sse_parser_free(&p);
    *out = c.out;
}

static void test_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const parse_case *pc = &parse_cases[i];
        size_t len = strlen(pc->input);
        for (size_t split = 0; split <= len + 1; split++) {
            buf got;
            int bytewise = split == len + 1;
            feed_split(pc->input, len, bytewise ? 0 : split, bytewise, &got);
            const char *text = got.data ? got.data : "";
            if (strcmp(text, pc->events) != 0)
                fail_msg("%s (split %zu): got [%s], want [%s]", pc->name, split, text, pc->events);
            buf_free(&got);
        }
    }
}

static void test_line_limit(void **state)
{
    (void)state;
    const char *input = "data: 0123456789abcdef\n\n"; /* a 22-byte line */
    size_t len = strlen(input);
    for (size_t split = 0; split <= len; split++) {
        collected c = {.stop_after = 0};
        buf_init(&c.out, 1024);
        sse_parser p;
        sse_parser_init(&p, 16, 0, collect, &c);
        int rc = sse_feed(&p, input, split);
        if (rc == 0)
            rc = sse_feed(&p, input + split, len - split);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(sse_error(&p), "line longer"));
        assert_int_equal(c.count, 0);
        assert_int_equal(sse_feed(&p, "data: x\n\n", 9), -1); /* stays stopped */
        sse_parser_reset(&p);
        assert_int_equal(sse_feed(&p, "data: ok\n\n", 10), 0); /* a reset parser works again */
        assert_int_equal(c.count, 1);
        sse_parser_free(&p);
        buf_free(&c.out);
    }
    /* A line of exactly the limit passes. */
    collected c = {.stop_after = 0};
    buf_init(&c.out, 1024);
    sse_parser p;
    sse_parser_init(&p, 16, 0, collect, &c);
    assert_int_equal(sse_feed(&p, "data: 0123456789\n\n", 18), 0);
    assert_int_equal(c.count, 1);
    sse_parser_free(&p);
    buf_free(&c.out);
}

static void test_event_limit_and_stop(void **state)
{
    (void)state;
    collected c = {.stop_after = 0};
    buf_init(&c.out, 1024);
    sse_parser p;
    sse_parser_init(&p, 0, 8, collect, &c);
    assert_int_equal(sse_feed(&p, "data: 12345\ndata: 678\n", 22), -1);
    assert_non_null(strstr(sse_error(&p), "data larger"));
    sse_parser_free(&p);

    c.stop_after = 2;
    c.count = 0;
    sse_parser_init(&p, 0, 0, collect, &c);
    assert_int_equal(sse_feed(&p, "data: a\n\ndata: b\n\ndata: c\n\n", 27), 7);
    assert_int_equal(c.count, 2);
    assert_int_equal(sse_feed(&p, "data: d\n\n", 9), -1);
    sse_parser_free(&p);
    buf_free(&c.out);
}

/* ---- provider streams ----------------------------------------------- */

typedef struct stream_case {
    const char *file;
    int anthropic;
    lm_error error;
    const char *content;
    const char *reasoning;
    const char *finish_reason;
    long prompt_tokens, completion_tokens, cached_tokens;
    const char *message_has;
    long cache_write_tokens;   /* -1: not reported */
} stream_case;

static const stream_case stream_cases[] = {
    {"openai_basic.sse", 0, LM_OK, "Hello, wörld!", NULL, "stop", 9, 4, 0, NULL, -1},
    {"openai_crlf.sse", 0, LM_OK, "Hello, wörld!", NULL, "stop", 9, 4, 0, NULL, -1},
    {"openai_cr.sse", 0, LM_OK, "Hello, wörld!", NULL, "stop", 9, 4, 0, NULL, -1},
    {"openai_reasoning.sse", 0, LM_OK, "9.8 is larger.", "9.11 vs 9.8: tenths 1 < 8.", "stop", 15, 30, 8, NULL, -1},
    {"openai_only_reasoning.sse", 0, LM_OK, "", "thinking...", "length", -1, -1, -1, NULL, -1},
    {"openrouter_comments.sse", 0, LM_OK, "Paris", NULL, "stop", 14, 2, -1, NULL, -1},
    {"openai_truncated.sse", 0, LM_ERR_TRUNCATED, NULL, NULL, NULL, 9, 4, 0, "truncated", -1},
    {"openai_error_midstream.sse", 0, LM_ERR_HTTP, NULL, NULL, NULL, -1, -1, -1, "Upstream provider disconnected", -1},
    {"openai_malformed.sse", 0, LM_ERR_PARSE, NULL, NULL, NULL, -1, -1, -1, "not a JSON object", -1},
    {"anthropic_basic.sse", 1, LM_OK, "Hello, wörld!", NULL, "stop", 35, 15, 10, NULL, 0},
    {"anthropic_thinking.sse", 1, LM_OK, "27 * 453 = 12,231", "Let me solve this step by step:\n\n1. 27 * 453 = 12231",
     "length", 40, 120, -1, NULL, -1},
    {"anthropic_truncated.sse", 1, LM_ERR_TRUNCATED, NULL, NULL, NULL, 35, 15, 10, "truncated", 0},
    {"anthropic_error.sse", 1, LM_ERR_HTTP, NULL, NULL, NULL, 5, 1, -1, "Overloaded (overloaded_error)", -1},
    /* Prompt caching as the providers document it: OpenAI's usage in the last
     * chunk (stream_options.include_usage), Anthropic's in message_start and
     * again, cumulative, in message_delta. */
    {"openai_prompt_cached.sse", 0, LM_OK, "412 distinct users.", NULL, "stop", 2006, 5, 1920, NULL, -1},
    {"anthropic_prompt_cached.sse", 1, LM_OK, "412 distinct users.", NULL, "stop", 12 + 1530 + 4096, 9, 4096,
     NULL, 1530},
};

typedef struct assembler {
    lm_stream acc;
    int anthropic;
} assembler;

static int on_provider_event(void *ctx, const sse_event *ev)
{
    assembler *a = ctx;
    return a->anthropic ? anthropic_stream_event(&a->acc, ev->type, ev->data, ev->data_len)
                        : openai_stream_event(&a->acc, ev->data, ev->data_len);
}

static void check_stream(const stream_case *sc, const char *data, size_t len, size_t split)
{
    assembler a = {.anthropic = sc->anthropic};
    lm_stream_init(&a.acc, 0);
    sse_parser p;
    sse_parser_init(&p, 0, 0, on_provider_event, &a);
    if (sse_feed(&p, data, split) == 0)
        sse_feed(&p, data + split, len - split);
    lm_response r;
    memset(&r, 0, sizeof r);
    long cached = a.acc.cached_tokens;
    lm_stream_finish(&a.acc, &r);
    if (r.error != sc->error)
        fail_msg("%s split %zu: error %s, want %s (%s)", sc->file, split, lm_error_name(r.error),
                 lm_error_name(sc->error), r.error_message ? r.error_message : "");
    assert_int_equal(r.prompt_tokens, sc->prompt_tokens);
    assert_int_equal(r.completion_tokens, sc->completion_tokens);
    assert_int_equal(cached, sc->cached_tokens);
    assert_int_equal(r.cached_tokens, sc->cached_tokens);
    assert_int_equal(r.cache_write_tokens, sc->cache_write_tokens);
    if (sc->error == LM_OK) {
        assert_string_equal(r.content, sc->content);
        if (sc->reasoning)
            assert_string_equal(r.reasoning, sc->reasoning);
        else
            assert_null(r.reasoning);
        assert_string_equal(r.finish_reason, sc->finish_reason);
        assert_null(r.error_message);
    } else {
        assert_null(r.content);
        assert_non_null(r.error_message);
        if (!strstr(r.error_message, sc->message_has))
            fail_msg("%s: message [%s] lacks [%s]", sc->file, r.error_message, sc->message_has);
    }
    lm_response_clear(&r);
    sse_parser_free(&p);
    lm_stream_free(&a.acc);
}

static void test_provider_streams(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof stream_cases / sizeof stream_cases[0]; i++) {
        size_t len;
        char *data = load(stream_cases[i].file, &len);
        for (size_t split = 0; split <= len; split++)
            check_stream(&stream_cases[i], data, len, split);
        free(data);
    }
}

/* Progress counts code points, not bytes, and the stream is reusable after reset. */
static void test_stream_counts_and_reset(void **state)
{
    (void)state;
    size_t len;
    char *data = load("openai_basic.sse", &len);
    assembler a = {.anthropic = 0};
    lm_stream_init(&a.acc, 0);
    sse_parser p;
    sse_parser_init(&p, 0, 0, on_provider_event, &a);
    assert_int_equal(sse_feed(&p, data, len), 0);
    assert_int_equal(a.acc.content_chars, 13); /* "Hello, wörld!" */
    assert_true(a.acc.done);
    lm_stream_reset(&a.acc);
    sse_parser_reset(&p);
    assert_int_equal(a.acc.content_chars, 0);
    assert_int_equal(sse_feed(&p, data, len), 0);
    lm_response r = {0};
    lm_stream_finish(&a.acc, &r);
    assert_int_equal(r.error, LM_OK);
    assert_string_equal(r.content, "Hello, wörld!");
    lm_response_clear(&r);
    sse_parser_free(&p);
    lm_stream_free(&a.acc);
    free(data);

    /* A limit on the assembled text is an error, not growth. */
    lm_stream_init(&a.acc, 4);
    assert_int_equal(openai_stream_event(&a.acc, "{\"choices\":[{\"delta\":{\"content\":\"12345\"}}]}", 43), -1);
    assert_int_equal(a.acc.error, LM_ERR_PARSE);
    lm_stream_free(&a.acc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_event_limit_and_stop),
        cmocka_unit_test(test_provider_streams),
        cmocka_unit_test(test_stream_counts_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
