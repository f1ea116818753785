/* batch — `rlm batch TASKS.jsonl --out RESULTS.jsonl`: every task of a task
 * file (or of this process's shard of it) answered in one process, many at
 * once, through one pool (one dispatcher, one set of rate limits, one
 * sandbox zygote, shared inputs loaded once), each result committed to the
 * ledger as it finishes (batch_ledger.c) so that a rerun resumes; SIGTERM
 * stops within seconds with nothing lost. `rlm batch merge` is
 * batch_merge.c's. docs/cluster.md is the user's guide. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "commands.h"
#include "util.h"

#define DEFAULT_TASKS_IN_FLIGHT 8
#define MAX_TASKS_IN_FLIGHT 4096
#define DEFAULT_MAX_ATTEMPTS 3
/* Task lines, warnings or errors of a kind shown before "... and N more". */
#define SHOW_AT_MOST 20
/* How often the waiting main thread redraws the bar and, once stopping,
 * cancels again a run that had not yet begun when it was first cancelled. */
#define TICK_MS 250
/* Inputs loaded once for several tasks: each is a zygote process holding
 * it, so their number is bounded; the rest are read by each task. */
#define MAX_SHARED_INPUTS 64
/* Without a terminal, the bar (--progress) is a line this often. */
#define BAR_LINE_SECONDS 10.0

static const char batch_help[] =
        "Usage: rlm batch [options] TASKS.jsonl --out RESULTS.jsonl\n"
        "  or:  rlm batch merge [--tasks TASKS.jsonl] [-o MERGED.jsonl] [--json] RESULTS.jsonl...\n"
        "\n"
        "Answers every task of TASKS.jsonl, many at once in one process, sharing one model\n"
        "dispatcher (its concurrency and rate limits), one sandbox zygote and the inputs several\n"
        "tasks use. One task per line (docs/cluster.md):\n"
        "  {\"id\": \"q1\", \"question\": \"...\", \"inputs\": [\"book.txt\", \"logs/*.log\", {\"text\": \"...\"}],\n"
        "   \"options\": {\"max_iterations\": 10, \"sub_model\": \"...\"}, \"gold\": \"42\", \"meta\": {...}}\n"
        "Relative input paths are from the task file's directory. A line that is not a task, a\n"
        "duplicate id or an option a task may not set is reported with its line number; the good\n"
        "tasks run. A task whose input names nothing gets an error result and is not run.\n"
        "\n"
        "Batch options:\n"
        "  -o, --out FILE         the results, one JSON line per task as it finishes (required);\n"
        "                         {shard} in FILE becomes the shard's index. The ledger is\n"
        "                         FILE.ledger (SQLite): rerunning the same command skips the\n"
        "                         tasks done, retries the failed ones and never writes a task twice\n"
        "  --tasks-in-flight N    tasks running at once (default 8); their sub-calls share\n"
        "                         --concurrency\n"
        "  --max-attempts N       runs of a task that fails with a model or sandbox error, over\n"
        "                         all reruns, before its error is its result (default 3)\n"
        "  --shard I/N            this process takes the tasks I, I+N, I+2N, ... (0 <= I < N).\n"
        "                         Without it: $RLM_SHARD (I/N); else in a Slurm array\n"
        "                         SLURM_ARRAY_TASK_ID of --shards N, or without --shards\n"
        "                         SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of\n"
        "                         SLURM_ARRAY_TASK_COUNT; else a Kubernetes indexed Job's\n"
        "                         JOB_COMPLETION_INDEX of --shards N (or $RLM_SHARDS)\n"
        "  --shards N             the number of shards (then one array index resubmitted\n"
        "                         alone, sbatch --array=2, is still shard 2 of N)\n"
        "  -q, --quiet            no line per task and no progress bar\n"
        "  --progress             the progress bar on stderr even when it is not a terminal\n"
        "  -j, --json             the summary as one JSON object on stdout\n"
        "  --no-log               do not record the tasks in the run log (every task is, by default)\n"
        "\n"
        "Every option of rlm ask applies to every task (rlm ask --help): the endpoint, models,\n"
        "budgets, --concurrency, --rpm/--tpm (which hold for the whole process). --context\n"
        "inputs are those of the tasks that give none. Not for a batch: --question-file,\n"
        "--session, --trace (each task's trace is in the run log: rlm view ID), --record.\n"
        "\n"
        "SIGTERM or SIGINT (a scheduler's preemption, scancel, Ctrl-C) stops within seconds: the\n"
        "tasks running are cancelled and not recorded, everything finished is in the ledger\n"
        "and the output; the same command resumes. A second signal ends rlm at once.\n"
        "\n"
        "Exit codes:\n"
        "  0  every task of the shard has its result, all answered\n"
        "  1  every task has its result; some have no answer or failed for good\n"
        "  2  usage error, or lines of the task file that are not tasks (the good tasks ran)\n"
        "  3  some tasks failed with a model or sandbox error and will be retried by a rerun\n"
        "  4  the ledger or the output cannot be written (a full disk), or an internal error\n"
        "  5  stopped by SIGTERM or SIGINT: rerun the same command to resume\n";

