/* serve — `rlm serve`: an OpenAI-compatible HTTP server whose model is an
 * RLM. Its own flags (address, keys, limits, named inputs) are taken out of
 * the command line here; the rest are `rlm ask`'s model, budget and sandbox
 * flags, parsed by cli_flags_parse, and set every run's configuration and
 * the server-wide caps of the budgets. SIGTERM, SIGINT or SIGHUP drain: no
 * new run, the running ones finish or are cancelled at --drain-timeout.
 * docs/serve.md is the user's guide. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "keys.h"
#include "metrics.h"
#include "rlm.h"
#include "runner.h"
#include "serve_flags.h"
#include "server.h"
#include "util.h"

#define MAX_INPUTS 64
#define MAX_KEY_FILES 16

static const char serve_usage_text[] =
    "usage: rlm serve [options]\n"
    "\n"
    "An OpenAI-compatible server whose model is an RLM: POST /v1/chat/completions (also\n"
    "streamed), GET /v1/models, /health, /metrics. The last user message is the question;\n"
    "the earlier messages are the input, and/or a named input the server holds (model\n"
    "\"rlm:NAME\"). Every run goes through one dispatcher: --concurrency, --rpm and --tpm hold\n"
    "for all of them together. docs/serve.md tells all.\n"
    "\n"
    "Server:\n"
    "  --listen ADDR          address to listen on (default 127.0.0.1; another needs\n"
    "                         --api-key-file, or --no-auth)\n"
    "  --port N               port (default 8080; 0: any free port, said on stderr)\n"
    "  --port-file FILE       write the port to FILE once listening\n"
    "  --api-key-file FILE    bearer keys clients must send, one per line (repeatable; the\n"
    "                         file must not be readable by others)\n"
    "  --no-auth              allow listening beyond this machine without keys\n"
    "  --input NAME=PATH      a named input, loaded once and shared by every run that asks\n"
    "                         for model rlm:NAME (a file, a directory or a glob; repeatable)\n"
    "  --max-runs N           runs at once (default 4); more wait in the queue\n"
    "  --queue N              requests waiting for a run at most (default 64); past it, 429\n"
    "  --queue-timeout S      seconds a request may wait for a run (default 60); then 429\n"
    "  --max-body SIZE        largest request body (default 32M)\n"
    "  --max-connections N    open connections at most (default 256); more are closed\n"
    "  --idle-timeout S       close a connection silent for S seconds (default 30)\n"
    "  --read-timeout S       close a connection that has not sent its whole request within\n"
    "                         S seconds (default 30)\n"
    "  --drain-timeout S      on SIGTERM, seconds running runs have to finish before they are\n"
    "                         cancelled (default 30)\n"
    "  -q, --quiet            no line per request on stderr\n"
    "\n"
    "Runs: the model, endpoint, budget and sandbox options of rlm ask (rlm ask --help):\n"
    "--base-url, --api-key, --model, --sub-model, --concurrency, --rpm, --max-cost, ...\n"
    "Budgets given here are every run's default and the most a request may ask for\n"
    "(\"rlm\": {\"max_cost\": ...} in its body). Conversations (a conversation id) are kept in\n"
    "--session-db; every run is in the run log (--no-log: not).\n"
    "\n"
    "Exit: 0 after a drain, 2 usage (a bad flag, an input that cannot be read), 4 when the\n"
    "server cannot start.\n";

typedef struct serve_flags {
    const char *listen;
    long port;
    const char *port_file;
    const char *key_files[MAX_KEY_FILES];
    size_t n_key_files;
    int no_auth;
    const char *inputs[MAX_INPUTS];
    size_t n_inputs;
    long max_runs, queue, max_connections;
    double queue_timeout, idle_timeout, read_timeout, drain_timeout;
    size_t max_body;
} serve_flags;

enum {
    F_LISTEN, F_PORT, F_PORT_FILE, F_KEY_FILE, F_NO_AUTH, F_INPUT, F_MAX_RUNS, F_QUEUE,
    F_QUEUE_TIMEOUT, F_MAX_BODY, F_MAX_CONNECTIONS, F_IDLE_TIMEOUT, F_READ_TIMEOUT,
    F_DRAIN_TIMEOUT, F_HELP,
};

static const serve_flag serve_flag_table[] = {
    {"listen", F_LISTEN, 1}, {"port", F_PORT, 1}, {"port-file", F_PORT_FILE, 1},
    {"api-key-file", F_KEY_FILE, 1}, {"no-auth", F_NO_AUTH, 0}, {"input", F_INPUT, 1},
    {"max-runs", F_MAX_RUNS, 1}, {"queue", F_QUEUE, 1}, {"queue-timeout", F_QUEUE_TIMEOUT, 1},
    {"max-body", F_MAX_BODY, 1}, {"max-connections", F_MAX_CONNECTIONS, 1},
    {"idle-timeout", F_IDLE_TIMEOUT, 1}, {"read-timeout", F_READ_TIMEOUT, 1},
    {"drain-timeout", F_DRAIN_TIMEOUT, 1}, {"help", F_HELP, 0}, {NULL, 0, 0},
};

static int bad_value(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "rlm serve: --%s: %s (got '%s')\n", flag, want, value);
    return EXIT_USAGE;
}

/* One serve flag: -1 to go on, else an exit code. */
static int serve_flag_set(void *ctx, int id, const char *name, const char *value)
{
    serve_flags *f = ctx;
    double d;
    switch (id) {
    case F_LISTEN: f->listen = value; break;
    case F_PORT:
        if (parse_long(value, &f->port) != 0 || f->port < 0 || f->port > 65535)
            return bad_value(name, value, "a port, 0-65535");
        break;
    case F_PORT_FILE: f->port_file = value; break;
    case F_KEY_FILE:
        if (f->n_key_files == MAX_KEY_FILES)
            return bad_value(name, value, "at most 16 key files");
        f->key_files[f->n_key_files++] = value;
        break;
    case F_NO_AUTH: f->no_auth = 1; break;
    case F_INPUT:
        if (!strchr(value, '=') || value[0] == '=')
            return bad_value(name, value, "NAME=PATH");
        if (f->n_inputs == MAX_INPUTS)
            return bad_value(name, value, "at most 64 named inputs");
        f->inputs[f->n_inputs++] = value;
        break;
    case F_MAX_RUNS:
        if (parse_long(value, &f->max_runs) != 0 || f->max_runs < 1 || f->max_runs > 4096)
            return bad_value(name, value, "a whole number from 1 to 4096");
        break;
    case F_QUEUE:
        if (parse_long(value, &f->queue) != 0 || f->queue < 0 || f->queue > 100000)
            return bad_value(name, value, "a whole number from 0 to 100000");
        break;
    case F_MAX_CONNECTIONS:
        if (parse_long(value, &f->max_connections) != 0 || f->max_connections < 1 ||
            f->max_connections > 16384)
            return bad_value(name, value, "a whole number from 1 to 16384");
        break;
    case F_MAX_BODY:
        if (parse_size(value, &f->max_body) != 0 || f->max_body < 1024)
            return bad_value(name, value, "a size of at least 1K, like 32M");
        break;
    case F_QUEUE_TIMEOUT:
    case F_IDLE_TIMEOUT:
    case F_READ_TIMEOUT:
    case F_DRAIN_TIMEOUT:
        if (parse_double(value, &d) != 0 || d < 0 || d > 86400 || (d == 0 && id != F_DRAIN_TIMEOUT))
            return bad_value(name, value, "a number of seconds");
        *(id == F_QUEUE_TIMEOUT ? &f->queue_timeout : id == F_IDLE_TIMEOUT ? &f->idle_timeout
          : id == F_READ_TIMEOUT ? &f->read_timeout : &f->drain_timeout) = d;
        break;
    case F_HELP:
        fputs(serve_usage_text, stdout);
        return EXIT_ANSWERED;
    }
    return -1;
}

