/* events — trace events as rlm_event structs for the library's callback.
 * Which field of the JSON event feeds which field of the struct is decided
 * here once per kind (the table below), so a new event type needs one row. */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "subcall_event.h"
#include "utf8.h"

/* A kind, and which JSON fields are its `text` and its `output`. */
typedef struct kind_row {
    const char *type;
    rlm_event_kind kind;
    const char *text;
    const char *output;
} kind_row;

static const kind_row kinds[] = {
    {"question", RLM_EVENT_RUN_START, "question", NULL},
    {"run_end", RLM_EVENT_RUN_END, "answer", "error"},
    {"root_request", RLM_EVENT_ROOT_REQUEST, "last_message", NULL},
    {"root_wait", RLM_EVENT_ROOT_WAIT, NULL, NULL},
    {"root_reply", RLM_EVENT_ROOT_REPLY, "content", "reasoning"},
    {"code_start", RLM_EVENT_CODE_START, "code", NULL},
    {"code", RLM_EVENT_CODE, "code", "output"},
    {"batch_start", RLM_EVENT_BATCH_START, NULL, NULL},
    {"batch_progress", RLM_EVENT_BATCH_PROGRESS, NULL, NULL},
    {"batch_end", RLM_EVENT_BATCH_END, NULL, NULL},
    {"sub_call", RLM_EVENT_SUB_CALL, "prompt", "reply"},
    {"child_start", RLM_EVENT_CHILD_START, "prompt", NULL},
    {"child_end", RLM_EVENT_CHILD_END, "answer", NULL},
    {"warning", RLM_EVENT_WARNING, "message", NULL},
    {"final_answer", RLM_EVENT_FINAL_ANSWER, "answer", NULL},
    {"budget_exhausted", RLM_EVENT_BUDGET_STOP, "message", "refused"},
};

static const char *text_of(json_t *event, const char *key, size_t *len)
{
    json_t *v = key ? json_object_get(event, key) : NULL;
    if (!json_is_string(v)) {
        *len = 0;
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

static const char *string_of(json_t *event, const char *key)
{
    return json_string_value(json_object_get(event, key));
}

static size_t count_of(json_t *event, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(event, key));
    return v > 0 ? (size_t)v : 0;
}

static long tokens_of(json_t *event, const char *key)
{
    json_t *usage = json_object_get(event, "usage");
    json_t *v = json_object_get(usage, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* The depth of a node: 1 for "0", one more per dot. */
static int node_depth(const char *node)
{
    int depth = 1;
    for (const char *p = node; p && *p; p++)
        depth += *p == '.';
    return depth;
}

void events_fill(rlm_event *out, const char *type, json_t *event)
{
    memset(out, 0, sizeof *out);
    out->version = RLM_EVENT_VERSION;
    out->size = sizeof *out;
    out->type = type;
    const kind_row *row = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].type, type) == 0)
            row = &kinds[i];
    out->kind = row ? row->kind : RLM_EVENT_OTHER;
    out->text = text_of(event, row ? row->text : NULL, &out->text_len);
    out->output = text_of(event, row ? row->output : NULL, &out->output_len);

    out->node = string_of(event, "node");
    out->parent = string_of(event, "parent");
    out->depth = node_depth(out->node);
    out->elapsed = json_number_value(json_object_get(event, "t"));
    out->turn = (int)json_integer_value(json_object_get(event, "turn"));
    out->model = string_of(event, "model");
    out->status = string_of(event, "status");
    out->how = string_of(event, "how");
    out->budget = string_of(event, "budget");
    if (!out->budget)
        out->budget = string_of(event, "stopped_by");
    out->error = string_of(event, "error");
    out->block = (int)count_of(event, "block");
    out->blocks = (int)count_of(event, "blocks");
    out->raised = json_is_true(json_object_get(event, "raised"));
    out->batch_size = count_of(event, "batch");
    out->done = count_of(event, "done");
    out->in_flight = count_of(event, "in_flight");
    out->failed = count_of(event, "failed");
    out->retried = count_of(event, "retried");
    out->sub_calls = count_of(event, "sub_calls");
    out->prompt_tokens = tokens_of(event, "prompt_tokens");
    out->completion_tokens = tokens_of(event, "completion_tokens");
    out->cached_tokens = tokens_of(event, "cached_tokens");
    out->cache_write_tokens = tokens_of(event, "cache_write_tokens");
    out->deduplicated = json_is_true(json_object_get(event, "deduplicated"));
    json_t *cost = json_object_get(event, "cost_usd");
    out->cost_usd = json_is_number(cost) ? json_number_value(cost) : -1;
    out->seconds = json_number_value(json_object_get(event, "seconds"));

    switch (out->kind) {
    case RLM_EVENT_RUN_START:
        out->depth = (int)json_integer_value(json_object_get(event, "depth"));
        if (out->depth < 1)
            out->depth = 1;
        break;
    case RLM_EVENT_RUN_END:
        out->turn = (int)json_integer_value(json_object_get(event, "iterations"));
        out->failed = count_of(event, "sub_call_errors");
        out->seconds = json_number_value(json_object_get(event, "elapsed"));
        out->deduplicated = count_of(event, "sub_calls_deduplicated");
        if (json_is_integer(json_object_get(event, "cached_tokens")))
            out->cached_tokens = (long)json_integer_value(json_object_get(event, "cached_tokens"));
        if (json_is_integer(json_object_get(event, "cache_write_tokens")))
            out->cache_write_tokens = (long)json_integer_value(json_object_get(event, "cache_write_tokens"));
        break;
    case RLM_EVENT_CHILD_START:
        out->depth = (int)json_integer_value(json_object_get(event, "depth"));
        break;
    case RLM_EVENT_ROOT_WAIT:
        out->done = count_of(event, "chars");
        break;
    default:
        break;
    }
}

