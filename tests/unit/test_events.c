/* The event stream: trace events reach the listener (recorded and notified
 * ones) and the line sink (recorded ones only), and events_fill reads each
 * kind's fields from the same JSON the trace writes; the trace's own line
 * writer (trace_json_line, json_out) writes what json_dumps writes, byte
 * for byte; a sub-call recorded late (subcall_event) is written as that
 * writer would write it, and reaches the listener with the same fields as
 * its line read back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <unistd.h>

#include "events.h"
#include "json_out.h"
#include "subcall_event.h"
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


/* Strings long enough to take several rounds of the writer, escapes on
 * and around the round's edge (1,024 bytes), against jansson. */
static void test_string_writer_rounds(void **state)
{
    (void)state;
    static const char *pieces[] = {"plain text ", "\n", "\"", "\\", "\x01", "\t", "é", "𝄞", "label\n"};
    unsigned seed = 7;
    for (int round = 0; round < 200; round++) {
        buf text;
        buf_init(&text, 1 << 20);
        size_t want_len = 900 + (size_t)(round * 13) % 2400;
        while (text.len < want_len) {
            seed = seed * 1103515245u + 12345u;
            assert_int_equal(buf_puts(&text, pieces[(seed >> 16) % (sizeof pieces / sizeof pieces[0])]), 0);
        }
        json_t *j = json_stringn(text.data, text.len);
        assert_non_null(j);
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        buf got;
        buf_init(&got, 1 << 20);
        assert_int_equal(json_out_string(&got, text.data, text.len), 0);
        assert_string_equal(got.data, want);
        /* A buffer with room for exactly the escaped string, not for the
         * worst case of a round, still takes it; one byte less does not. */
        buf tight;
        buf_init(&tight, strlen(want));
        assert_int_equal(json_out_string(&tight, text.data, text.len), 0);
        assert_string_equal(tight.data, want);
        buf_free(&tight);
        buf_init(&tight, strlen(want) - 1);
        assert_int_equal(json_out_string(&tight, text.data, text.len), -1);
        buf_free(&tight);
        buf_free(&got);
        free(want);
        json_decref(j);
        buf_free(&text);
    }
    /* null for what JSON cannot hold. */
    buf b;
    buf_init(&b, 1024);
    assert_int_equal(json_out_text(&b, "\xff", 1), 0);
    assert_int_equal(json_out_text(&b, NULL, 0), 0);
    assert_int_equal(json_out_real(&b, 0.0 / 0.0), 0);
    assert_int_equal(json_out_real(&b, 1e308 * 10), 0);
    assert_string_equal(b.data, "nullnullnullnull");
    buf_free(&b);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* A sub-call as the engine gathers one; odd says which odd values it has. */
static subcall_event *make_sub_call(int odd)
{
    subcall_event *ev = calloc(1, sizeof *ev);
    assert_non_null(ev);
    static const char prompt[] = "Label each line:\n\"a\" \\ b\x01 é\0tail";
    static const char bad[] = "half a character: \xc3";
    ev->node = strdup(odd ? "0.2.1" : "0");
    ev->parent = odd ? strdup("0.2") : NULL;
    ev->turn = 3;
    ev->kind = "llm_query";
    ev->model = strdup("gpt-5-mini");
    ev->index = 41;
    ev->batch = 640;
    ev->prompt = dup_n(prompt, sizeof prompt - 1);
    ev->prompt_len = sizeof prompt - 1;
    ev->reply = odd ? dup_n(bad, sizeof bad - 1) : strdup("numeric\nhuman\n");
    ev->reply_len = odd ? sizeof bad - 1 : strlen(ev->reply);
    ev->error = odd ? "http" : NULL;
    ev->finish_reason = odd ? NULL : strdup("stop");
    ev->http_status = odd ? 429 : 200;
    ev->seconds = 0.31488253399948007;
    ev->attempts = odd ? 3 : 1;
    ev->prompt_tokens = 2155;
    ev->cached_tokens = odd ? -1 : 1024;
    ev->cache_write_tokens = -1;
    ev->completion_tokens = odd ? -1 : 222;
    ev->cost_usd = odd ? -1 : 0.00125;
    ev->cost_no_cache_usd = odd ? -1 : 1e-20;
    ev->cached = !odd;
    ev->deduplicated = odd;
    ev->sent = !odd;
    ev->sent_seconds = 4.35e-07;
    return ev;
}

typedef struct late_seen {
    rlm_event ev;      /* strings copied into the fields below */
    char *json;
    char *text, *output, *node, *parent, *model, *error;
    size_t lines;
    char *line;
} late_seen;

static char *copy_or_null(const char *s, size_t n)
{
    return s ? dup_n(s, n) : NULL;
}

static void on_late_event(void *userdata, const rlm_event *ev)
{
    late_seen *s = userdata;
    s->ev = *ev;
    s->json = rlm_event_json(ev);
    s->text = copy_or_null(ev->text, ev->text_len);
    s->output = copy_or_null(ev->output, ev->output_len);
    s->node = copy_or_null(ev->node, ev->node ? strlen(ev->node) : 0);
    s->parent = copy_or_null(ev->parent, ev->parent ? strlen(ev->parent) : 0);
    s->model = copy_or_null(ev->model, ev->model ? strlen(ev->model) : 0);
    s->error = copy_or_null(ev->error, ev->error ? strlen(ev->error) : 0);
}

static void on_late_line(void *ctx, const char *line, size_t len)
{
    late_seen *s = ctx;
    s->lines++;
    free(s->line);
    s->line = dup_n(line, len);
}

static void late_seen_clear(late_seen *s)
{
    free(s->json);
    free(s->text);
    free(s->output);
    free(s->node);
    free(s->parent);
    free(s->model);
    free(s->error);
    free(s->line);
    memset(s, 0, sizeof *s);
}

static void assert_same_string(const char *a, size_t a_len, const char *b, size_t b_len)
{
    if (!a || !b) {
        assert_ptr_equal(a, b);
        return;
    }
    assert_int_equal(a_len, b_len);
    assert_memory_equal(a, b, a_len);
}

/* The listener's struct, filled from the gathered values, against
 * events_fill on the event's line read back: the same facts. */
static void assert_same_as_read_back(const late_seen *s, const char *line)
{
    json_t *j = json_loads(line, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    rlm_event want;
    events_fill(&want, "sub_call", j);
    const rlm_event *got = &s->ev;
    assert_int_equal(got->kind, want.kind);
    assert_string_equal(got->type, want.type);
    assert_same_string(s->text, got->text_len, want.text, want.text_len);
    assert_same_string(s->output, got->output_len, want.output, want.output_len);
    assert_same_string(s->node, s->node ? strlen(s->node) : 0, want.node, want.node ? strlen(want.node) : 0);
    assert_same_string(s->parent, s->parent ? strlen(s->parent) : 0, want.parent,
                       want.parent ? strlen(want.parent) : 0);
    assert_same_string(s->model, s->model ? strlen(s->model) : 0, want.model, want.model ? strlen(want.model) : 0);
    assert_same_string(s->error, s->error ? strlen(s->error) : 0, want.error, want.error ? strlen(want.error) : 0);
    assert_null(want.status);
    assert_null(want.how);
    assert_null(want.budget);
    assert_int_equal(got->depth, want.depth);
    assert_true(got->elapsed == want.elapsed);
    assert_int_equal(got->turn, want.turn);
    assert_int_equal(got->block, want.block);
    assert_int_equal(got->blocks, want.blocks);
    assert_int_equal(got->raised, want.raised);
    assert_int_equal(got->batch_size, want.batch_size);
    assert_int_equal(got->done, want.done);
    assert_int_equal(got->in_flight, want.in_flight);
    assert_int_equal(got->failed, want.failed);
    assert_int_equal(got->retried, want.retried);
    assert_int_equal(got->sub_calls, want.sub_calls);
    assert_int_equal(got->prompt_tokens, want.prompt_tokens);
    assert_int_equal(got->completion_tokens, want.completion_tokens);
    assert_int_equal(got->cached_tokens, want.cached_tokens);
    assert_int_equal(got->cache_write_tokens, want.cache_write_tokens);
    assert_int_equal(got->deduplicated, want.deduplicated);
    assert_true(got->cost_usd == want.cost_usd);
    assert_true(got->seconds == want.seconds);
    json_decref(j);
}

/* line is jansson's compact form of itself (key order, escapes, reals). */
static void assert_jansson_bytes(const char *line)
{
    size_t n = strlen(line);
    assert_true(n > 0 && line[n - 1] == '\n');
    json_t *j = json_loadb(line, n - 1, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    char *again = json_dumps(j, JSON_COMPACT);
    assert_int_equal(strlen(again), n - 1);
    assert_memory_equal(again, line, n - 1);
    free(again);
    json_decref(j);
}

static void test_late_sub_call(void **state)
{
    (void)state;
    char path[] = "/tmp/rlm-test-events-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (int odd = 0; odd < 2; odd++) {
        /* A file and a listener: written now, the listener's struct and
         * rlm_event_json agreeing with the line. */
        late_seen s = {0};
        events ev = {.fn = on_late_event, .userdata = &s};
        char err[256];
        trace *t = trace_open(path, err, sizeof err);
        assert_non_null(t);
        trace_set_listener(t, events_listener, &ev);
        assert_int_equal(subcall_event_emit(t, make_sub_call(odd)), 0);
        trace_close(t);
        size_t len = 0;
        char *line = file_read(path, 1 << 20, &len);
        assert_non_null(line);
        assert_jansson_bytes(line);
        assert_non_null(s.json);
        assert_int_equal(strlen(s.json) + 1, len);
        assert_memory_equal(s.json, line, len - 1);
        assert_same_as_read_back(&s, line);

        json_t *j = json_loads(line, JSON_ALLOW_NUL, NULL);
        assert_non_null(j);
        const char *key;
        json_t *v;
        static const char *const order[] = {"v", "type", "t", "time", "node", "parent", "turn", "kind",
                                            "model", "index", "batch", "prompt", "reply", "error",
                                            "finish_reason", "http_status", "seconds", "attempts", "usage",
                                            "cost_usd", "cached", "cost_no_cache_usd", "deduplicated",
                                            "sent_seconds"};
        size_t k = 0;
        json_object_foreach(j, key, v) {
            assert_true(k < sizeof order / sizeof order[0]);
            assert_string_equal(key, order[k++]);
        }
        assert_int_equal(k, sizeof order / sizeof order[0]);
        assert_string_equal(json_string_value(json_object_get(j, "type")), "sub_call");
        assert_int_equal(json_string_length(json_object_get(j, "prompt")), 33);   /* the NUL kept */
        if (odd) {
            assert_true(json_is_null(json_object_get(j, "reply")));   /* not valid UTF-8 */
            assert_true(json_is_null(json_object_get(j, "finish_reason")));
            assert_true(json_is_null(json_object_get(j, "cost_usd")));
            assert_true(json_is_null(json_object_get(j, "sent_seconds")));
            assert_string_equal(json_string_value(json_object_get(j, "parent")), "0.2");
            assert_int_equal(s.ev.depth, 3);
        } else {
            assert_true(json_is_null(json_object_get(j, "parent")));
            assert_true(json_object_get(j, "cost_no_cache_usd") && json_real_value(json_object_get(j, "cost_no_cache_usd")) == 1e-20);
            assert_true(json_real_value(json_object_get(j, "sent_seconds")) == 4.35e-07);
            assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "cached_tokens")), 1024);
        }
        json_decref(j);

        /* The sink alone: its own thread writes the same line. */
        late_seen sink = {0};
        t = trace_new();
        trace_set_line_sink(t, on_late_line, &sink);
        assert_int_equal(subcall_event_emit(t, make_sub_call(odd)), 0);
        trace_sink_flush(t);
        assert_int_equal(sink.lines, 1);
        assert_jansson_bytes(sink.line);
        /* The same but for the times: from "node" on, byte for byte. */
        assert_string_equal(strstr(sink.line, ",\"node\":"), strstr(line, ",\"node\":"));
        trace_close(t);

        /* Nothing listens: the event is let go at once (the sanitizer
         * build would see a leak). */
        t = trace_new();
        assert_int_equal(subcall_event_emit(t, make_sub_call(odd)), 0);
        trace_close(t);
        late_seen_clear(&sink);
        late_seen_clear(&s);
        free(line);
    }
    unlink(path);
}

