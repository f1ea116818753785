/* http — the curl multi I/O thread: takes requests from a queue, keeps at most
 * max_transfers of them on the wire, reuses connections (HTTP/2 streams where
 * offered) and hands each finished response to its callback. */
#include "http.h"

#include "util.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef RLM_VERSION_STRING
#define RLM_VERSION_STRING "0"
#endif

#define DEFAULT_MAX_TRANSFERS 64
#define DEFAULT_CONNECT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY ((size_t)64 << 20)
/* The longest the I/O thread sleeps without a reason to wake; a safety net,
 * since submissions, curl's timers and retry deadlines all wake it anyway. */
#define IDLE_POLL_MS 1000
/* Delayed transfers start in slices: none before its time, and once the
 * earliest has been due for DUE_LATENESS seconds, every one due by then
 * starts together. Paced calls (500 a second under a rate limit) then cost
 * one timer wake-up per slice instead of one each, and their replies come
 * back close together, so the I/O thread handles several per wake-up. A
 * retry or a paced call waits at most this much longer than it asked,
 * which next to a backoff of 0.25 s or more, or a rate limit, is noise.
 * Measured (bench/lm_faults.sh, 500 requests/s, medians of 5): starting
 * up to 0.02 s early, 5.1% of a core; 0.05 s late, 3.9%; 0.1 s late, 3.6%. */
#define DUE_LATENESS 0.05

/* Header lists reused across transfers: every request of a dispatcher sends
 * the same few header lines, and building a curl_slist costs two
 * allocations per line. A list is cached by its lines' content (not by the
 * caller's array pointer, which may be reused for other lines) and lives
 * until the client is freed; when the cache is full, lists are built per
 * transfer as before. I/O thread only. */
#define HEADER_CACHE 8

typedef struct header_list {
    struct curl_slist *list;    /* the request's lines, then "Expect:" for a POST */
    int post;
} header_list;

typedef struct transfer {
    http_request req;
    double not_before;          /* monotonic time the transfer may start */
    CURL *easy;
    struct curl_slist *headers; /* owned: built for this transfer */
    struct curl_slist *shared_headers; /* borrowed from the cache, or NULL */
    buf body;
    int too_large;
    int streaming;              /* -1 not decided yet, 0 collect, 1 hand to on_data */
    int reader_stopped;
    char error[CURL_ERROR_SIZE];
    struct transfer *prev, *next;
} transfer;

struct http_client {
    http_options opts;
    CURLM *multi;               /* I/O thread only (after creation) */
    pthread_t thread;
    int thread_started;

    pthread_mutex_t lock;       /* guards everything below */
    int stopping;
    transfer *ready_head, *ready_tail; /* FIFO of transfers that may start now */
    transfer *delayed;          /* sorted by not_before */
    transfer *delayed_tail;     /* its last element: a paced batch appends in O(1) */
    int wake_sent;              /* a curl_multi_wakeup is pending since the I/O
                                 * thread last looked at the queues */
    int active;                 /* transfers on the wire */
    int max_in_flight;
    int n_cancellable;          /* accepted transfers with a cancel flag or a deadline, not
                                   yet finished */

    /* I/O thread only. */
    transfer *running;          /* on the wire, doubly linked for O(1) removal */
    CURL **idle;                /* reset easy handles kept for reuse */
    int n_idle;
    header_list cached[HEADER_CACHE];  /* reused header lists */
    int n_cached;
    double next_cancel_check;   /* when to look at the cancel flags again */
};

/* curl_global_init is not thread-safe and must run once per process before
 * any other curl call; pthread_once is the one process-wide state this needs. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- Retry-After ---------------------------------------------------- */

