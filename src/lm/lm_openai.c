/* lm_openai — the OpenAI chat-completions wire format as pure functions: the
 * request body we send, the reply we accept (including the reasoning fields of
 * DeepSeek, vLLM, llama.cpp and OpenRouter) and the error bodies providers send. */
#include "lm_openai.h"

#include "frame.h"
#include "utf8.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A provider message longer than this is cut: error text ends up in logs,
 * traces and the root model's prompt, none of which want a megabyte. */
#define MESSAGE_MAX 1024
/* How much of a body that is not a provider error object we quote. */
#define EXCERPT_MAX 300

/* ---- UTF-8 ---------------------------------------------------------- */

/* ---- request -------------------------------------------------------- */

static json_t *json_string_sanitized(const char *s)
{
    if (!s)
        s = "";
    char *clean = utf8_sanitize(s, strlen(s), NULL);
    if (!clean)
        return NULL;
    json_t *v = json_string(clean);
    free(clean);
    return v;
}

/* The options every OpenAI-compatible server accepts, added only when set. */
static int add_wire_options(json_t *root, const lm_wire_options *wire)
{
    if (!wire)
        return 0;
    if (wire->max_tokens > 0 &&
        json_object_set_new(root, wire->max_completion_tokens ? "max_completion_tokens" : "max_tokens",
                            json_integer(wire->max_tokens)) != 0)
        return -1;
    if (wire->reasoning_effort && wire->reasoning_effort[0] &&
        json_object_set_new(root, "reasoning_effort", json_string_sanitized(wire->reasoning_effort)) != 0)
        return -1;
    if (wire->send_temperature && json_object_set_new(root, "temperature", json_real(wire->temperature)) != 0)
        return -1;
    if (wire->stream) {
        /* Without include_usage a stream reports no tokens at all. */
        if (json_object_set_new(root, "stream", json_true()) != 0 ||
            json_object_set_new(root, "stream_options", json_pack("{s:b}", "include_usage", 1)) != 0)
            return -1;
    }
    return 0;
}

char *openai_request_body(const lm_request *req)
{
    return openai_request_body_with(req, NULL);
}

char *openai_request_body_with(const lm_request *req, const lm_wire_options *wire)
{
    char *out = NULL;
    json_t *root = json_object();
    json_t *messages = json_array();
    if (!root || !messages)
        goto fail;
    if (json_object_set_new(root, "model", json_string_sanitized(req->model)) != 0)
        goto fail;
    for (size_t i = 0; i < req->n_messages; i++) {
        const lm_message *msg = &req->messages[i];
        json_t *m = json_object();
        if (!m)
            goto fail;
        if (json_array_append_new(messages, m) != 0)
            goto fail;
        if (json_object_set_new(m, "role", json_string_sanitized(msg->role ? msg->role : "user")) != 0 ||
            json_object_set_new(m, "content", frame_string(msg->content ? msg->content : "",
                                                           lm_message_len(msg))) != 0)
            goto fail;
    }
    if (json_object_set(root, "messages", messages) != 0 || add_wire_options(root, wire) != 0)
        goto fail;
    out = json_dumps(root, JSON_COMPACT);
fail:
    json_decref(messages);
    json_decref(root);
    return out;
}

/* ---- response ------------------------------------------------------- */

/* Sets the error and its message, what + detail (detail may be NULL). */
static void response_fail(lm_response *out, lm_error error, const char *what, const char *detail)
{
    buf msg;
    buf_init(&msg, MESSAGE_MAX * 4);
    if (buf_puts(&msg, what) != 0 || (detail && buf_puts(&msg, detail) != 0)) {
        buf_reset(&msg);
        buf_puts(&msg, what);
    }
    out->error = error;
    free(out->error_message);
    out->error_message = buf_take(&msg);
}

/* Joins the text parts of an array-form content ([{"type":"text","text":..}]
 * or bare strings). -1 on a part of a shape we do not know. */