/* Many events from several threads through a slow sink: the queue fills, and
 * the runs that find it full write lines out themselves. Every line reaches
 * the sink, once, each thread's in the order it traced them, also those
 * still queued when the trace is closed without a flush. */
#define ORDER_THREADS 3
#define ORDER_EVENTS 3000

typedef struct order_seen {
    pthread_mutex_t lock;
    long next[ORDER_THREADS];   /* the sequence number each thread's next line must have */
    long lines, out_of_order;
} order_seen;

static void on_order_line(void *ctx, const char *line, size_t len)
{
    order_seen *o = ctx;
    volatile unsigned spin = 0;
    for (int i = 0; i < 2000; i++)   /* a sink slower than the runs */
        spin += (unsigned)i;
    const char *p = strstr(line, "\"p\":"), *i = strstr(line, "\"i\":");
    assert_true(p && i && len > 0);
    int who = (int)strtol(p + 4, NULL, 10);
    long seq = strtol(i + 4, NULL, 10);
    pthread_mutex_lock(&o->lock);
    o->out_of_order += who < 0 || who >= ORDER_THREADS || o->next[who] != seq;
    if (who >= 0 && who < ORDER_THREADS)
        o->next[who] = seq + 1;
    o->lines++;
    pthread_mutex_unlock(&o->lock);
}

