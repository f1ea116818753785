/* lm_anthropic — Anthropic Messages as pure functions: the request body
 * (top-level system, alternating messages, required max_tokens, thinking),
 * the reply (text and thinking blocks, stop_reason, cache-aware usage), error
 * bodies, and the event stream. */
#include "lm_anthropic.h"

#include "frame.h"
#include "utf8.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_MAX LM_MESSAGE_MAX

/* ---- request -------------------------------------------------------- */

static json_t *json_text(const char *s, size_t len)
{
    return frame_string(s ? s : "", s ? len : 0);
}

static int is_system(const char *role)
{
    return role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0);
}

/* Anthropic knows two roles besides system; anything else speaks as the user. */
static const char *role_of(const char *role)
{
    return role && strcmp(role, "assistant") == 0 ? "assistant" : "user";
}

static long thinking_budget(const char *effort)
{
    if (!effort || !effort[0])
        return 0;
    if (strcmp(effort, "low") == 0 || strcmp(effort, "minimal") == 0)
        return 2048;
    if (strcmp(effort, "high") == 0)
        return 24576;
    return 8192;
}

/* Where a joined text is cut into cached blocks: byte offsets into it, each
 * the end of a prefix marked for caching. */
typedef struct cut_list {
    size_t at[2 * LM_CACHE_POINTS + 8];
    size_t n;
} cut_list;

/* The breakpoints the messages ask for, in order, as (message, in-message
 * offset) pairs, thinned to LM_CACHE_POINTS: the first (the system prompt,
 * which outlives every compaction) and the latest ones. keep[i] says whether
 * point i of the walk is sent. Returns how many points the messages ask for. */
static size_t cache_points_keep(const lm_request *req, unsigned char *keep, size_t cap)
{
    size_t total = 0;
    for (size_t i = 0; i < req->n_messages; i++) {
        const lm_message *m = &req->messages[i];
        size_t len = lm_message_len(m);
        total += m->cache_prefix > 0 && m->cache_prefix < len;
        total += m->cache_point != 0;
    }
    for (size_t k = 0; k < total && k < cap; k++)
        keep[k] = total <= LM_CACHE_POINTS || k == 0 || k >= total - (LM_CACHE_POINTS - 1);
    return total;
}

/* Appends one text block (skipped when empty: the API refuses those),
 * cached or not. -1 out of memory. */
static int block_add(json_t *blocks, const char *text, size_t len, int cached)
{
    if (len == 0)
        return 0;
    json_t *t = json_text(text, len);
    json_t *b = t ? json_pack("{s:s,s:o}", "type", "text", "text", t) : NULL;
    if (b && cached && json_object_set_new(b, "cache_control", json_pack("{s:s}", "type", "ephemeral")) != 0) {
        json_decref(b);
        b = NULL;
    }
    return b ? json_array_append_new(blocks, b) : -1;
}

/* The content of a joined text: a plain string, or (as_blocks) text blocks
 * cut at the cached prefixes' ends. NULL out of memory. */
static json_t *joined_content(const buf *text, const cut_list *cuts, int as_blocks)
{
    const char *data = text->data ? text->data : "";
    if (!as_blocks)
        return json_text(data, text->len);
    json_t *blocks = json_array();
    size_t from = 0;
    for (size_t k = 0; blocks && k < cuts->n; k++) {
        if (cuts->at[k] <= from && k > 0)
            continue;
        if (block_add(blocks, data + from, cuts->at[k] - from, 1) != 0) {
            json_decref(blocks);
            return NULL;
        }
        from = cuts->at[k];
    }
    if (blocks && block_add(blocks, data + from, text->len - from, 0) != 0) {
        json_decref(blocks);
        return NULL;
    }
    return blocks;
}

/* Appends a message's content to a joined text (after "\n\n" when
 * `separate`), noting the cached prefixes it ends. -1 out of memory. */
static int join_message(buf *into, int separate, cut_list *cuts, const lm_message *m, const unsigned char *keep,
                        size_t cap, size_t *point)
{
    size_t len = lm_message_len(m);
    if (separate && buf_puts(into, "\n\n") != 0)
        return -1;
    size_t start = into->len;
    if (buf_append(into, m->content ? m->content : "", len) != 0)
        return -1;
    if (m->cache_prefix > 0 && m->cache_prefix < len) {
        if (*point < cap && keep[*point] && cuts->n < sizeof cuts->at / sizeof cuts->at[0])
            cuts->at[cuts->n++] = start + m->cache_prefix;
        (*point)++;
    }
    if (m->cache_point) {
        if (*point < cap && keep[*point] && cuts->n < sizeof cuts->at / sizeof cuts->at[0])
            cuts->at[cuts->n++] = into->len;
        (*point)++;
    }
    return 0;
}

