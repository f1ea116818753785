/* server — `rlm serve`'s HTTP server over libmicrohttpd (server.h).
 *
 * Design note: threads. libmicrohttpd runs one thread per connection here
 * (MHD_USE_THREAD_PER_CONNECTION): the access handler may block, so a
 * request waits for its run slot and, when it does not stream, for its
 * answer right there, and a streaming reply's reader blocks until the run
 * has something to say. The run itself is on a thread of the runner's, so
 * the connection's thread is free to notice that its client left. The
 * number of threads is bounded by max_connections (more connections are
 * closed as they come) and the runs by the runner.
 *
 * Design note: clients that are too slow or gone. libmicrohttpd's own
 * timeout closes a connection that says nothing for idle_timeout, but a
 * client that sends one byte of its headers every few seconds would keep
 * its thread for ever. So every connection is in a table with the moment
 * it became ready for a request, and a watchdog thread shuts down (never
 * closes: the descriptor is libmicrohttpd's) the socket of one that has not
 * delivered a whole request within read_timeout; libmicrohttpd then reads
 * an end of file and closes it as usual. While a request is being worked
 * on, the watchdog polls its socket for a hang-up (POLLRDHUP): a client
 * that left has its queued request dropped and its run cancelled, with the
 * run's sub-calls. The table's lock is what makes touching the descriptor
 * safe: libmicrohttpd tells us a connection closed (and we drop it from the
 * table under that lock) before it closes the descriptor. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "chat.h"
#include "serve_flags.h"
#include "util.h"

/* Seconds between two looks of the watchdog. */
#define WATCH_SECONDS 0.25
/* A stream with nothing to say sends a comment this often, so proxies and
 * clients with read timeouts keep it, and a client that left is noticed. */
#define KEEPALIVE_SECONDS 10.0
/* Bytes of progress a stream may hold for a slow reader (more is dropped,
 * counted in the final chunk). */
#define STREAM_PENDING_MAX ((size_t)1 << 20)
/* Root-wait progress at most this often on a stream. */
#define WAIT_EVENT_SECONDS 1.0
/* Stack of a connection's thread: the handler parses JSON nested at most
 * CHAT_MAX_DEPTH deep and opens a session (SQLite). */
#define CONNECTION_STACK ((size_t)1 << 20)

/* One TCP connection, in the watchdog's table. */
typedef struct conn {
    struct conn *prev, *next;
    int fd;
    char addr[64];
    double ready_at;           /* when it became ready for its next request */
    int working;               /* a whole request arrived: its handler or reply runs */
    atomic_int gone;         /* the client hung up (or was cut) */
    job *job;                  /* the run to cancel when it goes, or NULL */
} conn;

struct server {
    serve_config cfg;
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock;      /* the table and everything in a conn, replying */
    pthread_cond_t replied;    /* a request with a run has had its reply */
    int replying;              /* requests whose run started and whose reply is not done */
    conn *conns;
    pthread_t watchdog;
    int watchdog_started;
    atomic_int stopping;
    atomic_int draining;
    char *models_json;         /* GET /v1/models, made at start */
    json_t *input_names;       /* the pool's named inputs */
    unsigned long long next_id;
};

enum route { ROUTE_CHAT, ROUTE_MODELS, ROUTE_MODEL, ROUTE_HEALTH, ROUTE_METRICS, ROUTE_NONE };

/* One HTTP request (libmicrohttpd's con_cls). */
typedef struct request {
    server *s;
    conn *c;
    enum route route;
    buf body;
    int refused;               /* a reply went out before the body was read */
    int status;                /* the reply's status, for the log */
    double started;
    long long run_id;          /* the run log's id of its run, or 0 */
    int replying;              /* counted in server.replying */
    int authed;                /* it passed the keys (or the server has none) */
    int ran;                   /* its run started */
    const chat_request *req;   /* while its run is being started: for a refusal's row */
    int logged;                /* its refusal is in the run log */
    char method[8];
    char path[96];
} request;

/* A streamed reply: what the run says, waiting for the client to read it. */
typedef struct stream {
    server *s;
    conn *c;
    job *j;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    buf pending;
    size_t off;                /* bytes of pending already handed out */
    int finished;              /* the last pieces are in pending */
    double last_data;
    double last_wait_event;
    size_t dropped;            /* progress events a slow reader missed */
    atomic_int ending;       /* the top run's run_end came: its answer is near */
    long long *run_id;         /* the request's, for the log */
    chat_request req;
    chat_outcome out;
    char id[48];
    double waited;
    int *status;               /* the request's, for the log */
} stream;

/* ---- small helpers ------------------------------------------------------- */

