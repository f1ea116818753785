/* wire — what fakelm sends: OpenAI chat completions and Anthropic Messages
 * bodies, their error objects and their event streams, written the way the
 * providers write them, and the paced reader that stalls or breaks a body. */
#include "fakelm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct MHD_Response *response_owned(char *data, size_t len, const char *content_type)
{
    if (!data)
        return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return resp;
}

/* Compact text of value (whose reference it takes); NULL out of memory. */
static char *json_dumps_owned(json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    return text;
}

struct MHD_Response *response_json(json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    return text ? response_owned(text, strlen(text), "application/json") : NULL;
}

const char *error_type_for(unsigned status)
{
    if (status == 429)
        return "requests";
    if (status >= 500)
        return "server_error";
    return "invalid_request_error";
}

struct MHD_Response *response_error(const char *message, const char *type,
                                           const char *param, const char *code)
{
    return response_json(json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message,
                                   "type", type, "param", param, "code", code));
}

struct MHD_Response *response_unauthorized(void)
{
    return response_error("Incorrect API key provided", "invalid_request_error", NULL,
                          "invalid_api_key");
}


static json_t *usage_json(usage u)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I, s:I}}", "prompt_tokens", (json_int_t)u.prompt,
                     "completion_tokens", (json_int_t)u.completion, "total_tokens",
                     (json_int_t)(u.prompt + u.completion), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)u.cached, "audio_tokens", (json_int_t)0);
}


char *completion_text(const completion *c)
{
    json_t *message = json_pack("{s:s, s:o}", "role", "assistant", "content",
                                c->content ? json_stringn(c->content, c->content_len) : json_null());
    if (message && c->reasoning)
        json_object_set_new(message, "reasoning_content", json_string(c->reasoning));
    return json_dumps_owned(json_pack(
        "{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id", c->id, "object",
        "chat.completion", "created", (json_int_t)c->created, "model", c->model, "choices",
        "index", 0, "message", message, "logprobs", "finish_reason", "stop", "usage",
        usage_json(c->usage)));
}


static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static ssize_t sse_read(void *cls, uint64_t at, char *out, size_t max)
{
    sse_body *sse = cls;
    const delivery *d = &sse->delivery;
    uint64_t pos = at - sse->extra;
    if (d->reset_at >= 0 && pos >= (uint64_t)d->reset_at)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (d->stall_ms > 0 && !sse->stall_done && pos >= d->stall_at && sse->conn) {
        /* Parked in the timer like a latency wait; resumed when it is due
         * (or at shutdown), then the rest of the body follows. With
         * keep-alives, it wakes to send one now and then. */
        double now = clock_now();
        if (!sse->stalled) {
            sse->stalled = true;
            sse->stall_until = now + (double)d->stall_ms / 1000.0;
            sse->next_keepalive = now + (double)d->keepalive_ms / 1000.0;
        }
        if (now >= sse->stall_until) {
            sse->stall_done = true;
        } else if (d->keepalive_ms > 0 && now >= sse->next_keepalive) {
            static const char comment[] = ": keep-alive\n\n";
            size_t n = min_size(sizeof comment - 1, max);
            memcpy(out, comment, n);
            sse->extra += n;
            sse->next_keepalive = now + (double)d->keepalive_ms / 1000.0;
            return (ssize_t)n;
        } else {
            double due = d->keepalive_ms > 0 && sse->next_keepalive < sse->stall_until
                             ? sse->next_keepalive : sse->stall_until;
            MHD_suspend_connection(sse->conn);
            if (timer_add(sse->timer, sse->conn, due) == 0)
                return 0;
            MHD_resume_connection(sse->conn);   /* shutting down: no more pause */
            sse->stall_done = true;
        }
    }
    if (pos >= sse->data.len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t end = sse->data.len;
    for (size_t i = 0; i < sse->nevents; i++) {
        if (sse->ends[i] > pos) {
            end = sse->ends[i];
            break;
        }
    }
    if (d->reset_at >= 0)
        end = min_size(end, (size_t)d->reset_at);
    if (d->stall_ms > 0 && !sse->stall_done && d->stall_at > pos)
        end = min_size(end, d->stall_at);
    size_t n = end - (size_t)pos < max ? end - (size_t)pos : max;
    memcpy(out, sse->data.data + pos, n);
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    sse_body *sse = cls;
    buf_free(&sse->data);
    free(sse);
}

/* Appends one event; name NULL: data only (OpenAI), else "event: name" first
 * (Anthropic). Takes the reference to chunk. */
static int sse_named_event(sse_body *sse, const char *name, json_t *chunk)
{
    char *text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    int rc = -1;
    json_decref(chunk);
    if (text && name && buf_printf(&sse->data, "event: %s\n", name) != 0) {
        free(text);
        return -1;
    }
    if (text && sse->nevents < sizeof sse->ends / sizeof sse->ends[0] &&
        buf_printf(&sse->data, "data: %s\n\n", text) == 0) {
        sse->ends[sse->nevents++] = sse->data.len;
        rc = 0;
    }
    free(text);
    return rc;
}

static int sse_event(sse_body *sse, json_t *chunk)
{
    return sse_named_event(sse, NULL, chunk);
}

static json_t *sse_chunk(const completion *c, json_t *delta, const char *finish, bool usage_null)
{
    json_t *chunk = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s?}]}", "id", c->id,
                              "object", "chat.completion.chunk", "created",
                              (json_int_t)c->created, "model", c->model, "choices", "index", 0,
                              "delta", delta, "logprobs", "finish_reason", finish);
    if (chunk && usage_null)
        json_object_set_new(chunk, "usage", json_null());
    return chunk;
}