/* One worker's task at a time. */
typedef struct batch_slot {
    rlm *handle;                /* the run being asked, under the batch's lock; NULL between */
    pthread_t thread;
    int started;
} batch_slot;

typedef struct batch_run {
    cli_flags flags;            /* the rlm ask flags: every task's defaults */
    int flag_argc;
    char **flag_argv;
    rlm_pool *pool;
    json_t *shared;             /* input argument -> the pool's name for it */
    batch_taskfile tf;
    batch_ledger *ledger;
    int shard_index, shard_count;
    char shard_text[48];
    size_t *todo;               /* indexes into tf.tasks, this run's work */
    size_t n_todo, next;
    size_t in_shard, already_done;
    int tasks_in_flight, max_attempts;
    int quiet, bar, json;
    int terminal;
    batch_slot *slots;

    pthread_mutex_t lock;       /* guards what follows, the ledger and stderr */
    pthread_cond_t changed;
    size_t answered, unanswered, errors, to_retry, finished, running, cancelled;
    size_t done_unanswered;     /* of the tasks done before this run: not answered */
    int ledger_failed;
    char ledger_error[2048];
    double started;
    int bar_shown;
} batch_run;

/* The batch whose workers run (they find it here), and the flag a signal
 * raises: the command's only mutable globals. The handler only sets the
 * flag; the main thread, which wakes every TICK_MS, cancels the runs under
 * the batch's lock — a handle is never freed while it may be cancelled. */
static batch_run *running_batch;
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    static const char msg[] = "\nrlm batch: stopping: the tasks running are cancelled, the finished "
                              "ones are kept (a second signal quits at once)\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing more to do in a signal handler */
    }
}

/* ---- per task ------------------------------------------------------------- */

/* The task's config: the flags' options, then the task's own. NULL with
 * why (a bad task option was refused when the file was read, so only
 * memory can fail here). */
static rlm_config *task_config(batch_run *b, const batch_task *t, char *why, size_t whylen)
{
    rlm_config *cfg = rlm_config_copy(b->flags.cfg);
    if (!cfg) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    const char *key;
    json_t *value;
    json_object_foreach(t->options, key, value) {
        if (rlm_config_set(cfg, key, json_string_value(value)) != RLM_OK) {
            snprintf(why, whylen, "option %s", rlm_config_errmsg(cfg));
            rlm_config_free(cfg);
            return NULL;
        }
    }
    return cfg;
}

/* The one input argument a task reads (its own, or the batch's --context),
 * which several tasks may share; NULL for several inputs or inline text. */
static const char *task_input_key(const batch_run *b, const batch_task *t)
{
    if (t->n_inputs == 1)
        return t->inputs[0].arg;
    if (t->n_inputs == 0 && b->flags.n_contexts == 1)
        return b->flags.contexts[0];
    return NULL;
}

/* Adds one inline text input: a sealed memfd, mapped by the run, never
 * copied again. */