/* Joins runs of messages into the API's shape: the system text, then turns
 * whose roles alternate. In a request with cache breakpoints every content
 * is a list of text blocks, the ones ending at a breakpoint marked
 * cache_control: a message keeps its form from one turn to the next while
 * its mark comes and goes, so the request stays a growing prefix. */
static int build_messages(const lm_request *req, json_t *root)
{
    buf system, turn;
    buf_init(&system, (size_t)1 << 40);
    buf_init(&turn, (size_t)1 << 40);
    cut_list system_cuts = {.n = 0}, turn_cuts = {.n = 0};
    unsigned char keep[64];
    size_t cap = sizeof keep, point = 0;
    int as_blocks = cache_points_keep(req, keep, cap) > 0;
    json_t *messages = json_array();
    const char *turn_role = NULL;
    int rc = -1;
    if (!messages)
        goto fail;
    for (size_t i = 0; i <= req->n_messages; i++) {
        const lm_message *m = i < req->n_messages ? &req->messages[i] : NULL;
        if (m && is_system(m->role)) {
            if (join_message(&system, system.len > 0, &system_cuts, m, keep, cap, &point) != 0)
                goto fail;
            continue;
        }
        const char *role = m ? role_of(m->role) : NULL;
        if (turn_role && (!role || strcmp(role, turn_role) != 0)) {
            json_t *content = joined_content(&turn, &turn_cuts, as_blocks);
            if (!content || json_array_append_new(messages, json_pack("{s:s,s:o}", "role", turn_role,
                                                                      "content", content)) != 0)
                goto fail;
            buf_reset(&turn);
            turn_cuts.n = 0;
            turn_role = NULL;
        }
        if (!m)
            break;
        if (join_message(&turn, turn_role != NULL, &turn_cuts, m, keep, cap, &point) != 0)
            goto fail;
        turn_role = role;
    }
    if (system.len && json_object_set_new(root, "system", joined_content(&system, &system_cuts, as_blocks)) != 0)
        goto fail;
    if (json_object_set(root, "messages", messages) != 0)
        goto fail;
    rc = 0;
fail:
    json_decref(messages);
    buf_free(&system);
    buf_free(&turn);
    return rc;
}

char *anthropic_request_body(const lm_request *req, const lm_wire_options *wire)
{
    char *out = NULL;
    json_t *root = json_object();
    if (!root)
        return NULL;
    long max_tokens = wire && wire->max_tokens > 0 ? wire->max_tokens : ANTHROPIC_DEFAULT_MAX_TOKENS;
    long budget = thinking_budget(wire ? wire->reasoning_effort : NULL);
    if (budget > 0 && max_tokens <= budget)
        max_tokens = budget + ANTHROPIC_DEFAULT_MAX_TOKENS;
    if (json_object_set_new(root, "model", json_text(req->model, req->model ? strlen(req->model) : 0)) != 0 ||
        json_object_set_new(root, "max_tokens", json_integer(max_tokens)) != 0 ||
        build_messages(req, root) != 0)
        goto fail;
    if (budget > 0 && json_object_set_new(root, "thinking", json_pack("{s:s,s:I}", "type", "enabled",
                                                                      "budget_tokens", (json_int_t)budget)) != 0)
        goto fail;
    /* With thinking enabled the API accepts no temperature but 1. */
    if (wire && wire->send_temperature && budget == 0 &&
        json_object_set_new(root, "temperature", json_real(wire->temperature)) != 0)
        goto fail;
    if (wire && wire->stream && json_object_set_new(root, "stream", json_true()) != 0)
        goto fail;
    out = json_dumps(root, JSON_COMPACT);
fail:
    json_decref(root);
    return out;
}

/* ---- response ------------------------------------------------------- */