double http_parse_retry_after(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' ||
                       value[len - 1] == '\r' || value[len - 1] == '\n'))
        len--;
    if (len == 0 || len > 64)
        return -1;
    char copy[65];
    memcpy(copy, value, len);
    copy[len] = '\0';

    if (copy[0] >= '0' && copy[0] <= '9') {
        double seconds;
        if (parse_double(copy, &seconds) == 0 && seconds >= 0)
            return seconds;
        return -1;
    }
    time_t when = curl_getdate(copy, NULL);
    if (when == (time_t)-1)
        return -1;
    return when > now ? (double)(when - now) : 0.0;
}

/* ---- transfers ------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * nmemb;
    if (t->streaming < 0) {
        /* Headers are complete when the first body byte arrives. */
        long status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        t->streaming = t->req.on_data && status >= 200 && status < 300;
    }
    if (t->streaming) {
        if (t->req.on_data(t->req.ctx, data, n) == 0)
            return n;
        t->reader_stopped = 1;
        return 0;
    }
    if (buf_append(&t->body, data, n) != 0) {
        if (n > t->body.max - t->body.len)
            t->too_large = 1;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    return n;
}

static void transfer_free(transfer *t)
{
    curl_slist_free_all(t->headers);
    buf_free(&t->body);
    free(t);
}

static http_outcome outcome_of(CURLcode rc, const transfer *t)
{
    switch (rc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_ERR_TIMEOUT;
    case CURLE_WRITE_ERROR:
        return t->too_large ? HTTP_ERR_TOO_LARGE : HTTP_ERR_OTHER;
    case CURLE_ABORTED_BY_CALLBACK:
        return HTTP_ERR_OTHER;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return HTTP_ERR_CONNECT;
    default:
        return HTTP_ERR_OTHER;
    }
}

/* Runs the callback and frees the transfer. Called on the I/O thread with
 * no lock held; the easy handle (if any) has already been dealt with. */
static void transfer_finish(http_client *c, transfer *t, http_outcome outcome, long status,
                            double retry_after, const char *error)
{
    if (t->req.cancel || t->req.deadline > 0) {
        pthread_mutex_lock(&c->lock);
        c->n_cancellable--;
        pthread_mutex_unlock(&c->lock);
    }
    http_result res = {
        .outcome = outcome,
        .status = status,
        .body_len = t->body.len,
        .retry_after = retry_after,
        .error = error ? error : "",
    };
    res.body = buf_take(&t->body);
    if (!res.body) {
        res.outcome = HTTP_ERR_OTHER;
        res.body_len = 0;
        res.error = "out of memory";
    }
    t->req.done(t->req.ctx, &res);
    transfer_free(t);
}

static CURL *easy_get(http_client *c)
{
    if (c->n_idle > 0)
        return c->idle[--c->n_idle];
    return curl_easy_init();
}

