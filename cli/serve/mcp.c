/* mcp — `rlm mcp`: a Model Context Protocol server on stdin/stdout (JSON-RPC
 * 2.0, one message per line) with two tools, rlm_ask and rlm_describe, over
 * files under the roots the command line allows. Each tools/call runs on a
 * thread of its own through the runner (the same bounds as rlm serve),
 * reports progress when the client gave a progress token, and is cancelled
 * by notifications/cancelled. stdout carries the protocol only: everything
 * else goes to stderr. docs/mcp.md is the user's guide. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "mcp_proto.h"
#include "rlm.h"
#include "runner.h"
#include "serve_flags.h"
#include "util.h"

/* The longest message line read; longer ones are answered with a parse
 * error and skipped. */
#define MCP_LINE_MAX ((size_t)16 << 20)
#define MCP_MAX_ROOTS 64
/* Progress notifications at most this often per call. */
#define PROGRESS_SECONDS 0.5

static const char mcp_usage_text[] =
    "usage: rlm mcp --root DIR [--root DIR ...] [options]\n"
    "\n"
    "A Model Context Protocol server on stdin/stdout, for agents and editors: the tools\n"
    "rlm_ask (a question about files, answered by an RLM: the answer, how, its cost) and\n"
    "rlm_describe (what the model would be told about those files). Paths must resolve,\n"
    "symbolic links followed, under a --root; others are refused. Long calls report progress\n"
    "when the client asks; a cancelled call cancels its run. docs/mcp.md tells all.\n"
    "\n"
    "  --root DIR             a directory the tools may read (repeatable; at least one)\n"
    "  --max-runs N           tool calls answering at once (default 2); more wait\n"
    "  --queue N              calls waiting at most (default 16)\n"
    "  --queue-timeout S      seconds a call may wait for its turn (default 600)\n"
    "\n"
    "Runs: the model, endpoint, budget and sandbox options of rlm ask (rlm ask --help).\n"
    "Budgets given here are every call's default and the most a call may ask for.\n"
    "\n"
    "A client's configuration, e.g. {\"command\": \"rlm\", \"args\": [\"mcp\", \"--root\",\n"
    "\"/home/me/project\", \"--model\", \"gpt-5-mini\"]}.\n";

typedef struct mcp_flags {
    const char *roots[MCP_MAX_ROOTS];
    size_t n_roots;
    long max_runs, queue;
    double queue_timeout;
} mcp_flags;

enum { M_ROOT, M_MAX_RUNS, M_QUEUE, M_QUEUE_TIMEOUT, M_HELP };

static const serve_flag mcp_flag_table[] = {
    {"root", M_ROOT, 1}, {"max-runs", M_MAX_RUNS, 1}, {"queue", M_QUEUE, 1},
    {"queue-timeout", M_QUEUE_TIMEOUT, 1}, {"help", M_HELP, 0}, {NULL, 0, 0},
};

static int mcp_flag_set(void *ctx, int id, const char *name, const char *value)
{
    mcp_flags *f = ctx;
    switch (id) {
    case M_ROOT:
        if (f->n_roots == MCP_MAX_ROOTS || strchr(value, '\n')) {
            fprintf(stderr, "rlm mcp: --root %s: at most %d roots, without newlines\n", value, MCP_MAX_ROOTS);
            return EXIT_USAGE;
        }
        f->roots[f->n_roots++] = value;
        break;
    case M_MAX_RUNS:
    case M_QUEUE: {
        long *slot = id == M_MAX_RUNS ? &f->max_runs : &f->queue;
        if (parse_long(value, slot) != 0 || *slot < (id == M_MAX_RUNS) || *slot > 4096) {
            fprintf(stderr, "rlm mcp: --%s: a whole number up to 4096 (got '%s')\n", name, value);
            return EXIT_USAGE;
        }
        break;
    }
    case M_QUEUE_TIMEOUT:
        if (parse_double(value, &f->queue_timeout) != 0 || f->queue_timeout <= 0) {
            fprintf(stderr, "rlm mcp: --queue-timeout: a number of seconds (got '%s')\n", value);
            return EXIT_USAGE;
        }
        break;
    case M_HELP:
        fputs(mcp_usage_text, stdout);
        return EXIT_ANSWERED;
    }
    return -1;
}

