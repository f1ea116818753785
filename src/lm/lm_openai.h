/* lm_openai — the OpenAI chat-completions wire format, as pure functions:
 * request JSON out, response JSON in, stream chunks in. No I/O, so every case
 * is a unit test over recorded bodies in tests/data/openai/ and tests/data/sse/.
 * It also holds what both providers share: the wire options of a request and
 * the accumulator a streamed reply is assembled in (lm_stream).
 *
 * Ownership: returned strings are malloc'd and owned by the caller. */
#ifndef RLM_LM_OPENAI_H
#define RLM_LM_OPENAI_H

#include "lm.h"
#include "util.h"

/* The per-request knobs of the body, resolved from lm_request and
 * lm_options by the dispatcher. Zero = nothing extra is sent. */
typedef struct lm_wire_options {
    int stream;
    long max_tokens;
    int max_completion_tokens;    /* OpenAI: name the cap max_completion_tokens */
    const char *reasoning_effort;
    int send_temperature;
    double temperature;
} lm_wire_options;

/* A streamed reply being assembled, whichever the provider. */
typedef struct lm_stream {
    buf content;
    buf reasoning;
    int has_reasoning;
    char *finish_reason;
    long prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens;
    size_t content_chars, reasoning_chars;
    long events;        /* events handled */
    int done;           /* the provider's terminator arrived */
    lm_error error;     /* LM_OK, or why the stream failed (it then stops) */
    int transient;      /* that failure is worth a retry (a provider error event) */
    char *error_message;
} lm_stream;

/* max bounds the content and the reasoning each; 0 = 64 MiB. */
void lm_stream_init(lm_stream *s, size_t max);
/* Back to the initial state, for a retried attempt. */
void lm_stream_reset(lm_stream *s);
void lm_stream_free(lm_stream *s);
/* Moves the assembled reply into out (its string fields are freed first):
 * LM_OK with content/reasoning/finish_reason/usage; the stream's own error;
 * LM_ERR_TRUNCATED when the terminator never came; LM_ERR_EMPTY when neither
 * content nor reasoning arrived. s is left reset. */
void lm_stream_finish(lm_stream *s, lm_response *out);

/* For the providers' stream parsers. lm_stream_append adds a delta's text to
 * the content (reasoning = 0) or the reasoning; -1 past the limit.
 * lm_stream_fail records the first failure and returns -1. */
int lm_stream_append(lm_stream *s, int reasoning, const char *text, size_t len);
int lm_stream_fail(lm_stream *s, lm_error error, int transient, const char *what, const char *detail);
void lm_stream_set_finish(lm_stream *s, const char *reason);

/* The message of a JSON error object in any of the shapes providers use
 * ({"error": {"message"...}}, {"error": "..."}, {"detail": ...},
 * {"message": ...}), cleaned and bounded; NULL when root has none. */
char *lm_error_text_from_json(json_t *root);

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

/* The provider's error message from a non-2xx body ({"error": {"message": ...}}
 * and the common variants), or a bounded excerpt of the raw body when it is
 * not JSON. Never NULL except out of memory. */
char *openai_error_message(long http_status, const char *body, size_t len);

#endif
