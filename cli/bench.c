/* bench — `rlm bench run` generates the benchmark tasks of a suite (taskgen),
 * runs each through the public API against any endpoint (or a fakelm oracle it
 * starts on loopback), scores it and writes one JSON line per task; `rlm bench
 * report` turns those lines into a table and an SVG chart. docs/bench.md. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "fakelm_proc.h"
#include "rlm.h"
#include "taskgen.h"
#include "util.h"


#define BENCH_MAX_TASKS 256
#define BENCH_MAX_SIZES 16
#define BENCH_MAX_SEEDS 100

/* One task of a suite: the family and its size (lines win over tokens). */
typedef struct suite_task {
    task_family family;
    size_t tokens, lines;
    int subcalls;
} suite_task;

#define K 1024u
#define M (1024u * 1024u)
static const struct {
    const char *name;
    suite_task tasks[12];
    size_t ntasks;
    long fake_latency_ms;
} suites[] = {
    {"sniah", {{TASK_SNIAH, 8 * K, 0, 0}, {TASK_SNIAH, 64 * K, 0, 0}, {TASK_SNIAH, 1 * M, 0, 0},
               {TASK_SNIAH, 10 * M, 0, 0}}, 4, 0},
    {"oolong", {{TASK_OOLONG, 8 * K, 0, 0}, {TASK_OOLONG, 64 * K, 0, 0}, {TASK_OOLONG, 1 * M, 0, 0}}, 3, 0},
    {"pairs", {{TASK_PAIRS, 8 * K, 0, 0}, {TASK_PAIRS, 64 * K, 0, 0}, {TASK_PAIRS, 256 * K, 0, 0}}, 3, 0},
    {"docqa", {{TASK_DOCQA, 64 * K, 0, 0}, {TASK_DOCQA, 1 * M, 0, 0}, {TASK_DOCQA, 8 * M, 0, 0}}, 3, 0},
    {"smoke", {{TASK_SNIAH, 8 * K, 0, 0}, {TASK_SNIAH, 64 * K, 0, 1}, {TASK_OOLONG, 8 * K, 0, 0},
               {TASK_PAIRS, 8 * K, 0, 0}, {TASK_DOCQA, 64 * K, 0, 0}}, 5, 0},
    {"perf", {{TASK_SNIAH, 1 * M, 0, 0}, {TASK_SNIAH, 10 * M, 0, 0}, {TASK_SNIAH, 100 * M, 0, 0},
              {TASK_OOLONG, 0, 2000, 0}, {TASK_OOLONG, 0, 20000, 0}, {TASK_OOLONG, 0, 430000, 0},
              {TASK_SNIAH, 10 * M, 0, 1}}, 7, 200},
};
#undef K
#undef M

/* Endpoint and run options passed straight to rlm_config_set. */
static const struct {
    const char *flag, *key;
} passthrough[] = {
    {"--base-url", "base_url"}, {"--api-key", "api_key"}, {"--provider", "provider"},
    {"--model", "model"}, {"--sub-model", "sub_model"}, {"--sub-base-url", "sub_base_url"},
    {"--sub-api-key", "sub_api_key"}, {"--sub-provider", "sub_provider"},
    {"--concurrency", "concurrency"}, {"--request-timeout", "request_timeout"},
    {"--max-retries", "max_retries"}, {"--max-iterations", "max_iterations"},
    {"--cell-timeout", "cell_timeout"}, {"--sandbox-memory", "sandbox_memory"},
    {"--max-cost", "max_cost"}, {"--max-tokens", "max_tokens"}, {"--max-time", "max_time"},
    {"--max-subcalls", "max_subcalls"}, {"--prices", "prices"}, {"--rpm", "rpm"}, {"--tpm", "tpm"},
    {"--max-output-tokens", "max_output_tokens"}, {"--reasoning-effort", "reasoning_effort"},
    {"--temperature", "temperature"}, {"--mode", "mode"},
};

