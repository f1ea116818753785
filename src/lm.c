/* lm — the LM dispatcher: turns chat requests into HTTP transfers on the
 * shared I/O thread (http.c), retries what a retry can fix, waits for whole
 * batches and keeps per-model usage. The wire format lives in lm_openai.c. */
#include "lm.h"

#include "http.h"
#include "lm_openai.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONCURRENCY 64
#define DEFAULT_TIMEOUT 600.0
#define DEFAULT_CONNECT_TIMEOUT 30.0
#define DEFAULT_MAX_RETRIES 3
/* Backoff before retry k (1-based) is BACKOFF_BASE * 2^(k-1), at most
 * BACKOFF_MAX, times a random factor in [0.5, 1): a burst of requests that
 * failed together (a 429 wave) does not come back together. */
#define BACKOFF_BASE 0.5
#define BACKOFF_MAX 8.0
/* A Retry-After past this is shortened: no single call should sleep longer. */
#define RETRY_AFTER_MAX 120.0
#define URL_MAX 4096

typedef struct usage_entry {
    char *model;
    long calls, prompt_tokens, completion_tokens, errors;
} usage_entry;

struct lm {
    http_client *http;
    char *url;
    char *auth_header;
    const char *headers[4];
    double timeout;
    int max_retries;

    pthread_mutex_t lock;        /* guards everything below and every batch */
    pthread_cond_t idle;         /* signalled when a caller leaves lm_call_many */
    int closing;
    int callers;
    usage_entry *usage;
    size_t n_usage, cap_usage;
    uint64_t rng;                /* backoff jitter */
};

/* One lm_call_many: its waiter sleeps on `done` until pending reaches 0. */
typedef struct batch {
    pthread_cond_t done;
    size_t pending;
} batch;

/* One request of a batch, from submission to its final attempt. */
typedef struct job {
    lm *m;
    batch *b;
    char *body;
    size_t body_len;
    int attempts;
    double finished_at;
    /* the final attempt */
    http_outcome outcome;
    long status;
    char *response;
    size_t response_len;
    char *error;
} job;

