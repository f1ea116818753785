/* lm_wire — what every provider's wire format speaks, as pure types and
 * functions: the request and the response, the options a request body
 * carries, the accumulator a streamed reply is assembled in, the reading of
 * error bodies every provider shares, and the provider table's row
 * (lm_provider: one wire format, in the manner of curl's struct Curl_ssl).
 * No I/O and no curl: the provider files and the fuzzers link this alone;
 * the dispatcher (lm.h) adds the sending.
 *
 * Ownership: a response's strings are malloc'd and released by
 * lm_response_clear (or replaced by a parser, which frees what it replaces);
 * returned strings are malloc'd and owned by the caller; a request and its
 * messages are borrowed. */
#ifndef RLM_LM_WIRE_H
#define RLM_LM_WIRE_H

#include "util.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct lm_message {
    const char *role;       /* "system", "user" or "assistant" */
    const char *content;
    size_t content_len;     /* bytes of content, which may then hold NUL bytes (sent as
                               \u0000); 0: up to its first NUL (lm_message_len) */
    /* Prompt-cache breakpoints, for providers that cache a prefix only where
     * asked (Anthropic's cache_control); others cache on their own and ignore
     * them. Neither changes the text the model reads, nor the request's key. */
    int cache_point;        /* 1: the prefix ending with this message is worth caching */
    size_t cache_prefix;    /* > 0 (and below the content's length): so are its first
                               cache_prefix bytes, a preamble other requests share; they
                               are sent as a block of their own */
} lm_message;

/* Most breakpoints a request may carry (Anthropic's limit): past it the
 * first and the last LM_CACHE_POINTS - 1 are kept. */
#define LM_CACHE_POINTS 4

/* The bytes of m's content: content_len when set, else up to the first NUL. */
size_t lm_message_len(const lm_message *m);

/* Appends s[0..len) to b as a JSON string, quotes included: '"', '\\' and
 * control characters escaped, each byte that does not start a valid UTF-8
 * sequence written as U+FFFD — the text frame_string and json_dumps would
 * give, in one pass over the bytes and one copy (a request body holds the
 * whole prompt). 0, or -1 when b's limit is reached or out of memory. */
int lm_json_put_string(buf *b, const char *s, size_t len);

/* Progress of a streamed reply, counted in code points received so far on
 * the current attempt (a retried stream starts again from 0). */
typedef struct lm_progress {
    size_t content_chars;
    size_t reasoning_chars;
    int attempt;            /* 1 for the first attempt */
} lm_progress;

/* Called ON THE I/O THREAD after each stream event that added text: it must
 * be quick, must not block and must not call back into lm. */
typedef void (*lm_progress_fn)(void *ctx, const lm_progress *progress);

/* Where a batch of lm_call_many stands: its requests done (of which failed),
 * on the wire now, and retries scheduled so far. */
typedef struct lm_batch_progress {
    size_t size;
    size_t done;
    size_t failed;
    size_t in_flight;
    size_t retried;
} lm_batch_progress;

/* Called ON THE CALLER'S THREAD (the one waiting in lm_call_many), about
 * every LM_WATCH_SECONDS while the batch runs, and once at its end: the
 * waiter's own clock ticks even while the model is silent. It must not call
 * back into lm. */
typedef void (*lm_watch_fn)(void *ctx, const lm_batch_progress *progress);
#define LM_WATCH_SECONDS 0.25

typedef struct lm_request {
    const char *model;
    const lm_message *messages;
    size_t n_messages;
    /* Optional, zero = default: */
    int stream;             /* 1: ask for SSE and assemble it; same lm_response.
                             * A stream cut off before its terminator ([DONE],
                             * message_stop) is retried like a 5xx */
    lm_progress_fn progress;/* streams only; NULL = none */
    void *progress_ctx;
    long max_tokens;        /* 0 = lm_options.max_tokens */
    /* NULL = not cancellable. Otherwise the caller's flag, read (never
     * written) by the I/O thread while the request is pending: once *cancel
     * is nonzero the request ends within about 100 ms as LM_ERR_CANCELLED
     * with the message "cancelled", whether it was waiting for its turn, a
     * rate-limit slot or a retry, or on the wire (its transfer is dropped).
     * A reply that had already arrived is kept. Several requests may share
     * one flag; requests with another flag, or none, go on unaffected. The
     * flag must stay valid until lm_call_many returns. */
    const atomic_int *cancel;
    /* > 0: a clock_now() time (util.h) past which the request ends the same
     * way, as LM_ERR_CANCELLED with the message "deadline reached": a cell's
     * wall limit applies to the sub-calls it waits for. */
    double deadline;
    /* The batch's watcher (lm_watch_fn), read from the first request of a
     * batch only; NULL = none. */
    lm_watch_fn watch;
    void *watch_ctx;
} lm_request;