/* ---- the server's state ------------------------------------------------------- */

typedef struct call call;

typedef struct mcp_server {
    pthread_mutex_t out_lock;  /* one message at a time on stdout */
    pthread_mutex_t lock;      /* the calls */
    pthread_cond_t changed;
    call *calls;
    int n_calls;
    int max_calls;             /* threads at once: runs + queue */
    rlm_pool *pool;
    const rlm_config *base;
    runner *rn;
    char first_root[PATH_MAX];
    int output_broken;
} mcp_server;

struct call {
    call *next;
    mcp_server *srv;
    json_t *id;                /* the request's id */
    json_t *token;             /* its progress token, or NULL */
    json_t *params;
    job *j;
    atomic_int cancelled;
    double last_progress;
    double progress;           /* what the last notification said, for monotony */
    int turn;
    size_t batch, done;
    pthread_t thread;
};

static void send_line(mcp_server *s, char *line)
{
    if (!line)
        return;
    pthread_mutex_lock(&s->out_lock);
    if (!s->output_broken && (fputs(line, stdout) == EOF || fflush(stdout) != 0)) {
        s->output_broken = 1;
        fputs("rlm mcp: cannot write to stdout: the client is gone\n", stderr);
    }
    pthread_mutex_unlock(&s->out_lock);
    free(line);
}

/* ---- tool calls ------------------------------------------------------------ */

/* A progress notification from the run's events: each step of the top RLM
 * (a turn asked for, code run, a batch of sub-calls sent and back, the
 * answer), and the ticking ones (waiting for the model, a batch under way)
 * at most every PROGRESS_SECONDS. */
static void call_event(void *ctx, const rlm_event *ev)
{
    call *c = ctx;
    if (!c->token || ev->depth != 1)
        return;
    char message[256];
    int ticking = 0;
    switch (ev->kind) {
    case RLM_EVENT_ROOT_REQUEST:
        c->turn = ev->turn;
        c->batch = c->done = 0;
        snprintf(message, sizeof message, "turn %d: asking the root model", ev->turn);
        break;
    case RLM_EVENT_ROOT_WAIT:
        ticking = 1;
        snprintf(message, sizeof message, "turn %d: the root model is answering (%.0f s)", c->turn,
                 ev->seconds);
        break;
    case RLM_EVENT_CODE_START:
        snprintf(message, sizeof message, "turn %d: running code block %d of %d", c->turn, ev->block,
                 ev->blocks);
        break;
    case RLM_EVENT_BATCH_START:
    case RLM_EVENT_BATCH_PROGRESS:
    case RLM_EVENT_BATCH_END:
        ticking = ev->kind == RLM_EVENT_BATCH_PROGRESS;
        c->batch = ev->batch_size;
        c->done = ev->done;
        snprintf(message, sizeof message, "turn %d: %zu of %zu sub-calls done", c->turn, ev->done,
                 ev->batch_size);
        break;
    case RLM_EVENT_CHILD_START:
        snprintf(message, sizeof message, "turn %d: a child RLM started", c->turn);
        break;
    case RLM_EVENT_BUDGET_STOP:
        snprintf(message, sizeof message, "a budget ran out (%s): asking for the best answer",
                 ev->budget ? ev->budget : "?");
        break;
    case RLM_EVENT_FINAL_ANSWER:
        snprintf(message, sizeof message, "turn %d: answered", c->turn);
        break;
    default:
        return;
    }
    double now = clock_now();
    if (ticking && now - c->last_progress < PROGRESS_SECONDS)
        return;
    c->last_progress = now;
    /* Progress must increase: turns, and the sub-calls done within one. */
    double progress = (double)c->turn + (c->batch ? (double)c->done / (double)(c->batch + 1) : 0);
    if (progress <= c->progress)
        progress = c->progress + 0.001;
    c->progress = progress;
    send_line(c->srv, mcp_progress(c->token, progress, message));
}