static const char *finish_reason_of(const char *stop_reason)
{
    static const struct {
        const char *anthropic, *openai;
    } map[] = {
        {"end_turn", "stop"},    {"stop_sequence", "stop"},      {"max_tokens", "length"},
        {"tool_use", "tool_calls"}, {"refusal", "content_filter"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(stop_reason, map[i].anthropic) == 0)
            return map[i].openai;
    return stop_reason;
}

static long count_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return (long)json_integer_value(v);
}

/* Reads a usage object into the four counters; fields it lacks keep their value. */
static void usage_read(json_t *usage, long *prompt, long *completion, long *cached, long *cache_write)
{
    if (!json_is_object(usage))
        return;
    long input = count_field(usage, "input_tokens");
    long write = count_field(usage, "cache_creation_input_tokens");
    long read = count_field(usage, "cache_read_input_tokens");
    long output = count_field(usage, "output_tokens");
    if (write >= 0)
        *cache_write = write;
    if (read >= 0)
        *cached = read;
    if (input >= 0)
        *prompt = input + (*cache_write > 0 ? *cache_write : 0) + (*cached > 0 ? *cached : 0);
    if (output >= 0)
        *completion = output;
}

/* Joins the text and thinking blocks. -1 on a block that is not an object. */
static int blocks_join(json_t *content, buf *text, buf *thinking, int *has_thinking)
{
    size_t i;
    json_t *block;
    json_array_foreach(content, i, block) {
        const char *type = json_string_value(json_object_get(block, "type"));
        if (!type)
            return -1;
        json_t *v = NULL;
        buf *into = NULL;
        if (strcmp(type, "text") == 0) {
            v = json_object_get(block, "text");
            into = text;
        } else if (strcmp(type, "thinking") == 0) {
            v = json_object_get(block, "thinking");
            into = thinking;
            *has_thinking = 1;
        }
        /* redacted_thinking, tool_use and server tool blocks carry no text for us. */
        if (into && json_is_string(v) && buf_append(into, json_string_value(v), json_string_length(v)) != 0)
            return -1;
    }
    return 0;
}

void anthropic_parse_response(const char *body, size_t len, lm_response *out)
{
    lm_response_reset(out);

    buf text, thinking;
    buf_init(&text, len + 1);
    buf_init(&thinking, len + 1);
    int has_thinking = 0;
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        char detail[JSON_ERROR_TEXT_LENGTH + 64];
        snprintf(detail, sizeof detail, "%s at byte %d)", jerr.text, jerr.position);
        lm_response_fail(out, LM_ERR_PARSE, "response is not valid JSON (", detail);
        goto done;
    }
    if (!json_is_object(root)) {
        lm_response_fail(out, LM_ERR_PARSE, "response is not a JSON object", NULL);
        goto done;
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    if (type && strcmp(type, "error") == 0) {
        char *msg = lm_error_text_from_json(root);
        lm_response_fail(out, LM_ERR_PARSE, "provider error: ", msg ? msg : "unknown");
        free(msg);
        goto done;
    }
    usage_read(json_object_get(root, "usage"), &out->prompt_tokens, &out->completion_tokens,
               &out->cached_tokens, &out->cache_write_tokens);
    json_t *content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        lm_response_fail(out, LM_ERR_PARSE, "response has no \"content\" array", NULL);
        goto done;
    }
    if (blocks_join(content, &text, &thinking, &has_thinking) != 0) {
        lm_response_fail(out, LM_ERR_PARSE, "content has a block of unknown shape", NULL);
        goto done;
    }
    const char *stop = json_string_value(json_object_get(root, "stop_reason"));
    if (stop) {
        const char *reason = finish_reason_of(stop);
        out->finish_reason = str_dup_len(reason, strlen(reason));
    }
    out->content_len = text.len;
    out->content = buf_take(&text);
    if (has_thinking)
        out->reasoning = buf_take(&thinking);
    if (out->content && out->content_len == 0 && (!out->reasoning || !out->reasoning[0]))
        lm_response_fail(out, LM_ERR_EMPTY, "empty reply, finish_reason ",
                  out->finish_reason ? out->finish_reason : "null");
done:
    buf_free(&text);
    buf_free(&thinking);
    json_decref(root);
}

char *anthropic_error_message(long http_status, const char *body, size_t len)
{
    char *base = lm_http_error_message(http_status, body, len);
    if (!base || !body || len == 0)
        return base;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *error = json_object_get(root, "error");
    const char *type = json_string_value(json_object_get(error, "type"));
    char *out = base;
    if (type && type[0] && strlen(type) < 64 && !strstr(base, type)) {
        buf b;
        buf_init(&b, MESSAGE_MAX * 4 + 80);
        if (buf_printf(&b, "%s (%s)", base, type) == 0) {
            free(base);
            out = buf_take(&b);
        } else {
            buf_free(&b);
        }
    }
    json_decref(root);
    return out;
}