static void usage(FILE *out)
{
    fputs("usage: rlm bench run --suite NAME [--sizes N,N..] [--seeds N] [--out DIR] [--fake]\n"
          "                     [--latency-ms N] [--keep-tasks] [endpoint options as rlm ask]\n"
          "       rlm bench report RESULTS.jsonl [--svg FILE]\n"
          "\n"
          "Suites: sniah, oolong, pairs, docqa (multi-hop document QA), smoke (the smallest\n"
          "of each), perf (1M-100M S-NIAH, 2K-430K-line OOLONG, sub-call-heavy S-NIAH).\n"
          "  --sizes N,N..   input sizes in tokens (K, M, G suffixes) for every family of the suite\n"
          "  --seeds N       seeds 1..N per task (default 1)\n"
          "  --out DIR       where tasks and results.jsonl go (default bench-out)\n"
          "  --fake          answer with fakelm in oracle mode on loopback (no key, no network);\n"
          "                  --latency-ms sets its delay (default 0; 200 for perf)\n"
          "  --keep-tasks    keep the generated task files (removed after each run otherwise)\n"
          "Endpoint options: --base-url --api-key --provider --model --sub-model --sub-base-url\n"
          "--sub-api-key --sub-provider "
          "--concurrency --request-timeout --max-retries --max-iterations --cell-timeout\n"
          "--sandbox-memory --max-cost --max-tokens --max-time --max-subcalls --prices --rpm --tpm\n"
          "--max-output-tokens --reasoning-effort --temperature --mode (default rlm).\n"
          "\n"
          "Writes DIR/results.jsonl (one line per task: family, tokens, seed, score, cost_usd,\n"
          "tokens used, wall_seconds, calls, iterations, answer, gold) and prints a summary table.\n"
          "A task that fails to run (endpoint unreachable, model error) is said on stderr, shown\n"
          "as ERROR in the table, a cross in the chart, and not counted in the mean score.\n"
          "Exit: 0 every task ran, 1 some task failed to run (run and report), 2 usage error.\n",
          out);
}

/* ------------------------------------------------------------------- run */

typedef struct run_options {
    const char *suite, *out;
    size_t sizes[BENCH_MAX_SIZES], nsizes;
    long seeds, latency_ms;
    int fake, keep, model_set;
    unsigned given;             /* CLI_GIVEN_* endpoint flags given */
    rlm_config *cfg;
} run_options;

static int parse_sizes(const char *list, run_options *o)
{
    char item[64];
    const char *p = list;
    o->nsizes = 0;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof item || o->nsizes == BENCH_MAX_SIZES)
            return -1;
        memcpy(item, p, n);
        item[n] = '\0';
        if (parse_size(item, &o->sizes[o->nsizes]) != 0 || o->sizes[o->nsizes] == 0)
            return -1;
        o->nsizes++;
        p += n + (p[n] == ',');
    }
    return o->nsizes ? 0 : -1;
}

/* The suite's tasks, or with --sizes every family of the suite at each size. */
static size_t suite_expand(const run_options *o, size_t suite, suite_task *out)
{
    size_t n = 0;
    if (!o->nsizes) {
        for (size_t i = 0; i < suites[suite].ntasks; i++)
            out[n++] = suites[suite].tasks[i];
        return n;
    }
    for (size_t i = 0; i < suites[suite].ntasks; i++) {
        const suite_task *t = &suites[suite].tasks[i];
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen = seen || (suites[suite].tasks[j].family == t->family &&
                            suites[suite].tasks[j].subcalls == t->subcalls);
        for (size_t s = 0; !seen && s < o->nsizes && n < BENCH_MAX_TASKS; s++)
            out[n++] = (suite_task){t->family, o->sizes[s], 0, t->subcalls};
    }
    return n;
}

static const char *task_label(const suite_task *t, char *out, size_t outlen)
{
    if (t->lines)
        snprintf(out, outlen, "%s%s-%zulines", taskgen_family_name(t->family), t->subcalls ? "-subcalls" : "",
                 t->lines);
    else
        snprintf(out, outlen, "%s%s-%zuk", taskgen_family_name(t->family), t->subcalls ? "-subcalls" : "",
                 t->tokens / 1024);
    return out;
}