static int content_parts_join(json_t *parts, buf *out)
{
    size_t i;
    json_t *part;
    json_array_foreach(parts, i, part) {
        const char *text = NULL;
        if (json_is_string(part)) {
            text = json_string_value(part);
        } else if (json_is_object(part)) {
            json_t *t = json_object_get(part, "text");
            if (json_is_string(t))
                text = json_string_value(t);
            else if (t && !json_is_null(t))
                return -1;
            /* Non-text parts (images, audio) carry nothing we can use. */
        } else {
            return -1;
        }
        if (text && buf_puts(out, text) != 0)
            return -1;
    }
    return 0;
}

static char *string_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return NULL;
    return str_dup_len(json_string_value(v), json_string_length(v));
}

static long token_field(json_t *usage, const char *key)
{
    json_t *v = json_object_get(usage, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return (long)json_integer_value(v);
}


void openai_parse_response(const char *body, size_t len, lm_response *out)
{
    free(out->content);
    free(out->reasoning);
    free(out->finish_reason);
    free(out->error_message);
    out->content = out->reasoning = out->finish_reason = out->error_message = NULL;
    out->prompt_tokens = -1;
    out->completion_tokens = -1;
    out->cached_tokens = -1;
    out->cache_write_tokens = -1;
    out->error = LM_OK;

    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        char detail[JSON_ERROR_TEXT_LENGTH + 64];
        snprintf(detail, sizeof detail, "%s at byte %d)", jerr.text, jerr.position);
        response_fail(out, LM_ERR_PARSE, "response is not valid JSON (", detail);
        return;
    }
    if (!json_is_object(root)) {
        response_fail(out, LM_ERR_PARSE, "response is not a JSON object", NULL);
        goto done;
    }

    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        out->prompt_tokens = token_field(usage, "prompt_tokens");
        out->completion_tokens = token_field(usage, "completion_tokens");
        out->cached_tokens = token_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    }

    json_t *choices = json_object_get(root, "choices");
    if (!choices && json_object_get(root, "error")) {
        /* Some proxies send an error object with status 200. */
        char *text = lm_error_text_from_json(root);
        response_fail(out, LM_ERR_PARSE, "provider error: ", text ? text : "unknown");
        free(text);
        goto done;
    }
    if (!json_is_array(choices)) {
        response_fail(out, LM_ERR_PARSE, "response has no \"choices\" array", NULL);
        goto done;
    }
    if (json_array_size(choices) == 0) {
        response_fail(out, LM_ERR_EMPTY, "response has no choices", NULL);
        goto done;
    }
    json_t *choice = json_array_get(choices, 0);
    json_t *message = json_object_get(choice, "message");
    if (!json_is_object(choice) || !json_is_object(message)) {
        response_fail(out, LM_ERR_PARSE, "choices[0] has no \"message\" object", NULL);
        goto done;
    }
    out->finish_reason = string_field(choice, "finish_reason");

    out->reasoning = string_field(message, "reasoning_content");
    if (!out->reasoning)
        out->reasoning = string_field(message, "reasoning");

    json_t *content = json_object_get(message, "content");
    if (json_is_string(content)) {
        out->content_len = json_string_length(content);
        out->content = str_dup_len(json_string_value(content), out->content_len);
    } else if (json_is_array(content)) {
        buf joined;
        buf_init(&joined, len + 1);
        if (content_parts_join(content, &joined) != 0) {
            buf_free(&joined);
            response_fail(out, LM_ERR_PARSE, "message content has a part of unknown shape", NULL);
            goto done;
        }
        out->content_len = joined.len;
        out->content = buf_take(&joined);
    } else if (content && !json_is_null(content)) {
        response_fail(out, LM_ERR_PARSE, "message content is neither text, parts nor null", NULL);
        goto done;
    } else {
        /* A refusal is the model's own words, so it stands in for content. */
        json_t *refusal = json_object_get(message, "refusal");
        if (json_is_string(refusal)) {
            out->content_len = json_string_length(refusal);
            out->content = str_dup_len(json_string_value(refusal), out->content_len);
        }
    }
    if (!out->content) {
        out->content = str_dup_len("", 0);
        out->content_len = 0;
    }

    if (out->content_len == 0 && (!out->reasoning || out->reasoning[0] == '\0')) {
        response_fail(out, LM_ERR_EMPTY, "empty reply, finish_reason ",
                      out->finish_reason ? out->finish_reason : "null");
        goto done;
    }
