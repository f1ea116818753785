/* sse — the server-sent events parser: splits a byte stream into lines (any
 * of the three line ends, across reads), lines into fields, fields into
 * events, within fixed limits. See sse.h for the rules it follows. */
#include "sse.h"

#include <stdio.h>
#include <string.h>

void sse_parser_init(sse_parser *p, size_t max_line, size_t max_event, sse_event_fn on_event, void *ctx)
{
    memset(p, 0, sizeof *p);
    p->on_event = on_event;
    p->ctx = ctx;
    p->max_line = max_line ? max_line : SSE_DEFAULT_MAX_LINE;
    buf_init(&p->line, p->max_line);
    buf_init(&p->data, max_event ? max_event : SSE_DEFAULT_MAX_EVENT);
    buf_init(&p->type, 256);
    buf_init(&p->id, 256);
}

void sse_parser_reset(sse_parser *p)
{
    buf_reset(&p->line);
    buf_reset(&p->data);
    buf_reset(&p->type);
    buf_reset(&p->id);
    p->has_data = p->after_cr = p->started = p->failed = 0;
    p->error[0] = '\0';
}

void sse_parser_free(sse_parser *p)
{
    buf_free(&p->line);
    buf_free(&p->data);
    buf_free(&p->type);
    buf_free(&p->id);
}

const char *sse_error(const sse_parser *p)
{
    return p->error;
}

static int fail(sse_parser *p, const char *why)
{
    p->failed = 1;
    snprintf(p->error, sizeof p->error, "%s", why);
    return -1;
}

static int dispatch(sse_parser *p)
{
    int rc = 0;
    if (p->has_data && p->on_event) {
        sse_event ev = {
            .type = p->type.len ? p->type.data : "message",
            .data = p->data.data ? p->data.data : "",
            .data_len = p->data.len,
            .id = p->id.data ? p->id.data : "",
        };
        rc = p->on_event(p->ctx, &ev);
    }
    buf_reset(&p->data);
    buf_reset(&p->type);
    p->has_data = 0;
    if (rc != 0) {
        p->failed = 1;
        snprintf(p->error, sizeof p->error, "stopped by the event handler");
    }
    return rc;
}

/* One complete line, without its line end. */
static int process_line(sse_parser *p, const char *line, size_t len)
{
    if (!p->started) {
        p->started = 1;
        if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
            line += 3;
            len -= 3;
        }
    }
    if (len == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0;
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t value_len = (size_t)(line + len - value);
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        if ((p->has_data && buf_append(&p->data, "\n", 1) != 0) ||
            buf_append(&p->data, value, value_len) != 0)
            return fail(p, "SSE event data larger than the limit");
        p->has_data = 1;
    } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        buf_reset(&p->type);
        if (buf_append(&p->type, value, value_len) != 0)
            return fail(p, "SSE event name too long");
    } else if (name_len == 2 && memcmp(line, "id", 2) == 0) {
        if (!memchr(value, '\0', value_len)) {
            buf_reset(&p->id);
            if (buf_append(&p->id, value, value_len) != 0)
                return fail(p, "SSE event id too long");
        }
    }
    /* "retry" and unknown fields carry nothing we use. */
    return 0;
}

/* The line end at or after data[from], or len if there is none. */
static size_t find_line_end(const char *data, size_t from, size_t len)
{
    for (size_t i = from; i < len; i++)
        if (data[i] == '\n' || data[i] == '\r')
            return i;
    return len;
}

int sse_feed(sse_parser *p, const char *data, size_t len)
{
    if (p->failed)
        return -1;
    size_t i = 0;
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t end = find_line_end(data, i, len);
        size_t piece = end - i;
        if (piece > p->max_line - p->line.len)
            return fail(p, "SSE line longer than the limit");
        if (piece > 0 && buf_append(&p->line, data + i, piece) != 0)
            return fail(p, "out of memory reading an SSE line");
        if (end == len)
            break;
        p->after_cr = data[end] == '\r';
        int rc = process_line(p, p->line.data ? p->line.data : "", p->line.len);
        buf_reset(&p->line);
        if (rc != 0)
            return rc;
        i = end + 1;
    }
    return 0;
}