/* Flags of rlm ask that make no sense for a server: refused by name. */
static int refuse_ask_flags(const cli_flags *f)
{
    const char *which = f->n_contexts ? "--context (use --input NAME=PATH)"
                        : f->question_file ? "--question-file"
                        : f->json ? "--json" : f->verbose ? "--verbose" : f->progress ? "--progress"
                        : rlm_config_get(f->cfg, "session")[0] ? "--session (clients send a "
                                                                 "conversation id)"
                        : rlm_config_get(f->cfg, "trace")[0] ? "--trace (every run's trace is in "
                                                               "the run log)"
                        : rlm_config_get(f->cfg, "record")[0] ? "--record" : NULL;
    if (!which)
        return 0;
    fprintf(stderr, "rlm serve: %s is not an option of rlm serve (rlm serve --help)\n", which);
    return EXIT_USAGE;
}

static int is_loopback(const char *addr)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, addr, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, addr, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

/* Writes the port to path atomically (a temporary file, then rename). */
static int write_port_file(const char *path, int port)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Loads the named inputs into the pool: NAME=PATH each. */
static int load_inputs(rlm_pool *pool, const serve_flags *sf)
{
    for (size_t i = 0; i < sf->n_inputs; i++) {
        const char *eq = strchr(sf->inputs[i], '=');
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - sf->inputs[i]), sf->inputs[i]);
        double t0 = clock_now();
        rlm_status st = rlm_pool_add_input(pool, name, eq + 1);
        if (st != RLM_OK) {
            fprintf(stderr, "rlm serve: --input %s: %s\n", sf->inputs[i], rlm_pool_errmsg(pool));
            return cli_exit_code(st);
        }
        fprintf(stderr, "rlm serve: input %s loaded from %s in %.1fs\n", name, eq + 1, clock_now() - t0);
    }
    const char *w = rlm_pool_warnings(pool);
    for (const char *line = w; *line;) {
        size_t n = strcspn(line, "\n");
        fprintf(stderr, "rlm serve: warning: %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    return 0;
}

/* Waits for SIGTERM, SIGINT or SIGHUP (blocked in every thread). */
static int wait_signal(const sigset_t *set, double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    int sig = seconds < 0 ? 0 : sigtimedwait(set, NULL, &ts);
    if (seconds < 0 && sigwait(set, &sig) != 0)
        return -1;
    return sig;
}

int cmd_serve(int argc, char **argv)
{
    serve_flags sf = {.listen = "127.0.0.1", .port = 8080, .max_runs = 4, .queue = 64,
                      .max_connections = 256, .queue_timeout = 60, .idle_timeout = 30,
                      .read_timeout = 30, .drain_timeout = 30, .max_body = (size_t)32 << 20};
    /* Request bodies and inline inputs are large and short-lived, on many
     * threads: a fixed mmap threshold gives each back to the kernel when
     * it is freed (glibc would otherwise raise the threshold after the
     * first free and keep them in its arenas, which only grow). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    int rest_argc = 0;
    char **rest = NULL;
    cli_flags f = {0};
    keys *k = NULL;
    rlm_pool *pool = NULL;
    runner *rn = NULL;
    metrics *m = NULL;
    server *s = NULL;
    int rc = serve_flags_split(argc, argv, serve_flag_table, serve_flag_set, &sf, &rest_argc, &rest);
    if (rc >= 0)
        goto done;
    rc = cli_flags_parse(rest_argc, rest, &f);
    if (rc >= 0)
        goto done;
    rc = EXIT_USAGE;
    if (f.first_operand < rest_argc) {
        fprintf(stderr, "rlm serve: unexpected argument '%s' (rlm serve --help)\n", rest[f.first_operand]);
        goto done;
    }
    if ((rc = refuse_ask_flags(&f)) != 0)
        goto done;
    rc = EXIT_USAGE;
    k = keys_new();
    m = metrics_new();
    if (!k || !m) {
        fputs("rlm serve: out of memory\n", stderr);
        rc = EXIT_INTERNAL;
        goto done;
    }
    for (size_t i = 0; i < sf.n_key_files; i++) {
        char err[1024];
        if (keys_add_file(k, sf.key_files[i], err, sizeof err) != 0) {
            fprintf(stderr, "rlm serve: %s\n", err);
            goto done;
        }
    }
    if (!keys_count(k) && !is_loopback(sf.listen) && !sf.no_auth) {
        fprintf(stderr, "rlm serve: listening on %s without keys would let anyone who can reach it "
                "spend your model budget: give --api-key-file (or --no-auth)\n", sf.listen);
        goto done;
    }
    /* Every thread started from here on inherits the mask: the signals
     * are this thread's to wait for. */
    sigset_t set;
    serve_block_stop_signals(&set);

    rlm_status st = rlm_pool_new(f.cfg, &pool);
    if (st != RLM_OK) {
        cli_error(rlm_pool_errmsg(pool));
        rc = cli_exit_code(st);
        goto done;
    }
    if ((rc = load_inputs(pool, &sf)) != 0)
        goto done;
    runner_options ro = {.max_runs = (int)sf.max_runs, .max_queue = (int)sf.queue,
                         .queue_timeout = sf.queue_timeout};
    rn = runner_new(&ro);
    serve_config sc = {
        .listen = sf.listen, .port = (int)sf.port, .max_body = sf.max_body,
        .max_connections = (int)sf.max_connections, .idle_timeout = sf.idle_timeout,
        .read_timeout = sf.read_timeout, .keys = k, .pool = pool, .base = f.cfg, .runner = rn,
        .metrics = m, .access_log = !f.quiet,
    };
    char err[512];
    if (!rn || !(s = server_start(&sc, err, sizeof err))) {
        fprintf(stderr, "rlm serve: %s\n", rn ? err : "out of memory");
        rc = EXIT_INTERNAL;
        goto done;
    }
    int port = server_port(s);
    if (sf.port_file && write_port_file(sf.port_file, port) != 0) {
        fprintf(stderr, "rlm serve: cannot write --port-file %s: %s\n", sf.port_file, strerror(errno));
        rc = EXIT_USAGE;
        goto done;
    }
    fprintf(stderr, "rlm serve: listening on http://%s%s%s:%d (model %s, %zu named input%s, %ld run%s "
            "at once, %s)\n", strchr(sf.listen, ':') ? "[" : "", sf.listen,
            strchr(sf.listen, ':') ? "]" : "", port, rlm_config_get(f.cfg, "model"), sf.n_inputs,
            sf.n_inputs == 1 ? "" : "s", sf.max_runs, sf.max_runs == 1 ? "" : "s",
            keys_count(k) ? "bearer keys required" : "no keys: anyone who can connect may use it");

    int sig = wait_signal(&set, -1);
    fprintf(stderr, "rlm serve: %s: draining (no new runs; %.0f s for the running ones)\n",
            strsignal(sig > 0 ? sig : SIGTERM), sf.drain_timeout);
    server_begin_drain(s);
    runner_begin_drain(rn);
    double until = clock_now() + sf.drain_timeout;
    int in_flight = 0, queued = 0;
    for (;;) {
        runner_counts(rn, &in_flight, &queued);
        if (in_flight == 0 || clock_now() >= until)
            break;
        if (wait_signal(&set, 0.2) > 0) {
            fputs("rlm serve: second signal: cancelling the runs\n", stderr);
            break;
        }
    }
    int cancelled = runner_drain(rn, 0);
    if (cancelled)
        fprintf(stderr, "rlm serve: cancelled %d run%s at the drain's end\n", cancelled,
                cancelled == 1 ? "" : "s");
    rc = EXIT_ANSWERED;
done:
    server_stop(s);
    runner_free(rn);
    rlm_pool_free(pool);
    metrics_free(m);
    keys_free(k);
    cli_flags_free(&f);
    free(rest);
    return rc;
}