typedef struct order_run {
    trace *t;
    int who;
} order_run;

static void *order_producer(void *arg)
{
    order_run *run = arg;
    for (long i = 0; i < ORDER_EVENTS; i++)
        trace_event(run->t, "warning", json_pack("{s:i,s:I}", "p", run->who, "i", (json_int_t)i));
    return NULL;
}

static void test_sink_keeps_order(void **state)
{
    (void)state;
    for (int close_unflushed = 0; close_unflushed < 2; close_unflushed++) {
        order_seen o = {.lock = PTHREAD_MUTEX_INITIALIZER};
        trace *t = trace_new();
        assert_non_null(t);
        trace_set_line_sink(t, on_order_line, &o);
        pthread_t threads[ORDER_THREADS];
        order_run runs[ORDER_THREADS];
        for (int k = 0; k < ORDER_THREADS; k++) {
            runs[k] = (order_run){t, k};
            assert_int_equal(pthread_create(&threads[k], NULL, order_producer, &runs[k]), 0);
        }
        for (int k = 0; k < ORDER_THREADS; k++)
            pthread_join(threads[k], NULL);
        if (!close_unflushed) {
            trace_sink_flush(t);
            assert_int_equal(o.lines, ORDER_THREADS * ORDER_EVENTS);
        }
        trace_close(t);
        assert_int_equal(o.lines, ORDER_THREADS * ORDER_EVENTS);
        assert_int_equal(o.out_of_order, 0);
        for (int k = 0; k < ORDER_THREADS; k++)
            assert_int_equal(o.next[k], ORDER_EVENTS);
    }
}

