/* lm_wire — what every provider's wire format shares, as pure functions: the
 * response's lifetime, the stream accumulator, and the reading of error
 * bodies (JSON error objects in their many shapes, HTML pages, raw text). */
#include "lm_wire.h"

#include "utf8.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGE_MAX LM_MESSAGE_MAX
/* How much of a body that is not a provider error object we quote. */
#define EXCERPT_MAX 300

/* ---- requests and responses ----------------------------------------- */

const char *lm_error_name(lm_error e)
{
    switch (e) {
    case LM_OK: return "ok";
    case LM_ERR_CONNECT: return "connect";
    case LM_ERR_TIMEOUT: return "timeout";
    case LM_ERR_HTTP: return "http";
    case LM_ERR_PARSE: return "parse";
    case LM_ERR_EMPTY: return "empty";
    case LM_ERR_CANCELLED: return "cancelled";
    case LM_ERR_TRUNCATED: return "truncated";
    }
    return "unknown";
}

void lm_response_clear(lm_response *r)
{
    if (!r)
        return;
    free(r->content);
    free(r->reasoning);
    free(r->error_message);
    free(r->finish_reason);
    memset(r, 0, sizeof *r);
}

size_t lm_message_len(const lm_message *m)
{
    if (!m->content)
        return 0;
    return m->content_len ? m->content_len : strlen(m->content);
}

int lm_json_put_string(buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, i = 0;
    if (buf_append(b, "\"", 1) != 0)
        return -1;
    while (i < len) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (buf_append(b, s + start, i - start) != 0)
            return -1;
        int rc;
        if (c >= 0x80) {
            size_t n = utf8_sequence_length(u + i, len - i);
            rc = n ? buf_append(b, s + i, n) : buf_append(b, "\xEF\xBF\xBD", 3);
            i += n ? n : 1;
        } else {
            char esc[7] = {'\\', (char)c, 0};
            if (c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f')
                esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : c == '\b' ? 'b' : 'f';
            else if (c < 0x20)
                memcpy(esc + 1, (char[]){'u', '0', '0', hex[c >> 4], hex[c & 15]}, 5);
            rc = buf_append(b, esc, strlen(esc + 1) + 1);
            i++;
        }
        if (rc != 0)
            return -1;
        start = i;
    }
    if (buf_append(b, s + start, i - start) != 0)
        return -1;
    return buf_append(b, "\"", 1);
}

size_t lm_content_len(const lm_response *r)
{
    if (!r->content)
        return 0;
    return r->content_len ? r->content_len : strlen(r->content);
}

void lm_response_reset(lm_response *r)
{
    free(r->content);
    free(r->reasoning);
    free(r->finish_reason);
    free(r->error_message);
    r->content = r->reasoning = r->finish_reason = r->error_message = NULL;
    r->content_len = 0;
    r->prompt_tokens = r->completion_tokens = r->cached_tokens = r->cache_write_tokens = -1;
    r->error = LM_OK;
}

void lm_response_fail(lm_response *r, lm_error error, const char *what, const char *detail)
{
    buf msg;
    buf_init(&msg, MESSAGE_MAX * 4);
    if (buf_puts(&msg, what) != 0 || (detail && buf_puts(&msg, detail) != 0)) {
        buf_reset(&msg);
        buf_puts(&msg, what);
    }
    r->error = error;
    free(r->error_message);
    r->error_message = buf_take(&msg);
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
        lm_response_fail(out, LM_ERR_TRUNCATED, "stream ended before its terminator (truncated)", NULL);
    } else {
        out->finish_reason = s->finish_reason;
        s->finish_reason = NULL;
        out->content_len = s->content.len;
        out->content = buf_take(&s->content);
        if (s->has_reasoning)
            out->reasoning = buf_take(&s->reasoning);
        if (out->content && out->content_len == 0 && (!out->reasoning || out->reasoning[0] == '\0'))
            lm_response_fail(out, LM_ERR_EMPTY, "empty reply, finish_reason ",
                          out->finish_reason ? out->finish_reason : "null");
    }
    lm_stream_reset(s);
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

char *lm_http_error_message(long http_status, const char *body, size_t len)
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