/* The path as the library should read it: relative ones from the first
 * root (never from our working directory). */
static void path_for(const mcp_server *s, const char *path, char *out, size_t size)
{
    if (path[0] == '/')
        snprintf(out, size, "%s", path);
    else
        snprintf(out, size, "%s/%s", s->first_root, path);
}

static json_t *report_field(const json_t *report, const char *key)
{
    json_t *v = json_object_get(report, key);
    return v ? json_incref(v) : json_null();
}

/* The tool's answer from a finished run. */
static json_t *ask_result(job *j)
{
    rlm_status st = job_status(j);
    size_t len = 0;
    const char *answer = st == RLM_OK ? job_answer(j, &len) : NULL;
    json_t *report = job_report(j) ? json_loads(job_report(j), JSON_ALLOW_NUL, NULL) : NULL;
    json_t *structured = json_pack("{s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o}",
                                   "answer", answer ? json_stringn(answer, len) : json_null(),
                                   "how", report_field(report, "how"),
                                   "status", rlm_status_name(st),
                                   "cost_usd", report_field(report, "cost_usd"),
                                   "turns", json_integer(json_integer_value(json_object_get(report, "iterations"))),
                                   "sub_calls", json_integer(json_integer_value(json_object_get(report, "sub_calls"))),
                                   "elapsed_seconds", json_real(job_seconds(j)),
                                   "trace_id", json_is_integer(json_object_get(report, "log_id"))
                                                   ? json_incref(json_object_get(report, "log_id")) : json_null(),
                                   "error", st == RLM_OK ? json_null() : json_string(job_error(j)));
    if (structured && answer && json_is_null(json_object_get(structured, "answer"))) {
        /* Not UTF-8: the text part carries it repaired. */
        json_decref(structured);
        structured = NULL;
    }
    json_decref(report);
    if (st == RLM_OK)
        return mcp_tool_result(answer, len, structured, 0);
    char text[2048];
    snprintf(text, sizeof text, "%s: %s", rlm_status_name(st), job_error(j));
    return mcp_tool_result(text, strlen(text), structured, 1);
}

static json_t *tool_error(const char *why)
{
    return mcp_tool_result(why, strlen(why), NULL, 1);
}