static void remove_task_files(const char *dir)
{
    static const char *const files[] = {"context.txt", "question.txt", "gold.txt", "key.jsonl", "task.json",
                                        "script.json", "docs.jsonl", "fakelm.log", "fakelm.port"};
    char path[4096];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Sums the report's per-model usage into calls and tokens. */
static void usage_totals(json_t *report, json_int_t *calls, json_int_t *prompt, json_int_t *completion)
{
    const char *model;
    json_t *u;
    *calls = *prompt = *completion = 0;
    json_object_foreach(json_object_get(report, "usage"), model, u) {
        *calls += json_integer_value(json_object_get(u, "calls"));
        *prompt += json_integer_value(json_object_get(u, "prompt_tokens"));
        *completion += json_integer_value(json_object_get(u, "completion_tokens"));
    }
}

/* Runs one generated task through the public API; returns its result line. */
static json_t *run_task(const run_options *o, const suite_task *t, long seed, const char *dir, char *err,
                        size_t errlen)
{
    json_t *task = NULL, *result = NULL, *report = NULL;
    fakelm_proc fs = {0};
    rlm_config *cfg = NULL;
    rlm *r = NULL;
    char *answer = NULL, path[4096];
    task_spec spec = {.family = t->family, .seed = (uint64_t)seed, .tokens = t->tokens ? t->tokens : 8192,
                      .lines = t->lines, .depth = -1, .variant = -1, .subcalls = t->subcalls};

    if (taskgen_write(&spec, dir, err, errlen) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/task.json", dir);
    json_error_t jerr;
    if (!(task = json_load_file(path, 0, &jerr))) {
        snprintf(err, errlen, "%.600s: %.200s", path, jerr.text);
        goto fail;
    }
    cfg = rlm_config_new();
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < sizeof passthrough / sizeof passthrough[0]; i++) {
        const char *v = rlm_config_get(o->cfg, passthrough[i].key);
        if (v)
            rlm_config_set(cfg, passthrough[i].key, v);
    }
    if (o->fake) {
        char url[64];
        if (fakelm_proc_start(&fs, dir, o->latency_ms, err, errlen) != 0)
            goto fail;
        snprintf(url, sizeof url, "http://127.0.0.1:%ld/v1", fs.port);
        rlm_config_set(cfg, "base_url", url);
        rlm_config_set(cfg, "sub_base_url", url);
        rlm_config_set(cfg, "provider", "openai");
        rlm_config_set(cfg, "api_key", "fakelm");
    }
    cli_log_setup(cfg, "bench", 0);
    snprintf(path, sizeof path, "%s/context.txt", dir);
    if (rlm_new(cfg, &r) != RLM_OK || rlm_set_context_file(r, path) != RLM_OK) {
        snprintf(err, errlen, "%s", r ? rlm_errmsg(r) : "out of memory");
        goto fail;
    }
    const char *question = json_string_value(json_object_get(task, "question"));
    const char *gold = json_string_value(json_object_get(task, "gold"));
    const char *scoring = json_string_value(json_object_get(task, "scoring"));
    double started = clock_now();
    rlm_status st = rlm_ask(r, question ? question : "", &answer);
    double wall = clock_now() - started;
    const char *report_text = rlm_report_json(r);
    report = report_text ? json_loads(report_text, 0, NULL) : NULL;
    json_int_t calls, prompt, completion;
    usage_totals(report, &calls, &prompt, &completion);
    double score = taskgen_score(scoring ? scoring : "exact", gold ? gold : "", answer);
    json_t *cost = json_object_get(report, "cost_usd");
    result = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:f,s:s,s:O,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:s?,s:s,s:s}",
                       "family", taskgen_family_name(t->family), "subcalls", t->subcalls,
                       "size", (json_int_t)(t->lines ? t->lines : t->tokens),
                       "tokens", json_integer_value(json_object_get(task, "tokens")),
                       "chars", json_integer_value(json_object_get(task, "chars")),
                       "lines", json_integer_value(json_object_get(task, "lines")), "seed", (json_int_t)seed,
                       "score", score, "status", rlm_status_name(st), "cost_usd", cost ? cost : json_null(),
                       "prompt_tokens", prompt, "completion_tokens", completion, "wall_seconds", wall,
                       "calls", calls, "sub_calls", json_integer_value(json_object_get(report, "sub_calls")),
                       "iterations", json_integer_value(json_object_get(report, "iterations")),
                       "max_in_flight", json_integer_value(json_object_get(report, "max_in_flight")),
                       "answer", answer, "gold", gold ? gold : "", "scoring", scoring ? scoring : "exact");
    if (result && st != RLM_OK && st != RLM_NO_ANSWER)
        json_object_set_new(result, "error", json_string(rlm_errmsg(r)));