/* Splits text into up to FAKELM_STREAM_PIECES deltas under `field`, never
 * inside a UTF-8 sequence. */
static int sse_pieces(sse_body *sse, const completion *c, const char *field, const char *text,
                      size_t len, bool usage_null)
{
    size_t step = (len + FAKELM_STREAM_PIECES - 1) / FAKELM_STREAM_PIECES;
    for (size_t at = 0; at < len;) {
        size_t end = at + step < len ? at + step : len;
        while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
            end++;
        json_t *delta = json_pack("{s:s%}", field, text + at, end - at);
        if (sse_event(sse, sse_chunk(c, delta, NULL, usage_null)) != 0)
            return -1;
        at = end;
    }
    return 0;
}

struct MHD_Response *response_paced(sse_body *sse, const char *content_type, const delivery *d,
                                           struct MHD_Connection *conn, timer *t)
{
    sse->delivery = *d;
    sse->conn = conn;
    sse->timer = t;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, sse_read, sse, sse_free);
    if (!resp) {
        sse_free(sse);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return resp;
}

struct MHD_Response *response_body(char *data, size_t len, const char *content_type,
                                          const delivery *d, struct MHD_Connection *conn, timer *t)
{
    if (!data)
        return NULL;
    if (d->stall_ms <= 0 && d->reset_at < 0)
        return response_owned(data, len, content_type);
    sse_body *sse = calloc(1, sizeof *sse);
    if (!sse) {
        free(data);
        return NULL;
    }
    buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    int rc = buf_append(&sse->data, data, len);
    free(data);
    if (rc != 0) {
        sse_free(sse);
        return NULL;
    }
    return response_paced(sse, content_type, d, conn, t);
}

static sse_body *stream_new(void)
{
    sse_body *sse = calloc(1, sizeof *sse);
    if (sse)
        buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    return sse;
}

sse_body *stream_openai(const completion *c, bool include_usage, bool truncate)
{
    sse_body *sse = stream_new();
    if (!sse)
        return NULL;
    buf_init(&sse->data, FAKELM_MAX_BODY * 2);
    if (sse_event(sse, sse_chunk(c, json_pack("{s:s, s:s}", "role", "assistant", "content", ""),
                                 NULL, include_usage)) != 0)
        goto fail;
    if (c->reasoning &&
        sse_pieces(sse, c, "reasoning_content", c->reasoning, strlen(c->reasoning),
                   include_usage) != 0)
        goto fail;
    if (c->content && sse_pieces(sse, c, "content", c->content, c->content_len, include_usage) != 0)
        goto fail;
    if (sse_event(sse, sse_chunk(c, json_object(), "stop", include_usage)) != 0)
        goto fail;
    if (include_usage &&
        sse_event(sse, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", c->id, "object",
                                 "chat.completion.chunk", "created", (json_int_t)c->created,
                                 "model", c->model, "choices", "usage", usage_json(c->usage))) != 0)
        goto fail;
    if (!truncate) {
        if (buf_puts(&sse->data, "data: [DONE]\n\n") != 0)
            goto fail;
        sse->ends[sse->nevents++] = sse->data.len;
    }
    return sse;
