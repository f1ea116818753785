/* lm_anthropic — Anthropic's Messages API wire format as pure functions:
 * request JSON out, response JSON and stream events in. No I/O: every case is
 * a unit test over recorded bodies in tests/data/anthropic/ and
 * tests/data/sse/. The HTTP side (POST {base}/messages with x-api-key and
 * anthropic-version) is the dispatcher's, in lm.c.
 *
 * Mapping to lm_response: text blocks are joined into content, thinking
 * blocks into reasoning (redacted_thinking carries nothing readable);
 * stop_reason becomes finish_reason in OpenAI's words (end_turn and
 * stop_sequence -> "stop", max_tokens -> "length", tool_use -> "tool_calls",
 * refusal -> "content_filter", others unchanged); prompt_tokens is the whole
 * input (input_tokens + cache_creation_input_tokens + cache_read_input_tokens),
 * cached_tokens the cache reads and cache_write_tokens the cache writes.
 *
 * Ownership: returned strings are malloc'd and owned by the caller. */
#ifndef RLM_LM_ANTHROPIC_H
#define RLM_LM_ANTHROPIC_H

#include "lm_wire.h"

#define ANTHROPIC_VERSION "2023-06-01"
/* max_tokens is required by the API; this is sent when nothing else is set. */
#define ANTHROPIC_DEFAULT_MAX_TOKENS 8192

/* The provider table's row: Anthropic's Messages API. */
extern const lm_provider lm_provider_anthropic;

/* The body of POST {base}/messages: system messages go to the top-level
 * "system" field (joined by blank lines), the rest become "messages" with
 * consecutive messages of one role merged (the API wants them alternating).
 * max_tokens is wire->max_tokens or the default; reasoning_effort becomes a
 * thinking budget (low 2048, medium 8192, high 24576 tokens; max_tokens is
 * raised above it when needed) and then temperature is not sent, as the API
 * requires. NULL only when out of memory. */
char *anthropic_request_body(const lm_request *req, const lm_wire_options *wire);

/* Parses a 2xx Messages body into out, like openai_parse_response. */
void anthropic_parse_response(const char *body, size_t len, lm_response *out);

/* "HTTP 529: Overloaded (overloaded_error)" from a non-2xx body of the form
 * {"type":"error","error":{"type","message"}}; other bodies are described
 * as lm_http_error_message does. Never NULL except out of memory. */
char *anthropic_error_message(long http_status, const char *body, size_t len);

/* Handles one SSE event of a Messages stream: message_start (input usage),
 * content_block_start / content_block_delta (text_delta, thinking_delta;
 * signature and tool-input deltas are ignored), message_delta (stop_reason,
 * output usage), message_stop (the terminator), ping, and error events.
 * `type` is the SSE event name; the "type" inside data wins when present.
 * 0 to go on; -1 when the stream failed (s->error says why; an error event
 * such as overloaded_error is transient). */
int anthropic_stream_event(lm_stream *s, const char *type, const char *data, size_t len);

#endif