static rlm_status add_text_input(rlm *r, const batch_input *in, size_t k, char *why, size_t whylen)
{
    int fd = memfd_create("rlm-batch-text", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || write_full(fd, in->text, in->text_len) != 0) {
        snprintf(why, whylen, "cannot hold an inline input: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return RLM_ERR_INPUT;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
    char name[32];
    snprintf(name, sizeof name, "text_%zu", k + 1);
    rlm_status st = rlm_add_context_fd(r, name, fd);
    close(fd);
    if (st != RLM_OK)
        snprintf(why, whylen, "%s", rlm_errmsg(r));
    return st;
}

/* What one task came to. */
typedef struct task_result {
    rlm_status status;
    int cancelled;              /* stopped by the signal: not recorded */
    char *answer;
    size_t answer_len;
    char error[2048];
    json_t *report;             /* rlm_report_json parsed, or NULL */
} task_result;

static void run_task(batch_run *b, batch_slot *slot, const batch_task *t, task_result *res)
{
    memset(res, 0, sizeof *res);
    rlm *r = NULL;
    rlm_config *cfg = task_config(b, t, res->error, sizeof res->error);
    if (!cfg) {
        res->status = RLM_ERR_NOMEM;
        return;
    }
    rlm_status st = rlm_new_in(b->pool, cfg, &r);
    rlm_config_free(cfg);
    if (st != RLM_OK) {
        snprintf(res->error, sizeof res->error, "%s", r ? rlm_errmsg(r) : "out of memory");
        goto done;
    }
    const char *const *defaults = t->n_inputs ? NULL : b->flags.contexts;
    size_t n_defaults = t->n_inputs ? 0 : b->flags.n_contexts;
    const char *key = task_input_key(b, t);
    const char *shared = key ? json_string_value(json_object_get(b->shared, key)) : NULL;
    if (shared) {
        /* Loaded once by the pool: the sandbox is forked from its zygote. */
        if ((st = rlm_use_input(r, shared)) != RLM_OK)
            snprintf(res->error, sizeof res->error, "%s", rlm_errmsg(r));
        n_defaults = 0;
    }
    for (size_t i = 0; !shared && i < t->n_inputs && st == RLM_OK; i++) {
        const batch_input *in = &t->inputs[i];
        if (in->text) {
            st = add_text_input(r, in, i, res->error, sizeof res->error);
        } else if ((st = rlm_add_context(r, in->arg)) != RLM_OK) {
            snprintf(res->error, sizeof res->error, "%s", rlm_errmsg(r));
        }
    }
    for (size_t i = 0; i < n_defaults && st == RLM_OK; i++)
        if ((st = rlm_add_context(r, defaults[i])) != RLM_OK)
            snprintf(res->error, sizeof res->error, "%s", rlm_errmsg(r));
    if (st != RLM_OK)
        goto done;
    pthread_mutex_lock(&b->lock);
    slot->handle = r;
    pthread_mutex_unlock(&b->lock);
    if (stop_requested) {
        res->cancelled = 1;
        st = RLM_NO_ANSWER;
    } else {
        st = rlm_ask_len(r, t->question, &res->answer, &res->answer_len);
        res->cancelled = stop_requested && st != RLM_OK;
    }
    pthread_mutex_lock(&b->lock);
    slot->handle = NULL;
    pthread_mutex_unlock(&b->lock);
    const char *report = rlm_report_json(r);
    if (report)
        res->report = json_loads(report, JSON_ALLOW_NUL, NULL);
    if (st != RLM_OK)
        snprintf(res->error, sizeof res->error, "%s", rlm_errmsg(r)[0] ? rlm_errmsg(r)
                                                    : st == RLM_NO_ANSWER ? "turn limit reached"
                                                    : rlm_status_name(st));
done:
    res->status = st;
    /* Out of the slot already: nobody cancels it any more. */
    rlm_free(r);
}

/* Whether a status is worth another run of the task (a model or sandbox
 * error); answers, no answers and bad input are final. */
static int status_retryable(rlm_status st)
{
    return st == RLM_ERR_MODEL || st == RLM_ERR_SANDBOX || st == RLM_ERR_NOMEM || st == RLM_ERR_INTERNAL;
}

static const char *status_word(rlm_status st)
{
    return st == RLM_OK ? "answered" : st == RLM_NO_ANSWER ? "no_answer" : "error";
}

/* Sums a report's usage over its models. */
static void report_tokens(const json_t *report, long long *prompt, long long *completion)
{
    *prompt = *completion = 0;
    const char *model;
    json_t *u;
    json_object_foreach((json_t *)json_object_get(report, "usage"), model, u) {
        *prompt += json_integer_value(json_object_get(u, "prompt_tokens"));
        *completion += json_integer_value(json_object_get(u, "completion_tokens"));
    }
}

/* The result line of a task: one JSON object (docs/cluster.md). */
static char *result_line(const batch_run *b, const batch_task *t, const task_result *res, int attempts)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(t->id));
    json_object_set_new(o, "status", json_string(status_word(res->status)));
    json_object_set_new(o, "answer", res->answer ? json_stringn(res->answer, res->answer_len) : json_null());
    json_object_set_new(o, "error", res->status == RLM_OK ? json_null() : json_string(res->error));
    json_object_set_new(o, "error_kind", res->status == RLM_OK ? json_null()
                                        : json_string(rlm_status_name(res->status)));
    const json_t *rep = res->report;
    json_object_set(o, "how", rep && json_object_get(rep, "how") ? json_object_get(rep, "how") : json_null());
    json_object_set_new(o, "attempts", json_integer(attempts));
    json_object_set_new(o, "iterations", json_integer(json_integer_value(json_object_get(rep, "iterations"))));
    json_object_set_new(o, "sub_calls", json_integer(json_integer_value(json_object_get(rep, "sub_calls"))));
    long long prompt, completion;
    report_tokens(rep, &prompt, &completion);
    json_object_set_new(o, "prompt_tokens", json_integer(prompt));
    json_object_set_new(o, "completion_tokens", json_integer(completion));
    json_t *cost = rep ? json_object_get(rep, "cost_usd") : NULL;
    json_object_set(o, "cost_usd", cost ? cost : json_null());
    json_object_set_new(o, "elapsed_seconds",
                        json_real(json_number_value(json_object_get(rep, "elapsed_seconds"))));
    json_t *stopped = rep ? json_object_get(rep, "stopped_by") : NULL;
    json_object_set(o, "stopped_by", stopped ? stopped : json_null());
    json_t *log_id = rep ? json_object_get(rep, "log_id") : NULL;
    json_object_set(o, "log_id", log_id ? log_id : json_null());
    json_object_set_new(o, "shard", json_string(b->shard_text));
    json_object_set_new(o, "line", json_integer(t->line));
    if (t->gold) {
        json_object_set(o, "gold", t->gold);
        char *nul_free = res->answer ? str_dup_len(res->answer, strnlen(res->answer, res->answer_len)) : NULL;
        json_object_set_new(o, "correct", json_boolean(batch_answer_correct(nul_free, t->gold)));
        free(nul_free);
    }
    if (t->meta)
        json_object_set(o, "meta", t->meta);
    char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    return line;
}