done:
    json_decref(root);
}

/* ---- streams -------------------------------------------------------- */

#define STREAM_DEFAULT_MAX ((size_t)64 << 20)

void lm_stream_init(lm_stream *s, size_t max)
{
    memset(s, 0, sizeof *s);
    buf_init(&s->content, max ? max : STREAM_DEFAULT_MAX);
    buf_init(&s->reasoning, max ? max : STREAM_DEFAULT_MAX);
    s->prompt_tokens = s->completion_tokens = s->cached_tokens = s->cache_write_tokens = -1;
}

void lm_stream_free(lm_stream *s)
{
    buf_free(&s->content);
    buf_free(&s->reasoning);
    free(s->finish_reason);
    free(s->error_message);
    s->finish_reason = s->error_message = NULL;
}

void lm_stream_reset(lm_stream *s)
{
    size_t max = s->content.max;
    lm_stream_free(s);
    lm_stream_init(s, max);
}

static size_t code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Records a failure; the first one wins. Always -1, to stop the parser. */
int lm_stream_fail(lm_stream *s, lm_error error, int transient, const char *what, const char *detail)
{
    if (s->error != LM_OK)
        return -1;
    buf msg;
    buf_init(&msg, MESSAGE_MAX * 4);
    buf_puts(&msg, what);
    if (detail)
        buf_puts(&msg, detail);
    s->error = error;
    s->transient = transient;
    s->error_message = buf_take(&msg);
    return -1;
}

/* Appends a delta's text; -1 past the limit. */
int lm_stream_append(lm_stream *s, int reasoning, const char *text, size_t len)
{
    buf *b = reasoning ? &s->reasoning : &s->content;
    if (buf_append(b, text, len) != 0)
        return lm_stream_fail(s, LM_ERR_PARSE, 0, "streamed reply larger than the limit", NULL);
    if (reasoning) {
        s->has_reasoning = 1;
        s->reasoning_chars += code_points(text, len);
    } else {
        s->content_chars += code_points(text, len);
    }
    return 0;
}

void lm_stream_set_finish(lm_stream *s, const char *reason)
{
    free(s->finish_reason);
    s->finish_reason = str_dup_len(reason, strlen(reason));
}

void lm_stream_finish(lm_stream *s, lm_response *out)
{
    free(out->content);
    free(out->reasoning);
    free(out->finish_reason);
    free(out->error_message);
    out->content = out->reasoning = out->finish_reason = out->error_message = NULL;
    out->prompt_tokens = s->prompt_tokens;
    out->completion_tokens = s->completion_tokens;
    out->cached_tokens = s->cached_tokens;
    out->cache_write_tokens = s->cache_write_tokens;
    out->error = s->error;
    if (s->error != LM_OK) {
        out->error_message = s->error_message;
        s->error_message = NULL;
    } else if (!s->done) {
        response_fail(out, LM_ERR_TRUNCATED, "stream ended before its terminator (truncated)", NULL);
    } else {
        out->finish_reason = s->finish_reason;
        s->finish_reason = NULL;
        out->content_len = s->content.len;
        out->content = buf_take(&s->content);
        if (s->has_reasoning)
            out->reasoning = buf_take(&s->reasoning);
        if (out->content && out->content_len == 0 && (!out->reasoning || out->reasoning[0] == '\0'))
            response_fail(out, LM_ERR_EMPTY, "empty reply, finish_reason ",
                          out->finish_reason ? out->finish_reason : "null");
    }
    lm_stream_reset(s);
}