const char *lm_error_name(lm_error e)
{
    switch (e) {
    case LM_OK: return "ok";
    case LM_ERR_CONNECT: return "connect";
    case LM_ERR_TIMEOUT: return "timeout";
    case LM_ERR_HTTP: return "http";
    case LM_ERR_PARSE: return "parse";
    case LM_ERR_EMPTY: return "empty";
    case LM_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void lm_response_clear(lm_response *r)
{
    if (!r)
        return;
    free(r->content);
    free(r->reasoning);
    free(r->error_message);
    free(r->finish_reason);
    memset(r, 0, sizeof *r);
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

static int status_retryable(long status)
{
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

/* Whether the attempt just made deserves another, and after how long. */
static int retry_delay(lm *m, const job *j, const http_result *res, double *delay)
{
    if (j->attempts > m->max_retries)
        return 0;
    int transient = res->outcome == HTTP_ERR_CONNECT || res->outcome == HTTP_ERR_TIMEOUT ||
                    (res->outcome == HTTP_OK && status_retryable(res->status));
    if (!transient)
        return 0;
    if (res->retry_after >= 0) {
        *delay = res->retry_after < RETRY_AFTER_MAX ? res->retry_after : RETRY_AFTER_MAX;
        return 1;
    }
    double backoff = BACKOFF_BASE * ldexp(1.0, j->attempts - 1);
    if (backoff > BACKOFF_MAX)
        backoff = BACKOFF_MAX;
    *delay = backoff * (0.5 + 0.5 * random_unit(m));
    return 1;
}

static void job_request(job *j, double delay, http_request *r);

static void job_finish(job *j, http_outcome outcome, long status, char *body, size_t len, const char *error)
{
    lm *m = j->m;
    j->outcome = outcome;
    j->status = status;
    j->response = body;
    j->response_len = body ? len : 0;
    j->error = error && *error ? str_dup_len(error, strlen(error)) : NULL;
    j->finished_at = clock_now();
    pthread_mutex_lock(&m->lock);
    if (--j->b->pending == 0)
        pthread_cond_signal(&j->b->done);
    pthread_mutex_unlock(&m->lock);
}

/* The http callback, on the I/O thread: either schedule the next attempt
 * (http.c holds it until its delay passes, without blocking anything) or
 * record the final one and wake the batch's caller. Parsing is left to the
 * caller's thread so the I/O thread only moves bytes. */
static void on_attempt_done(void *ctx, http_result *res)
{
    job *j = ctx;
    j->attempts++;
    double delay;
    if (retry_delay(j->m, j, res, &delay)) {
        http_request next;
        job_request(j, delay, &next);
        if (http_submit(j->m->http, &next) == 0) {
            free(res->body);
            return;
        }
        free(res->body);
        job_finish(j, HTTP_ERR_CANCELLED, res->status, NULL, 0, "cancelled before a retry");
        return;
    }
    job_finish(j, res->outcome, res->status, res->body, res->body_len, res->error);
}

static void job_request(job *j, double delay, http_request *r)
{
    memset(r, 0, sizeof *r);
    r->url = j->m->url;
    r->headers = j->m->headers;
    r->body = j->body;
    r->body_len = j->body_len;
    r->timeout = j->m->timeout;
    r->delay = delay;
    r->done = on_attempt_done;
    r->ctx = j;
}

/* ---- results -------------------------------------------------------- */

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

static void job_to_response(lm *m, job *j, double started, lm_response *out)
{
    out->http_status = j->status;
    out->attempts = j->attempts;
    out->seconds = j->finished_at > started ? j->finished_at - started : 0;
    out->prompt_tokens = -1;
    out->completion_tokens = -1;
    const char *why = j->error ? j->error : "";
    int ok_status = j->status >= 200 && j->status < 300;
    switch (j->outcome) {
    case HTTP_OK:
        if (ok_status) {
            openai_parse_response(j->response, j->response_len, out);
        } else {
            out->error = LM_ERR_HTTP;
            out->error_message = openai_error_message(j->status, j->response, j->response_len);
        }
        break;
    case HTTP_ERR_CONNECT:
    case HTTP_ERR_OTHER:
        set_message(out, LM_ERR_CONNECT, "cannot reach %s: %s", m->url, why);
        break;
    case HTTP_ERR_TIMEOUT:
        set_message(out, LM_ERR_TIMEOUT, "no complete answer within %gs: %s", m->timeout, why);
        break;
    case HTTP_ERR_TOO_LARGE:
        set_message(out, ok_status || j->status == 0 ? LM_ERR_PARSE : LM_ERR_HTTP,
                    "HTTP %ld: response body larger than the limit", j->status);
        break;
    case HTTP_ERR_CANCELLED:
        set_message(out, LM_ERR_CANCELLED, "%s", why[0] ? why : "cancelled");
        break;
    }
    if (out->error != LM_OK && out->error != LM_ERR_CANCELLED && j->attempts > 1 && out->error_message) {
        char *msg = out->error_message;
        out->error_message = NULL;
        set_message(out, out->error, "%s (after %d attempts)", msg, j->attempts);
        free(msg);
    }
}

static usage_entry *usage_find(lm *m, const char *model)
{
    for (size_t i = 0; i < m->n_usage; i++)
        if (strcmp(m->usage[i].model, model) == 0)
            return &m->usage[i];
    if (m->n_usage == m->cap_usage) {
        size_t cap = m->cap_usage ? m->cap_usage * 2 : 4;
        usage_entry *grown = realloc(m->usage, cap * sizeof *grown);
        if (!grown)
            return NULL;
        m->usage = grown;
        m->cap_usage = cap;
    }
    usage_entry *e = &m->usage[m->n_usage];
    memset(e, 0, sizeof *e);
    e->model = str_dup_len(model, strlen(model));
    if (!e->model)
        return NULL;
    m->n_usage++;
    return e;
}

/* Called with m->lock held. */
static void usage_add(lm *m, const char *model, const lm_response *r)
{
    usage_entry *e = usage_find(m, model ? model : "");
    if (!e)
        return;
    e->calls++;
    if (r->error != LM_OK)
        e->errors++;
    if (r->prompt_tokens > 0)
        e->prompt_tokens += r->prompt_tokens;
    if (r->completion_tokens > 0)
        e->completion_tokens += r->completion_tokens;
}

/* ---- public --------------------------------------------------------- */

/* Design note. lm_call_many encodes every body on the caller's thread, then
 * submits the whole batch under m->lock, which is also what lm_free takes to
 * set `closing`: so a batch is either wholly submitted before shutdown begins
 * or not at all, and http_submit never meets a freed client. The caller then
 * sleeps on its batch's condition variable; the I/O thread's callback counts
 * the batch down. Retries go back to the I/O thread's timed queue, so a
 * backoff sleeps nobody. Bodies are parsed here, on the caller's thread. */
void lm_call_many(lm *m, const lm_request *reqs, size_t n, lm_response *out)
{
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].prompt_tokens = -1;
        out[i].completion_tokens = -1;
    }
    if (n == 0)
        return;
    job *jobs = calloc(n, sizeof *jobs);
    if (!jobs) {
        for (size_t i = 0; i < n; i++)
            set_message(&out[i], LM_ERR_CANCELLED, "out of memory");
        return;
    }
    batch b = {.pending = 0};
    pthread_cond_init(&b.done, NULL);
    for (size_t i = 0; i < n; i++) {
        jobs[i].m = m;
        jobs[i].b = &b;
        jobs[i].body = openai_request_body(&reqs[i]);
        jobs[i].body_len = jobs[i].body ? strlen(jobs[i].body) : 0;
        jobs[i].outcome = HTTP_ERR_OTHER;
    }

    double started = clock_now();
    pthread_mutex_lock(&m->lock);
    int closing = m->closing;
    m->callers++;
    for (size_t i = 0; i < n && !closing; i++) {
        job *j = &jobs[i];
        if (!j->body) {
            j->error = str_dup_len("cannot encode the request (out of memory)", 41);
            continue;
        }
        http_request r;
        job_request(j, 0, &r);
        b.pending++;
        if (http_submit(m->http, &r) != 0) {
            b.pending--;
            j->outcome = HTTP_ERR_CANCELLED;
        }
    }
    while (b.pending > 0)
        pthread_cond_wait(&b.done, &m->lock);
    pthread_mutex_unlock(&m->lock);

    for (size_t i = 0; i < n; i++) {
        if (closing)
            jobs[i].outcome = HTTP_ERR_CANCELLED;
        job_to_response(m, &jobs[i], started, &out[i]);
        free(jobs[i].body);
        free(jobs[i].response);
        free(jobs[i].error);
    }
    free(jobs);
    pthread_cond_destroy(&b.done);

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < n; i++)
        if (out[i].error != LM_ERR_CANCELLED)
            usage_add(m, reqs[i].model, &out[i]);
    if (--m->callers == 0)
        pthread_cond_broadcast(&m->idle);
    pthread_mutex_unlock(&m->lock);
}

void lm_call(lm *m, const lm_request *req, lm_response *out)
{
    lm_call_many(m, req, 1, out);
}

json_t *lm_usage_json(lm *m)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_usage; i++) {
        const usage_entry *e = &m->usage[i];
        json_t *o = json_pack("{s:I,s:I,s:I,s:I}", "calls", (json_int_t)e->calls,
                              "prompt_tokens", (json_int_t)e->prompt_tokens,
                              "completion_tokens", (json_int_t)e->completion_tokens,
                              "errors", (json_int_t)e->errors);
        if (o)
            json_object_set_new(root, e->model, o);
    }
    pthread_mutex_unlock(&m->lock);
    return root;
}

