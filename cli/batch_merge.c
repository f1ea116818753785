/* batch_merge — `rlm batch merge`: joins the outputs of a batch's shards,
 * checks that every task is there exactly once (against the task file when
 * given), and sums them up: status counts, the score when tasks carry a
 * gold answer, tokens, cost. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "commands.h"
#include "util.h"

#define SHOW_AT_MOST 20

static const char merge_help[] =
        "Usage: rlm batch merge [--tasks TASKS.jsonl] [-o MERGED.jsonl] [--json] RESULTS.jsonl...\n"
        "\n"
        "Joins the results of a batch's shards (rlm batch --out results.{shard}.jsonl), checks\n"
        "that every task is present exactly once — every task of TASKS.jsonl with --tasks — and\n"
        "prints a summary: status counts, the score of the tasks that carry a gold answer, tokens,\n"
        "cost. -o writes the joined results (in the task file's order with --tasks).\n"
        "  --tasks FILE     the task file the shards ran\n"
        "  -o, --out FILE   write the joined results there\n"
        "  -j, --json       the summary as one JSON object on stdout\n"
        "  -q, --quiet      say nothing but problems\n"
        "Exit codes: 0 every task once; 1 tasks missing, duplicated, unknown to the task file, or\n"
        "lines that are not results; 2 usage error or a file that cannot be read or written.\n";

typedef struct merge_state {
    json_t *by_id;              /* id -> result object (the first seen) */
    json_t *order;              /* ids in the order first read */
    size_t duplicates, bad_lines, missing, unknown;
    int quiet;
} merge_state;

static int read_results(merge_state *m, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rlm batch merge: cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        int torn = len == 0 || line[len - 1] != '\n';
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        json_t *o = torn ? NULL : json_loadb(line, len, 0, NULL);
        const char *id = json_string_value(json_object_get(o, "id"));
        if (!id) {
            if (m->bad_lines++ < SHOW_AT_MOST)
                fprintf(stderr, "rlm batch merge: %s:%ld: %s\n", path, lineno,
                        torn ? "a line cut short (rerun that shard: it rewrites its output)"
                             : "not a result line (JSON with an \"id\")");
            json_decref(o);
            continue;
        }
        json_t *first = json_object_get(m->by_id, id);
        if (first) {
            if (m->duplicates++ < SHOW_AT_MOST) {
                fprintf(stderr, "rlm batch merge: %s:%ld: task ", path, lineno);
                cli_write_text(stderr, id, strlen(id));
                fprintf(stderr, " again (first in %s)\n",
                        json_string_value(json_object_get(first, "_file")));
            }
            json_decref(o);
            continue;
        }
        json_object_set_new(o, "_file", json_string(path));
        json_object_set_new(m->by_id, id, o);
        json_array_append_new(m->order, json_string(id));
    }
    int rc = ferror(f) ? -1 : 0;
    if (rc)
        fprintf(stderr, "rlm batch merge: cannot read '%s': %s\n", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

/* Writes the joined lines, in `ids` order, to path (temporary file + rename). */
static int write_merged(const merge_state *m, const json_t *ids, const char *path)
{
    buf tmp;
    buf_init(&tmp, strlen(path) + 32);
    buf_printf(&tmp, "%s.tmp%ld", path, (long)getpid());
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0)
        goto done;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        json_t *o = json_object_get(m->by_id, json_string_value(id));
        if (!o)
            continue;
        json_t *copy = json_copy(o);
        json_object_del(copy, "_file");
        char *text = json_dumps(copy, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
        json_decref(copy);
        int w = text ? write_full(fd, text, strlen(text)) : -1;
        free(text);
        if (w != 0 || write_full(fd, "\n", 1) != 0)
            goto done;
    }
    if (fsync(fd) != 0)
        goto done;
    int c = close(fd);
    fd = -1;
    if (c != 0 || rename(tmp.data, path) != 0)
        goto done;
    rc = 0;
done:
    if (rc != 0) {
        fprintf(stderr, "rlm batch merge: cannot write '%s': %s\n", path, strerror(errno));
        unlink(tmp.data);
    }
    if (fd >= 0)
        close(fd);
    buf_free(&tmp);
    return rc;
}