static const char *delta_text(json_t *delta, const char *key, size_t *len)
{
    json_t *v = json_object_get(delta, key);
    if (!json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

int openai_stream_event(lm_stream *s, const char *data, size_t len)
{
    if (s->error != LM_OK)
        return -1;
    if (s->done)
        return 0;
    s->events++;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        s->done = 1;
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = lm_stream_fail(s, LM_ERR_PARSE, 1, "stream chunk is not a JSON object: ", jerr.text);
        goto done;
    }
    if (json_object_get(root, "error") && !json_object_get(root, "choices")) {
        /* OpenRouter and vLLM report upstream failures inside a stream that
         * already started with 200: a retry may well succeed. */
        char *text = lm_error_text_from_json(root);
        rc = lm_stream_fail(s, LM_ERR_HTTP, 1, "provider error in the stream: ", text ? text : "unknown");
        free(text);
        goto done;
    }
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        s->prompt_tokens = token_field(usage, "prompt_tokens");
        s->completion_tokens = token_field(usage, "completion_tokens");
        s->cached_tokens = token_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    }
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    if (!json_is_object(choice))
        goto done; /* the usage chunk, or a keep-alive */
    json_t *finish = json_object_get(choice, "finish_reason");
    if (json_is_string(finish))
        lm_stream_set_finish(s, json_string_value(finish));
    json_t *delta = json_object_get(choice, "delta");
    if (!json_is_object(delta))
        goto done;
    size_t n = 0;
    const char *text = delta_text(delta, "reasoning_content", &n);
    if (!text)
        text = delta_text(delta, "reasoning", &n);
    if (text && (rc = lm_stream_append(s, 1, text, n)) != 0)
        goto done;
    text = delta_text(delta, "content", &n);
    if (!text)
        text = delta_text(delta, "refusal", &n);
    if (text)
        rc = lm_stream_append(s, 0, text, n);
done:
    json_decref(root);
    return rc;
}

/* ---- errors --------------------------------------------------------- */

static const char *status_reason(long status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return NULL;
    }
}

/* Appends s with control characters as spaces, runs of whitespace squeezed and
 * at most max bytes (cut on a character boundary); returns 1 if it was cut. */
static int append_clean(buf *out, const char *s, size_t len, size_t max)
{
    /* Enough input for max bytes of output even after squeezing whitespace
     * in ordinary text; a megabyte body is not copied to quote 300 bytes. */
    int input_cut = 0;
    if (len > max * 8 + 16) {
        len = max * 8 + 16;
        input_cut = 1;
    }
    size_t clean_len;
    char *clean = utf8_sanitize(s, len, &clean_len);
    if (!clean)
        return 0;
    size_t start = out->len;
    int space = 1; /* swallow leading whitespace */
    int cut = 0;
    for (size_t i = 0; i < clean_len; i++) {
        unsigned char c = (unsigned char)clean[i];
        int blank = c < 0x20 || c == 0x7F || c == ' ';
        if (blank && space)
            continue;
        if (out->len - start >= max) {
            cut = 1;
            break;
        }
        char ch = blank ? ' ' : (char)c;
        if (buf_append(out, &ch, 1) != 0)
            break;
        space = blank;
    }
    if (cut) {
        size_t keep = utf8_cut(out->data + start, out->len - start, max);
        out->len = start + keep;
        out->data[out->len] = '\0';
    }
    while (out->len > start && out->data[out->len - 1] == ' ')
        out->data[--out->len] = '\0';
    free(clean);
    return cut || input_cut;
}

static int append_json_text(buf *out, json_t *v, size_t max)
{
    if (json_is_string(v))
        return append_clean(out, json_string_value(v), json_string_length(v), max);
    char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!dump)
        return 0;
    int cut = append_clean(out, dump, strlen(dump), max);
    free(dump);
    return cut;
}

/* The message of a JSON error body in any of the shapes we know, or NULL:
 *   {"error": {"message": "...", "code": "...", "metadata": {"raw": ...}}}
 *   {"error": "..."}
 *   {"detail": "..."} or {"detail": [{"msg": "..."}]}   (FastAPI)
 *   {"message": "..."}                                   (older vLLM) */
