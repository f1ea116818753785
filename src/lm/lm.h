/* lm — the LM dispatcher: sends chat requests to an OpenAI-compatible or an
 * Anthropic Messages endpoint through the shared HTTP I/O thread (http.h),
 * many at once, with a bound on requests in flight, retries with backoff,
 * client-side rate limits, several base URLs (each request to the live one
 * with the fewest outstanding; a failing one drained and probed until it
 * answers again: spread.h) and streaming. It keeps transport facts only (attempts, requests in flight);
 * usage and cost are the call path's (calls.h). docs/providers.md is the
 * user's guide.
 * The request and response types are the wire layer's (lm_wire.h); each
 * provider is a row of endpoint.h's table.
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

#include "lm_wire.h"

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
    /* More base URLs for the same model (servers of one deployment). Each
     * attempt goes to the live URL with the fewest requests outstanding; a
     * connection error or a 5xx on one moves the retry to another; a URL
     * nobody answers at (or that fails SPREAD_FAILURES_TO_DRAIN times in a
     * row) is drained and probed (GET /models) until it answers. NULL / 0:
     * base_url alone. */
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

/* Requests that become ready over time: a batch whose prompts are still
 * arriving from the sandbox (lm_call_fed). */
typedef struct lm_feed {
    /* Called on the caller's thread, never under the dispatcher's lock, when
     * the dispatcher can take more requests: waits at most timeout_ms (-1:
     * as long as it takes) for more and returns how many of the batch are
     * ready now, a prefix that never shrinks; sets *last once no more will
     * come (the count is then the batch's size, which may be below n). A
     * request is ready when everything lm_request points to is in place. */
    size_t (*more)(void *ctx, int timeout_ms, int *last);
    /* Optional: request i ended for good (its last attempt, retries
     * included, or it was never sent): its prompt is not read again. Called
     * on the I/O thread or the caller's, possibly under the dispatcher's
     * lock: it must not call into lm. */
    void (*done)(void *ctx, size_t i);
    void *ctx;
} lm_feed;

/* lm_call_many for a batch of at most n requests that become ready over
 * time: each is submitted as soon as the feed says it is ready, and the
 * feed is asked for more only while few enough are outstanding (those in
 * flight and a few queued), so prompts not yet needed are not yet read.
 * Returns the batch's size (the feed's last count); out[i] answers reqs[i]
 * below it, and out[i] above it holds LM_ERR_CANCELLED. The feed's `done`
 * has been called for every ready request when this returns. */
size_t lm_call_fed(lm *m, const lm_request *reqs, size_t n, lm_response *out, const lm_feed *feed);

/* Convenience: one request. */
void lm_call(lm *m, const lm_request *req, lm_response *out);

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

/* 1 when its provider caches only prefixes a request marks (Anthropic). */
int lm_marks_cache(const lm *m);

/* Cancels pending requests, stops the I/O thread, frees everything. NULL is a no-op. */
void lm_free(lm *m);

#endif