int lm_max_in_flight(lm *m)
{
    return http_client_max_in_flight(m->http);
}

static int header_value_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

static int build_endpoint(lm *m, const lm_options *opts, char *err, size_t errlen)
{
    const char *base = opts->base_url;
    if (!base || !*base) {
        snprintf(err, errlen, "no base_url given");
        return -1;
    }
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        len--;
    buf url;
    buf_init(&url, URL_MAX);
    if (buf_append(&url, base, len) != 0 || buf_puts(&url, "/chat/completions") != 0) {
        buf_free(&url);
        snprintf(err, errlen, "base_url is too long");
        return -1;
    }
    m->url = buf_take(&url);
    if (!header_value_ok(m->url)) {
        snprintf(err, errlen, "base_url contains a line break");
        return -1;
    }

    size_t h = 0;
    m->headers[h++] = "Content-Type: application/json";
    m->headers[h++] = "Accept: application/json";
    if (opts->api_key && *opts->api_key) {
        if (!header_value_ok(opts->api_key)) {
            snprintf(err, errlen, "api_key contains a line break");
            return -1;
        }
        buf auth;
        buf_init(&auth, URL_MAX);
        if (buf_printf(&auth, "Authorization: Bearer %s", opts->api_key) != 0) {
            buf_free(&auth);
            snprintf(err, errlen, "api_key is too long");
            return -1;
        }
        m->auth_header = buf_take(&auth);
        m->headers[h++] = m->auth_header;
    }
    m->headers[h] = NULL;
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
    if (build_endpoint(m, opts, err, errlen) != 0)
        goto fail;
    m->timeout = opts->timeout > 0 ? opts->timeout : DEFAULT_TIMEOUT;
    m->max_retries = opts->max_retries == 0 ? DEFAULT_MAX_RETRIES
                   : opts->max_retries < 0 ? 0 : opts->max_retries;
    http_options ho = {
        .max_transfers = opts->concurrency > 0 ? opts->concurrency : DEFAULT_CONCURRENCY,
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
    for (size_t i = 0; i < m->n_usage; i++)
        free(m->usage[i].model);
    free(m->usage);
    free(m->url);
    free(m->auth_header);
    pthread_cond_destroy(&m->idle);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