/* ---- stream --------------------------------------------------------- */

static int block_start(lm_stream *s, json_t *block)
{
    const char *type = json_string_value(json_object_get(block, "type"));
    if (!type)
        return 0;
    int reasoning = strcmp(type, "thinking") == 0;
    json_t *v = json_object_get(block, reasoning ? "thinking" : "text");
    if (!reasoning && strcmp(type, "text") != 0)
        return 0;
    if (reasoning)
        s->has_reasoning = 1;
    if (json_is_string(v) && json_string_length(v) > 0)
        return lm_stream_append(s, reasoning, json_string_value(v), json_string_length(v));
    return 0;
}

static int block_delta(lm_stream *s, json_t *delta)
{
    const char *type = json_string_value(json_object_get(delta, "type"));
    if (!type)
        return 0;
    if (strcmp(type, "text_delta") == 0 || strcmp(type, "thinking_delta") == 0) {
        int reasoning = type[1] == 'h';
        json_t *v = json_object_get(delta, reasoning ? "thinking" : "text");
        if (json_is_string(v))
            return lm_stream_append(s, reasoning, json_string_value(v), json_string_length(v));
    }
    /* signature_delta and input_json_delta: nothing to show. */
    return 0;
}

int anthropic_stream_event(lm_stream *s, const char *type, const char *data, size_t len)
{
    if (s->error != LM_OK)
        return -1;
    if (s->done)
        return 0;
    s->events++;
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = lm_stream_fail(s, LM_ERR_PARSE, 1, "stream event is not a JSON object: ", jerr.text);
        goto done;
    }
    const char *inner = json_string_value(json_object_get(root, "type"));
    if (inner)
        type = inner;
    if (!type)
        goto done;
    if (strcmp(type, "message_start") == 0) {
        json_t *message = json_object_get(root, "message");
        usage_read(json_object_get(message, "usage"), &s->prompt_tokens, &s->completion_tokens,
                   &s->cached_tokens, &s->cache_write_tokens);
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = block_start(s, json_object_get(root, "content_block"));
    } else if (strcmp(type, "content_block_delta") == 0) {
        rc = block_delta(s, json_object_get(root, "delta"));
    } else if (strcmp(type, "message_delta") == 0) {
        const char *stop = json_string_value(json_object_get(json_object_get(root, "delta"), "stop_reason"));
        if (stop)
            lm_stream_set_finish(s, finish_reason_of(stop));
        usage_read(json_object_get(root, "usage"), &s->prompt_tokens, &s->completion_tokens,
                   &s->cached_tokens, &s->cache_write_tokens);
    } else if (strcmp(type, "message_stop") == 0) {
        s->done = 1;
    } else if (strcmp(type, "error") == 0) {
        char *msg = lm_error_text_from_json(root);
        const char *kind = json_string_value(json_object_get(json_object_get(root, "error"), "type"));
        buf detail;
        buf_init(&detail, MESSAGE_MAX * 4);
        buf_puts(&detail, msg ? msg : "unknown");
        if (kind)
            buf_printf(&detail, " (%.60s)", kind);
        rc = lm_stream_fail(s, LM_ERR_HTTP, 1, "provider error in the stream: ", detail.data ? detail.data : "");
        buf_free(&detail);
        free(msg);
    }
    /* ping, content_block_stop and event types added later: nothing to do. */
done:
    json_decref(root);
    return rc;
}

/* ---- the provider table's row --------------------------------------- */

const lm_provider lm_provider_anthropic = {
    .name = "anthropic",
    .path = "/messages",
    .default_url = "https://api.anthropic.com/v1",
    .host = "api.anthropic.com",
    .model_prefix = "claude-",
    .key_header = "x-api-key: ",
    .headers = {"anthropic-version: " ANTHROPIC_VERSION},
    .keepalive_event = "ping",
    .marks_cache = 1,
    .request_body = anthropic_request_body,
    .parse_response = anthropic_parse_response,
    .error_message = anthropic_error_message,
    .stream_event = anthropic_stream_event,
};