/* ---- progress ------------------------------------------------------------- */

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

static void format_duration(double s, char *out, size_t outlen)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, outlen, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(out, outlen, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, outlen, "%lds", t);
}

/* "37/200, 2.3/s, ETA 1m12s" for this shard. Under b->lock. */
static void progress_counts(const batch_run *b, char *out, size_t outlen)
{
    size_t done = b->already_done + b->finished;
    double elapsed = clock_now() - b->started;
    double rate = elapsed > 0 ? (double)b->finished / elapsed : 0;
    size_t left = b->n_todo > b->finished ? b->n_todo - b->finished : 0;
    char eta[32] = "?";
    if (rate > 0)
        format_duration((double)left / rate, eta, sizeof eta);
    snprintf(out, outlen, "%zu/%zu, %.1f/s, ETA %s", done, b->in_shard, rate, eta);
}

/* The bar on a terminal, redrawn in place. Under b->lock. */
static void draw_bar(batch_run *b)
{
    if (!b->bar)
        return;
    char counts[128], line[512];
    progress_counts(b, counts, sizeof counts);
    size_t done = b->already_done + b->finished;
    int width = 20;
    int filled = b->in_shard ? (int)((double)done / (double)b->in_shard * width) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    snprintf(line, sizeof line, "[%s] %s | %zu answered, %zu no answer, %zu error, %zu to retry | "
             "%zu running", bar, counts, b->answered, b->unanswered, b->errors, b->to_retry, b->running);
    int cols = terminal_width() - 1;
    if ((int)strlen(line) > cols)
        line[cols] = '\0';
    if (b->terminal)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    b->bar_shown = b->terminal;
    fflush(stderr);
}

static void clear_bar(batch_run *b)
{
    if (b->bar_shown) {
        fputs("\r\033[K", stderr);
        b->bar_shown = 0;
    }
}

/* One line per task that finishes. Under b->lock. */
static void say_task(batch_run *b, const batch_task *t, const task_result *res, const char *what)
{
    if (b->quiet)
        return;
    clear_bar(b);
    char counts[128];
    progress_counts(b, counts, sizeof counts);
    fprintf(stderr, "rlm batch: [%s] ", counts);
    cli_write_text(stderr, t->id, strlen(t->id));
    fprintf(stderr, ": %s", what);
    if (res->status == RLM_OK && res->report) {
        fprintf(stderr, " (%.1f s, %lld turns, %lld sub-calls)",
                json_number_value(json_object_get(res->report, "elapsed_seconds")),
                (long long)json_integer_value(json_object_get(res->report, "iterations")),
                (long long)json_integer_value(json_object_get(res->report, "sub_calls")));
    } else if (res->status != RLM_OK && res->error[0]) {
        fputs(": ", stderr);
        cli_write_text(stderr, res->error, strlen(res->error));
    }
    fputc('\n', stderr);
    if (b->bar && b->terminal)
        draw_bar(b);
}

/* ---- the workers ---------------------------------------------------------- */

/* Records what a task came to: final (its line, in the ledger then the
 * output) or failed-to-retry. Under b->lock. */
static void record(batch_run *b, const batch_task *t, task_result *res, int attempts_before)
{
    /* A run cancelled by the stop or by a ledger that failed is not a
     * result: the task stays to do. */
    if (res->cancelled || b->ledger_failed) {
        b->cancelled++;
        return;
    }
    int attempts = attempts_before + 1;
    int retry = status_retryable(res->status) && attempts < b->max_attempts;
    char *line = result_line(b, t, res, attempts);
    char err[2048];
    if (!line) {
        snprintf(err, sizeof err, "out of memory");
    } else if (batch_ledger_record(b->ledger, t->id, t->digest, !retry, status_word(res->status),
                                   retry ? res->error : line, err, sizeof err) == 0) {
        free(line);
        b->finished++;
        if (retry)
            b->to_retry++;
        else if (res->status == RLM_OK)
            b->answered++;
        else if (res->status == RLM_NO_ANSWER)
            b->unanswered++;
        else
            b->errors++;
        say_task(b, t, res, retry ? "failed (a rerun retries it)" : status_word(res->status));
        return;
    }
    free(line);
    /* Nothing more can be kept: stop starting tasks, cancel those running. */
    if (!b->ledger_failed) {
        b->ledger_failed = 1;
        snprintf(b->ledger_error, sizeof b->ledger_error, "%s", err);
        for (int i = 0; i < b->tasks_in_flight; i++) {
            rlm *r = b->slots[i].handle;
            if (r)
                rlm_cancel(r);
        }
    }
}