fail:
    sse_free(sse);
    return NULL;
}

/* ---- Anthropic Messages --------------------------------------------- */

/* input_tokens counts only what neither came from nor went into the cache. */
static json_t *anthropic_usage(usage u)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)(u.prompt - u.cached - u.cache_write),
                     "cache_creation_input_tokens", (json_int_t)u.cache_write, "cache_read_input_tokens",
                     (json_int_t)u.cached, "output_tokens", (json_int_t)u.completion);
}

static json_t *anthropic_message(const completion *c, json_t *content, const char *stop, usage u)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?, s:n, s:o}", "id", c->id, "type", "message",
                     "role", "assistant", "model", c->model, "content", content, "stop_reason", stop,
                     "stop_sequence", "usage", anthropic_usage(u));
}

char *anthropic_text(const completion *c)
{
    json_t *content = json_array();
    if (content && c->reasoning)
        json_array_append_new(content, json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking",
                                                 c->reasoning, "signature", "ZmFrZWxt"));
    if (content && c->content)
        json_array_append_new(content, json_pack("{s:s, s:s%}", "type", "text", "text", c->content,
                                                 c->content_len));
    return json_dumps_owned(content ? anthropic_message(c, content, "end_turn", c->usage) : NULL);
}

/* One content block as start, up to FAKELM_STREAM_PIECES deltas, stop. */
static int anthropic_block(sse_body *sse, int index, bool thinking, const char *text, size_t len)
{
    const char *field = thinking ? "thinking" : "text";
    if (sse_named_event(sse, "content_block_start",
                        json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_start", "index",
                                  index, "content_block", "type", field, field, "")) != 0)
        return -1;
    size_t step = (len + FAKELM_STREAM_PIECES - 1) / FAKELM_STREAM_PIECES;
    for (size_t at = 0; at < len;) {
        size_t end = at + step < len ? at + step : len;
        while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
            end++;
        json_t *delta = json_pack("{s:s, s:s%}", "type", thinking ? "thinking_delta" : "text_delta",
                                  field, text + at, end - at);
        if (sse_named_event(sse, "content_block_delta",
                            json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index",
                                      index, "delta", delta)) != 0)
            return -1;
        at = end;
    }
    return sse_named_event(sse, "content_block_stop",
                           json_pack("{s:s, s:i}", "type", "content_block_stop", "index", index));
}

sse_body *stream_anthropic(const completion *c, bool truncate)
{
    sse_body *sse = stream_new();
    usage start = c->usage;
    start.completion = 1;
    int index = 0;
    if (!sse)
        return NULL;
    if (sse_named_event(sse, "message_start",
                        json_pack("{s:s, s:o}", "type", "message_start", "message",
                                  anthropic_message(c, json_array(), NULL, start))) != 0 ||
        sse_named_event(sse, "ping", json_pack("{s:s}", "type", "ping")) != 0)
        goto fail;
    if (c->reasoning && anthropic_block(sse, index++, true, c->reasoning, strlen(c->reasoning)) != 0)
        goto fail;
    if (c->content && anthropic_block(sse, index++, false, c->content, c->content_len) != 0)
        goto fail;
    if (sse_named_event(sse, "message_delta",
                        json_pack("{s:s, s:{s:s, s:n}, s:o}", "type", "message_delta", "delta",
                                  "stop_reason", "end_turn", "stop_sequence", "usage",
                                  anthropic_usage(c->usage))) != 0)
        goto fail;
    if (!truncate && sse_named_event(sse, "message_stop", json_pack("{s:s}", "type", "message_stop")) != 0)
        goto fail;
    return sse;
fail:
    sse_free(sse);
    return NULL;
}

static const char *anthropic_error_type(unsigned status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

struct MHD_Response *response_anthropic_error(unsigned status, const char *message, const char *type)
{
    return response_json(json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                                   type ? type : anthropic_error_type(status), "message", message));
}