static void *call_main(void *arg)
{
    call *c = arg;
    mcp_server *s = c->srv;
    mcp_call args;
    char why[1024];
    int is_tool_error = 0;
    json_t *result = NULL;
    rlm *r = NULL;
    rlm_config *cfg = NULL;
    if (mcp_call_parse(c->params, &args, &is_tool_error, why, sizeof why) != 0) {
        if (!is_tool_error) {
            send_line(s, mcp_error(c->id, MCP_INVALID_PARAMS, why));
            goto done;
        }
        result = tool_error(why);
        goto reply;
    }
    double waited;
    int retry_after;
    runner_admit admit = runner_acquire(s->rn, &c->cancelled, &waited, &retry_after);
    if (admit == RUNNER_GONE)
        goto done;   /* cancelled while waiting: no reply (the protocol's rule) */
    if (admit != RUNNER_ADMITTED) {
        result = tool_error(admit == RUNNER_DRAINING ? "rlm is shutting down"
                            : "too many calls at once: try again later");
        goto reply;
    }
    cfg = rlm_config_copy(s->base);
    if (cfg) {
        /* Checked by mcp_call_parse: the values are ones the config takes. */
        serve_cap_budget(cfg, "max_cost", args.max_cost, 0);
        serve_cap_budget(cfg, "max_time", args.max_time, 0);
        serve_cap_budget(cfg, "max_subcalls", (double)args.max_subcalls, 1);
    }
    rlm_status st = cfg ? rlm_new_in(s->pool, cfg, &r) : RLM_ERR_NOMEM;
    for (size_t i = 0; st == RLM_OK && i < args.n_paths; i++) {
        char path[PATH_MAX + 8];
        path_for(s, args.paths[i], path, sizeof path);
        st = rlm_add_context(r, path);
    }
    if (st != RLM_OK) {
        runner_release(s->rn);
        snprintf(why, sizeof why, "%s", r ? rlm_errmsg(r) : "out of memory");
        result = tool_error(why);
        goto reply;
    }
    if (strcmp(args.tool, "rlm_describe") == 0) {
        char *d = NULL;
        st = rlm_describe(r, &d);
        runner_release(s->rn);
        if (st != RLM_OK) {
            snprintf(why, sizeof why, "%s", rlm_errmsg(r));
            result = tool_error(why);
        } else {
            result = mcp_tool_result(d, strlen(d), json_pack("{s:s}", "description", d), 0);
        }
        rlm_string_free(d);
        goto reply;
    }
    job *j = job_start(s->rn, r, args.question, call_event, c);
    r = NULL;   /* the job's now */
    if (!j) {
        result = tool_error("rlm is shutting down");
        goto reply;
    }
    /* Published under the lock: cancel_call, on the reading thread, reads
     * c->j under it and then uses the job. A cancel that came before is
     * applied here. */
    pthread_mutex_lock(&s->lock);
    c->j = j;
    pthread_mutex_unlock(&s->lock);
    if (c->cancelled)
        job_cancel(c->j);
    job_wait(c->j, -1);
    if (c->cancelled)
        goto done;   /* the client gave up on it: no reply */
    result = ask_result(c->j);
reply:
    send_line(s, mcp_result(c->id, result));
done:
    rlm_free(r);
    rlm_config_free(cfg);
    pthread_mutex_lock(&s->lock);
    /* The thread is joined by whoever removes the call: us, detaching. */
    for (call **p = &s->calls; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    s->n_calls--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    job_free(c->j);
    json_decref(c->id);
    json_decref(c->token);
    json_decref(c->params);
    free(c);
    return NULL;
}

static void start_call(mcp_server *s, const mcp_message *m)
{
    pthread_mutex_lock(&s->lock);
    int full = s->n_calls >= s->max_calls;
    pthread_mutex_unlock(&s->lock);
    if (full) {
        send_line(s, mcp_result(m->id, tool_error("too many calls at once: try again later")));
        return;
    }
    call *c = calloc(1, sizeof *c);
    if (!c) {
        send_line(s, mcp_error(m->id, MCP_INTERNAL_ERROR, "out of memory"));
        return;
    }
    c->srv = s;
    c->id = json_incref((json_t *)m->id);
    c->params = json_incref((json_t *)m->params);
    const json_t *token = json_object_get(json_object_get(m->params, "_meta"), "progressToken");
    if (json_is_string(token) || json_is_integer(token))
        c->token = json_incref((json_t *)token);
    pthread_mutex_lock(&s->lock);
    c->next = s->calls;
    s->calls = c;
    s->n_calls++;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&c->thread, &attr, call_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        s->calls = c->next;
        s->n_calls--;
    }
    pthread_mutex_unlock(&s->lock);
    if (rc != 0) {
        send_line(s, mcp_error(m->id, MCP_INTERNAL_ERROR, "cannot start a thread"));
        json_decref(c->id);
        json_decref(c->token);
        json_decref(c->params);
        free(c);
    }
}

