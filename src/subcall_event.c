/* subcall_event — a sub-call's trace event, written late (subcall_event.h). */
#include "subcall_event.h"

#include <stdlib.h>
#include <string.h>

#include "json_out.h"

/* Design note. A batch's sub-calls are its trace's bulk: the demo's 4,935
 * events are 17 MB of excerpts. Built where the batch ended (checked, packed
 * into jansson trees, written out from them), they held up each batch's
 * answers, ~60 ms of the demo in all with the run log on, the largest part
 * of what the log cost it. Now the engine's thread only copies, and the
 * line is written once, from the values, on the sink's thread. Its bytes
 * are those trace_event would write for the same fields (tests/unit/
 * test_events.c reads them back and compares). */

static int put_string(buf *b, const char *key, const char *s)
{
    return json_out_key(b, key) != 0 || json_out_text(b, s, s ? strlen(s) : 0) != 0 ? -1 : 0;
}

static int put_integer(buf *b, const char *key, long long v)
{
    return json_out_key(b, key) != 0 || json_out_integer(b, v) != 0 ? -1 : 0;
}

/* A real, or null when not known (a cost below 0, no request sent). */
static int put_real(buf *b, const char *key, double v, int known)
{
    if (json_out_key(b, key) != 0)
        return -1;
    return known ? json_out_real(b, v) : buf_append(b, "null", 4);
}

static int put_bool(buf *b, const char *key, int v)
{
    return json_out_key(b, key) != 0 || json_out_bool(b, v) != 0 ? -1 : 0;
}

static int subcall_render(void *ctx, buf *b)
{
    const subcall_event *ev = ctx;
    int ok = put_string(b, "node", ev->node) == 0 && put_string(b, "parent", ev->parent) == 0 &&
             put_integer(b, "turn", ev->turn) == 0 && put_string(b, "kind", ev->kind) == 0 &&
             put_string(b, "model", ev->model) == 0 && put_integer(b, "index", (long long)ev->index) == 0 &&
             put_integer(b, "batch", (long long)ev->batch) == 0 &&
             json_out_key(b, "prompt") == 0 && json_out_text(b, ev->prompt, ev->prompt_len) == 0 &&
             json_out_key(b, "reply") == 0 && json_out_text(b, ev->reply, ev->reply_len) == 0 &&
             put_string(b, "error", ev->error) == 0 && put_string(b, "finish_reason", ev->finish_reason) == 0 &&
             put_integer(b, "http_status", ev->http_status) == 0 && put_real(b, "seconds", ev->seconds, 1) == 0 &&
             put_integer(b, "attempts", ev->attempts) == 0 &&
             buf_puts(b, ",\"usage\":{\"prompt_tokens\":") == 0 && json_out_integer(b, ev->prompt_tokens) == 0 &&
             put_integer(b, "cached_tokens", ev->cached_tokens) == 0 &&
             put_integer(b, "cache_write_tokens", ev->cache_write_tokens) == 0 &&
             put_integer(b, "completion_tokens", ev->completion_tokens) == 0 && buf_puts(b, "}") == 0 &&
             put_real(b, "cost_usd", ev->cost_usd, ev->cost_usd >= 0) == 0 && put_bool(b, "cached", ev->cached) == 0 &&
             put_real(b, "cost_no_cache_usd", ev->cost_no_cache_usd, ev->cost_no_cache_usd >= 0) == 0 &&
             put_bool(b, "deduplicated", ev->deduplicated) == 0 &&
             put_real(b, "sent_seconds", ev->sent_seconds, ev->sent) == 0;
    return ok ? 0 : -1;
}

static void subcall_release(void *ctx)
{
    subcall_event *ev = ctx;
    free(ev->node);
    free(ev->parent);
    free(ev->model);
    free(ev->prompt);
    free(ev->reply);
    free(ev->finish_reason);
    free(ev);
}

int subcall_event_emit(trace *t, subcall_event *ev)
{
    return trace_event_later(t, "sub_call", subcall_render, subcall_release, ev);
}

const subcall_event *subcall_event_from(const trace_late *late)
{
    return late && late->render == subcall_render ? late->ctx : NULL;
}