/* Why a call failed; LM_OK when content is usable. */
typedef enum lm_error {
    LM_OK = 0,
    LM_ERR_CONNECT,     /* could not reach the endpoint (refused, DNS, TLS) */
    LM_ERR_TIMEOUT,     /* no complete answer within the timeout */
    LM_ERR_HTTP,        /* non-2xx status; `error` holds the provider's message */
    LM_ERR_PARSE,       /* 2xx but the body is not a chat completion we understand */
    LM_ERR_EMPTY,       /* a valid reply with neither content nor reasoning */
    LM_ERR_CANCELLED,   /* the request's cancel flag was raised, or lm_free ran, while it
                         * was pending; or its body could not be encoded (out of memory) */
    LM_ERR_TRUNCATED,   /* a stream ended before its terminator, on every attempt */
} lm_error;

typedef struct lm_response {
    lm_error error;
    long http_status;        /* last HTTP status seen, 0 if none */
    char *content;           /* the assistant's text ("" if the model sent only reasoning) */
    size_t content_len;      /* its bytes: it may hold NUL bytes (\u0000 in the reply). Set by
                              * every parser; 0 with a non-empty content (a response built
                              * elsewhere) means up to the first NUL: lm_content_len */
    char *reasoning;         /* reasoning_content / reasoning if the provider sent it, else NULL */
    char *error_message;     /* human-readable cause when error != LM_OK, else NULL */
    char *finish_reason;     /* "stop", "length", ... or NULL */
    long prompt_tokens;      /* usage as reported by the provider; -1 if not reported */
    long completion_tokens;
    int attempts;            /* HTTP attempts made (1 + retries); 0 when the request
                              * was cancelled before its first went out */
    double seconds;          /* wall time from submission to completion */
    long cached_tokens;      /* prompt tokens read from the provider's prompt cache
                              * (part of prompt_tokens); -1 if not reported */
    long cache_write_tokens; /* prompt tokens written to it (Anthropic); -1 if not reported */
    double wait_seconds;     /* of `seconds`, time spent held back by the rate limits */
    double sent_at;          /* clock_now() when its first attempt went on the wire; 0 when
                                none did (cancelled, answered without a request) */
} lm_response;

/* The bytes of r's content (0 when there is none): content_len when set,
 * else up to the first NUL. */
size_t lm_content_len(const lm_response *r);

/* A short name for an lm_error ("connect", "timeout", "http", ...). */
const char *lm_error_name(lm_error e);

/* Frees r's strings and zeroes it. NULL is a no-op. */
void lm_response_clear(lm_response *r);

/* Makes ready for a parser: frees the content, reasoning, finish reason and
 * error message, sets the error to LM_OK and the token counts to -1
 * (not reported). The transport's fields (status, attempts, times) stay. */
void lm_response_reset(lm_response *r);

/* Sets r's error and its message, what followed by detail (NULL: none),
 * bounded; the message it replaces is freed. */
void lm_response_fail(lm_response *r, lm_error error, const char *what, const char *detail);

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

/* A provider's message longer than this is cut: error text ends up in logs,
 * traces and the root model's prompt, none of which want a megabyte. */
#define LM_MESSAGE_MAX 1024

/* The message of a JSON error object in any of the shapes providers use
 * ({"error": {"message"...}}, {"error": "..."}, {"detail": ...},
 * {"message": ...}), cleaned and bounded; NULL when root has none. */
char *lm_error_text_from_json(json_t *root);

/* The message of a non-2xx body as every provider's begins: "HTTP 429 Too
 * Many Requests: " and the message of a JSON error object
 * (lm_error_text_from_json), else an HTML page's title, else a bounded
 * excerpt of the raw body. Never NULL except out of memory. */
char *lm_http_error_message(long http_status, const char *body, size_t len);

/* Most headers a provider adds to every request. */
#define LM_PROVIDER_MAX_HEADERS 2

/* One wire format: the row of the provider table (endpoint.c holds the
 * table; each provider file defines its row). The dispatcher reaches a
 * provider only through these fields, so adding one is a file with these
 * functions and a row in the table. Every function is pure. */
typedef struct lm_provider {
    const char *name;          /* the provider option's value: "openai" */
    const char *path;          /* appended to a base URL: "/chat/completions" */
    const char *default_url;   /* its own API, where requests go when no base URL is given */
    const char *host;          /* the exact host that stands for it ("api.openai.com"), or NULL */
    const char *model_prefix;  /* a model name starting so implies it ("claude-"), or NULL */
    const char *key_header;    /* the header the key follows: "Authorization: Bearer " */
    const char *headers[LM_PROVIDER_MAX_HEADERS + 1]; /* sent with every request; NULL ends */
    const char *keepalive_event; /* an SSE event type that carries no reply ("ping"), or NULL */
    int marks_cache;           /* 1: it caches only where a request says (lm_message's
                                  cache_point, cache_prefix) */
    /* The request body for req with the wire options; NULL only out of memory. */
    char *(*request_body)(const lm_request *req, const lm_wire_options *wire);
    /* A 2xx body into out, which is reset first (lm_response_reset). */
    void (*parse_response)(const char *body, size_t len, lm_response *out);
    /* The message of a non-2xx body; NULL only out of memory. */
    char *(*error_message)(long http_status, const char *body, size_t len);
    /* One SSE event (type: the event's name, "message" when it has none):
     * 0 to go on, -1 when the stream failed (s->error says why). */
    int (*stream_event)(lm_stream *s, const char *type, const char *data, size_t len);
} lm_provider;

#endif