static void easy_put(http_client *c, CURL *easy)
{
    if (c->n_idle < c->opts.max_transfers) {
        curl_easy_reset(easy);
        c->idle[c->n_idle++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

/* The request's header lines, then "Expect:" for a POST: curl would
 * otherwise send "Expect: 100-continue" with large bodies and wait up to a
 * second for servers that ignore it. -1 when out of memory. */
static int headers_build(const char *const *lines, int post, struct curl_slist **out)
{
    struct curl_slist *list = NULL;
    for (const char *const *h = lines; h && *h; h++) {
        struct curl_slist *next = curl_slist_append(list, *h);
        if (!next)
            goto fail;
        list = next;
    }
    if (post) {
        struct curl_slist *next = curl_slist_append(list, "Expect:");
        if (!next)
            goto fail;
        list = next;
    }
    *out = list;
    return 0;
fail:
    curl_slist_free_all(list);
    return -1;
}

static int headers_match(const header_list *h, const char *const *lines, int post)
{
    if (h->post != post)
        return 0;
    const struct curl_slist *item = h->list;
    for (const char *const *l = lines; l && *l; l++, item = item->next)
        if (!item || strcmp(item->data, *l) != 0)
            return 0;
    if (post)
        item = item ? item->next : NULL; /* the "Expect:" we added */
    return item == NULL;
}

/* Gives t its header list: a cached one with the same lines, else a new one
 * (cached while there is room). -1 when out of memory. */
static int transfer_headers(http_client *c, transfer *t)
{
    int post = t->req.body != NULL;
    for (int i = 0; i < c->n_cached; i++) {
        if (headers_match(&c->cached[i], t->req.headers, post)) {
            t->shared_headers = c->cached[i].list;
            return 0;
        }
    }
    struct curl_slist *list = NULL;
    if (headers_build(t->req.headers, post, &list) != 0)
        return -1;
    if (list && c->n_cached < HEADER_CACHE) {
        c->cached[c->n_cached++] = (header_list){.list = list, .post = post};
        t->shared_headers = list;
    } else {
        t->headers = list;
    }
    return 0;
}

#define SETOPT(easy, opt, val)                                  \
    do {                                                        \
        if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) \
            goto fail;                                          \
    } while (0)

/* Configures t's easy handle and adds it to the multi handle. -1 on failure
 * (t->error says why); the caller then finishes t. */
static int transfer_start(http_client *c, transfer *t)
{
    http_request *r = &t->req;
    if (r->make_body) {
        r->body = NULL;
        r->body_len = 0;
        if (r->make_body(r->ctx, &r->body, &r->body_len) != 0 || !r->body) {
            snprintf(t->error, sizeof t->error, "cannot build the request body");
            return -1;
        }
    }
    t->easy = easy_get(c);
    if (!t->easy) {
        snprintf(t->error, sizeof t->error, "cannot create a curl handle");
        return -1;
    }
    if (transfer_headers(c, t) != 0)
        goto fail;

    CURL *e = t->easy;
    SETOPT(e, CURLOPT_URL, r->url);
    SETOPT(e, CURLOPT_PRIVATE, (void *)t);
    SETOPT(e, CURLOPT_ERRORBUFFER, t->error);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(e, CURLOPT_WRITEDATA, (void *)t);
    SETOPT(e, CURLOPT_HTTPHEADER, t->shared_headers ? t->shared_headers : t->headers);
    SETOPT(e, CURLOPT_USERAGENT, "rlm/" RLM_VERSION_STRING);
    SETOPT(e, CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* HTTP/2 over TLS when the server offers it (ALPN); plain http:// stays
     * HTTP/1.1 and gets parallel connections instead. */
    SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (strncasecmp(r->url, "https://", 8) == 0)
        SETOPT(e, CURLOPT_PIPEWAIT, 1L);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->opts.connect_timeout * 1000.0));
    if (r->timeout > 0)
        SETOPT(e, CURLOPT_TIMEOUT_MS, (long)ceil(r->timeout * 1000.0));
    if (r->stall_timeout > 0) {
        SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(e, CURLOPT_LOW_SPEED_TIME, (long)ceil(r->stall_timeout));
    }
    if (r->body) {
        SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        SETOPT(e, CURLOPT_POSTFIELDS, r->body);
    } else {
        SETOPT(e, CURLOPT_HTTPGET, 1L);
    }
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        snprintf(t->error, sizeof t->error, "curl_multi_add_handle failed");
        goto fail_quiet;
    }
    t->prev = NULL;
    t->next = c->running;
    if (c->running)
        c->running->prev = t;
    c->running = t;
    return 0;
fail:
    if (!t->error[0])
        snprintf(t->error, sizeof t->error, "cannot configure the transfer");
fail_quiet:
    easy_put(c, t->easy);
    t->easy = NULL;
    return -1;
}

static void running_unlink(http_client *c, transfer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        c->running = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

static void active_done(http_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->active--;
    pthread_mutex_unlock(&c->lock);
}

static double retry_after_of(CURL *easy)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return -1;
    return http_parse_retry_after(h->value, time(NULL));
}

