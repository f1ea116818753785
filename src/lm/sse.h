/* sse — an incremental parser for server-sent events (the text/event-stream
 * format both OpenAI and Anthropic stream in). Pure: bytes in, events out,
 * no I/O, so it is unit-tested at every split point and fuzzed.
 *
 * The parser follows the WHATWG event-stream rules: lines end in CRLF, LF or
 * CR (a CRLF split across two reads is still one line end); a line starting
 * with ':' is a comment; "field: value" drops one space after the colon;
 * several data lines join with '\n'; an empty line dispatches the event (an
 * event with no data line is dropped); a UTF-8 BOM at the very start is
 * skipped; unknown fields are ignored. An event cut off by the end of the
 * stream is never dispatched: the caller learns that from its own terminator
 * ([DONE], message_stop) not having arrived.
 *
 * Limits: a line longer than max_line or an event whose data passes
 * max_event is an error — the parser stops and sse_feed returns -1 with
 * sse_error() saying which. Nothing grows without bound.
 *
 * Ownership: the parser owns its buffers (sse_parser_free releases them). The
 * event passed to the callback borrows them and is valid only during the
 * call. */
#ifndef RLM_SSE_H
#define RLM_SSE_H

#include "util.h"

#include <stddef.h>

typedef struct sse_event {
    const char *type;   /* the "event:" field, or "message" when none was given */
    const char *data;   /* the data lines joined by '\n', NUL-terminated */
    size_t data_len;
    const char *id;     /* the last "id:" seen on this stream, "" if none */
} sse_event;

/* Returns 0 to go on; any other value stops the parser and is returned by
 * sse_feed (so a caller can reject a stream from inside the callback). */
typedef int (*sse_event_fn)(void *ctx, const sse_event *ev);

typedef struct sse_parser {
    sse_event_fn on_event;
    void *ctx;
    size_t max_line;
    buf line;           /* the line being read */
    buf data;           /* data of the event being read */
    buf type;           /* event type of the event being read */
    buf id;             /* last event id */
    int has_data;       /* a data: line was seen for this event */
    int after_cr;       /* the previous byte ended a line with CR: skip one LF */
    int started;        /* past the optional BOM */
    int failed;         /* a limit was passed or the callback stopped us */
    char error[96];
} sse_parser;

/* Defaults for a 0 limit: 1 MiB lines, 16 MiB events. */
#define SSE_DEFAULT_MAX_LINE ((size_t)1 << 20)
#define SSE_DEFAULT_MAX_EVENT ((size_t)16 << 20)

void sse_parser_init(sse_parser *p, size_t max_line, size_t max_event, sse_event_fn on_event, void *ctx);

/* Feeds the next len bytes of the stream. 0 on success; -1 when a limit was
 * passed (sse_error says which); the callback's nonzero value when it stopped
 * the parser. After a nonzero return every later call returns -1 at once. */
int sse_feed(sse_parser *p, const char *data, size_t len);

/* Why the parser stopped, "" if it has not. Borrowed from p. */
const char *sse_error(const sse_parser *p);

/* Forgets everything read so far (a new stream, e.g. a retried request). */
void sse_parser_reset(sse_parser *p);

void sse_parser_free(sse_parser *p);

#endif