/* *ts = now + ms milliseconds on the clock pthread_cond_timedwait uses. */
static void deadline_in_ms(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += ms * 1000000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static enum MHD_Result reply(request *rq, struct MHD_Connection *c, int status, const char *type,
                             char *body, int retry_after, int www_auth)
{
    const char *text = body ? body : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}";
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_MUST_COPY);
    free(body);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", v);
    }
    if (www_auth)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    rq->status = status;
    metrics_http(rq->s->cfg.metrics, status);
    return ok;
}

static enum MHD_Result reply_json(request *rq, struct MHD_Connection *c, int status, char *body)
{
    return reply(rq, c, status, "application/json", body, 0, 0);
}

/* A chat request of an authenticated client refused before its run started
 * goes to the run log, as every request does, before its reply (so a
 * client that reads the log after the reply finds it, as it finds a run's).
 * Unauthenticated ones do not: anyone could fill the disk with them. */
static void log_refusal(request *rq, int status, const char *code, const char *message)
{
    if (rq->route != ROUTE_CHAT || !rq->authed || rq->ran || rq->logged)
        return;
    rq->logged = 1;
    char reason[800], *why = NULL;
    snprintf(reason, sizeof reason, "HTTP %d %s: %s", status, code, message);
    if (rlm_logs_refused(rq->s->cfg.base, rq->req ? rq->req->model : NULL, rq->req ? rq->req->question : NULL,
                         reason, &why) != RLM_OK)
        fprintf(stderr, "rlm serve: warning: a refused request is not in the run log: %s\n",
                why ? why : "out of memory");
    rlm_string_free(why);
}

static enum MHD_Result reply_error(request *rq, struct MHD_Connection *c, const chat_error *err,
                                   int retry_after)
{
    log_refusal(rq, err->status, err->code ? err->code : err->type, err->message);
    return reply(rq, c, err->status, "application/json", chat_error_body(err), retry_after,
                 err->status == 401);
}

static enum MHD_Result refuse(request *rq, struct MHD_Connection *c, int status, const char *type,
                              const char *code, const char *reason, int retry_after,
                              const char *fmt, const char *detail)
{
    chat_error err;
    chat_error_set(&err, status, type, code, NULL, fmt, detail ? detail : "");
    if (reason)
        metrics_refused(rq->s->cfg.metrics, reason);
    rq->refused = 1;
    return reply_error(rq, c, &err, retry_after);
}

static void new_id(server *s, char *out, size_t len)
{
    pthread_mutex_lock(&s->lock);
    unsigned long long n = ++s->next_id;
    pthread_mutex_unlock(&s->lock);
    snprintf(out, len, "chatcmpl-rlm%llx%llx", (unsigned long long)time(NULL), n);
}

/* ---- the watchdog ---------------------------------------------------------- */

static void *watchdog_main(void *arg)
{
    server *s = arg;
    while (!s->stopping) {
        double now = clock_now();
        pthread_mutex_lock(&s->lock);
        for (conn *c = s->conns; c; c = c->next) {
            if (!c->working && !c->gone && now - c->ready_at > s->cfg.read_timeout) {
                /* Too slow to send its request: libmicrohttpd reads EOF
                 * and closes the connection itself. */
                shutdown(c->fd, SHUT_RDWR);
                c->gone = 1;
                metrics_refused(s->cfg.metrics, "read_timeout");
                continue;
            }
            if (!c->working || c->gone)
                continue;
            struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
            if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                c->gone = 1;
                if (c->job)
                    job_cancel(c->job);
            }
        }
        pthread_mutex_unlock(&s->lock);
        nanosleep(&(struct timespec){.tv_nsec = (long)(WATCH_SECONDS * 1e9)}, NULL);
    }
    return NULL;
}

static void set_job(server *s, conn *c, job *j)
{
    pthread_mutex_lock(&s->lock);
    c->job = j;
    if (j && c->gone)
        job_cancel(j);   /* it left while the run was being set up */
    pthread_mutex_unlock(&s->lock);
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *c = calloc(1, sizeof *c);
        if (!c)
            return;
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(connection,
                                                                     MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *addr = MHD_get_connection_info(connection,
                                                                       MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        c->fd = fd ? fd->connect_fd : -1;
        snprintf(c->addr, sizeof c->addr, "?");
        if (addr && addr->client_addr) {
            const struct sockaddr *sa = addr->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, c->addr,
                          sizeof c->addr);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                          c->addr, sizeof c->addr);
        }
        c->ready_at = clock_now();
        pthread_mutex_lock(&s->lock);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        pthread_mutex_unlock(&s->lock);
        *socket_context = c;
        metrics_connections(s->cfg.metrics, 1);
        return;
    }
    conn *c = *socket_context;
    if (!c)
        return;
    /* Before libmicrohttpd closes the descriptor: out of the table first. */
    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&s->lock);
    *socket_context = NULL;
    metrics_connections(s->cfg.metrics, -1);
    free(c);
}

