/* The event stream: trace events reach the listener (recorded and notified
 * ones) and the line sink (recorded ones only), and events_fill reads each
 * kind's fields from the same JSON the trace writes; the trace's own line
 * writer (trace_json_line) writes what json_dumps writes, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "trace.h"

typedef struct seen {
    int events;
    rlm_event last;
    char last_type[64];
    char text[256];
    char *json;
    int lines;
} seen;

static void on_event(void *userdata, const rlm_event *ev)
{
    seen *s = userdata;
    s->events++;
    s->last = *ev;
    snprintf(s->last_type, sizeof s->last_type, "%s", ev->type);
    snprintf(s->text, sizeof s->text, "%.*s", (int)ev->text_len, ev->text ? ev->text : "");
    free(s->json);
    s->json = rlm_event_json(ev);
    /* Strings are borrowed for the call: keep none of them. */
    s->last.type = s->last.node = s->last.parent = s->last.text = s->last.output = NULL;
    s->last.model = s->last.status = s->last.how = s->last.budget = s->last.error = NULL;
    s->last.internal_ = NULL;
}

static void on_line(void *ctx, const char *line, size_t len)
{
    seen *s = ctx;
    assert_true(len > 0 && line[len - 1] == '\n');
    s->lines++;
}

static void test_listener_and_sink(void **state)
{
    (void)state;
    seen s = {0};
    events ev = {.fn = on_event, .userdata = &s};
    trace *t = trace_new();
    assert_non_null(t);
    assert_false(trace_active(t));
    /* Nobody listens: nothing is built, nothing fails. */
    assert_int_equal(trace_event(t, "warning", json_pack("{s:s}", "message", "x")), 0);
    trace_set_listener(t, events_listener, &ev);
    trace_set_line_sink(t, on_line, &s);
    assert_true(trace_active(t));

    trace_event(t, "code", json_pack("{s:s,s:s,s:i,s:s,s:b,s:f,s:i}", "node", "0.2", "parent", "0",
                                     "turn", 3, "code", "print(1)", "raised", 1, "seconds", 0.5,
                                     "block", 2));
    assert_int_equal(s.events, 1);
    trace_sink_flush(t);   /* the sink has its own thread */
    assert_int_equal(s.lines, 1);
    assert_int_equal(s.last.kind, RLM_EVENT_CODE);
    assert_int_equal(s.last.version, RLM_EVENT_VERSION);
    assert_int_equal(s.last.size, sizeof(rlm_event));
    assert_int_equal(s.last.depth, 2);
    assert_int_equal(s.last.turn, 3);
    assert_int_equal(s.last.block, 2);
    assert_true(s.last.raised);
    assert_string_equal(s.text, "print(1)");
    assert_non_null(strstr(s.json, "\"type\":\"code\""));
    assert_non_null(strstr(s.json, "\"node\":\"0.2\""));

    /* Progress reaches the listener only, never the record. */
    trace_notify(t, "batch_progress", json_pack("{s:I,s:I,s:I,s:I,s:I}", "batch", 640, "done", 120,
                                                "in_flight", 64, "failed", 2, "retried", 5));
    assert_int_equal(s.events, 2);
    trace_sink_flush(t);
    assert_int_equal(s.lines, 1);
    assert_int_equal(s.last.kind, RLM_EVENT_BATCH_PROGRESS);
    assert_int_equal(s.last.batch_size, 640);
    assert_int_equal(s.last.done, 120);
    assert_int_equal(s.last.in_flight, 64);
    assert_int_equal(s.last.failed, 2);
    assert_int_equal(s.last.retried, 5);

    trace_event(t, "root_reply", json_pack("{s:i,s:s,s:{s:i,s:i},s:n}", "turn", 1, "content", "hi",
                                           "usage", "prompt_tokens", 10, "completion_tokens", 3,
                                           "cost_usd"));
    assert_int_equal(s.last.kind, RLM_EVENT_ROOT_REPLY);
    assert_int_equal(s.last.prompt_tokens, 10);
    assert_int_equal(s.last.completion_tokens, 3);
    assert_true(s.last.cost_usd < 0);   /* unknown, never a guessed 0 */
    assert_int_equal(s.last.depth, 1);

    trace_event(t, "mode", json_pack("{s:s}", "mode", "rlm"));
    assert_int_equal(s.last.kind, RLM_EVENT_OTHER);
    assert_string_equal(s.last_type, "mode");
    trace_close(t);
    free(s.json);
}