/* Finishes every transfer curl reports done. Returns how many. */
static int drain_completed(http_client *c)
{
    int n = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        transfer *t = (transfer *)priv;
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        double retry_after = status ? retry_after_of(easy) : -1;
        curl_multi_remove_handle(c->multi, easy);
        running_unlink(c, t);
        t->easy = NULL;
        easy_put(c, easy);
        active_done(c);

        http_outcome outcome = outcome_of(rc, t);
        const char *error = NULL;
        if (outcome == HTTP_ERR_TOO_LARGE)
            error = "response body too large";
        else if (t->reader_stopped)
            error = "stopped by the stream reader";
        else if (outcome != HTTP_OK)
            error = t->error[0] ? t->error : curl_easy_strerror(rc);
        transfer_finish(c, t, outcome, status, retry_after, error);
        n++;
    }
    return n;
}

/* Moves due delayed transfers to the front of the ready queue (they were
 * submitted before anything still waiting there), then takes as many ready
 * transfers as the bound allows. Returns them as a list; lock held. */
static transfer *take_startable(http_client *c, double now)
{
    transfer *due_head = NULL, *due_tail = NULL;
    int slice_due = c->delayed && c->delayed->not_before + DUE_LATENESS <= now;
    while (slice_due && c->delayed && c->delayed->not_before <= now) {
        transfer *t = c->delayed;
        c->delayed = t->next;
        if (!c->delayed)
            c->delayed_tail = NULL;
        t->next = NULL;
        if (due_tail)
            due_tail->next = t;
        else
            due_head = t;
        due_tail = t;
    }
    if (due_head) {
        due_tail->next = c->ready_head;
        if (!c->ready_head)
            c->ready_tail = due_tail;
        c->ready_head = due_head;
    }

    transfer *start = NULL, **tail = &start;
    while (c->ready_head && c->active < c->opts.max_transfers) {
        transfer *t = c->ready_head;
        c->ready_head = t->next;
        if (!c->ready_head)
            c->ready_tail = NULL;
        t->next = NULL;
        *tail = t;
        tail = &t->next;
        c->active++;
    }
    if (c->active > c->max_in_flight)
        c->max_in_flight = c->active;
    return start;
}

/* Takes a transfer off the wire and ends it as cancelled. */
static void running_cancel(http_client *c, transfer *t)
{
    running_unlink(c, t);
    curl_multi_remove_handle(c->multi, t->easy);
    easy_put(c, t->easy);
    t->easy = NULL;
    active_done(c);
    transfer_finish(c, t, HTTP_ERR_CANCELLED, 0, -1, "cancelled");
}