static conn *conn_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(connection,
                                                                MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *s = cls;
    request *rq = *con_cls;
    if (!rq)
        return;
    conn *c = rq->c;
    pthread_mutex_lock(&s->lock);
    if (c) {
        c->working = 0;
        c->ready_at = clock_now();   /* ready for the next request of the connection */
    }
    if (rq->replying) {
        s->replying--;
        pthread_cond_broadcast(&s->replied);
    }
    pthread_mutex_unlock(&s->lock);
    if (s->cfg.access_log) {
        char run[32] = "";
        if (rq->run_id > 0)
            snprintf(run, sizeof run, " run=%lld", rq->run_id);
        fprintf(stderr, "rlm serve: %s %s %s %d %.3fs%s%s\n", c ? c->addr : "?", rq->method,
                rq->path, rq->status, clock_now() - rq->started, run,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    }
    buf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

/* ---- runs ---------------------------------------------------------------- */

/* The earlier messages' text as an input of the handle's own: a sealed
 * memory file the library maps (no copy of it in our heap). */
static rlm_status add_inline_input(rlm *r, const char *text, size_t len)
{
    int fd = memfd_create("rlm-serve-input", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return RLM_ERR_INTERNAL;
    rlm_status st = RLM_ERR_INTERNAL;
    if (write_full(fd, text, len) == 0 &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0)
        st = rlm_add_context_fd(r, "messages", fd);
    close(fd);
    return st;
}

static int input_known(const server *s, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(s->input_names, i, v)
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    return 0;
}

/* HTTP status and error type for a run that did not answer. */
static void run_error(rlm_status st, const char *message, chat_error *err)
{
    switch (st) {
    case RLM_ERR_USAGE:
    case RLM_ERR_INPUT:
        chat_error_set(err, 400, "invalid_request_error", st == RLM_ERR_INPUT ? "input_error" : NULL,
                       NULL, "%s", message);
        break;
    case RLM_ERR_MODEL:
        chat_error_set(err, 502, "upstream_error", "model_error", NULL, "the model endpoint failed: %s",
                       message);
        break;
    case RLM_ERR_SANDBOX:
        chat_error_set(err, 500, "server_error", "sandbox_error", NULL, "%s", message);
        break;
    default:
        chat_error_set(err, 500, "server_error", NULL, NULL, "%s", message);
        break;
    }
}

static long long report_log_id(const char *report)
{
    json_t *r = report ? json_loads(report, JSON_ALLOW_NUL, NULL) : NULL;
    long long id = (long long)json_integer_value(json_object_get(r, "log_id"));
    json_decref(r);
    return id;
}

static int start_run_steps(request *rq, struct MHD_Connection *connection, chat_request *req,
                     job_event_fn event, void *event_ctx, job **out, double *waited,
                     enum MHD_Result *result)
{
    server *s = rq->s;
    *out = NULL;
    chat_error err;
    if (req->input && !input_known(s, req->input)) {
        chat_error_set(&err, 404, "invalid_request_error", "model_not_found", "model",
                       "The model 'rlm:%.100s' does not exist: this server has no input named "
                       "'%.100s' (GET /v1/models lists them)", req->input, req->input);
        metrics_refused(s->cfg.metrics, "bad_request");
        *result = reply_error(rq, connection, &err, 0);
        return -1;
    }
    const char *conv_header = header(connection, "X-RLM-Conversation");
    if (conv_header && req->conversation && strcmp(conv_header, req->conversation) != 0) {
        chat_error_set(&err, 400, "invalid_request_error", NULL, "rlm",
                       "the X-RLM-Conversation header and rlm.conversation_id differ");
        metrics_refused(s->cfg.metrics, "bad_request");
        *result = reply_error(rq, connection, &err, 0);
        return -1;
    }
    const char *conversation = req->conversation ? req->conversation : conv_header;
    rlm_config *cfg = rlm_config_copy(s->cfg.base);
    if (!cfg) {
        chat_error_set(&err, 500, "server_error", NULL, NULL, "out of memory");
        *result = reply_error(rq, connection, &err, 0);
        return -1;
    }
    if (serve_cap_budget(cfg, "max_cost", req->max_cost, 0) != 0 ||
        serve_cap_budget(cfg, "max_time", req->max_time, 0) != 0 ||
        serve_cap_budget(cfg, "max_tokens", req->max_tokens > 0 ? (double)req->max_tokens : -1, 1) != 0 ||
        serve_cap_budget(cfg, "max_subcalls", (double)req->max_subcalls, 1) != 0 ||
        serve_cap_budget(cfg, "max_iterations", req->max_iterations > 0 ? (double)req->max_iterations : -1, 1) != 0 ||
        (conversation && rlm_config_set(cfg, "session", conversation) != RLM_OK)) {
        chat_error_set(&err, 400, "invalid_request_error", NULL, "rlm", "%s", rlm_config_errmsg(cfg));
        rlm_config_free(cfg);
        metrics_refused(s->cfg.metrics, "bad_request");
        *result = reply_error(rq, connection, &err, 0);
        return -1;
    }
    int retry_after = 0;
    runner_admit admit = runner_acquire(s->cfg.runner, &rq->c->gone, waited, &retry_after);
    int in_flight, queued;
    runner_counts(s->cfg.runner, &in_flight, &queued);
    metrics_gauges(s->cfg.metrics, in_flight, queued);
    if (admit != RUNNER_ADMITTED) {
        rlm_config_free(cfg);
        if (admit == RUNNER_GONE) {
            metrics_refused(s->cfg.metrics, "client_gone");
            *result = MHD_NO;
            return -1;
        }
        const char *reason = admit == RUNNER_FULL ? "queue_full" : admit == RUNNER_TIMEOUT
                                                                    ? "queue_timeout" : "draining";
        if (admit == RUNNER_DRAINING)
            *result = refuse(rq, connection, 503, "server_error", "shutting_down", reason, 5,
                             "the server is shutting down%s", NULL);
        else
            *result = refuse(rq, connection, 429, "rate_limit_error", "rate_limit_exceeded", reason,
                             retry_after, "%s", admit == RUNNER_FULL
                             ? "every run slot is busy and the queue is full: retry after the "
                               "Retry-After seconds"
                             : "no run slot came free in time: retry after the Retry-After seconds");
        return -1;
    }
    rlm *r = NULL;
    rlm_status st = rlm_new_in(s->cfg.pool, cfg, &r);
    rlm_config_free(cfg);
    int conflict = st != RLM_OK && strstr(rlm_errmsg(r), "is in use") != NULL;
    if (st == RLM_OK && req->input)
        st = rlm_use_input(r, req->input);
    /* A conversation's history is the server's: the earlier messages a
     * client sends again are its input only on the first question. */
    if (st == RLM_OK && req->context && (!conversation || rlm_conversation_is_new(r)))
        st = add_inline_input(r, req->context, req->context_len);
    if (st != RLM_OK) {
        char message[1024];
        snprintf(message, sizeof message, "%s", rlm_errmsg(r));
        rlm_free(r);
        runner_release(s->cfg.runner);
        if (conflict) {
            chat_error_set(&err, 409, "invalid_request_error", "conversation_busy", "rlm",
                           "%s: one question of a conversation at a time", message);
            metrics_refused(s->cfg.metrics, "conflict");
        } else {
            run_error(st, message, &err);
        }
        *result = reply_error(rq, connection, &err, 0);
        return -1;
    }
    /* The text now lives in the handle's memory file. */
    free(req->context);
    req->context = NULL;
    job *j = job_start(s->cfg.runner, r, req->question, event, event_ctx);
    if (!j) {
        *result = refuse(rq, connection, 503, "server_error", "shutting_down", "draining", 5,
                         "the server is shutting down%s", NULL);
        return -1;
    }
    set_job(s, rq->c, j);
    pthread_mutex_lock(&s->lock);
    s->replying++;   /* the drain waits for its reply to go out */
    rq->replying = 1;
    pthread_mutex_unlock(&s->lock);
    *out = j;
    return 0;
}

/* Prepares the run of a parsed request: admission, the handle, its inputs,
 * the job. On success *out is the running job. Otherwise a reply has gone
 * out (or the client left) and the result is what the handler returns. */
static int start_run(request *rq, struct MHD_Connection *connection, chat_request *req,
                     job_event_fn event, void *event_ctx, job **out, double *waited,
                     enum MHD_Result *result)
{
    rq->req = req;
    int rc = start_run_steps(rq, connection, req, event, event_ctx, out, waited, result);
    rq->req = NULL;
    rq->ran = rc == 0;
    return rc;
}

static void fill_outcome(chat_outcome *o, const chat_request *req, job *j, const char *id,
                         const char *conversation)
{
    memset(o, 0, sizeof *o);
    o->id = id;
    o->model = req->model;
    o->created = (long)time(NULL);
    o->req = req;
    o->conversation = conversation;
    if (!j)
        return;
    rlm_status st = job_status(j);
    o->answer = st == RLM_OK ? job_answer(j, &o->answer_len) : NULL;
    o->report = job_report(j);
    o->status = rlm_status_name(st);
    o->error = st == RLM_OK ? NULL : job_error(j);
    o->warnings = job_warnings(j);
}

/* Whether a finished job is an error reply, and which. A run cancelled by
 * the drain did not answer because of the server: 503. */
static int job_failed(job *j, chat_error *err)
{
    rlm_status st = job_status(j);
    if (st == RLM_OK)
        return 0;
    if (st == RLM_NO_ANSWER && job_cancelled(j)) {
        chat_error_set(err, 503, "server_error", "cancelled", NULL,
                       "the run was cancelled before it answered (the server is shutting down, or "
                       "the client left)");
        return 1;
    }
    if (st == RLM_NO_ANSWER)
        return 0;   /* a reply without an answer: finish_reason "length" */
    run_error(st, job_error(j), err);
    return 1;
}

static void count_run(server *s, job *j, double waited)
{
    metrics_run(s->cfg.metrics, rlm_status_name(job_status(j)), waited, job_seconds(j), job_report(j));
    int in_flight, queued;
    runner_counts(s->cfg.runner, &in_flight, &queued);
    metrics_gauges(s->cfg.metrics, in_flight, queued);
}

/* ---- streaming ------------------------------------------------------------- */

static void stream_put(stream *st, const char *text)
{
    if (!text)
        return;
    buf_puts(&st->pending, text);
    st->last_data = clock_now();
    pthread_cond_broadcast(&st->changed);
}

/* A short JSON of a progress event: what it is and its counts, never the
 * model's text (a stream is for progress, the trace has the rest). */
static char *event_json(const rlm_event *ev)
{
    json_t *j = json_pack("{s:s,s:s,s:i,s:f}", "type", ev->type, "node", ev->node ? ev->node : "0",
                          "depth", ev->depth, "elapsed", (double)(long long)(ev->elapsed * 1000) / 1000);
    if (!j)
        return NULL;
    if (ev->turn)
        json_object_set_new(j, "turn", json_integer(ev->turn));
    switch (ev->kind) {
    case RLM_EVENT_BATCH_START:
    case RLM_EVENT_BATCH_PROGRESS:
    case RLM_EVENT_BATCH_END:
        json_object_update_new(j, json_pack("{s:I,s:I,s:I,s:I}", "batch", (json_int_t)ev->batch_size,
                                            "done", (json_int_t)ev->done, "in_flight",
                                            (json_int_t)ev->in_flight, "failed", (json_int_t)ev->failed));
        break;
    case RLM_EVENT_CODE_START:
        json_object_update_new(j, json_pack("{s:i,s:i}", "block", ev->block, "blocks", ev->blocks));
        break;
    case RLM_EVENT_CODE:
        json_object_update_new(j, json_pack("{s:i,s:b}", "block", ev->block, "raised", ev->raised));
        break;
    case RLM_EVENT_ROOT_WAIT:
        json_object_update_new(j, json_pack("{s:f,s:I}", "seconds", ev->seconds, "chars",
                                            (json_int_t)ev->done));
        break;
    case RLM_EVENT_ROOT_REPLY:
        json_object_update_new(j, json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)ev->prompt_tokens,
                                            "completion_tokens", (json_int_t)ev->completion_tokens));
        break;
    case RLM_EVENT_RUN_END:
    case RLM_EVENT_CHILD_END:
        json_object_set_new(j, "status", ev->status ? json_string(ev->status) : json_null());
        break;
    case RLM_EVENT_FINAL_ANSWER:
        json_object_set_new(j, "how", ev->how ? json_string(ev->how) : json_null());
        break;
    case RLM_EVENT_BUDGET_STOP:
        json_object_set_new(j, "budget", ev->budget ? json_string(ev->budget) : json_null());
        break;
    case RLM_EVENT_WARNING:
        if (ev->text)
            json_object_set_new(j, "message", json_stringn(ev->text, ev->text_len > 300 ? 300 : ev->text_len));
        break;
    default:
        break;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(j);
    return text;
}

/* The run's events, on its threads: progress for the client, as SSE
 * comments (which clients ignore) and, when asked, extension chunks. */
static void stream_event(void *ctx, const rlm_event *ev)
{
    stream *st = ctx;
    if (ev->kind == RLM_EVENT_SUB_CALL)
        return;   /* one per sub-call: thousands; the batch events count them */
    if (ev->kind == RLM_EVENT_RUN_END && ev->depth == 1)
        st->ending = 1;
    double now = clock_now();
    if (ev->kind == RLM_EVENT_ROOT_WAIT && now - st->last_wait_event < WAIT_EVENT_SECONDS)
        return;
    char *json = event_json(ev);
    if (!json)
        return;
    buf line;
    buf_init(&line, 64 * 1024);
    buf_printf(&line, ": rlm %s\n\n", json);
    char *chunk = st->req.progress_chunks ? chat_chunk_event(&st->out, json) : NULL;
    if (chunk)
        buf_puts(&line, chunk);
    pthread_mutex_lock(&st->lock);
    if (ev->kind == RLM_EVENT_ROOT_WAIT)
        st->last_wait_event = now;
    if (line.data && st->pending.len + line.len <= STREAM_PENDING_MAX)
        stream_put(st, line.data);
    else
        st->dropped++;
    pthread_mutex_unlock(&st->lock);
    buf_free(&line);
    free(chunk);
    free(json);
}

/* The last pieces once the run ended: the answer, the finish chunk with
 * the run's facts, the usage when asked for, [DONE]; or an error chunk. */
static void stream_finish(stream *st)
{
    fill_outcome(&st->out, &st->req, st->j, st->id, st->req.conversation);
    chat_error err;
    char *pieces[4] = {NULL, NULL, NULL, NULL};
    if (job_failed(st->j, &err)) {
        pieces[0] = chat_chunk_error(&err);
        *st->status = err.status;
    } else {
        if (st->out.answer)
            pieces[0] = chat_chunk_content(&st->out);
        pieces[1] = chat_chunk_finish(&st->out);
        if (st->req.include_usage)
            pieces[2] = chat_chunk_usage(&st->out);
    }
    pthread_mutex_lock(&st->lock);
    for (int i = 0; i < 4; i++)
        if (pieces[i])
            buf_puts(&st->pending, pieces[i]);
    buf_puts(&st->pending, CHAT_STREAM_DONE);
    st->finished = 1;
    pthread_mutex_unlock(&st->lock);
    for (int i = 0; i < 4; i++)
        free(pieces[i]);
    count_run(st->s, st->j, st->waited);
    *st->run_id = report_log_id(job_report(st->j));
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    stream *st = cls;
    for (;;) {
        pthread_mutex_lock(&st->lock);
        if (st->pending.len > st->off) {
            size_t n = st->pending.len - st->off < max ? st->pending.len - st->off : max;
            memcpy(out, st->pending.data + st->off, n);
            st->off += n;
            if (st->off == st->pending.len) {
                buf_reset(&st->pending);
                st->off = 0;
            }
            pthread_mutex_unlock(&st->lock);
            return (ssize_t)n;
        }
        if (st->finished) {
            pthread_mutex_unlock(&st->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        struct timespec ts;
        deadline_in_ms(&ts, 250);
        pthread_cond_timedwait(&st->changed, &st->lock, &ts);
        int idle = clock_now() - st->last_data > KEEPALIVE_SECONDS && !st->finished;
        if (idle)
            stream_put(st, ": keep-alive\n\n");
        pthread_mutex_unlock(&st->lock);
        if (st->c->gone) {
            job_cancel(st->j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!st->finished && job_wait(st->j, st->ending ? 0.25 : 0))
            stream_finish(st);
    }
}

static void stream_free(void *cls)
{
    stream *st = cls;
    if (!job_wait(st->j, 0))
        job_cancel(st->j);   /* the reply ended before the run: nobody will read it */
    set_job(st->s, st->c, NULL);
    job_wait(st->j, -1);
    if (!st->finished)
        count_run(st->s, st->j, st->waited);
    job_free(st->j);
    chat_request_clear(&st->req);
    buf_free(&st->pending);
    pthread_cond_destroy(&st->changed);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static enum MHD_Result chat_stream(request *rq, struct MHD_Connection *connection, chat_request *req)
{
    server *s = rq->s;
    stream *st = calloc(1, sizeof *st);
    if (!st) {
        chat_request_clear(req);
        return refuse(rq, connection, 500, "server_error", NULL, NULL, 0, "out of memory%s", NULL);
    }
    st->s = s;
    st->c = rq->c;
    st->req = *req;
    memset(req, 0, sizeof *req);
    st->status = &rq->status;
    st->run_id = &rq->run_id;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->changed, NULL);
    buf_init(&st->pending, STREAM_PENDING_MAX + (1 << 20));
    new_id(s, st->id, sizeof st->id);
    fill_outcome(&st->out, &st->req, NULL, st->id, st->req.conversation);
    st->last_data = clock_now();
    /* The role chunk first: the run's progress comes after it. */
    char *first = chat_chunk_role(&st->out);
    stream_put(st, first);
    free(first);
    enum MHD_Result result = MHD_NO;
    job *j = NULL;
    if (start_run(rq, connection, &st->req, stream_event, st, &j, &st->waited, &result) != 0) {
        chat_request_clear(&st->req);
        buf_free(&st->pending);
        pthread_cond_destroy(&st->changed);
        pthread_mutex_destroy(&st->lock);
        free(st);
        return result;
    }
    st->j = j;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read,
                                                               st, stream_free);
    if (!r) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(connection, 200, r);
    MHD_destroy_response(r);
    rq->status = 200;
    metrics_http(s->cfg.metrics, 200);
    return ok;
}

/* ---- the chat endpoint --------------------------------------------------------- */

static enum MHD_Result chat(request *rq, struct MHD_Connection *connection)
{
    server *s = rq->s;
    chat_request req;
    chat_error err;
    if (chat_parse(rq->body.data ? rq->body.data : "", rq->body.len, &req, &err) != 0) {
        metrics_refused(s->cfg.metrics, "bad_request");
        return reply_error(rq, connection, &err, 0);
    }
    buf_free(&rq->body);   /* parsed: the run does not need the bytes */
    if (req.stream)
        return chat_stream(rq, connection, &req);
    job *j = NULL;
    double waited = 0;
    enum MHD_Result result = MHD_NO;
    if (start_run(rq, connection, &req, NULL, NULL, &j, &waited, &result) != 0) {
        chat_request_clear(&req);
        return result;
    }
    /* The watchdog cancels the run if the client leaves; it then ends soon. */
    while (!job_wait(j, 0.25)) {
    }
    set_job(s, rq->c, NULL);
    count_run(s, j, waited);
    rq->run_id = report_log_id(job_report(j));
    char id[48];
    new_id(s, id, sizeof id);
    chat_outcome o;
    fill_outcome(&o, &req, j, id, req.conversation ? req.conversation
                                                   : header(connection, "X-RLM-Conversation"));
    if (rq->c->gone) {
        result = MHD_NO;   /* nobody to answer */
    } else if (job_failed(j, &err)) {
        result = reply_error(rq, connection, &err, err.status == 503 ? 5 : 0);
    } else {
        result = reply_json(rq, connection, 200, chat_completion_body(&o));
    }
    job_free(j);
    chat_request_clear(&req);
    return result;
}

/* ---- routes ---------------------------------------------------------------- */

static enum route route_of(const char *url)
{
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions"))
        return ROUTE_CHAT;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return ROUTE_MODELS;
    if (!strncmp(url, "/v1/models/", 11))
        return ROUTE_MODEL;
    if (!strcmp(url, "/health"))
        return ROUTE_HEALTH;
    if (!strcmp(url, "/metrics"))
        return ROUTE_METRICS;
    return ROUTE_NONE;
}

static char *health_body(server *s)
{
    int in_flight, queued;
    runner_counts(s->cfg.runner, &in_flight, &queued);
    json_t *j = json_pack("{s:s,s:i,s:i,s:s}", "status", s->draining ? "draining" : "ok",
                          "runs_in_flight", in_flight, "runs_queued", queued, "version", rlm_version());
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return text;
}

static enum MHD_Result get_route(request *rq, struct MHD_Connection *connection, const char *url)
{
    server *s = rq->s;
    switch (rq->route) {
    case ROUTE_HEALTH:
        return reply_json(rq, connection, s->draining ? 503 : 200, health_body(s));
    case ROUTE_METRICS: {
        int in_flight, queued;
        runner_counts(s->cfg.runner, &in_flight, &queued);
        metrics_gauges(s->cfg.metrics, in_flight, queued);
        return reply(rq, connection, 200, "text/plain; version=0.0.4", metrics_text(s->cfg.metrics), 0, 0);
    }
    case ROUTE_MODELS:
        return reply_json(rq, connection, 200, strdup(s->models_json));
    case ROUTE_MODEL: {
        json_t *list = json_loads(s->models_json, 0, NULL);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(list, "data"), i, m) {
            if (strcmp(json_string_value(json_object_get(m, "id")), url + 11) == 0) {
                char *body = json_dumps(m, JSON_COMPACT);
                json_decref(list);
                return reply_json(rq, connection, 200, body);
            }
        }
        json_decref(list);
        return refuse(rq, connection, 404, "invalid_request_error", "model_not_found", NULL, 0,
                      "The model '%.200s' does not exist", url + 11);
    }
    default:
        return MHD_NO;
    }
}

static int post_route(enum route r)
{
    return r == ROUTE_CHAT;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    server *s = cls;
    request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->s = s;
        rq->c = conn_of(connection);
        if (!rq->c) {
            free(rq);
            return MHD_NO;   /* its connection could not be tracked (out of memory): close it */
        }
        rq->started = clock_now();
        rq->route = route_of(url);
        snprintf(rq->method, sizeof rq->method, "%s", method);
        snprintf(rq->path, sizeof rq->path, "%s", url);
        buf_init(&rq->body, s->cfg.max_body);
        *con_cls = rq;
        if (rq->route == ROUTE_NONE)
            return refuse(rq, connection, 404, "invalid_request_error", "not_found", NULL, 0,
                          "no such endpoint: %.80s (POST /v1/chat/completions, GET /v1/models, "
                          "/health, /metrics)", url);
        int is_post = strcmp(method, "POST") == 0;
        int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (post_route(rq->route) ? !is_post : !is_get)
            return refuse(rq, connection, 405, "invalid_request_error", "method_not_allowed", NULL,
                          0, "%s", post_route(rq->route) ? "use POST" : "use GET");
        if (rq->route == ROUTE_HEALTH)
            return MHD_YES;
        if (keys_count(s->cfg.keys) && !keys_check(s->cfg.keys, header(connection, "Authorization")))
            return refuse(rq, connection, 401, "invalid_request_error", "invalid_api_key", "auth", 0,
                          "%s", "Incorrect or missing API key: send Authorization: Bearer KEY");
        rq->authed = 1;
        if (is_post) {
            const char *type = header(connection, "Content-Type");
            if (!type || strncasecmp(type, "application/json", 16) != 0 ||
                (type[16] && type[16] != ';' && type[16] != ' '))
                return refuse(rq, connection, 415, "invalid_request_error", "unsupported_media_type",
                              "bad_request", 0, "the body must be JSON (Content-Type: "
                              "application/json), not %.80s", type ? type : "(none)");
            const char *length = header(connection, "Content-Length");
            long n = 0;
            if (length && parse_long(length, &n) == 0 && (size_t)n > s->cfg.max_body) {
                char detail[64];
                snprintf(detail, sizeof detail, "%zu", s->cfg.max_body);
                return refuse(rq, connection, 413, "invalid_request_error", "request_too_large",
                              "body_too_large", 0, "the body is larger than this server takes (%s "
                              "bytes)", detail);
            }
        }
        return MHD_YES;
    }
    if (rq->refused) {
        *upload_data_size = 0;   /* a reply went out already; the rest is dropped */
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* A body with a Content-Length past the cap was refused before it
         * came. One without (chunked) is cut as it passes the cap: the
         * connection is closed, since libmicrohttpd answers only before
         * the body or after all of it, and reading the rest to say 413
         * would let a client make us read without end. */
        if (buf_append(&rq->body, upload_data, *upload_data_size) != 0) {
            buf_free(&rq->body);
            rq->status = 413;
            log_refusal(rq, 413, "request_too_large", "the body passed the server's cap as it came "
                         "(no Content-Length): the connection was closed");
            metrics_refused(s->cfg.metrics, "body_too_large");   /* counted once it is in the log */
            return MHD_NO;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The whole request is in: from here on the watchdog looks for a
     * client that leaves, not for one that is slow to send. */
    pthread_mutex_lock(&s->lock);
    rq->c->working = 1;
    pthread_mutex_unlock(&s->lock);
    if (rq->route != ROUTE_CHAT)
        return get_route(rq, connection, url);
    if (s->draining)
        return refuse(rq, connection, 503, "server_error", "shutting_down", "draining", 5,
                      "the server is shutting down%s", NULL);
    return chat(rq, connection);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    fprintf(stderr, "rlm serve: http: %s\n", line);
}

/* GET /v1/models: "rlm" (the earlier messages are the input) and one
 * "rlm:NAME" per named input. */
static int build_models(server *s)
{
    char *inputs = NULL;
    if (rlm_pool_inputs(s->cfg.pool, &inputs) != RLM_OK)
        return -1;
    json_t *list = json_loads(inputs, 0, NULL);
    rlm_string_free(inputs);
    s->input_names = json_array();
    json_t *data = json_array();
    long created = (long)time(NULL);
    json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", "rlm", "object", "model",
                                          "created", (json_int_t)created, "owned_by", "rlm"));
    size_t i;
    json_t *in;
    json_array_foreach(list, i, in) {
        const char *name = json_string_value(json_object_get(in, "name"));
        char id[128];
        snprintf(id, sizeof id, "rlm:%s", name);
        json_array_append_new(s->input_names, json_string(name));
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s,s:{s:s,s:O,s:O,s:O}}", "id", id,
                                              "object", "model", "created", (json_int_t)created,
                                              "owned_by", "rlm", "rlm_input", "name", name,
                                              "documents", json_object_get(in, "documents"),
                                              "bytes", json_object_get(in, "bytes"), "tokens",
                                              json_object_get(in, "tokens")));
    }
    json_decref(list);
    json_t *body = json_pack("{s:s,s:o}", "object", "list", "data", data);
    s->models_json = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return s->models_json && s->input_names ? 0 : -1;
}