/* notifications/cancelled: the call with that request id stops. */
static void cancel_call(mcp_server *s, const json_t *request_id)
{
    pthread_mutex_lock(&s->lock);
    for (call *c = s->calls; c; c = c->next) {
        if (json_equal(c->id, (json_t *)request_id)) {
            c->cancelled = 1;
            if (c->j)
                job_cancel(c->j);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void handle(mcp_server *s, const mcp_message *m, const char *roots_text)
{
    switch (m->kind) {
    case MCP_INVALID:
        send_line(s, mcp_error(m->id, m->error_code, m->error));
        return;
    case MCP_RESPONSE:
        return;
    case MCP_NOTIFICATION:
        if (strcmp(m->method, "notifications/cancelled") == 0)
            cancel_call(s, json_object_get(m->params, "requestId"));
        return;   /* initialized, roots changes, ...: nothing to do */
    case MCP_REQUEST:
        break;
    }
    if (strcmp(m->method, "initialize") == 0)
        send_line(s, mcp_result(m->id, mcp_initialize_result(mcp_negotiate(m->params), rlm_version(),
                                                             roots_text)));
    else if (strcmp(m->method, "ping") == 0)
        send_line(s, mcp_result(m->id, json_object()));
    else if (strcmp(m->method, "tools/list") == 0)
        send_line(s, mcp_result(m->id, mcp_tools()));
    else if (strcmp(m->method, "tools/call") == 0)
        start_call(s, m);
    else {
        char why[160];
        snprintf(why, sizeof why, "method not found: %.100s", m->method);
        send_line(s, mcp_error(m->id, MCP_METHOD_NOT_FOUND, why));
    }
}

/* Reads messages until stdin ends (the client closed it) or stop_fd is
 * readable (a signal came). */
static void serve_stdin(mcp_server *s, const char *roots_text, int stop_fd)
{
    buf line;
    buf_init(&line, MCP_LINE_MAX);
    int too_long = 0;
    char block[65536];
    for (;;) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!p[0].revents)
            continue;
        ssize_t got = read(STDIN_FILENO, block, sizeof block);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        for (ssize_t i = 0; i < got;) {
            char *nl = memchr(block + i, '\n', (size_t)(got - i));
            size_t n = nl ? (size_t)(nl - (block + i)) : (size_t)(got - i);
            if (!too_long && buf_append(&line, block + i, n) != 0)
                too_long = 1;
            i += (ssize_t)n + (nl != NULL);
            if (!nl)
                break;
            if (too_long) {
                send_line(s, mcp_error(NULL, MCP_PARSE_ERROR, "message longer than 16 MiB"));
            } else if (line.len) {
                size_t len = line.len;
                while (len && line.data[len - 1] == '\r')
                    len--;
                mcp_message m;
                mcp_parse(line.data, len, &m);
                handle(s, &m, roots_text);
                mcp_message_clear(&m);
            }
            buf_reset(&line);
            too_long = 0;
        }
    }
    buf_free(&line);
}

/* The signal thread: every thread blocks SIGTERM, SIGINT and SIGHUP; this
 * one waits for them and wakes the reader through a pipe. */
typedef struct stopper {
    sigset_t set;
    int fd;
} stopper;

static void *stop_main(void *arg)
{
    stopper *st = arg;
    int sig = 0;
    if (sigwait(&st->set, &sig) == 0 && write(st->fd, "x", 1) < 0) {
        /* the reader then ends with stdin */
    }
    return NULL;
}

int cmd_mcp(int argc, char **argv)
{
    mcp_flags mf = {.max_runs = 2, .queue = 16, .queue_timeout = 600};
    int rest_argc = 0;
    char **rest = NULL;
    cli_flags f = {0};
    rlm_pool *pool = NULL;
    runner *rn = NULL;
    char *roots_text = NULL;
    int rc = serve_flags_split(argc, argv, mcp_flag_table, mcp_flag_set, &mf, &rest_argc, &rest);
    if (rc >= 0)
        goto done;
    rc = cli_flags_parse(rest_argc, rest, &f);
    if (rc >= 0)
        goto done;
    rc = EXIT_USAGE;
    if (f.first_operand < rest_argc || f.n_contexts || f.question_file || f.json ||
        rlm_config_get(f.cfg, "session")[0] || rlm_config_get(f.cfg, "trace")[0] ||
        rlm_config_get(f.cfg, "record")[0]) {
        fputs("rlm mcp: the paths come with each call: no question, --context, --session, --trace, "
              "--record or --json (rlm mcp --help)\n", stderr);
        goto done;
    }
    if (mf.n_roots == 0) {
        fputs("rlm mcp: give at least one --root DIR: the directories the tools may read\n", stderr);
        goto done;
    }
    buf roots;
    buf_init(&roots, (size_t)MCP_MAX_ROOTS * (PATH_MAX + 1));
    mcp_server s = {.max_calls = (int)(mf.max_runs + mf.queue), .base = f.cfg};
    for (size_t i = 0; i < mf.n_roots; i++) {
        char resolved[PATH_MAX];
        if (!realpath(mf.roots[i], resolved)) {
            fprintf(stderr, "rlm mcp: --root %s: %s\n", mf.roots[i], strerror(errno));
            buf_free(&roots);
            goto done;
        }
        if (i == 0)
            snprintf(s.first_root, sizeof s.first_root, "%s", resolved);
        buf_printf(&roots, "%s%s", i ? "\n" : "", resolved);
    }
    roots_text = buf_take(&roots);
    if (rlm_config_set(f.cfg, "roots", roots_text) != RLM_OK) {
        cli_error(rlm_config_errmsg(f.cfg));
        goto done;
    }
    /* Every thread from here on blocks the stopping signals: the stopper
     * waits for them. */
    sigset_t set;
    serve_block_stop_signals(&set);
    rlm_status st = rlm_pool_new(f.cfg, &pool);
    if (st != RLM_OK) {
        cli_error(rlm_pool_errmsg(pool));
        rc = cli_exit_code(st);
        goto done;
    }
    runner_options ro = {.max_runs = (int)mf.max_runs, .max_queue = (int)mf.queue,
                         .queue_timeout = mf.queue_timeout};
    rn = runner_new(&ro);
    if (!rn) {
        rc = EXIT_INTERNAL;
        goto done;
    }
    s.pool = pool;
    s.rn = rn;
    pthread_mutex_init(&s.out_lock, NULL);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    fprintf(stderr, "rlm mcp: ready on stdio (model %s; roots: %s)\n", rlm_config_get(f.cfg, "model"),
            roots_text);
    for (char *p = roots_text; *p; p++)
        if (*p == '\n')
            *p = ',';
    int pipe_fds[2] = {-1, -1};
    pthread_t stop_thread;
    stopper stop = {.set = set};
    if (pipe(pipe_fds) != 0) {
        rc = EXIT_INTERNAL;
        goto done;
    }
    stop.fd = pipe_fds[1];
    int stop_started = pthread_create(&stop_thread, NULL, stop_main, &stop) == 0;
    serve_stdin(&s, roots_text, pipe_fds[0]);
    if (stop_started) {
        pthread_cancel(stop_thread);   /* sigwait is a cancellation point */
        pthread_join(stop_thread, NULL);
    }
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    /* The client is gone or a signal came: every call stops. */
    runner_drain(rn, 0);
    pthread_mutex_lock(&s.lock);
    for (call *c = s.calls; c; c = c->next)
        c->cancelled = 1;
    while (s.n_calls > 0)
        pthread_cond_wait(&s.changed, &s.lock);
    pthread_mutex_unlock(&s.lock);
    pthread_cond_destroy(&s.changed);
    pthread_mutex_destroy(&s.lock);
    pthread_mutex_destroy(&s.out_lock);
    rc = EXIT_ANSWERED;
done:
    runner_free(rn);
    rlm_pool_free(pool);
    free(roots_text);
    cli_flags_free(&f);
    free(rest);
    return rc;
}