/* Everything still queued or running ends as cancelled. */
static void cancel_all(http_client *c)
{
    while (c->running)
        running_cancel(c, c->running);
    for (;;) {
        pthread_mutex_lock(&c->lock);
        transfer *t = c->ready_head;
        if (t) {
            c->ready_head = t->next;
            if (!c->ready_head)
                c->ready_tail = NULL;
        } else if ((t = c->delayed) != NULL) {
            c->delayed = t->next;
            if (!c->delayed)
                c->delayed_tail = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        if (!t)
            break;
        t->next = NULL;
        transfer_finish(c, t, HTTP_ERR_CANCELLED, 0, -1, "cancelled");
    }
}

static int cancel_raised(const transfer *t)
{
    return (t->req.cancel && *t->req.cancel != 0) ||
           (t->req.deadline > 0 && clock_now() >= t->req.deadline);
}

/* Moves the transfers of one queue whose cancel flag is up onto *out and
 * keeps the queue's tail right. Lock held. */
static void queue_take_cancelled(transfer **head, transfer **tail, transfer **out)
{
    transfer *last = NULL;
    for (transfer **p = head; *p;) {
        transfer *t = *p;
        if (cancel_raised(t)) {
            *p = t->next;
            t->next = *out;
            *out = t;
        } else {
            last = t;
            p = &t->next;
        }
    }
    *tail = last;
}

/* Design note. A caller cancels by raising a flag it owns, not by calling
 * in: it may be any thread, and a request between two attempts is not in
 * this module at all for a moment (its owner's callback is deciding on a
 * retry), so a one-shot "cancel this" call could miss it. A flag is a
 * state, not an event: whichever queue the request is in when we look, we
 * see it. The I/O thread looks every HTTP_CANCEL_CHECK_MS while any accepted
 * transfer has a flag, and just before starting one; reading a few thousand
 * flags 20 times a second costs nothing next to the transfers themselves.
 * Every transfer whose flag is up ends as cancelled: taken off the wire, or
 * out of the ready or delayed queue. */
static void cancel_flagged(http_client *c)
{
    for (transfer *t = c->running, *next; t; t = next) {
        next = t->next; /* a callback may submit, but only into the queues */
        if (cancel_raised(t))
            running_cancel(c, t);
    }
    transfer *taken = NULL;
    pthread_mutex_lock(&c->lock);
    queue_take_cancelled(&c->ready_head, &c->ready_tail, &taken);
    queue_take_cancelled(&c->delayed, &c->delayed_tail, &taken);
    pthread_mutex_unlock(&c->lock);
    while (taken) {
        transfer *t = taken;
        taken = t->next;
        t->next = NULL;
        transfer_finish(c, t, HTTP_ERR_CANCELLED, 0, -1, "cancelled");
    }
}

/* The I/O thread. Each round: end what its cancel flag asks to (every
 * HTTP_CANCEL_CHECK_MS), start what the bound allows, let curl move bytes,
 * finish what completed, then sleep in curl_multi_poll until a socket is
 * ready, curl's own timer fires, the next retry or cancel check is due or
 * another thread calls curl_multi_wakeup. Callbacks run here with no lock
 * held. */
static void *io_main(void *arg)
{
    http_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        if (c->stopping) {
            pthread_mutex_unlock(&c->lock);
            break;
        }
        c->wake_sent = 0; /* from here on, news needs a new wake-up */
        double now = clock_now();
        int cancellable = c->n_cancellable > 0;
        pthread_mutex_unlock(&c->lock);
        if (cancellable && now >= c->next_cancel_check) {
            cancel_flagged(c);
            c->next_cancel_check = now + HTTP_CANCEL_CHECK_MS / 1000.0;
        }
        pthread_mutex_lock(&c->lock);
        transfer *start = take_startable(c, now);
        double next_due = c->delayed ? c->delayed->not_before : -1;
        pthread_mutex_unlock(&c->lock);

        while (start) {
            transfer *t = start;
            start = t->next;
            t->next = NULL;
            if (cancel_raised(t)) {
                active_done(c);
                transfer_finish(c, t, HTTP_ERR_CANCELLED, 0, -1, "cancelled");
            } else if (transfer_start(c, t) != 0) {
                active_done(c);
                transfer_finish(c, t, HTTP_ERR_OTHER, 0, -1, t->error);
            }
        }

        int still_running = 0;
        curl_multi_perform(c->multi, &still_running);
        if (drain_completed(c) > 0)
            continue; /* slots freed: start queued work before sleeping */

        int timeout_ms = IDLE_POLL_MS;
        double wake_at = next_due >= 0 ? next_due + DUE_LATENESS : -1;
        if (cancellable && (wake_at < 0 || c->next_cancel_check < wake_at))
            wake_at = c->next_cancel_check;
        if (wake_at >= 0) {
            double wait = (wake_at - clock_now()) * 1000.0 + 1.0;
            if (wait < timeout_ms)
                timeout_ms = wait < 0 ? 0 : (int)wait;
        }
        curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL);
    }
    cancel_all(c);
    return NULL;
}

/* ---- public --------------------------------------------------------- */

