/* lm — the LM dispatcher: sends chat requests to an OpenAI-compatible or an
 * Anthropic Messages endpoint through the shared HTTP I/O thread (http.h),
 * many at once, with a bound on requests in flight, retries with backoff,
 * client-side rate limits, round-robin over several base URLs, streaming,
 * and usage accounting per model. docs/providers.md is the user's guide.
 *
 * Ownership: lm_new returns a handle freed by lm_free; it copies every string
 * of lm_options. lm_call_many borrows the requests until it returns and fills
 * caller-provided responses whose strings are malloc'd and released by
 * lm_response_clear. Thread-safe: any thread may call lm_call_many
 * concurrently (each call blocks its caller only).
 *
 * Every field added after the first version defaults, when zero-initialised,
 * to the behaviour before it existed. */
#ifndef RLM_LM_H
#define RLM_LM_H

#include <jansson.h>
#include <stddef.h>

typedef struct lm lm;

typedef struct lm_options {
    const char *base_url;   /* e.g. "https://api.openai.com/v1"; "/chat/completions"
                             * (OpenAI) or "/messages" (Anthropic) is appended */
    const char *api_key;    /* NULL or "": no key header. Sent as "Authorization:
                             * Bearer" (OpenAI) or "x-api-key" (Anthropic) */
    int concurrency;        /* most requests in flight at once; 0 = 64 */
    double timeout;         /* total seconds per HTTP attempt; 0 = 600 */
    double connect_timeout; /* seconds; 0 = 30 */
    int max_retries;        /* extra attempts on 429, 5xx, connection errors; -1 = none; 0 = 3 */

    /* Provider: "openai" (chat completions, also vLLM, llama.cpp, Ollama,
     * OpenRouter, Gemini's compatible endpoint) or "anthropic" (Messages).
     * NULL or "": inferred from the base URL — a host of api.anthropic.com
     * means anthropic, anything else openai. Another value fails lm_new. */
    const char *provider;
    /* More base URLs for the same model, used round-robin with base_url
     * first: a connection error or a 5xx on one moves the retry to the next.
     * NULL / 0: base_url alone. */
    const char *const *extra_base_urls;
    size_t n_extra_base_urls;

    /* Client-side rate limits for this endpoint (all its URLs together):
     * requests and tokens per minute; 0 = unlimited. Tokens are estimated
     * before the call as the request's text bytes / 4. Calls are paced
     * (they wait on the I/O thread's timed queue) so a big batch queues
     * instead of drawing 429s; bursts of about one second's worth pass at
     * once. */
    double requests_per_minute;
    double tokens_per_minute;

    /* Request defaults (a request's own non-zero field wins). */
    long max_tokens;        /* output cap; 0 = not sent (OpenAI), 8192 (Anthropic,
                             * where the field is required) */
    int max_completion_tokens; /* 1: send the cap as "max_completion_tokens",
                                * as OpenAI's reasoning models require */
    const char *reasoning_effort; /* "low" | "medium" | "high" ...; NULL = not sent.
                                   * OpenAI: "reasoning_effort"; Anthropic: a
                                   * thinking budget of 2048 / 8192 / 24576 tokens */
    int send_temperature;   /* 1: send `temperature` (reasoning models reject it) */
    double temperature;

    /* Seconds a stream may go without a data event before the attempt is
     * abandoned (and retried); 0 = 300. SSE comments and Anthropic's ping
     * events are not progress: a server sending only keep-alives stalls as
     * surely as a silent one. Non-streaming requests have only the total
     * timeout: a reasoning model may think for minutes in silence. */
    double stall_timeout;
    /* 1: a 2xx reply that cannot be parsed, or is empty (no content; only
     * reasoning), is retried like a 5xx within max_retries. 0: returned as
     * LM_ERR_PARSE / LM_ERR_EMPTY / empty content at once. */
    int retry_bad_replies;
} lm_options;

typedef struct lm_message {
    const char *role;       /* "system", "user" or "assistant" */
    const char *content;
    size_t content_len;     /* bytes of content, which may then hold NUL bytes (sent as
                               \u0000); 0: up to its first NUL (lm_message_len) */
} lm_message;

/* The bytes of m's content: content_len when set, else up to the first NUL. */
size_t lm_message_len(const lm_message *m);

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
    const volatile int *cancel;
    /* > 0: a clock_now() time (util.h) past which the request ends the same
     * way, as LM_ERR_CANCELLED with the message "deadline reached": a cell's
     * wall limit applies to the sub-calls it waits for. */
    double deadline;
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
} lm_response;

/* The bytes of r's content (0 when there is none): content_len when set,
 * else up to the first NUL. */
size_t lm_content_len(const lm_response *r);

/* Creates a dispatcher and starts its I/O thread. NULL with err set on failure. */
lm *lm_new(const lm_options *opts, char *err, size_t errlen);

/* Sends n requests concurrently (bounded by the concurrency option, paced by
 * the rate limits) and blocks until all have completed, failed or been
 * cancelled (lm_request.cancel). Each body is encoded when its request goes
 * on the wire and freed when the attempt ends, so a batch of any length holds
 * at most `concurrency` encoded bodies. out[i]
 * answers reqs[i]; every out[i] is filled, whatever happens to the others.
 * out[] need not be initialised: it is overwritten, so clear responses before
 * reusing them. Retries (429, 500/502/503/504/529, connection errors,
 * timeouts, truncated or failed streams, and bad 2xx replies when
 * retry_bad_replies is set) wait on the I/O thread's timed queue, honouring
 * Retry-After; other 4xx end at once. */
void lm_call_many(lm *m, const lm_request *reqs, size_t n, lm_response *out);

/* Convenience: one request. */
void lm_call(lm *m, const lm_request *req, lm_response *out);

/* Usage so far, as a new JSON object:
 * {"MODEL": {"calls": n, "prompt_tokens": n, "completion_tokens": n, "errors": n}, ...}
 * The caller owns the reference (json_decref). */
json_t *lm_usage_json(lm *m);

/* Most requests that were in flight at the same moment so far. */
int lm_max_in_flight(lm *m);

/* One GET of {base}/models on the first base URL, with the dispatcher's
 * headers (its key, anthropic-version): what `rlm doctor` asks an endpoint.
 * Waits at most timeout seconds. 0 when a response arrived: *status its HTTP
 * status, *body its body (malloc'd; the caller frees it). -1 when none did,
 * with err saying why (unreachable, timeout). */
int lm_probe(lm *m, double timeout, long *status, char **body, char *err, size_t errlen);

/* 1 when the dispatcher's requests carry a key. */
int lm_has_key(const lm *m);

/* A short name for an lm_error ("connect", "timeout", "http", ...). */
const char *lm_error_name(lm_error e);

void lm_response_clear(lm_response *r);
/* Cancels pending requests, stops the I/O thread, frees everything. NULL is a no-op. */
void lm_free(lm *m);

#endif