static void *worker_main(void *arg)
{
    batch_slot *slot = arg;
    batch_run *b = running_batch;
    for (;;) {
        pthread_mutex_lock(&b->lock);
        if (stop_requested || b->ledger_failed || b->next == b->n_todo) {
            pthread_mutex_unlock(&b->lock);
            break;
        }
        const batch_task *t = &b->tf.tasks[b->todo[b->next++]];
        b->running++;
        pthread_mutex_unlock(&b->lock);

        char digest[32];
        int attempts;
        pthread_mutex_lock(&b->lock);
        batch_ledger_state(b->ledger, t->id, &attempts, digest, sizeof digest, NULL, 0);
        pthread_mutex_unlock(&b->lock);
        task_result res;
        run_task(b, slot, t, &res);

        pthread_mutex_lock(&b->lock);
        b->running--;
        record(b, t, &res, attempts);
        pthread_cond_broadcast(&b->changed);
        pthread_mutex_unlock(&b->lock);
        free(res.answer);
        json_decref(res.report);
    }
    pthread_mutex_lock(&b->lock);
    pthread_cond_broadcast(&b->changed);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* ---- set-up --------------------------------------------------------------- */

/* Splits argv into the batch's own flags and the rlm ask flags (into
 * b->flag_argv, argv[0] "batch"). -1 to go on, else the exit code. */
static int parse_batch_flags(int argc, char **argv, batch_run *b, const char **out, const char **shard,
                             long *shards)
{
    b->flag_argv = calloc((size_t)argc + 1, sizeof *b->flag_argv);
    if (!b->flag_argv)
        return EXIT_INTERNAL;
    b->flag_argv[b->flag_argc++] = (char *)"batch";
    b->tasks_in_flight = DEFAULT_TASKS_IN_FLIGHT;
    b->max_attempts = DEFAULT_MAX_ATTEMPTS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = NULL;
        const char *names[] = {"--out", "-o", "--tasks-in-flight", "--max-attempts", "--shard", "--shards"};
        size_t which = sizeof names / sizeof names[0];
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            size_t n = strlen(names[k]);
            if (strcmp(a, names[k]) == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "rlm batch: %s needs a value (rlm batch --help)\n", a);
                    return EXIT_USAGE;
                }
                value = argv[++i];
                which = k;
                break;
            }
            if (names[k][1] == '-' && strncmp(a, names[k], n) == 0 && a[n] == '=') {
                value = a + n + 1;
                which = k;
                break;
            }
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(batch_help, stdout);
            return EXIT_ANSWERED;
        }
        /* What one file per process cannot hold for many tasks at once. */
        static const char *const refused[][2] = {
            {"--question-file", "each task gives its question"},
            {"--session", "a batch keeps no conversation"},
            {"--trace", "every task's trace is in the run log (rlm view ID), or give a task its "
                        "own \"trace\" option"},
            {"--record", "the tasks would write one file at once"},
        };
        for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
            size_t n = strlen(refused[k][0]);
            if (strncmp(a, refused[k][0], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
                fprintf(stderr, "rlm batch: %s is not for rlm batch: %s\n", refused[k][0], refused[k][1]);
                return EXIT_USAGE;
            }
        }
        if (which == sizeof names / sizeof names[0]) {
            b->flag_argv[b->flag_argc++] = argv[i];
            continue;
        }
        long n = 0;
        switch (which) {
        case 0:
        case 1: *out = value; break;
        case 4: *shard = value; break;
        default:
            if (parse_long(value, &n) != 0 || n < 1 || (which == 2 && n > MAX_TASKS_IN_FLIGHT) ||
                (which != 2 && n > 1000000)) {
                fprintf(stderr, "rlm batch: %s must be a whole number from 1 to %d\n", names[which],
                        which == 2 ? MAX_TASKS_IN_FLIGHT : 1000000);
                return EXIT_USAGE;
            }
            if (which == 2)
                b->tasks_in_flight = (int)n;
            else if (which == 3)
                b->max_attempts = (int)n;
            else
                *shards = n;
        }
    }
    return -1;
}

/* "results.{shard}.jsonl" -> "results.2.jsonl". */
static char *output_path(const char *out, int index)
{
    buf b;
    buf_init(&b, strlen(out) + 64);
    const char *p = out, *hit;
    while ((hit = strstr(p, "{shard}"))) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_printf(&b, "%d", index);
        p = hit + 7;
    }
    buf_puts(&b, p);
    return buf_take(&b);
}

/* The task file's bad lines of this shard, on stderr. Returns how many. */
static size_t report_bad_lines(const batch_run *b, const char *tasks_path)
{
    size_t n = 0;
    for (size_t i = 0; i < b->tf.n_errors; i++) {
        const batch_line_error *e = &b->tf.errors[i];
        if (!batch_in_shard(e->ordinal, b->shard_index, b->shard_count))
            continue;
        if (n++ < SHOW_AT_MOST) {
            fprintf(stderr, "rlm batch: %s:%ld: ", tasks_path, e->line);
            cli_write_text(stderr, e->message, strlen(e->message));
            fputc('\n', stderr);
        }
    }
    if (n > SHOW_AT_MOST)
        fprintf(stderr, "rlm batch: ... and %zu more bad lines\n", n - SHOW_AT_MOST);
    return n;
}

/* Decides this run's work from the ledger: tasks done are skipped, failed
 * ones retried while they have attempts left (else their last error
 * becomes their result), tasks whose input names nothing get their error
 * result at once. 0, or -1 when the ledger cannot be written. */
