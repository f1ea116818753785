/* lm — the LM dispatcher: sends chat requests to an OpenAI-compatible
 * endpoint through the shared HTTP I/O thread (http.h), many at once, with a
 * bound on requests in flight, simple retries, and usage accounting per model.
 *
 * Ownership: lm_new returns a handle freed by lm_free. lm_call_many borrows the
 * requests and fills caller-provided responses whose strings are malloc'd and
 * released by lm_response_clear. Thread-safe: any thread may call
 * lm_call_many concurrently (each call blocks its caller only). */
#ifndef RLM_LM_H
#define RLM_LM_H

#include <jansson.h>
#include <stddef.h>

typedef struct lm lm;

typedef struct lm_options {
    const char *base_url;   /* e.g. "https://api.openai.com/v1"; "/chat/completions" is appended */
    const char *api_key;    /* NULL or "": no Authorization header */
    int concurrency;        /* most requests in flight at once; 0 = 64 */
    double timeout;         /* total seconds per HTTP attempt; 0 = 600 */
    double connect_timeout; /* seconds; 0 = 30 */
    int max_retries;        /* extra attempts on 429, 5xx, connection errors; -1 = none; 0 = 3 */
} lm_options;

typedef struct lm_message {
    const char *role;       /* "system", "user" or "assistant" */
    const char *content;
} lm_message;

typedef struct lm_request {
    const char *model;
    const lm_message *messages;
    size_t n_messages;
} lm_request;

/* Why a call failed; LM_OK when content is usable. */
typedef enum lm_error {
    LM_OK = 0,
    LM_ERR_CONNECT,     /* could not reach the endpoint (refused, DNS, TLS) */
    LM_ERR_TIMEOUT,     /* no complete answer within the timeout */
    LM_ERR_HTTP,        /* non-2xx status; `error` holds the provider's message */
    LM_ERR_PARSE,       /* 2xx but the body is not a chat completion we understand */
    LM_ERR_EMPTY,       /* a valid reply with neither content nor reasoning */
    LM_ERR_CANCELLED,   /* lm_free or shutdown while pending */
} lm_error;

typedef struct lm_response {
    lm_error error;
    long http_status;        /* last HTTP status seen, 0 if none */
    char *content;           /* the assistant's text ("" if the model sent only reasoning) */
    char *reasoning;         /* reasoning_content / reasoning if the provider sent it, else NULL */
    char *error_message;     /* human-readable cause when error != LM_OK, else NULL */
    char *finish_reason;     /* "stop", "length", ... or NULL */
    long prompt_tokens;      /* usage as reported by the provider; -1 if not reported */
    long completion_tokens;
    int attempts;            /* HTTP attempts made (1 + retries) */
    double seconds;          /* wall time from submission to completion */
} lm_response;

/* Creates a dispatcher and starts its I/O thread. NULL with err set on failure. */
lm *lm_new(const lm_options *opts, char *err, size_t errlen);

/* Sends n requests concurrently (bounded by the concurrency option) and
 * blocks until all have completed or failed. out[i] answers reqs[i]; every
 * out[i] is filled, whatever happens to the others. out[] need not be
 * initialised: it is overwritten, so clear responses before reusing them.
 * Retries (429, 500/502/503/504, connection errors, timeouts) wait on the I/O
 * thread's timed queue, honouring Retry-After; other 4xx end at once. */
void lm_call_many(lm *m, const lm_request *reqs, size_t n, lm_response *out);

/* Convenience: one request. */
void lm_call(lm *m, const lm_request *req, lm_response *out);

/* Usage so far, as a new JSON object:
 * {"MODEL": {"calls": n, "prompt_tokens": n, "completion_tokens": n, "errors": n}, ...}
 * The caller owns the reference (json_decref). */
json_t *lm_usage_json(lm *m);

/* Most requests that were in flight at the same moment so far. */
int lm_max_in_flight(lm *m);

/* A short name for an lm_error ("connect", "timeout", "http", ...). */
const char *lm_error_name(lm_error e);

void lm_response_clear(lm_response *r);
/* Cancels pending requests, stops the I/O thread, frees everything. NULL is a no-op. */
void lm_free(lm *m);

#endif