char *lm_error_text_from_json(json_t *root)
{
    buf out;
    buf_init(&out, MESSAGE_MAX * 3);
    int cut = 0;
    json_t *error = json_object_get(root, "error");
    json_t *detail = json_object_get(root, "detail");
    json_t *message = json_object_get(root, "message");
    if (json_is_object(error)) {
        json_t *m = json_object_get(error, "message");
        if (!m || json_is_null(m))
            goto fail;
        cut = append_json_text(&out, m, MESSAGE_MAX);
        json_t *code = json_object_get(error, "code");
        if (!cut && json_is_string(code) && json_string_length(code) > 0) {
            buf_puts(&out, " (");
            append_clean(&out, json_string_value(code), json_string_length(code), 64);
            buf_puts(&out, ")");
        }
        /* OpenRouter wraps the upstream provider's own error here. */
        json_t *metadata = json_object_get(error, "metadata");
        json_t *raw = json_is_object(metadata) ? json_object_get(metadata, "raw") : NULL;
        if (!cut && raw && !json_is_null(raw)) {
            json_t *provider = json_object_get(metadata, "provider_name");
            buf_puts(&out, ": ");
            if (json_is_string(provider)) {
                append_clean(&out, json_string_value(provider), json_string_length(provider), 64);
                buf_puts(&out, " said ");
            }
            cut = append_json_text(&out, raw, MESSAGE_MAX);
        }
    } else if (json_is_string(error)) {
        cut = append_json_text(&out, error, MESSAGE_MAX);
    } else if (json_is_array(detail) && json_is_object(json_array_get(detail, 0)) &&
               json_is_string(json_object_get(json_array_get(detail, 0), "msg"))) {
        cut = append_json_text(&out, json_object_get(json_array_get(detail, 0), "msg"), MESSAGE_MAX);
    } else if (detail && !json_is_null(detail)) {
        cut = append_json_text(&out, detail, MESSAGE_MAX);
    } else if (json_is_string(message)) {
        cut = append_json_text(&out, message, MESSAGE_MAX);
    } else {
        goto fail;
    }
    if (cut)
        buf_puts(&out, "…");
    if (out.len == 0)
        goto fail;
    return buf_take(&out);
fail:
    buf_free(&out);
    return NULL;
}

/* An HTML error page (proxies, load balancers) says what went wrong in its title. */
static int html_title(const char *body, size_t len, const char **title, size_t *title_len)
{
    const char *open = memmem(body, len, "<title>", 7);
    if (!open)
        open = memmem(body, len, "<TITLE>", 7);
    if (!open)
        return -1;
    open += 7;
    size_t rest = len - (size_t)(open - body);
    const char *close = memmem(open, rest, "</", 2);
    if (!close)
        return -1;
    *title = open;
    *title_len = (size_t)(close - open);
    return 0;
}

char *openai_error_message(long http_status, const char *body, size_t len)
{
    if (!body)
        len = 0;
    buf out;
    buf_init(&out, MESSAGE_MAX * 4);
    const char *reason = status_reason(http_status);
    if (reason)
        buf_printf(&out, "HTTP %ld %s", http_status, reason);
    else
        buf_printf(&out, "HTTP %ld", http_status);

    json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
    char *text = json_is_object(root) ? lm_error_text_from_json(root) : NULL;
    json_decref(root);
    if (text) {
        buf_printf(&out, ": %s", text);
        free(text);
        return buf_take(&out);
    }

    const char *title;
    size_t title_len;
    size_t mark = out.len;
    if (len == 0) {
        buf_puts(&out, " (empty body)");
    } else if (html_title(body, len, &title, &title_len) == 0 && title_len > 0) {
        buf_puts(&out, ": ");
        append_clean(&out, title, title_len, EXCERPT_MAX);
        if (out.len == mark + 2) {
            out.len = mark;
            out.data[mark] = '\0';
        }
    }
    if (out.len == mark && len > 0) {
        buf_puts(&out, ": ");
        if (append_clean(&out, body, len, EXCERPT_MAX))
            buf_printf(&out, "… (%zu bytes)", len);
    }
    return buf_take(&out);
}