fail:
    rlm_string_free(answer);
    rlm_free(r);
    rlm_config_free(cfg);
    fakelm_proc_stop(&fs);
    json_decref(task);
    json_decref(report);
    if (!o->keep)
        remove_task_files(dir);
    return result;
}

static const char *family_of(json_t *row)
{
    const char *family = json_string_value(json_object_get(row, "family"));
    return family ? family : "";
}

/* Why a task failed to run (the endpoint unreachable, the model refused...),
 * or NULL when it ran (an answer or not). Such a row's score is not a
 * measurement and is never shown as one. */
static const char *row_error(json_t *row)
{
    return json_string_value(json_object_get(row, "error"));
}

static size_t failed_rows(json_t *rows)
{
    size_t n = 0, i;
    json_t *row;
    json_array_foreach(rows, i, row)
        n += row_error(row) != NULL;
    return n;
}

/* s shortened to one line for the table: newlines shown as " | ". */
static void one_line(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    if (!s)
        s = "(none)";
    for (; *s && n + 4 < outlen; s++) {
        if (*s == '\n' || *s == '\r') {
            memcpy(out + n, " | ", 3);
            n += 3;
        } else {
            out[n++] = *s;
        }
    }
    if (*s && n >= 3)
        memcpy(out + n - 3, "...", 3);
    out[n] = '\0';
}

static void table_header(FILE *out)
{
    fprintf(out, "%-16s %10s %5s %6s %7s %6s %5s %9s %9s  %s\n", "task", "tokens", "seed", "score", "calls",
            "inflt", "iters", "wall_s", "cost_usd", "answer / gold");
}

static void table_row(FILE *out, json_t *row)
{
    char name[64], cost[32] = "-";
    snprintf(name, sizeof name, "%s%s", json_string_value(json_object_get(row, "family")),
             json_is_true(json_object_get(row, "subcalls")) ? "-subcalls" : "");
    if (json_is_number(json_object_get(row, "cost_usd")))
        snprintf(cost, sizeof cost, "%.4f", json_number_value(json_object_get(row, "cost_usd")));
    char answer[40], gold[40];
    if (row_error(row)) {
        char why[80];
        one_line(row_error(row), why, sizeof why);
        fprintf(out, "%-16s %10lld %5lld %6s  ERROR: %s\n", name,
                (long long)json_integer_value(json_object_get(row, "tokens")),
                (long long)json_integer_value(json_object_get(row, "seed")), "-", why);
        return;
    }
    one_line(json_string_value(json_object_get(row, "answer")), answer, sizeof answer);
    one_line(json_string_value(json_object_get(row, "gold")), gold, sizeof gold);
    fprintf(out, "%-16s %10lld %5lld %6.3f %7lld %6lld %5lld %9.2f %9s  %s / %s\n", name,
            (long long)json_integer_value(json_object_get(row, "tokens")),
            (long long)json_integer_value(json_object_get(row, "seed")),
            json_number_value(json_object_get(row, "score")),
            (long long)json_integer_value(json_object_get(row, "calls")),
            (long long)json_integer_value(json_object_get(row, "max_in_flight")),
            (long long)json_integer_value(json_object_get(row, "iterations")),
            json_number_value(json_object_get(row, "wall_seconds")), cost, answer, gold);
}

/* Mean score per family, after the table. */
static void table_summary(FILE *out, json_t *rows)
{
    const char *fams[] = {"sniah", "oolong", "pairs", "docqa"};
    fputs("mean score:", out);
    for (size_t f = 0; f < 4; f++) {
        double sum = 0;
        size_t n = 0, i;
        json_t *row;
        json_array_foreach(rows, i, row) {
            if (strcmp(family_of(row), fams[f]) == 0 && !row_error(row)) {
                sum += json_number_value(json_object_get(row, "score"));
                n++;
            }
        }
        if (n)
            fprintf(out, "  %s %.3f (%zu)", fams[f], sum / (double)n, n);
    }
    fputs("\n", out);
    size_t failed = failed_rows(rows);
    if (failed)
        fprintf(out, "%zu of %zu tasks failed to run (marked above): their scores are not counted\n",
                failed, json_array_size(rows));
}

