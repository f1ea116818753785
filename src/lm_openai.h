/* lm_openai — the OpenAI chat-completions wire format, as pure functions:
 * request JSON out, response JSON in. No I/O, so every case is a unit test
 * over recorded bodies in tests/data/openai/.
 *
 * Ownership: returned strings are malloc'd and owned by the caller. */
#ifndef RLM_LM_OPENAI_H
#define RLM_LM_OPENAI_H

#include "lm.h"

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

/* The provider's error message from a non-2xx body ({"error": {"message": ...}}
 * and the common variants), or a bounded excerpt of the raw body when it is
 * not JSON. Never NULL except out of memory. */
char *openai_error_message(long http_status, const char *body, size_t len);

#endif
