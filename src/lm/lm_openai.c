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

/* The body is written straight from the messages' bytes (lm_json_put_string):
 * a prompt of a sub-call batch can be most of a megabyte, and a JSON string
 * then a dump of it would make two copies and cost most of the request's
 * CPU. The few options still go through jansson. */
char *openai_request_body_with(const lm_request *req, const lm_wire_options *wire)
{
    buf b;
    buf_init(&b, SIZE_MAX / 2);
    char *options = NULL;
    json_t *root = json_object();
    if (!root || add_wire_options(root, wire) != 0 || !(options = json_dumps(root, JSON_COMPACT)))
        goto fail;
    int ok = buf_puts(&b, "{\"model\":") == 0 &&
             lm_json_put_string(&b, req->model ? req->model : "", req->model ? strlen(req->model) : 0) == 0 &&
             buf_puts(&b, ",\"messages\":[") == 0;
    for (size_t i = 0; ok && i < req->n_messages; i++) {
        const lm_message *msg = &req->messages[i];
        const char *role = msg->role ? msg->role : "user";
        ok = buf_puts(&b, i ? ",{\"role\":" : "{\"role\":") == 0 &&
             lm_json_put_string(&b, role, strlen(role)) == 0 && buf_puts(&b, ",\"content\":") == 0 &&
             lm_json_put_string(&b, msg->content ? msg->content : "", lm_message_len(msg)) == 0 &&
             buf_puts(&b, "}") == 0;
    }
    /* options is "{}" or "{...}": its members follow the messages. */
    ok = ok && buf_puts(&b, "]") == 0 && (strcmp(options, "{}") == 0 || (buf_puts(&b, ",") == 0 &&
                                          buf_append(&b, options + 1, strlen(options) - 2) == 0)) &&
         buf_puts(&b, "}") == 0;
    json_decref(root);
    free(options);
    if (!ok)
        buf_free(&b);
    return ok ? buf_take(&b) : NULL;
fail:
    json_decref(root);
    free(options);
    buf_free(&b);
    return NULL;
}

/* ---- response ------------------------------------------------------- */

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
    lm_response_reset(out);

    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        char detail[JSON_ERROR_TEXT_LENGTH + 64];
        snprintf(detail, sizeof detail, "%s at byte %d)", jerr.text, jerr.position);
        lm_response_fail(out, LM_ERR_PARSE, "response is not valid JSON (", detail);
        return;
    }
    if (!json_is_object(root)) {
        lm_response_fail(out, LM_ERR_PARSE, "response is not a JSON object", NULL);
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
        lm_response_fail(out, LM_ERR_PARSE, "provider error: ", text ? text : "unknown");
        free(text);
        goto done;
    }
    if (!json_is_array(choices)) {
        lm_response_fail(out, LM_ERR_PARSE, "response has no \"choices\" array", NULL);
        goto done;
    }
    if (json_array_size(choices) == 0) {
        lm_response_fail(out, LM_ERR_EMPTY, "response has no choices", NULL);
        goto done;
    }
    json_t *choice = json_array_get(choices, 0);
    json_t *message = json_object_get(choice, "message");
    if (!json_is_object(choice) || !json_is_object(message)) {
        lm_response_fail(out, LM_ERR_PARSE, "choices[0] has no \"message\" object", NULL);
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
            lm_response_fail(out, LM_ERR_PARSE, "message content has a part of unknown shape", NULL);
            goto done;
        }
        out->content_len = joined.len;
        out->content = buf_take(&joined);
    } else if (content && !json_is_null(content)) {
        lm_response_fail(out, LM_ERR_PARSE, "message content is neither text, parts nor null", NULL);
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
        lm_response_fail(out, LM_ERR_EMPTY, "empty reply, finish_reason ",
                      out->finish_reason ? out->finish_reason : "null");
        goto done;
    }
done:
    json_decref(root);
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

/* ---- the provider table's row --------------------------------------- */

/* Chat-completion chunks are named by their data alone. */
static int stream_event(lm_stream *s, const char *type, const char *data, size_t len)
{
    (void)type;
    return openai_stream_event(s, data, len);
}

const lm_provider lm_provider_openai = {
    .name = "openai",
    .path = "/chat/completions",
    .default_url = "https://api.openai.com/v1",
    .host = "api.openai.com",
    .key_header = "Authorization: Bearer ",
    .request_body = openai_request_body_with,
    .parse_response = openai_parse_response,
    .error_message = lm_http_error_message,
    .stream_event = stream_event,
};