static int run_options_parse(run_options *o, int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(flag, "--fake") == 0) {
            o->fake = 1;
            continue;
        }
        if (strcmp(flag, "--keep-tasks") == 0) {
            o->keep = 1;
            continue;
        }
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (!value) {
            fprintf(stderr, "rlm bench: %s needs a value (try rlm bench --help)\n", flag);
            return -1;
        }
        i++;
        int ok = 1;
        if (strcmp(flag, "--suite") == 0) {
            o->suite = value;
        } else if (strcmp(flag, "--out") == 0) {
            o->out = value;
        } else if (strcmp(flag, "--sizes") == 0) {
            ok = parse_sizes(value, o) == 0;
        } else if (strcmp(flag, "--seeds") == 0) {
            ok = parse_long(value, &o->seeds) == 0 && o->seeds >= 1 && o->seeds <= BENCH_MAX_SEEDS;
        } else if (strcmp(flag, "--latency-ms") == 0) {
            ok = parse_long(value, &o->latency_ms) == 0 && o->latency_ms >= 0 && o->latency_ms <= 600000;
        } else {
            size_t k = 0, n = sizeof passthrough / sizeof passthrough[0];
            while (k < n && strcmp(flag, passthrough[k].flag) != 0)
                k++;
            if (k == n) {
                fprintf(stderr, "rlm bench: unknown option %s (try rlm bench --help)\n", flag);
                return -1;
            }
            o->model_set |= strcmp(passthrough[k].key, "model") == 0;
            const char *key = passthrough[k].key;
            o->given |= !strcmp(key, "model") ? CLI_GIVEN_MODEL
                      : !strcmp(key, "base_url") ? CLI_GIVEN_BASE_URL
                      : !strcmp(key, "api_key") ? CLI_GIVEN_API_KEY
                      : !strcmp(key, "sub_base_url") ? CLI_GIVEN_SUB_BASE_URL
                      : !strcmp(key, "sub_api_key") ? CLI_GIVEN_SUB_API_KEY : 0;
            if (rlm_config_set(o->cfg, passthrough[k].key, value) != RLM_OK) {
                fprintf(stderr, "rlm bench: %s: %s\n", flag, rlm_config_errmsg(o->cfg));
                return -1;
            }
        }
        if (!ok) {
            fprintf(stderr, "rlm bench: bad value for %s: %s\n", flag, value);
            return -1;
        }
    }
    return 0;
}