static int plan(batch_run *b, size_t *changed)
{
    *changed = 0;
    b->todo = calloc(b->tf.n_tasks ? b->tf.n_tasks : 1, sizeof *b->todo);
    if (!b->todo) {
        snprintf(b->ledger_error, sizeof b->ledger_error, "out of memory");
        return -1;
    }
    char err[2048];
    for (size_t i = 0; i < b->tf.n_tasks; i++) {
        const batch_task *t = &b->tf.tasks[i];
        if (!batch_in_shard(t->ordinal, b->shard_index, b->shard_count))
            continue;
        b->in_shard++;
        char digest[32], status[16];
        int attempts;
        batch_state s = batch_ledger_state(b->ledger, t->id, &attempts, digest, sizeof digest, status,
                                           sizeof status);
        int input_recorded = strncmp(digest, "input:", 6) == 0;
        if (s == BATCH_DONE && input_recorded && !t->input_error) {
            /* Its input was missing and is there now: run it. */
            if (batch_ledger_forget(b->ledger, t->id, err, sizeof err) != 0)
                goto fail;
            s = BATCH_PENDING;
            attempts = 0;
        }
        if (s == BATCH_DONE) {
            if (!input_recorded && strcmp(digest, t->digest) != 0 && (*changed)++ < SHOW_AT_MOST) {
                fprintf(stderr, "rlm batch: task ");
                cli_write_text(stderr, t->id, strlen(t->id));
                fprintf(stderr, " (line %ld) changed since its result was recorded; the recorded "
                        "result is kept (remove it from the ledger to run it again)\n", t->line);
            }
            b->already_done++;
            if (strcmp(status, "answered") != 0)
                b->done_unanswered++;
            continue;
        }
        if (t->input_error) {
            task_result res = {.status = RLM_ERR_INPUT};
            snprintf(res.error, sizeof res.error, "%s", t->input_error);
            char *line = result_line(b, t, &res, 0);
            char tagged[64];
            snprintf(tagged, sizeof tagged, "input:%s", t->digest);
            int rc = line ? batch_ledger_record(b->ledger, t->id, tagged, 1, "error", line, err, sizeof err)
                          : -1;
            free(line);
            if (rc != 0)
                goto fail;
            b->errors++;
            b->already_done++;
            if (!b->quiet) {
                fprintf(stderr, "rlm batch: task ");
                cli_write_text(stderr, t->id, strlen(t->id));
                fprintf(stderr, " (line %ld) not run: ", t->line);
                cli_write_text(stderr, t->input_error, strlen(t->input_error));
                fputc('\n', stderr);
            }
            continue;
        }
        if (s == BATCH_FAILED && attempts >= b->max_attempts) {
            task_result res = {.status = RLM_ERR_MODEL};
            snprintf(res.error, sizeof res.error, "failed %d times (--max-attempts %d)", attempts,
                     b->max_attempts);
            char *line = result_line(b, t, &res, attempts);
            int rc = line ? batch_ledger_record(b->ledger, t->id, t->digest, 1, "error", line, err,
                                                sizeof err) : -1;
            free(line);
            if (rc != 0)
                goto fail;
            b->errors++;
            b->already_done++;
            continue;
        }
        b->todo[b->n_todo++] = i;
    }
    return 0;
fail:
    snprintf(b->ledger_error, sizeof b->ledger_error, "%s", err);
    return -1;
}

/* Starts the pool the tasks share, and loads in it, once, every input
 * that several of this run's tasks read. 0, or an exit code after saying
 * why. */
static int start_pool(batch_run *b)
{
    rlm_status st = rlm_pool_new(b->flags.cfg, &b->pool);
    if (st != RLM_OK) {
        cli_error(b->pool ? rlm_pool_errmsg(b->pool) : "out of memory");
        return cli_exit_code(st);
    }
    json_t *uses = json_object();
    b->shared = json_object();
    if (!uses || !b->shared)
        return EXIT_INTERNAL;
    for (size_t k = 0; k < b->n_todo; k++) {
        const char *key = task_input_key(b, &b->tf.tasks[b->todo[k]]);
        if (key)
            json_object_set_new(uses, key, json_integer(json_integer_value(json_object_get(uses, key)) + 1));
    }
    size_t loaded = 0, tasks = 0;
    const char *arg;
    json_t *count;
    json_object_foreach(uses, arg, count) {
        if (json_integer_value(count) < 2 || loaded == MAX_SHARED_INPUTS)
            continue;
        char name[32];
        snprintf(name, sizeof name, "shared-%zu", loaded + 1);
        if (rlm_pool_add_input(b->pool, name, arg) != RLM_OK) {
            /* Each task then reads it, and says what is wrong with it. */
            fprintf(stderr, "rlm batch: warning: input '%s' not shared: ", arg);
            cli_write_text(stderr, rlm_pool_errmsg(b->pool), strlen(rlm_pool_errmsg(b->pool)));
            fputc('\n', stderr);
            continue;
        }
        json_object_set_new(b->shared, arg, json_string(name));
        loaded++;
        tasks += (size_t)json_integer_value(count);
    }
    json_decref(uses);
    const char *warnings = rlm_pool_warnings(b->pool);
    if (warnings[0])
        cli_say("rlm batch: warning: ", warnings);
    if (loaded && !b->quiet)
        fprintf(stderr, "rlm batch: %zu input%s shared by %zu tasks, each loaded once\n", loaded,
                loaded > 1 ? "s" : "", tasks);
    return 0;
}