static void test_fill_kinds(void **state)
{
    (void)state;
    rlm_event e;
    json_t *j = json_pack("{s:s,s:s,s:n,s:s,s:s,s:i,s:I,s:I,s:f,s:f,s:s}", "type", "run_end", "node", "0",
                          "parent", "status", "ok", "answer", "a\0b", "iterations", 4, "sub_calls",
                          (json_int_t)13, "sub_call_errors", (json_int_t)1, "elapsed", 2.5,
                          "cost_usd", 0.25, "stopped_by", "max_cost");
    /* json_pack stops at the NUL: set the answer with its length. */
    json_object_set_new(j, "answer", json_stringn("a\0b", 3));
    events_fill(&e, "run_end", j);
    assert_int_equal(e.kind, RLM_EVENT_RUN_END);
    assert_int_equal(e.text_len, 3);
    assert_memory_equal(e.text, "a\0b", 3);
    assert_int_equal(e.turn, 4);
    assert_int_equal(e.sub_calls, 13);
    assert_int_equal(e.failed, 1);
    assert_true(e.seconds == 2.5);
    assert_true(e.cost_usd == 0.25);
    assert_string_equal(e.budget, "max_cost");
    assert_null(e.parent);
    json_decref(j);

    j = json_pack("{s:s,s:s,s:i,s:s}", "node", "0.1.3", "parent", "0.1", "depth", 3, "prompt", "go");
    events_fill(&e, "child_start", j);
    assert_int_equal(e.kind, RLM_EVENT_CHILD_START);
    assert_int_equal(e.depth, 3);
    assert_string_equal(e.text, "go");
    json_decref(j);
}

/* One value through both writers: the same bytes, and a newline. */
static void assert_same_as_jansson(json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(want);
    size_t len = 0;
    char *got = trace_json_line(v, &len);
    assert_non_null(got);
    assert_int_equal(len, strlen(want) + 1);
    assert_int_equal(got[len - 1], '\n');
    got[len - 1] = '\0';
    assert_string_equal(got, want);
    free(got);
    free(want);
    json_decref(v);
}

static void test_line_writer_is_jansson_compact(void **state)
{
    (void)state;
    char every[128];
    for (int i = 0; i < 128; i++)
        every[i] = (char)i;   /* NUL and every control byte, quote and backslash among them */
    static const double reals[] = {0.0, -0.0, 1.0, 0.1, -2.5, 1e20, 1e-5, 1.5e300, -2.5e-300, 123456789.0,
                                   0.31488253399948007, 1796601562.1412218, 4.35e-07};
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        assert_same_as_jansson(json_real(reals[i]));
    assert_same_as_jansson(json_stringn(every, sizeof every));
    assert_same_as_jansson(json_string("UTF-8 as it is: é ✓ 𝄞, and U+2028 \xe2\x80\xa8"));
    assert_same_as_jansson(json_string(""));
    assert_same_as_jansson(json_pack("{s:I,s:I,s:i,s:b,s:b,s:n,s:[],s:{},s:[i,s,[f,{s:s}]],s:s}", "max",
                                     (json_int_t)INT64_MAX, "min", (json_int_t)INT64_MIN, "zero", 0, "t", 1,
                                     "f", 0, "null", "empty", "obj", "nested", 1, "two", 3.25, "k\"ey\n", "v\t",
                                     "last", "</script><b>"));
    /* An event as the trace writes it, key order kept. */
    json_t *ev = json_pack("{s:i,s:s,s:f,s:s,s:n}", "v", 1, "type", "sub_call", "t", 0.5, "node", "0", "parent");
    json_object_set_new(ev, "prompt", json_stringn(every, sizeof every));
    assert_same_as_jansson(ev);

    /* Nesting past 2,048 levels is refused, not a blown stack. */
    json_t *deep = json_array();
    for (int i = 0; i < 3000; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, deep);
        deep = outer;
    }
    size_t len = 1;
    assert_null(trace_json_line(deep, &len));
    assert_int_equal(len, 0);
    json_decref(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listener_and_sink),
        cmocka_unit_test(test_fill_kinds),
        cmocka_unit_test(test_line_writer_is_jansson_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