server *server_start(const serve_config *cfg, char *err, size_t errlen)
{
    server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->replied, NULL);
    if (build_models(s) != 0) {
        snprintf(err, errlen, "out of memory");
        server_stop(s);
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->listen, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->listen, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--listen %s: not a numeric IPv4 or IPv6 address", cfg->listen);
        server_stop(s);
        return NULL;
    }
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->idle_timeout + 0.5),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)CONNECTION_STACK,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s port %d (taken, or not an address of this "
                 "machine)", cfg->listen, cfg->port);
        server_stop(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        snprintf(err, errlen, "cannot start a thread");
        server_stop(s);
        return NULL;
    }
    s->watchdog_started = 1;
    return s;
}

int server_port(const server *s)
{
    return s->port;
}

void server_begin_drain(server *s)
{
    s->draining = 1;
}

void server_stop(server *s)
{
    if (!s)
        return;
    /* The runs have ended (the runner drained): let their replies go out
     * before the connections are closed. */
    double until = clock_now() + 10;
    pthread_mutex_lock(&s->lock);
    while (s->replying > 0 && clock_now() < until) {
        struct timespec ts;
        deadline_in_ms(&ts, 100);
        pthread_cond_timedwait(&s->replied, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    s->stopping = 1;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    if (s->watchdog_started)
        pthread_join(s->watchdog, NULL);
    free(s->models_json);
    json_decref(s->input_names);
    pthread_cond_destroy(&s->replied);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