int http_submit(http_client *c, const http_request *req)
{
    if (!req || !req->url || !req->done)
        return -1;
    transfer *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->req = *req;
    t->streaming = -1;
    buf_init(&t->body, c->opts.max_body);
    double delay = req->delay > 0 && isfinite(req->delay) ? req->delay : 0;
    t->not_before = clock_now() + delay;

    pthread_mutex_lock(&c->lock);
    if (c->stopping) {
        pthread_mutex_unlock(&c->lock);
        free(t);
        return -1;
    }
    if (req->cancel || req->deadline > 0)
        c->n_cancellable++;
    /* The I/O thread needs waking only when this transfer changes what it
     * waits for (it may start now, or before every other delayed one), and
     * only once until it next looks at the queues: a batch of 2,000 paced
     * submissions costs one wake-up, not 2,000 writes and thread switches. */
    int wake = 0;
    if (delay > 0) {
        if (!c->delayed || t->not_before < c->delayed->not_before) {
            t->next = c->delayed;
            c->delayed = t;
            if (!c->delayed_tail)
                c->delayed_tail = t;
            wake = 1;
        } else if (c->delayed_tail->not_before <= t->not_before) {
            c->delayed_tail->next = t; /* the usual case: paced calls come in order */
            c->delayed_tail = t;
        } else {
            transfer **p = &c->delayed;
            while (*p && (*p)->not_before <= t->not_before)
                p = &(*p)->next;
            t->next = *p;
            *p = t;
        }
    } else {
        if (c->ready_tail)
            c->ready_tail->next = t;
        else
            c->ready_head = t;
        c->ready_tail = t;
        wake = 1;
    }
    wake = wake && !c->wake_sent;
    if (wake)
        c->wake_sent = 1;
    pthread_mutex_unlock(&c->lock);
    if (wake)
        curl_multi_wakeup(c->multi);
    return 0;
}

int http_client_max_in_flight(http_client *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->max_in_flight;
    pthread_mutex_unlock(&c->lock);
    return n;
}

static int multi_configure(http_client *c)
{
    long max = c->opts.max_transfers;
    if (curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK)
        return -1;
    /* One connection per transfer in the worst case (HTTP/1.1), and keep that
     * many alive between transfers; HTTP/2 servers get streams on few. */
    if (curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max) != CURLM_OK)
        return -1;
    if (curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, max) != CURLM_OK)
        return -1;
    return 0;
}

http_client *http_client_new(const http_options *opts, char *err, size_t errlen)
{
    http_client *c = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init failed: %s", curl_easy_strerror(curl_init_result));
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (opts)
        c->opts = *opts;
    if (c->opts.max_transfers <= 0)
        c->opts.max_transfers = DEFAULT_MAX_TRANSFERS;
    if (!(c->opts.connect_timeout > 0))
        c->opts.connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    if (c->opts.max_body == 0)
        c->opts.max_body = DEFAULT_MAX_BODY;
    pthread_mutex_init(&c->lock, NULL);
    c->idle = calloc((size_t)c->opts.max_transfers, sizeof *c->idle);
    c->multi = curl_multi_init();
    if (!c->idle || !c->multi) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (multi_configure(c) != 0) {
        snprintf(err, errlen, "cannot configure the curl multi handle");
        goto fail;
    }
    int rc = pthread_create(&c->thread, NULL, io_main, c);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the I/O thread: %s", strerror(rc));
        goto fail;
    }
    c->thread_started = 1;
    return c;
fail:
    http_client_free(c);
    return NULL;
}

void http_client_free(http_client *c)
{
    if (!c)
        return;
    if (c->thread_started) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_mutex_unlock(&c->lock);
        curl_multi_wakeup(c->multi);
        pthread_join(c->thread, NULL);
    }
    for (int i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    for (int i = 0; i < c->n_cached; i++)
        curl_slist_free_all(c->cached[i].list);
    free(c->idle);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
