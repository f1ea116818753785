/* lm — the LM dispatcher: turns chat requests into HTTP transfers on the
 * shared I/O thread (http.c), paces them under the rate limits, spreads them
 * over the endpoint's base URLs, assembles streams, retries what a retry can
 * fix and waits for whole batches. Each provider's wire format is its row
 * (lm_wire.h, endpoint.c's table), the SSE parser is sse.c. */
#include "lm.h"

#include "endpoint.h"
#include "http.h"
#include "spread.h"
#include "sse.h"
#include "tokens.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_CONCURRENCY 64
#define DEFAULT_TIMEOUT 600.0
#define DEFAULT_CONNECT_TIMEOUT 30.0
#define DEFAULT_MAX_RETRIES 3
#define DEFAULT_STALL_TIMEOUT 300.0
/* Backoff before retry k (1-based) is BACKOFF_BASE * 2^(k-1), at most
 * BACKOFF_MAX, times a random factor in [0.5, 1): a burst of requests that
 * failed together (a 429 wave) does not come back together. */
#define BACKOFF_BASE 0.5
#define BACKOFF_MAX 8.0
/* A Retry-After past this is shortened: no single call should sleep longer. */
#define RETRY_AFTER_MAX 120.0
#define URL_MAX 4096
#define MAX_BASE_URLS 64
/* The longest SSE line and event we accept, and the most of a "stream"
 * answered as plain JSON (a server that ignored stream: true) we keep. */
#define STREAM_MAX_LINE ((size_t)8 << 20)
#define STREAM_MAX_EVENT ((size_t)16 << 20)
#define STREAM_RAW_MAX ((size_t)16 << 20)
/* Rate limits let about this many seconds' worth of calls through at once. */
#define RATE_BURST_SECONDS 1.0

struct lm {
    http_client *http;
    const lm_provider *provider; /* the wire format: every provider difference is its row's */
    char **urls;                 /* full endpoint URLs, spread by spread.c */
    char **probe_urls;           /* {base}/models of each, to probe a drained one */
    struct url_probe *probes;    /* one probe context per URL */
    size_t n_urls;
    char *models_url;            /* {first base}/models, for lm_probe */
    char *key_header;
    /* Content-Type, Accept, the provider's own, the key, NULL. */
    const char *headers[3 + LM_PROVIDER_MAX_HEADERS + 1];        /* JSON answers */
    const char *stream_headers[3 + LM_PROVIDER_MAX_HEADERS + 1]; /* event-stream answers */
    double timeout;
    double stall_timeout;
    size_t concurrency;          /* transfers on the wire at once, at most */
    int max_retries;
    int retry_bad_replies;
    lm_wire_options wire;        /* defaults; wire.reasoning_effort points at effort */
    char *effort;
    double requests_per_minute, tokens_per_minute;

    pthread_mutex_t lock;        /* guards everything below and every batch */
    pthread_cond_t idle;         /* signalled when a caller leaves lm_call_many */
    int closing;
    int callers;
    uint64_t rng;                /* backoff jitter */
    spread spread;               /* requests outstanding and health per URL */
    double tat_requests;         /* rate limiter state (GCRA, see pace_locked) */
    double tat_tokens;
};

/* The probe of one drained URL (spread.h): a GET of its /models on the
 * I/O thread's timed queue; any HTTP answer means the server is back. */
typedef struct url_probe {
    lm *m;
    size_t index;
} url_probe;

/* One lm_call_many: its waiter sleeps on `done` until pending reaches 0
 * (or, fed, until any request finishes: it may then submit the next). */
typedef struct batch {
    pthread_cond_t done;
    size_t pending;
    const lm_feed *feed;         /* NULL: every request was given at once */
    const lm_request *reqs;      /* for feed->done's index */
    /* For the watcher (lm_batch_progress), under m->lock. */
    size_t finished, failed, on_wire, retried;
} batch;

/* One request of a batch, from submission to its final attempt. Everything
 * but the batch count is touched by one thread at a time: the caller until
 * submission, then the I/O thread's callbacks, then the caller again. */
typedef struct job {
    lm *m;
    batch *b;
    const lm_request *req;
    char *body;                  /* the attempt's request body, only while on the wire */
    int encode_failed;           /* the body could not be built (out of memory) */
    double est_tokens;           /* for the tokens-per-minute limit */
    size_t url_index;
    int attempts;
    double waited;               /* seconds held back by the rate limits */
    double sent_at;              /* when the first attempt went on the wire; 0 before */
    double finished_at;
    int stream;
    sse_parser sse;
    lm_stream acc;
    buf raw;                     /* a streamed body's first bytes, until an event arrives */
    size_t shown_content, shown_reasoning; /* last progress reported */
    long data_events;            /* events of this attempt that carry data (not pings) */
    long seen_events;            /* data_events when progress was last noted */
    double last_progress;        /* when a data event last arrived; 0 before any byte */
    lm_response out;             /* the final attempt, parsed */
} job;

static void response_init(lm_response *r)
{
    memset(r, 0, sizeof *r);
    r->prompt_tokens = r->completion_tokens = r->cached_tokens = r->cache_write_tokens = -1;
}

