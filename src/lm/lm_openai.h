/* lm_openai — the OpenAI chat-completions wire format, as pure functions:
 * request JSON out, response JSON in, stream chunks in. No I/O, so every case
 * is a unit test over recorded bodies in tests/data/openai/ and tests/data/sse/.
 * What both providers share (the request and response, wire options, the
 * stream accumulator, error bodies) is lm_wire.h's.
 *
 * Ownership: returned strings are malloc'd and owned by the caller. */
#ifndef RLM_LM_OPENAI_H
#define RLM_LM_OPENAI_H

#include "lm_wire.h"

/* The provider table's row: chat completions, as OpenAI and every
 * compatible server (vLLM, llama.cpp, Ollama, OpenRouter) speak it. */
extern const lm_provider lm_provider_openai;

/* The body with the given wire options (NULL: none, as openai_request_body). */
char *openai_request_body_with(const lm_request *req, const lm_wire_options *wire);

/* Handles the data of one SSE event of a chat.completion.chunk stream:
 * content / reasoning_content / reasoning deltas, finish_reason, the usage
 * chunk, "[DONE]", and {"error": ...} objects sent mid-stream. 0 to go on;
 * -1 when the stream failed (s->error says why). Events after [DONE] are ignored. */
int openai_stream_event(lm_stream *s, const char *data, size_t len);

/* The body of POST {base}/chat/completions for req (non-streaming). NULL only
 * when out of memory or a string is not valid UTF-8 (invalid bytes are
 * replaced with U+FFFD first, so in practice only out of memory). */
char *openai_request_body(const lm_request *req);

/* Parses a 2xx body into out->content, out->reasoning, out->finish_reason,
 * out->prompt_tokens, out->completion_tokens. Sets out->error to LM_OK,
 * LM_ERR_PARSE (with out->error_message saying what was wrong) or LM_ERR_EMPTY.
 * `content: null` with reasoning present is LM_OK with content "".
 * out's string fields must be NULL or malloc'd: they are freed and replaced. */
void openai_parse_response(const char *body, size_t len, lm_response *out);

#endif