static void print_summary(batch_run *b, const char *out_path, size_t bad_lines, int stopped, int rc)
{
    double ledger_s;
    size_t records;
    batch_ledger_cost(b->ledger, &ledger_s, &records);
    double per_task_ms = records ? ledger_s * 1000.0 / (double)records : 0;
    double elapsed = clock_now() - b->started;
    size_t not_run = b->n_todo - b->finished - b->cancelled;
    if (stopped || b->ledger_failed)
        not_run = b->n_todo > b->finished ? b->n_todo - b->finished : 0;
    if (b->json) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:f, "
                              "s:f, s:i}",
                              "output", out_path, "shard", b->shard_text,
                              "tasks", (json_int_t)b->in_shard,
                              "already_done", (json_int_t)b->already_done,
                              "finished", (json_int_t)b->finished,
                              "answered", (json_int_t)b->answered,
                              "no_answer", (json_int_t)b->unanswered,
                              "errors", (json_int_t)b->errors,
                              "to_retry", (json_int_t)b->to_retry,
                              "not_run", (json_int_t)not_run,
                              "bad_lines", (json_int_t)bad_lines,
                              "stopped", stopped,
                              "elapsed_seconds", elapsed,
                              "ledger_ms_per_task", per_task_ms,
                              "exit_code", rc);
        if (o && b->ledger_failed)
            json_object_set_new(o, "error", json_string(b->ledger_error));
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text)
            cli_print_json(text);
        free(text);
        json_decref(o);
    }
    if (b->quiet && rc == 0)
        return;
    fprintf(stderr, "rlm batch: shard %s: %zu tasks, %zu done before; this run %zu answered, %zu no "
            "answer, %zu error, %zu to retry, %zu not run, in %.1f s (ledger %.2f ms per task); "
            "results in %s\n", b->shard_text, b->in_shard, b->already_done, b->answered, b->unanswered,
            b->errors, b->to_retry, not_run, elapsed, per_task_ms, out_path);
}