/* A string as events_fill reads it from the JSON the event is written as:
 * NULL when it would be null there (NULL, or not valid UTF-8). */
static const char *valid_text(const char *s, size_t len)
{
    return s && utf8_valid(s, len) ? s : NULL;
}

static const char *valid_string(const char *s)
{
    return s ? valid_text(s, strlen(s)) : NULL;
}

/* A sub_call recorded late, filled from what it was gathered from, as
 * events_fill would fill it from its JSON (tests/unit/test_events.c
 * compares the two): no line is written and read back for a listener
 * that never asks for it. */
static void fill_sub_call(rlm_event *out, const trace_late *late, const subcall_event *ev)
{
    memset(out, 0, sizeof *out);
    out->version = RLM_EVENT_VERSION;
    out->size = sizeof *out;
    out->type = late->type;
    out->kind = RLM_EVENT_SUB_CALL;
    if ((out->text = valid_text(ev->prompt, ev->prompt_len)))
        out->text_len = ev->prompt_len;
    if ((out->output = valid_text(ev->reply, ev->reply_len)))
        out->output_len = ev->reply_len;
    out->node = valid_string(ev->node);
    out->parent = valid_string(ev->parent);
    out->depth = node_depth(out->node);
    out->elapsed = late->t;
    out->turn = ev->turn;
    out->model = valid_string(ev->model);
    out->error = valid_string(ev->error);
    out->batch_size = ev->batch;
    out->prompt_tokens = ev->prompt_tokens;
    out->completion_tokens = ev->completion_tokens;
    out->cached_tokens = ev->cached_tokens;
    out->cache_write_tokens = ev->cache_write_tokens;
    out->deduplicated = ev->deduplicated != 0;
    out->cost_usd = ev->cost_usd >= 0 ? ev->cost_usd : -1;
    out->seconds = ev->seconds;
}

/* What an rlm_event's internal_ points to, for rlm_event_json: the event
 * it was filled from, whole or late. */
typedef struct event_source {
    json_t *event;
    const trace_late *late;
} event_source;

void events_listener(void *ctx, const char *type, json_t *event, const trace_late *late)
{
    events *ev = ctx;
    if (!ev->fn)
        return;
    rlm_event e;
    event_source source = {event, late};
    json_t *read_back = NULL;
    const subcall_event *sub_call = subcall_event_from(late);
    if (event) {
        events_fill(&e, type, event);
    } else if (sub_call) {
        fill_sub_call(&e, late, sub_call);
    } else {
        /* A late event of a kind not filled here: read back from its JSON. */
        char *text = trace_late_json(late);
        read_back = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        if (!read_back)
            return;
        events_fill(&e, type, read_back);
        source.event = read_back;
    }
    e.internal_ = &source;
    ev->fn(ev->userdata, &e);
    json_decref(read_back);
}

char *rlm_event_json(const rlm_event *event)
{
    const event_source *source = event ? event->internal_ : NULL;
    if (!source)
        return NULL;
    return source->event ? json_dumps(source->event, JSON_COMPACT) : trace_late_json(source->late);
}