/* A late event of a kind events.c does not fill from gathered values: the
 * listener gets it read back from its JSON, and its ctx is released once. */
static int render_warning(void *ctx, buf *out)
{
    (void)ctx;
    return buf_puts(out, ",\"node\":\"0.3\",\"parent\":\"0\",\"message\":\"late \\\"hello\\\"\"");
}

static void count_release(void *ctx)
{
    (*(int *)ctx)++;
}

static void test_late_event_of_another_kind(void **state)
{
    (void)state;
    seen s = {0};
    events ev = {.fn = on_event, .userdata = &s};
    trace *t = trace_new();
    assert_non_null(t);
    int released = 0;
    /* Nothing listens: released at once. */
    assert_int_equal(trace_event_later(t, "warning", render_warning, count_release, &released), 0);
    assert_int_equal(released, 1);
    trace_set_listener(t, events_listener, &ev);
    assert_int_equal(trace_event_later(t, "warning", render_warning, count_release, &released), 0);
    assert_int_equal(released, 2);
    assert_int_equal(s.events, 1);
    assert_int_equal(s.last.kind, RLM_EVENT_WARNING);
    assert_string_equal(s.text, "late \"hello\"");
    assert_int_equal(s.last.depth, 2);
    assert_non_null(s.json);
    assert_non_null(strstr(s.json, "\"type\":\"warning\""));
    assert_non_null(strstr(s.json, "\"message\":\"late \\\"hello\\\"\""));
    trace_close(t);
    free(s.json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listener_and_sink),
        cmocka_unit_test(test_fill_kinds),
        cmocka_unit_test(test_line_writer_is_jansson_compact),
        cmocka_unit_test(test_string_writer_rounds),
        cmocka_unit_test(test_late_sub_call),
        cmocka_unit_test(test_late_event_of_another_kind),
        cmocka_unit_test(test_sink_keeps_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