static int bench_run(int argc, char **argv)
{
    run_options o = {.out = "bench-out", .seeds = 1, .latency_ms = -1};
    suite_task *tasks = NULL;
    json_t *rows = json_array();
    FILE *results = NULL;
    int rc = 2, failures = 0;
    size_t suite = 0, nsuites = sizeof suites / sizeof suites[0];
    char path[4096], err[1024];

    if (!(o.cfg = rlm_config_new()) || !rows)
        goto done;
    /* Benchmarks measure the RLM loop, also on inputs small enough for a
     * direct call; --mode overrides (an engine without "mode" refuses it: fine). */
    rlm_config_set(o.cfg, "mode", "rlm");
    int parsed = run_options_parse(&o, argc, argv);
    if (parsed != 0) {
        rc = parsed > 0 ? 0 : 2;
        goto done;
    }
    char key_note[1024];
    if (!o.fake && cli_apply_environment(o.cfg, o.given, key_note, sizeof key_note) != 0)
        goto done;
    while (o.suite && suite < nsuites && strcmp(suites[suite].name, o.suite) != 0)
        suite++;
    if (!o.suite || suite == nsuites) {
        fputs("rlm bench: --suite sniah|oolong|pairs|docqa|smoke|perf is required\n", stderr);
        goto done;
    }
    if (o.latency_ms < 0)
        o.latency_ms = suites[suite].fake_latency_ms;
    if (o.fake && !o.model_set) /* no price: a simulated run costs nothing */
        rlm_config_set(o.cfg, "model", "fakelm");
    tasks = calloc(BENCH_MAX_TASKS, sizeof *tasks);
    if (!tasks)
        goto done;
    size_t ntasks = suite_expand(&o, suite, tasks);
    char err_dir[512];
    if (mkdir(o.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "rlm bench: cannot create %s: %s\n", o.out, strerror(errno));
        goto done;
    }
    snprintf(path, sizeof path, "%s/results.jsonl", o.out);
    if (!(results = fopen(path, "we"))) {
        fprintf(stderr, "rlm bench: cannot write %s: %s\n", path, strerror(errno));
        goto done;
    }
    fprintf(stderr, "rlm bench: suite %s, %zu task(s) x %ld seed(s)%s -> %s\n", o.suite,
            ntasks, o.seeds, o.fake ? ", fakelm oracle (simulated model)" : "", path);
    for (size_t i = 0; i < ntasks; i++) {
        for (long seed = 1; seed <= o.seeds; seed++) {
            char label[96];
            task_label(&tasks[i], label, sizeof label);
            snprintf(err_dir, sizeof err_dir, "%s/%s-s%ld", o.out, label, seed);
            fprintf(stderr, "rlm bench: %s seed %ld ...\n", label, seed);
            err[0] = '\0';
            json_t *row = run_task(&o, &tasks[i], seed, err_dir, err, sizeof err);
            if (!row) {
                fprintf(stderr, "rlm bench: %s seed %ld: %s\n", label, seed, err);
                failures++;
                continue;
            }
            if (row_error(row)) {
                fprintf(stderr, "rlm bench: %s seed %ld failed: %s: %s\n", label, seed,
                        json_string_value(json_object_get(row, "status")), row_error(row));
                failures++;
            }
            char *line = json_dumps(row, JSON_COMPACT);
            if (line) {
                fprintf(results, "%s\n", line);
                fflush(results);
                free(line);
            }
            json_array_append_new(rows, row);
        }
    }
    table_header(stdout);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        table_row(stdout, row);
    table_summary(stdout, rows);
    rc = failures ? 1 : 0;
done:
    if (results)
        fclose(results);
    free(tasks);
    json_decref(rows);
    rlm_config_free(o.cfg);
    return rc;
}

/* ---------------------------------------------------------------- report */

/* One family's colour in the chart. */
static const char *family_colour(const char *family)
{
    if (strcmp(family, "sniah") == 0)
        return "#1f77b4";
    if (strcmp(family, "oolong") == 0)
        return "#ff7f0e";
    if (strcmp(family, "pairs") == 0)
        return "#2ca02c";
    return "#d62728";
}

/* A panel: y against log10(tokens), one polyline per family in row order. */
static void svg_panel(FILE *f, json_t *rows, double top, const char *title, const char *field, double ymax,
                      double xmin, double xmax)
{
    const double left = 70, width = 560, height = 200;
    fprintf(f, "<text x='%g' y='%g' font-size='14'>%s</text>\n", left, top - 8, title);
    fprintf(f, "<rect x='%g' y='%g' width='%g' height='%g' fill='none' stroke='#888'/>\n", left, top, width,
            height);
    for (int k = 0; k <= 4; k++) {
        double y = top + height - height * k / 4.0;
        fprintf(f, "<text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>\n", left - 4, y + 3,
                ymax * k / 4.0);
    }
    for (double e = ceil(xmin); e <= xmax; e++) {
        double x = left + width * (e - xmin) / (xmax - xmin);
        fprintf(f, "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#ddd'/>\n", x, top, x, top + height);
        fprintf(f, "<text x='%g' y='%g' font-size='10' text-anchor='middle'>1e%.0f</text>\n", x,
                top + height + 14, e);
    }
    const char *fams[] = {"sniah", "oolong", "pairs", "docqa"};
    for (size_t fi = 0; fi < 4; fi++) {
        size_t i;
        json_t *row;
        fprintf(f, "<polyline fill='none' stroke='%s' points='", family_colour(fams[fi]));
        json_array_foreach(rows, i, row) {
            if (strcmp(family_of(row), fams[fi]) != 0 || row_error(row))
                continue;
            double t = (double)json_integer_value(json_object_get(row, "tokens"));
            double v = json_number_value(json_object_get(row, field));
            double x = left + width * (log10(t > 1 ? t : 1) - xmin) / (xmax - xmin);
            double y = top + height - height * (ymax > 0 ? v / ymax : 0);
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fputs("'/>\n", f);
        json_array_foreach(rows, i, row) {
            if (strcmp(family_of(row), fams[fi]) != 0)
                continue;
            double t = (double)json_integer_value(json_object_get(row, "tokens"));
            double x = left + width * (log10(t > 1 ? t : 1) - xmin) / (xmax - xmin);
            if (row_error(row)) {
                /* A task that failed to run is a cross on the axis, not a 0. */
                double y = top + height;
                fprintf(f, "<path class='failed' d='M%.1f %.1f l8 -8 m0 8 l-8 -8' stroke='%s' "
                        "stroke-width='2'><title>%s failed</title></path>\n",
                        x - 4, y + 4, family_colour(fams[fi]), family_of(row));
                continue;
            }
            double v = json_number_value(json_object_get(row, field));
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>\n", x,
                    top + height - height * (ymax > 0 ? v / ymax : 0), family_colour(fams[fi]));
        }
        fprintf(f, "<text x='%g' y='%g' font-size='11' fill='%s'>%s</text>\n", left + width + 10,
                top + 14 + 14 * (double)fi, family_colour(fams[fi]), fams[fi]);
    }
    if (failed_rows(rows))
        fprintf(f, "<text x='%g' y='%g' font-size='11'>x: failed to run</text>\n", left + width + 10,
                top + 14 + 14 * 4.0);
}