static void set_message(lm_response *out, lm_error error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_message(lm_response *out, lm_error error, const char *fmt, ...)
{
    buf b;
    buf_init(&b, 4096);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    out->error = error;
    free(out->error_message);
    out->error_message = buf_take(&b);
}

/* ---- rate limits ---------------------------------------------------- */

/* Design note. Both limits are token buckets kept as a generic cell rate
 * algorithm: a "theoretical arrival time" (tat) per limit, pushed forward
 * by each call's cost (1 request, or its estimated tokens) divided by the
 * rate. A call may start once now >= tat - burst, so an idle endpoint lets
 * about RATE_BURST_SECONDS' worth through at once and then spaces calls
 * evenly. The start time is decided when the call is submitted and handed
 * to http.c as a delay: the call waits in the I/O thread's timed queue,
 * holding no connection and no thread, and 2,000 queued sub-calls cost
 * nothing but their place in that queue. A call larger than the burst still
 * passes (the bucket goes into debt and later calls wait), so none starves.
 * Called with m->lock held; returns the start time (>= earliest). */
static double pace_locked(lm *m, double earliest, double tokens)
{
    double start = earliest;
    double request_cost = 0, token_cost = 0;
    if (m->requests_per_minute > 0) {
        request_cost = 60.0 / m->requests_per_minute;
        double burst = request_cost < RATE_BURST_SECONDS ? RATE_BURST_SECONDS - request_cost : 0;
        if (m->tat_requests - burst > start)
            start = m->tat_requests - burst;
    }
    if (m->tokens_per_minute > 0) {
        token_cost = tokens * 60.0 / m->tokens_per_minute;
        if (m->tat_tokens - RATE_BURST_SECONDS > start)
            start = m->tat_tokens - RATE_BURST_SECONDS;
    }
    if (m->requests_per_minute > 0)
        m->tat_requests = (m->tat_requests > start ? m->tat_requests : start) + request_cost;
    if (m->tokens_per_minute > 0)
        m->tat_tokens = (m->tat_tokens > start ? m->tat_tokens : start) + token_cost;
    return start;
}

/* ---- retries -------------------------------------------------------- */

static double random_unit(lm *m)
{
    /* xorshift64*: jitter needs spread, not secrecy. */
    pthread_mutex_lock(&m->lock);
    uint64_t x = m->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    pthread_mutex_unlock(&m->lock);
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* 529 is Anthropic's "overloaded". */
static int status_retryable(long status)
{
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504 ||
           status == 529;
}

static double backoff_delay(lm *m, const job *j, double retry_after)
{
    if (retry_after >= 0)
        return retry_after < RETRY_AFTER_MAX ? retry_after : RETRY_AFTER_MAX;
    double backoff = BACKOFF_BASE * ldexp(1.0, j->attempts - 1);
    if (backoff > BACKOFF_MAX)
        backoff = BACKOFF_MAX;
    return backoff * (0.5 + 0.5 * random_unit(m));
}

/* ---- streams -------------------------------------------------------- */

static void report_progress(job *j)
{
    const lm_request *req = j->req;
    if (!req->progress)
        return;
    if (j->acc.content_chars == j->shown_content && j->acc.reasoning_chars == j->shown_reasoning)
        return;
    j->shown_content = j->acc.content_chars;
    j->shown_reasoning = j->acc.reasoning_chars;
    lm_progress p = {
        .content_chars = j->acc.content_chars,
        .reasoning_chars = j->acc.reasoning_chars,
        .attempt = j->attempts + 1,
    };
    req->progress(req->progress_ctx, &p);
}

static int on_sse_event(void *ctx, const sse_event *ev)
{
    job *j = ctx;
    const lm_provider *p = j->m->provider;
    /* Keep-alive events (Anthropic's "ping"), like SSE comments (which never
     * get here), keep a connection busy without a word of the reply. */
    if (!(p->keepalive_event && strcmp(ev->type, p->keepalive_event) == 0))
        j->data_events++;
    return p->stream_event(&j->acc, ev->type, ev->data, ev->data_len);
}

/* The http reader, on the I/O thread: bytes -> SSE events -> the reply. */
static int on_stream_data(void *ctx, const char *data, size_t len)
{
    job *j = ctx;
    if (j->acc.events == 0 && j->raw.len + len <= STREAM_RAW_MAX)
        buf_append(&j->raw, data, len);
    int rc = sse_feed(&j->sse, data, len);
    if (rc != 0 && j->acc.error == LM_OK)
        lm_stream_fail(&j->acc, LM_ERR_PARSE, 0, "bad event stream: ", sse_error(&j->sse));
    /* Only data counts as progress: a server that sends nothing but
     * keep-alive comments or pings keeps curl's byte-rate check happy
     * forever, so the stall timeout is measured here, between data events. */
    double now = clock_now();
    if (j->last_progress == 0 || j->data_events != j->seen_events) {
        j->last_progress = now;
        j->seen_events = j->data_events;
    } else if (now - j->last_progress > j->m->stall_timeout && j->acc.error == LM_OK) {
        char why[128];
        snprintf(why, sizeof why, "no data for %.0f s, only keep-alive comments", now - j->last_progress);
        lm_stream_fail(&j->acc, LM_ERR_TIMEOUT, 1, "stream stalled: ", why);
    }
    report_progress(j);
    return j->acc.error != LM_OK ? -1 : 0;
}

static void stream_restart(job *j)
{
    sse_parser_reset(&j->sse);
    lm_stream_reset(&j->acc);
    buf_reset(&j->raw);
    j->shown_content = j->shown_reasoning = 0;
    j->data_events = j->seen_events = 0;
    j->last_progress = 0;
}

/* ---- attempts ------------------------------------------------------- */

/* The wire options of one request: the dispatcher's defaults, then the
 * request's own. */
static lm_wire_options wire_for(const lm *m, const lm_request *req)
{
    lm_wire_options w = m->wire;
    w.stream = req->stream != 0;
    if (req->max_tokens > 0)
        w.max_tokens = req->max_tokens;
    return w;
}

/* The http body builder, on the I/O thread as the attempt goes on the wire:
 * a batch of 4,300 long prompts then holds at most `concurrency` encoded
 * bodies, not 4,300 (each about the size of its prompt). on_attempt_done
 * frees the body; a retry encodes it again, which costs far less than the
 * backoff it waited. */
static int job_body(void *ctx, const char **body, size_t *len)
{
    job *j = ctx;
    lm *m = j->m;
    lm_wire_options w = wire_for(m, j->req);
    free(j->body);
    j->body = m->provider->request_body(j->req, &w);
    if (!j->body) {
        j->encode_failed = 1;
        return -1;
    }
    *body = j->body;
    *len = strlen(j->body);
    if (j->sent_at == 0)
        j->sent_at = clock_now();
    pthread_mutex_lock(&m->lock);
    j->b->on_wire++;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static void job_request(job *j, double delay, http_request *r)
{
    lm *m = j->m;
    memset(r, 0, sizeof *r);
    r->url = m->urls[j->url_index];
    r->headers = j->stream ? m->stream_headers : m->headers;
    r->make_body = job_body;
    r->cancel = j->req->cancel;
    r->deadline = j->req->deadline;
    r->timeout = m->timeout;
    r->delay = delay;
    r->done = NULL;
    r->ctx = j;
    if (j->stream) {
        r->on_data = on_stream_data;
        r->stall_timeout = m->stall_timeout;
    }
}

/* A 2xx reply a retry might improve on: unreadable, or nothing but reasoning. */
static int bad_reply(const lm_response *r)
{
    if (r->error == LM_ERR_PARSE || r->error == LM_ERR_EMPTY || r->error == LM_ERR_TRUNCATED)
        return 1;
    return r->error == LM_OK && lm_content_len(r) == 0 &&
           !(r->finish_reason && strcmp(r->finish_reason, "length") == 0);
}

static int job_past_deadline(const job *j)
{
    return j->req->deadline > 0 && clock_now() >= j->req->deadline;
}

/* What the attempt just made amounts to, in j->out; *retry says whether it
 * is worth another and *failover whether that one should go to the next URL. */
static void attempt_result(job *j, http_result *res, int *retry, int *failover)
{
    lm *m = j->m;
    lm_response *out = &j->out;
    const char *url = m->urls[j->url_index];
    const char *why = res->error ? res->error : "";
    int ok_status = res->status >= 200 && res->status < 300;
    lm_response_clear(out);
    response_init(out);
    out->http_status = res->status;
    *retry = *failover = 0;

    if (j->encode_failed) {
        set_message(out, LM_ERR_CANCELLED, "cannot encode the request (out of memory)");
        return;
    }
    if (j->stream && ok_status && res->outcome != HTTP_ERR_CANCELLED &&
        (res->outcome == HTTP_OK || j->acc.error != LM_OK)) {
        if (res->outcome == HTTP_OK && j->acc.events == 0 && j->raw.len > 0 && j->raw.data[0] == '{') {
            /* The server ignored stream: true and answered in one piece. */
            m->provider->parse_response(j->raw.data, j->raw.len, out);
        } else {
            int transient = j->acc.transient;
            lm_stream_finish(&j->acc, out);
            *retry = out->error == LM_ERR_TRUNCATED || (out->error != LM_OK && transient);
        }
        *retry = *retry || (m->retry_bad_replies && bad_reply(out));
        return;
    }
    switch (res->outcome) {
    case HTTP_OK:
        if (ok_status) {
            m->provider->parse_response(res->body, res->body_len, out);
            *retry = m->retry_bad_replies && bad_reply(out);
        } else {
            out->error = LM_ERR_HTTP;
            out->error_message = m->provider->error_message(res->status, res->body, res->body_len);
            if ((res->status == 401 || res->status == 403) && !m->key_header) {
                /* Say so: the fix is a key, not a retry. */
                char *msg = out->error_message;
                out->error_message = NULL;
                set_message(out, LM_ERR_HTTP, "%s (no API key was sent to this endpoint)",
                            msg ? msg : "refused");
                free(msg);
            }
            *retry = status_retryable(res->status);
            *failover = res->status >= 500;
        }
        break;
    case HTTP_ERR_CONNECT:
        set_message(out, LM_ERR_CONNECT, "cannot reach %s: %s", url, why);
        *retry = *failover = 1;
        break;
    case HTTP_ERR_OTHER:
        set_message(out, LM_ERR_CONNECT, "cannot reach %s: %s", url, why);
        break;
    case HTTP_ERR_TIMEOUT:
        if (j->stream && ok_status)
            set_message(out, LM_ERR_TIMEOUT, "stream stalled or ran past %gs: %s", m->timeout, why);
        else
            set_message(out, LM_ERR_TIMEOUT, "no complete answer within %gs: %s", m->timeout, why);
        *retry = *failover = 1;
        break;
    case HTTP_ERR_TOO_LARGE:
        set_message(out, ok_status || res->status == 0 ? LM_ERR_PARSE : LM_ERR_HTTP,
                    "HTTP %ld: response body larger than the limit", res->status);
        break;
    case HTTP_ERR_CANCELLED:
        if (job_past_deadline(j))
            set_message(out, LM_ERR_CANCELLED, "deadline reached");
        else
            set_message(out, LM_ERR_CANCELLED, "%s", why[0] ? why : "cancelled");
        break;
    }
}

static int job_cancelled(const job *j)
{
    return (j->req->cancel && *j->req->cancel != 0) || job_past_deadline(j);
}

static void job_finish(job *j)
{
    lm *m = j->m;
    lm_response *out = &j->out;
    out->attempts = j->attempts;
    if (out->error != LM_OK && out->error != LM_ERR_CANCELLED && j->attempts > 1 && out->error_message) {
        char *msg = out->error_message;
        out->error_message = NULL;
        set_message(out, out->error, "%s (after %d attempts)", msg, j->attempts);
        free(msg);
    }
    j->finished_at = clock_now();
    /* Before the count goes down: the caller returns only once every
     * request's bytes were let go. */
    if (j->b->feed && j->b->feed->done)
        j->b->feed->done(j->b->feed->ctx, (size_t)(j->req - j->b->reqs));
    pthread_mutex_lock(&m->lock);
    j->b->finished++;
    j->b->failed += out->error != LM_OK;
    if (--j->b->pending == 0 || j->b->feed)
        pthread_cond_signal(&j->b->done);
    pthread_mutex_unlock(&m->lock);
}

/* ---- health of the URLs --------------------------------------------- */

/* What an attempt that went out says about its server. */
static spread_signal attempt_signal(const http_result *res, int went_out)
{
    if (!went_out || !res)
        return SPREAD_NEUTRAL;
    switch (res->outcome) {
    case HTTP_OK: return res->status >= 500 ? SPREAD_FAILED : SPREAD_ALIVE;
    case HTTP_ERR_TOO_LARGE: return SPREAD_ALIVE;
    case HTTP_ERR_CONNECT: return res->status > 0 ? SPREAD_FAILED : SPREAD_UNREACHABLE;
    case HTTP_ERR_TIMEOUT: return SPREAD_FAILED;
    default: return SPREAD_NEUTRAL;
    }
}

static void schedule_probe(lm *m, size_t index, double delay);

/* A probe's answer, on the I/O thread: any HTTP status but a 5xx is a
 * server that is back; none (or a 5xx) waits longer and probes again. A
 * client being freed cancels it: nothing more is scheduled. */
static void on_probe_answer(void *ctx, http_result *res)
{
    url_probe *p = ctx;
    lm *m = p->m;
    free(res->body);
    res->body = NULL;
    if (res->outcome == HTTP_ERR_CANCELLED)
        return;
    int alive = (res->outcome == HTTP_OK && res->status < 500) || res->outcome == HTTP_ERR_TOO_LARGE;
    double again = 0;
    pthread_mutex_lock(&m->lock);
    int more = !m->closing && spread_probed(&m->spread, p->index, alive, &again);
    pthread_mutex_unlock(&m->lock);
    if (more)
        schedule_probe(m, p->index, again);
}

static void schedule_probe(lm *m, size_t index, double delay)
{
    http_request r = {.url = m->probe_urls[index], .headers = m->headers, .timeout = 10,
                      .delay = delay, .done = on_probe_answer, .ctx = &m->probes[index]};
    if (!m->probe_urls[index] || http_submit(m->http, &r) != 0) {
        /* No probe (shutting down, or no URL for it): a request that
         * still goes there, when every URL is drained, brings it back. */
        pthread_mutex_lock(&m->lock);
        m->spread.urls[index].probing = 0;
        pthread_mutex_unlock(&m->lock);
    }
}

/* Ends the attempt on the job's URL; drains the URL (and starts probing
 * it) when the attempt says it is down. */
static void attempt_ended(job *j, const http_result *res, int went_out)
{
    lm *m = j->m;
    double probe_in = 0;
    pthread_mutex_lock(&m->lock);
    int drained = spread_end(&m->spread, j->url_index, attempt_signal(res, went_out), &probe_in);
    pthread_mutex_unlock(&m->lock);
    if (drained)
        schedule_probe(m, j->url_index, probe_in);
}

/* The http callback, on the I/O thread: parse the attempt, then either
 * schedule the next (http.c holds it until its delay passes, blocking
 * nothing) or keep it as final and wake the batch's caller. */
static void on_attempt_done(void *ctx, http_result *res)
{
    job *j = ctx;
    lm *m = j->m;
    /* The body is built as a transfer starts: without one, this attempt
     * never went out (cancelled in the queue, or not encodable). */
    if (j->body) {
        j->attempts++;
        pthread_mutex_lock(&m->lock);
        j->b->on_wire--;
        pthread_mutex_unlock(&m->lock);
    }
    attempt_ended(j, res, j->body != NULL);
    free(j->body);
    j->body = NULL;
    int retry, failover;
    attempt_result(j, res, &retry, &failover);
    free(res->body);
    res->body = NULL;
    if (!retry || j->attempts > m->max_retries || res->outcome == HTTP_ERR_CANCELLED) {
        job_finish(j);
        return;
    }
    if (job_cancelled(j)) {
        lm_response_clear(&j->out);
        response_init(&j->out);
        set_message(&j->out, LM_ERR_CANCELLED, job_past_deadline(j) ? "deadline reached" : "cancelled");
        job_finish(j);
        return;
    }
    double delay = backoff_delay(m, j, res->retry_after);
    pthread_mutex_lock(&m->lock);
    j->b->retried++;
    pthread_mutex_unlock(&m->lock);
    if (j->stream)
        stream_restart(j);
    double now = clock_now();
    pthread_mutex_lock(&m->lock);
    /* The retry goes to the least busy live URL, another than the one
     * that failed when it was the server's fault. */
    size_t failed = j->url_index;
    j->url_index = spread_pick(&m->spread, failover ? failed : m->n_urls);
    if (j->url_index != failed && res->outcome == HTTP_ERR_CONNECT)
        delay = 0; /* nobody answered there: the next URL at once */
    double start = pace_locked(m, now + delay, j->est_tokens);
    pthread_mutex_unlock(&m->lock);
    j->waited += start - (now + delay);
    http_request next;
    job_request(j, start - now, &next);
    next.done = on_attempt_done;
    if (http_submit(m->http, &next) != 0) {
        attempt_ended(j, NULL, 0);
        lm_response_clear(&j->out);
        response_init(&j->out);
        set_message(&j->out, LM_ERR_CANCELLED, "cancelled before a retry");
        job_finish(j);
    }
}

/* ---- public --------------------------------------------------------- */

/* What the body of req will weigh, without encoding it (tokens_for_rate).
 * JSON escaping and the envelope add a little. */
static double estimate_tokens(const lm_request *req)
{
    size_t bytes = 64 + (req->model ? strlen(req->model) : 0);
    for (size_t i = 0; i < req->n_messages; i++) {
        const lm_message *msg = &req->messages[i];
        bytes += 32 + (msg->role ? strlen(msg->role) : 0) + lm_message_len(msg);
    }
    return tokens_for_rate(bytes);
}

static void job_init(lm *m, batch *b, const lm_request *req, job *j)
{
    j->m = m;
    j->b = b;
    j->req = req;
    j->stream = req->stream != 0;
    response_init(&j->out);
    if (m->tokens_per_minute > 0)
        j->est_tokens = estimate_tokens(req);
    if (j->stream) {
        sse_parser_init(&j->sse, STREAM_MAX_LINE, STREAM_MAX_EVENT, on_sse_event, j);
        lm_stream_init(&j->acc, 0);
        buf_init(&j->raw, STREAM_RAW_MAX);
    }
}

static void job_free(job *j)
{
    free(j->body);
    lm_response_clear(&j->out);
    if (j->stream) {
        sse_parser_free(&j->sse);
        lm_stream_free(&j->acc);
        buf_free(&j->raw);
    }
}

/* Design note. lm_call_many submits the whole batch under m->lock, which is
 * also what lm_free takes to set `closing`: so a batch is either wholly
 * submitted before shutdown begins or not at all, and http_submit never
 * meets a freed client. Each call's start time comes from the rate limiter
 * (pace_locked) and its URL from spread_pick (least outstanding), both under the
 * same lock. Nothing is encoded yet: http.c asks for each body (job_body)
 * when the attempt goes on the wire, and on_attempt_done frees it, so a
 * batch holds at most `concurrency` bodies however long it is. The caller
 * then sleeps on its batch's condition variable; the I/O thread's callback
 * parses each attempt (streams are parsed as their bytes arrive, which the
 * progress callback needs anyway), schedules retries on its own timed queue
 * — so a backoff sleeps nobody — and counts the batch down.
 *
 * Cancellation rides on http.c: every attempt carries the request's cancel
 * flag, and the I/O thread ends flagged transfers, queued or on the wire,
 * within HTTP_CANCEL_CHECK_MS. Here a flag already up means no submission,
 * and a flag up when an attempt ends means no retry. */
/* Where batch b of n requests stands; under m->lock. */
static lm_batch_progress batch_progress(const batch *b, size_t n)
{
    return (lm_batch_progress){.size = n, .done = b->finished, .failed = b->failed,
                               .in_flight = b->on_wire, .retried = b->retried};
}

/* Submits job j (under m->lock), or ends it at once when the dispatcher is
 * closing or the request was cancelled. */
static void job_submit(lm *m, batch *b, job *j, int closing)
{
    if (closing || job_cancelled(j)) {
        set_message(&j->out, LM_ERR_CANCELLED, job_past_deadline(j) ? "deadline reached" : "cancelled");
        if (b->feed && b->feed->done)
            b->feed->done(b->feed->ctx, (size_t)(j->req - b->reqs));
        b->finished++;
        b->failed++;
        return;
    }
    j->url_index = spread_pick(&m->spread, m->n_urls);
    double now = clock_now();
    double start = pace_locked(m, now, j->est_tokens);
    j->waited = start - now;
    http_request r;
    job_request(j, start - now, &r);
    r.done = on_attempt_done;
    b->pending++;
    if (http_submit(m->http, &r) != 0) {
        spread_end(&m->spread, j->url_index, SPREAD_NEUTRAL, &(double){0});
        b->pending--;
        set_message(&j->out, LM_ERR_CANCELLED, job_past_deadline(j) ? "deadline reached" : "cancelled");
        if (b->feed && b->feed->done)
            b->feed->done(b->feed->ctx, (size_t)(j->req - b->reqs));
        b->finished++;
        b->failed++;
    }
}

/* Requests a fed batch may have submitted and not finished before it asks
 * for more: those on the wire and a few queued behind them, so a slot that
 * frees finds the next request ready, and a prompt not yet needed is not
 * yet read (it waits in the sandbox, which holds it anyway). */
static size_t feed_ahead(lm *m)
{
    size_t in_flight = m->concurrency;
    return in_flight + (in_flight / 4 > 8 ? in_flight / 4 : 8);
}

size_t lm_call_fed(lm *m, const lm_request *reqs, size_t n, lm_response *out, const lm_feed *feed)
{
    for (size_t i = 0; i < n; i++)
        response_init(&out[i]);
    job *jobs = n ? calloc(n, sizeof *jobs) : NULL;
    if (n == 0 || !jobs) {
        size_t ready = n;
        int last = !feed;
        /* A feed is read to its end even so: its caller waits for that. */
        while (!last)
            ready = feed->more(feed->ctx, -1, &last);
        for (size_t i = 0; i < n; i++) {
            set_message(&out[i], LM_ERR_CANCELLED, "out of memory");
            if (feed && feed->done && i < ready)
                feed->done(feed->ctx, i);
        }
        return feed ? ready : n;
    }
    batch b = {.pending = 0, .feed = feed, .reqs = reqs};
    pthread_cond_init(&b.done, NULL);
    size_t ready = feed ? 0 : n, submitted = 0;
    int last = !feed;
    size_t ahead = feed ? feed_ahead(m) : 0;
    lm_watch_fn watch = reqs[0].watch;
    double started = clock_now(), watched = started;
    pthread_mutex_lock(&m->lock);
    m->callers++;
    for (;;) {
        for (; submitted < ready; submitted++) {
            job_init(m, &b, &reqs[submitted], &jobs[submitted]);
            job_submit(m, &b, &jobs[submitted], m->closing);
        }
        if (last && b.pending == 0)
            break;
        int due = watch && clock_now() - watched >= LM_WATCH_SECONDS;
        if (!last && !due && submitted - b.finished < ahead) {
            /* The feed blocks in its own wait, never under the lock. */
            pthread_mutex_unlock(&m->lock);
            size_t now_ready = feed->more(feed->ctx, (int)(LM_WATCH_SECONDS * 1000), &last);
            pthread_mutex_lock(&m->lock);
            if (now_ready > n)
                now_ready = n;
            if (now_ready > ready)
                ready = now_ready;
            continue;
        }
        if (!due) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            long ns = until.tv_nsec + (long)(LM_WATCH_SECONDS * 1e9);
            until.tv_sec += ns / 1000000000L;
            until.tv_nsec = ns % 1000000000L;
            if (pthread_cond_timedwait(&b.done, &m->lock, &until) == 0 || !watch)
                continue;
        }
        if (!watch)
            continue;
        watched = clock_now();
        lm_batch_progress pr = batch_progress(&b, feed ? (last ? ready : n) : n);
        /* The watcher is the caller's code: never under the dispatcher's lock. */
        pthread_mutex_unlock(&m->lock);
        watch(reqs[0].watch_ctx, &pr);
        pthread_mutex_lock(&m->lock);
    }
    lm_batch_progress end = batch_progress(&b, ready);
    pthread_mutex_unlock(&m->lock);
    if (watch)
        watch(reqs[0].watch_ctx, &end);

    for (size_t i = 0; i < ready; i++) {
        job *j = &jobs[i];
        out[i] = j->out;
        response_init(&j->out);
        out[i].seconds = j->finished_at > started ? j->finished_at - started : 0;
        out[i].wait_seconds = j->waited;
        out[i].sent_at = j->sent_at;
        job_free(j);
    }
    for (size_t i = ready; i < n; i++)
        set_message(&out[i], LM_ERR_CANCELLED, "the request's prompt never arrived");
    free(jobs);
    pthread_cond_destroy(&b.done);

    pthread_mutex_lock(&m->lock);
    if (--m->callers == 0)
        pthread_cond_broadcast(&m->idle);
    pthread_mutex_unlock(&m->lock);
    return ready;
}

void lm_call_many(lm *m, const lm_request *reqs, size_t n, lm_response *out)
{
    lm_call_fed(m, reqs, n, out, NULL);
}

void lm_call(lm *m, const lm_request *req, lm_response *out)
{
    lm_call_many(m, req, 1, out);
}

int lm_max_in_flight(lm *m)
{
    return http_client_max_in_flight(m->http);
}

int lm_marks_cache(const lm *m)
{
    return m && m->provider->marks_cache;
}

int lm_has_key(const lm *m)
{
    return m->key_header != NULL;
}

/* lm_probe's wait for its one transfer. */
typedef struct probe {
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    int done;
    http_result res;
    char error[512];
} probe;

static void on_probe_done(void *ctx, http_result *res)
{
    probe *p = ctx;
    pthread_mutex_lock(&p->lock);
    p->res = *res;
    snprintf(p->error, sizeof p->error, "%s", res->error ? res->error : "");
    p->res.error = NULL;
    p->done = 1;
    pthread_cond_signal(&p->done_cond);
    pthread_mutex_unlock(&p->lock);
}

int lm_probe(lm *m, double timeout, long *status, char **body, char *err, size_t errlen)
{
    *status = 0;
    *body = NULL;
    if (!m->models_url) {
        snprintf(err, errlen, "no base URL to ask");
        return -1;
    }
    probe p = {.done = 0};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.done_cond, NULL);
    http_request req = {.url = m->models_url, .headers = m->headers, .timeout = timeout,
                        .done = on_probe_done, .ctx = &p};
    int rc = -1;
    if (http_submit(m->http, &req) != 0) {
        snprintf(err, errlen, "the dispatcher is shutting down");
    } else {
        pthread_mutex_lock(&p.lock);
        while (!p.done)
            pthread_cond_wait(&p.done_cond, &p.lock);
        pthread_mutex_unlock(&p.lock);
        if (p.res.outcome == HTTP_OK || p.res.outcome == HTTP_ERR_TOO_LARGE) {
            *status = p.res.status;
            *body = p.res.body;
            p.res.body = NULL;
            rc = 0;
        } else {
            snprintf(err, errlen, "cannot reach %s: %s", m->models_url, p.error[0] ? p.error : "no answer");
        }
        free(p.res.body);
    }
    pthread_cond_destroy(&p.done_cond);
    pthread_mutex_destroy(&p.lock);
    return rc;
}

static int header_value_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

/* The provider said, or the one the first URL's exact host stands for
 * (endpoint.h); any other host speaks OpenAI's protocol. */
static int choose_provider(lm *m, const lm_options *opts, char *err, size_t errlen)
{
    const char *name = opts->provider;
    if (!name || !*name) {
        endpoint_url u;
        char why[512];
        m->provider = opts->base_url && endpoint_parse(opts->base_url, &u, why, sizeof why) == 0
                          ? endpoint_host_provider(u.host) : NULL;
        if (!m->provider)
            m->provider = endpoint_default_provider();
    } else if (!(m->provider = endpoint_provider_named(name))) {
        char names[128];
        endpoint_provider_names(names, sizeof names);
        snprintf(err, errlen, "unknown provider \"%.40s\" (%s)", name, names);
        return -1;
    }
    return 0;
}

/* The request URL for one base URL, parsed by endpoint.c like every other. */
static char *request_url(lm *m, const char *base, char *err, size_t errlen)
{
    endpoint_url u;
    char why[512], url[URL_MAX];
    if (!base || !*base) {
        snprintf(err, errlen, "no base URL given");
        return NULL;
    }
    if (endpoint_parse(base, &u, why, sizeof why) != 0 ||
        endpoint_request_url(&u, m->provider, url, sizeof url, why, sizeof why) != 0) {
        snprintf(err, errlen, "base URL %s", why);
        return NULL;
    }
    char *copy = str_dup_len(url, strlen(url));
    if (!copy)
        snprintf(err, errlen, "out of memory");
    return copy;
}

static int build_endpoint(lm *m, const lm_options *opts, char *err, size_t errlen)
{
    if (choose_provider(m, opts, err, errlen) != 0)
        return -1;
    size_t n = 1 + (opts->extra_base_urls ? opts->n_extra_base_urls : 0);
    if (n > MAX_BASE_URLS) {
        snprintf(err, errlen, "more than %d base URLs", MAX_BASE_URLS);
        return -1;
    }
    m->urls = calloc(n, sizeof *m->urls);
    m->probe_urls = calloc(n, sizeof *m->probe_urls);
    m->probes = calloc(n, sizeof *m->probes);
    if (!m->urls || !m->probe_urls || !m->probes || spread_init(&m->spread, n) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *base = i == 0 ? opts->base_url : opts->extra_base_urls[i - 1];
        m->urls[i] = request_url(m, base, err, errlen);
        if (!m->urls[i])
            return -1;
        m->n_urls = i + 1;
        endpoint_url u;
        char why[512], models_url[URL_MAX];
        /* Without a probe URL a drained URL comes back only by answering. */
        if (endpoint_parse(base, &u, why, sizeof why) == 0 &&
            endpoint_url_with(&u, "/models", models_url, sizeof models_url, why, sizeof why) == 0)
            m->probe_urls[i] = str_dup_len(models_url, strlen(models_url));
        m->probes[i] = (url_probe){.m = m, .index = i};
    }
    endpoint_url first;
    char why[512], models[URL_MAX];
    if (endpoint_parse(opts->base_url, &first, why, sizeof why) == 0 &&
        endpoint_url_with(&first, "/models", models, sizeof models, why, sizeof why) == 0)
        m->models_url = str_dup_len(models, strlen(models));

    const char *key = opts->api_key && *opts->api_key ? opts->api_key : NULL;
    if (key) {
        if (!header_value_ok(key)) {
            snprintf(err, errlen, "api_key contains a line break");
            return -1;
        }
        buf auth;
        buf_init(&auth, URL_MAX);
        if (buf_printf(&auth, "%s%s", m->provider->key_header, key) != 0) {
            buf_free(&auth);
            snprintf(err, errlen, "api_key is too long");
            return -1;
        }
        m->key_header = buf_take(&auth);
    }
    size_t h = 0;
    m->headers[h] = m->stream_headers[h] = "Content-Type: application/json";
    h++;
    m->headers[h] = "Accept: application/json";
    m->stream_headers[h] = "Accept: text/event-stream";
    h++;
    for (size_t i = 0; i < LM_PROVIDER_MAX_HEADERS && m->provider->headers[i]; i++) {
        m->headers[h] = m->stream_headers[h] = m->provider->headers[i];
        h++;
    }
    if (m->key_header) {
        m->headers[h] = m->stream_headers[h] = m->key_header;
        h++;
    }
    m->headers[h] = m->stream_headers[h] = NULL;
    return 0;
}

static int copy_wire_defaults(lm *m, const lm_options *opts, char *err, size_t errlen)
{
    m->wire.max_tokens = opts->max_tokens > 0 ? opts->max_tokens : 0;
    m->wire.max_completion_tokens = opts->max_completion_tokens != 0;
    m->wire.send_temperature = opts->send_temperature != 0;
    m->wire.temperature = opts->temperature;
    if (opts->reasoning_effort && *opts->reasoning_effort) {
        m->effort = str_dup_len(opts->reasoning_effort, strlen(opts->reasoning_effort));
        if (!m->effort) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        m->wire.reasoning_effort = m->effort;
    }
    if (opts->requests_per_minute < 0 || opts->tokens_per_minute < 0 ||
        !isfinite(opts->requests_per_minute) || !isfinite(opts->tokens_per_minute)) {
        snprintf(err, errlen, "rate limits must be positive (or 0 for none)");
        return -1;
    }
    m->requests_per_minute = opts->requests_per_minute;
    m->tokens_per_minute = opts->tokens_per_minute;
    return 0;
}

lm *lm_new(const lm_options *opts, char *err, size_t errlen)
{
    lm *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->idle, NULL);
    m->rng = ((uint64_t)(uintptr_t)m << 17) ^ (uint64_t)(clock_wall() * 1e6) ^ 0x9E3779B97F4A7C15ULL;
    if (!m->rng)
        m->rng = 1;
    if (build_endpoint(m, opts, err, errlen) != 0 || copy_wire_defaults(m, opts, err, errlen) != 0)
        goto fail;
    m->timeout = opts->timeout > 0 ? opts->timeout : DEFAULT_TIMEOUT;
    m->stall_timeout = opts->stall_timeout > 0 ? opts->stall_timeout : DEFAULT_STALL_TIMEOUT;
    m->max_retries = opts->max_retries == 0 ? DEFAULT_MAX_RETRIES
                   : opts->max_retries < 0 ? 0 : opts->max_retries;
    m->retry_bad_replies = opts->retry_bad_replies != 0;
    m->concurrency = (size_t)(opts->concurrency > 0 ? opts->concurrency : DEFAULT_CONCURRENCY);
    http_options ho = {
        .max_transfers = (int)m->concurrency,
        .connect_timeout = opts->connect_timeout > 0 ? opts->connect_timeout : DEFAULT_CONNECT_TIMEOUT,
    };
    m->http = http_client_new(&ho, err, errlen);
    if (!m->http)
        goto fail;
    return m;
fail:
    lm_free(m);
    return NULL;
}

void lm_free(lm *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->closing = 1;
    pthread_mutex_unlock(&m->lock);
    /* Runs every pending callback with HTTP_ERR_CANCELLED, which wakes the
     * callers; they still read m, so wait for them to leave. */
    http_client_free(m->http);
    pthread_mutex_lock(&m->lock);
    while (m->callers > 0)
        pthread_cond_wait(&m->idle, &m->lock);
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < m->n_urls; i++) {
        free(m->urls[i]);
        if (m->probe_urls)
            free(m->probe_urls[i]);
    }
    free(m->urls);
    free(m->probe_urls);
    free(m->probes);
    spread_free(&m->spread);
    free(m->models_url);
    free(m->key_header);
    free(m->effort);
    pthread_cond_destroy(&m->idle);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