int cmd_batch_merge(int argc, char **argv)
{
    const char *tasks_path = NULL, *out = NULL;
    int json = 0, quiet = 0, rc = EXIT_USAGE;
    const char **files = calloc((size_t)argc, sizeof *files);
    size_t n_files = 0;
    batch_taskfile tf = {0};
    merge_state m = {.by_id = json_object(), .order = json_array()};
    json_t *ids = NULL;
    if (!files || !m.by_id || !m.order) {
        rc = EXIT_INTERNAL;
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(merge_help, stdout);
            rc = 0;
            goto done;
        } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            json = 1;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = 1;
        } else if ((strcmp(a, "--tasks") == 0 || strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) &&
                   i + 1 < argc) {
            if (strcmp(a, "--tasks") == 0)
                tasks_path = argv[++i];
            else
                out = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "rlm batch merge: unknown option or missing value '%s' (rlm batch merge "
                    "--help)\n", a);
            goto done;
        } else {
            files[n_files++] = a;
        }
    }
    m.quiet = quiet;
    if (n_files == 0) {
        fputs("rlm batch merge: no result files given (rlm batch merge --help)\n", stderr);
        goto done;
    }
    char err[4096];
    if (tasks_path && batch_taskfile_read(tasks_path, &tf, err, sizeof err) != 0) {
        fprintf(stderr, "rlm batch merge: %s\n", err);
        goto done;
    }
    for (size_t i = 0; i < n_files; i++)
        if (read_results(&m, files[i]) != 0)
            goto done;

    /* What should be there: the task file's tasks, else what was read. */
    if (tasks_path) {
        ids = json_array();
        json_t *expected = json_object();
        for (size_t i = 0; i < tf.n_tasks; i++) {
            const char *id = tf.tasks[i].id;
            json_array_append_new(ids, json_string(id));
            json_object_set_new(expected, id, json_true());
            if (!json_object_get(m.by_id, id) && m.missing++ < SHOW_AT_MOST) {
                fprintf(stderr, "rlm batch merge: task ");
                cli_write_text(stderr, id, strlen(id));
                fprintf(stderr, " (line %ld) has no result\n", tf.tasks[i].line);
            }
        }
        size_t i;
        json_t *id;
        json_array_foreach(m.order, i, id) {
            if (!json_object_get(expected, json_string_value(id)) && m.unknown++ < SHOW_AT_MOST) {
                fprintf(stderr, "rlm batch merge: result for task ");
                cli_write_text(stderr, json_string_value(id), json_string_length(id));
                fputs(", which the task file does not have\n", stderr);
            }
        }
        json_decref(expected);
    } else {
        ids = json_incref(m.order);
    }
    if (m.missing > SHOW_AT_MOST)
        fprintf(stderr, "rlm batch merge: ... %zu tasks without a result in all\n", m.missing);
    if (m.duplicates > SHOW_AT_MOST)
        fprintf(stderr, "rlm batch merge: ... %zu duplicate results in all\n", m.duplicates);

    size_t answered = 0, no_answer = 0, errors = 0, gold = 0, correct = 0, cost_unknown = 0;
    long long prompt = 0, completion = 0;
    double cost = 0, seconds = 0;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        json_t *o = json_object_get(m.by_id, json_string_value(id));
        if (!o)
            continue;
        const char *status = json_string_value(json_object_get(o, "status"));
        if (status && strcmp(status, "answered") == 0)
            answered++;
        else if (status && strcmp(status, "no_answer") == 0)
            no_answer++;
        else
            errors++;
        if (json_object_get(o, "gold")) {
            gold++;
            correct += json_is_true(json_object_get(o, "correct"));
        }
        prompt += json_integer_value(json_object_get(o, "prompt_tokens"));
        completion += json_integer_value(json_object_get(o, "completion_tokens"));
        json_t *c = json_object_get(o, "cost_usd");
        if (json_is_number(c))
            cost += json_number_value(c);
        else
            cost_unknown++;
        seconds += json_number_value(json_object_get(o, "elapsed_seconds"));
    }
    if (out && write_merged(&m, ids, out) != 0)
        goto done;
    size_t present = answered + no_answer + errors;
    int complete = m.missing == 0 && m.duplicates == 0 && m.bad_lines == 0 && m.unknown == 0;
    rc = complete ? 0 : 1;
    if (json) {
        json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, "
                              "s:f, s:b}",
                              "tasks", (json_int_t)(tasks_path ? tf.n_tasks : present),
                              "results", (json_int_t)present, "answered", (json_int_t)answered,
                              "no_answer", (json_int_t)no_answer, "errors", (json_int_t)errors,
                              "missing", (json_int_t)m.missing, "duplicates", (json_int_t)m.duplicates,
                              "unknown", (json_int_t)m.unknown, "bad_lines", (json_int_t)m.bad_lines,
                              "prompt_tokens", (json_int_t)prompt,
                              "completion_tokens", (json_int_t)completion, "cost_usd", cost,
                              "cost_unknown", (json_int_t)cost_unknown, "task_seconds", seconds,
                              "complete", complete);
        if (o && gold) {
            json_object_set_new(o, "gold", json_integer((json_int_t)gold));
            json_object_set_new(o, "correct", json_integer((json_int_t)correct));
            json_object_set_new(o, "score", json_real((double)correct / (double)gold));
        }
        char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (text)
            cli_print_json(text);
        free(text);
        json_decref(o);
    }
    if (!quiet || !complete) {
        fprintf(stderr, "rlm batch merge: %zu results from %zu files: %zu answered, %zu no answer, "
                "%zu error", present, n_files, answered, no_answer, errors);
        if (gold)
            fprintf(stderr, "; score %zu/%zu = %.1f%%", correct, gold, 100.0 * (double)correct / (double)gold);
        fprintf(stderr, "; %lld prompt + %lld completion tokens; $%.4f%s\n", prompt, completion, cost,
                cost_unknown ? " (some prices unknown)" : "");
        if (complete)
            fprintf(stderr, "rlm batch merge: complete: every task %s exactly once%s%s\n",
                    tasks_path ? "of the task file is there" : "is there", out ? "; joined in " : "",
                    out ? out : "");
        else
            fprintf(stderr, "rlm batch merge: incomplete: %zu missing, %zu duplicated, %zu unknown, "
                    "%zu bad lines (rerun the shards concerned: each resumes where it stopped)\n",
                    m.missing, m.duplicates, m.unknown, m.bad_lines);
    }
done:
    json_decref(ids);
    json_decref(m.by_id);
    json_decref(m.order);
    batch_taskfile_free(&tf);
    free(files);
    return rc;
}