int cmd_batch(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "merge") == 0)
        return cmd_batch_merge(argc - 1, argv + 1);
    batch_run run, *b = &run;
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->changed, NULL);
    const char *out = NULL, *shard = NULL, *tasks = NULL;
    char *out_path = NULL;
    long shards = 0;
    size_t bad_lines = 0;
    int workers = 0, stopped = 0;
    int rc = parse_batch_flags(argc, argv, b, &out, &shard, &shards);
    if (rc >= 0)
        goto done;
    rc = cli_flags_parse(b->flag_argc, b->flag_argv, &b->flags);
    if (rc >= 0)
        goto done;
    rc = EXIT_USAGE;
    /* getopt has moved the operands last: the task file, alone. */
    if (b->flags.first_operand < b->flag_argc)
        tasks = b->flag_argv[b->flags.first_operand];
    if (b->flags.first_operand + 1 < b->flag_argc) {
        fprintf(stderr, "rlm batch: one task file only ('%s' and '%s')\n", tasks,
                b->flag_argv[b->flags.first_operand + 1]);
        goto done;
    }
    if (!tasks || !out) {
        fprintf(stderr, "rlm batch: %s (rlm batch TASKS.jsonl --out RESULTS.jsonl)\n",
                !tasks ? "no task file given" : "no --out file given");
        goto done;
    }
    for (size_t i = 0; i < b->flags.n_contexts; i++) {
        if (strcmp(b->flags.contexts[i], "-") == 0) {
            fputs("rlm batch: --context - cannot be used: a rerun could not read stdin again\n", stderr);
            goto done;
        }
    }
    b->quiet = b->flags.quiet;
    b->json = b->flags.json;
    b->terminal = isatty(STDERR_FILENO);
    b->bar = !b->quiet && (b->terminal || b->flags.progress);
    char err[4096];
    const char *source;
    if (batch_shard_resolve(shard, shards, &b->shard_index, &b->shard_count, &source, err, sizeof err) != 0) {
        fprintf(stderr, "rlm batch: %s\n", err);
        goto done;
    }
    snprintf(b->shard_text, sizeof b->shard_text, "%d/%d", b->shard_index, b->shard_count);
    out_path = output_path(out, b->shard_index);
    if (!out_path) {
        rc = EXIT_INTERNAL;
        goto done;
    }
    if (b->shard_count > 1 && strcmp(out_path, out) == 0) {
        fprintf(stderr, "rlm batch: %d shards write to the same --out '%s': put {shard} in it "
                "(e.g. results.{shard}.jsonl)\n", b->shard_count, out);
        goto done;
    }
    if (batch_taskfile_read(tasks, &b->tf, err, sizeof err) != 0) {
        fprintf(stderr, "rlm batch: %s\n", err);
        goto done;
    }
    bad_lines = report_bad_lines(b, tasks);
    if (!(b->ledger = batch_ledger_open(out_path, b->shard_text, err, sizeof err))) {
        fprintf(stderr, "rlm batch: %s\n", err);
        rc = strncmp(err, "ledger:", 7) == 0 ? EXIT_INTERNAL : EXIT_USAGE;
        goto done;
    }
    size_t changed;
    b->started = clock_now();
    if (plan(b, &changed) != 0) {
        fprintf(stderr, "rlm batch: %s\n", b->ledger_error);
        rc = EXIT_INTERNAL;
        goto done;
    }
    if (!b->quiet && b->shard_count > 1)
        fprintf(stderr, "rlm batch: shard %s (from %s): %zu of %zu tasks\n", b->shard_text, source,
                b->in_shard, b->tf.n_tasks);
    if (!b->quiet && b->already_done)
        fprintf(stderr, "rlm batch: %zu tasks already done (%s), %zu to run\n", b->already_done,
                out_path, b->n_todo);

    if (b->n_todo > 0) {
        if ((rc = start_pool(b)) != 0)
            goto done;
        rc = EXIT_USAGE;
        if (b->tasks_in_flight > (int)b->n_todo)
            b->tasks_in_flight = (int)b->n_todo;
        b->slots = calloc((size_t)b->tasks_in_flight, sizeof *b->slots);
        if (!b->slots) {
            rc = EXIT_INTERNAL;
            goto done;
        }
        signal(SIGXFSZ, SIG_IGN);   /* a file-size limit is a write error, not a kill */
        struct sigaction sa = {0}, old_int, old_term, old_hup;
        sa.sa_handler = on_stop_signal;
        sa.sa_flags = SA_RESETHAND | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        running_batch = b;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGHUP, &sa, &old_hup);
        for (int i = 0; i < b->tasks_in_flight; i++) {
            if (pthread_create(&b->slots[i].thread, NULL, worker_main, &b->slots[i]) != 0)
                break;
            b->slots[i].started = 1;
            workers++;
        }
        double last_bar = clock_now();
        pthread_mutex_lock(&b->lock);
        if (workers == 0) {
            b->ledger_failed = 1;
            snprintf(b->ledger_error, sizeof b->ledger_error, "cannot start a worker thread");
        }
        while (b->running > 0 || (b->next < b->n_todo && !stop_requested && !b->ledger_failed)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            long ns = until.tv_nsec + TICK_MS * 1000000L;
            until.tv_sec += ns / 1000000000L;
            until.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&b->changed, &b->lock, &until);
            if (stop_requested || b->ledger_failed) {
                /* A run cancelled before its rlm_ask began would miss the
                 * flag (rlm_ask clears it): cancel again until all end. */
                for (int i = 0; i < b->tasks_in_flight; i++) {
                    rlm *r = b->slots[i].handle;
                    if (r)
                        rlm_cancel(r);
                }
            }
            if (b->bar && (b->terminal || clock_now() - last_bar >= BAR_LINE_SECONDS)) {
                draw_bar(b);
                last_bar = clock_now();
            }
        }
        clear_bar(b);
        pthread_mutex_unlock(&b->lock);
        for (int i = 0; i < b->tasks_in_flight; i++)
            if (b->slots[i].started)
                pthread_join(b->slots[i].thread, NULL);
        running_batch = NULL;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        stopped = stop_requested != 0;
    }

    if (b->ledger_failed)
        rc = BATCH_EXIT_INTERNAL;
    else if (stopped)
        rc = BATCH_EXIT_STOPPED;
    else if (b->to_retry > 0)
        rc = BATCH_EXIT_RETRY;
    else if (bad_lines > 0)
        rc = BATCH_EXIT_USAGE;
    else if (b->unanswered > 0 || b->errors > 0 || b->done_unanswered > 0)
        rc = BATCH_EXIT_UNANSWERED;
    else
        rc = BATCH_EXIT_DONE;
    if (b->ledger_failed) {
        fprintf(stderr, "rlm batch: stopped: ");
        cli_write_text(stderr, b->ledger_error, strlen(b->ledger_error));
        fputs("\nrlm batch: every task recorded before is kept; free the space and rerun the same "
              "command to go on\n", stderr);
    }
    print_summary(b, out_path, bad_lines, stopped, rc);
    if (stopped)
        fputs("rlm batch: stopped by a signal: rerun the same command to resume\n", stderr);
done:
    rlm_pool_free(b->pool);
    json_decref(b->shared);
    batch_ledger_close(b->ledger);
    batch_taskfile_free(&b->tf);
    cli_flags_free(&b->flags);
    free(b->flag_argv);
    free(b->todo);
    free(b->slots);
    free(out_path);
    pthread_cond_destroy(&b->changed);
    pthread_mutex_destroy(&b->lock);
    return rc;
}