/* Score (top) and cost (bottom; calls when no price is known) against input
 * length in tokens, log scale. Hand-written SVG: no plotting dependency. */
static int svg_write(const char *path, json_t *rows)
{
    double xmin = 1e300, xmax = 0, cost_max = 0, calls_max = 0;
    int have_cost = 0;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        double t = (double)json_integer_value(json_object_get(row, "tokens"));
        t = log10(t > 1 ? t : 1);
        xmin = t < xmin ? t : xmin;
        xmax = t > xmax ? t : xmax;
        if (json_is_number(json_object_get(row, "cost_usd"))) {
            have_cost = 1;
            cost_max = fmax(cost_max, json_number_value(json_object_get(row, "cost_usd")));
        }
        calls_max = fmax(calls_max, (double)json_integer_value(json_object_get(row, "calls")));
    }
    xmin = floor(xmin);
    xmax = ceil(xmax) > xmin ? ceil(xmax) : xmin + 1;
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    fputs("<svg xmlns='http://www.w3.org/2000/svg' width='720' height='560' font-family='sans-serif'>\n"
          "<rect width='100%' height='100%' fill='white'/>\n", f);
    svg_panel(f, rows, 40, "score against input length (tokens)", "score", 1.0, xmin, xmax);
    if (have_cost)
        svg_panel(f, rows, 320, "cost (USD) against input length (tokens)", "cost_usd",
                  cost_max > 0 ? cost_max : 1, xmin, xmax);
    else
        svg_panel(f, rows, 320, "model calls against input length (tokens; no prices known)", "calls",
                  calls_max > 0 ? calls_max : 1, xmin, xmax);
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

static int bench_report(int argc, char **argv)
{
    const char *input = NULL, *svg = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--svg") == 0 && i + 1 < argc) {
            svg = argv[++i];
        } else if (argv[i][0] != '-' && !input) {
            input = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!input) {
        usage(stderr);
        return 2;
    }
    FILE *f = fopen(input, "re");
    if (!f) {
        fprintf(stderr, "rlm bench: cannot read %s: %s\n", input, strerror(errno));
        return 2;
    }
    json_t *rows = json_array();
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    int rc = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        json_t *row = json_loads(line, 0, NULL);
        if (!json_is_object(row)) {
            fprintf(stderr, "rlm bench: %s line %zu is not a JSON object; skipped\n", input, lineno);
            json_decref(row);
            continue;
        }
        json_array_append_new(rows, row);
    }
    free(line);
    fclose(f);
    table_header(stdout);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        table_row(stdout, row);
    table_summary(stdout, rows);
    if (svg && svg_write(svg, rows) != 0) {
        fprintf(stderr, "rlm bench: cannot write %s: %s\n", svg, strerror(errno));
        rc = 1;
    }
    if (failed_rows(rows))
        rc = 1;
    json_decref(rows);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return bench_run(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return bench_report(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
