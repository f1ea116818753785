/* http — the I/O thread every LM request of a run goes through: one libcurl
 * multi handle, a bounded number of transfers on the wire, HTTP/2 multiplexing
 * where the server offers it and kept-alive connections otherwise.
 *
 * Threads: http_client_new starts the I/O thread, which alone touches the
 * multi handle. Any thread may call http_submit: it appends to a mutex-guarded
 * queue and wakes the I/O thread (curl_multi_wakeup). Completion is reported
 * by calling the request's `done` callback ON THE I/O THREAD, without any lock
 * of this module held: the callback must be short and must not wait for other
 * requests, but it may call http_submit (that is how retries are scheduled).
 * Exactly one callback is made for every accepted submission, including when
 * the client is freed or the request's cancel flag is raised (outcome
 * HTTP_ERR_CANCELLED).
 *
 * Ownership: the strings a request points to (url, headers, body, and the
 * body make_body hands over) are borrowed until its callback runs. The
 * callback receives res->body malloc'd and owns it (free it, or keep it). */
#ifndef RLM_HTTP_H
#define RLM_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

typedef struct http_client http_client;

typedef struct http_options {
    int max_transfers;      /* most transfers on the wire at once (the rest wait in the queue); <= 0: 64 */
    double connect_timeout; /* seconds; <= 0: 30 */
    size_t max_body;        /* largest response body kept; 0: 64 MiB. Larger ends as HTTP_ERR_TOO_LARGE */
} http_options;

typedef enum http_outcome {
    HTTP_OK = 0,        /* a whole response arrived; look at res->status */
    HTTP_ERR_CONNECT,   /* refused, DNS failure, TLS handshake or a connection that broke: worth a retry */
    HTTP_ERR_TIMEOUT,   /* the connect or total timeout passed */
    HTTP_ERR_TOO_LARGE, /* the body passed max_body; the transfer was stopped */
    HTTP_ERR_CANCELLED, /* the client was freed first, or the request's cancel flag was set */
    HTTP_ERR_OTHER,     /* anything a retry will not fix: bad URL, certificate rejected, out of memory */
} http_outcome;

typedef struct http_result {
    http_outcome outcome;
    long status;        /* HTTP status of the response, 0 if none arrived */
    char *body;         /* the response body, NUL-terminated; the callback owns it.
                         * NULL only when out of memory (outcome HTTP_ERR_OTHER) */
    size_t body_len;
    double retry_after; /* seconds asked for by a Retry-After header, -1 if none */
    const char *error;  /* what went wrong when outcome != HTTP_OK (borrowed, callback only) */
} http_result;

typedef void (*http_done_fn)(void *ctx, http_result *res);
/* Body builder: called on the I/O thread when the transfer is about to go on
 * the wire (so only transfers in flight hold a body, however many wait in
 * the queue). Sets *body and *len and returns 0; the body stays borrowed
 * until the done callback runs, which is where its owner frees it. Nonzero
 * ends the transfer at once as HTTP_ERR_OTHER ("cannot build the request
 * body"). */
typedef int (*http_body_fn)(void *ctx, const char **body, size_t *len);
/* Streaming reader: gets the body of a 2xx response piece by piece as it
 * arrives, on the I/O thread. Returns 0 to go on; nonzero stops the transfer
 * (outcome HTTP_ERR_OTHER, error "stopped by the stream reader"). */
typedef int (*http_data_fn)(void *ctx, const char *data, size_t len);

typedef struct http_request {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;           /* POST this body when non-NULL, else GET */
    size_t body_len;
    double timeout;             /* total seconds for this transfer; <= 0: no limit */
    double delay;               /* do not start before this many seconds from now (retry
                                 * backoff, pacing); delayed transfers start in 50 ms
                                 * slices, so up to that much later */
    http_done_fn done;          /* required */
    void *ctx;
    /* Optional: */
    http_data_fn on_data;       /* when set, a 2xx body goes here instead of res->body
                                 * (which is then ""); other statuses are collected */
    double stall_timeout;       /* > 0: end the transfer as HTTP_ERR_TIMEOUT once it
                                 * has received under 1 byte/s for this many seconds */
    http_body_fn make_body;     /* when set, POST the body it builds at start; `body`
                                 * and `body_len` are then ignored */
    const atomic_int *cancel; /* when set and *cancel becomes nonzero, the transfer
                                 * ends as HTTP_ERR_CANCELLED ("cancelled") within about
                                 * HTTP_CANCEL_CHECK_MS (queued, delayed or on the wire: it
                                 * is removed from the multi handle). Must stay valid
                                 * until the callback runs */
    double deadline;            /* > 0: a clock_now() time past which the transfer ends
                                 * the same way, as if its flag were raised */
} http_request;

/* How often the I/O thread looks at the cancel flags of its transfers while
 * any transfer has one. */
#define HTTP_CANCEL_CHECK_MS 50

/* Starts the I/O thread. NULL with err filled on failure. The first call also
 * runs curl_global_init (once per process). */
http_client *http_client_new(const http_options *opts, char *err, size_t errlen);

/* Queues a copy of *req (the strings stay borrowed). 0 when accepted: the
 * callback will run exactly once. -1 when the client is shutting down or out
 * of memory: no callback will run. */
int http_submit(http_client *c, const http_request *req);

/* The most transfers that were on the wire at the same moment so far. */
int http_client_max_in_flight(http_client *c);

/* Cancels everything queued or on the wire (their callbacks run with
 * HTTP_ERR_CANCELLED, on the I/O thread, before this returns), stops the
 * thread and frees the client. NULL is a no-op. Must not be called from a
 * callback. */
void http_client_free(http_client *c);

/* Seconds to wait as asked by a Retry-After header value: delta-seconds
 * ("120", fractions accepted) or an HTTP-date (compared with `now`; a past
 * date is 0). -1 when the value is neither. Pure. */
double http_parse_retry_after(const char *value, time_t now);

#endif
