/* demo — `rlm demo`: a whole RLM run in seconds with no key and no network.
 * Generates a 10M-token OOLONG-style task, answers it with fakelm in oracle
 * mode on loopback (a simulated model), and shows progress, answer and trace. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "fakelm_proc.h"
#include "rlm.h"
#include "taskgen.h"
#include "verbose.h"
#include "util.h"

#define DEMO_TOKENS ((size_t)10 << 20)

static void usage(FILE *out)
{
    fputs("usage: rlm demo [--trace FILE]\n"
          "Runs a whole Recursive Language Model on a generated 10M-token input (OOLONG-style:\n"
          "count the instances of a label among ~480,000 lines), offline, with no API key. The\n"
          "model is SIMULATED: fakelm, started on 127.0.0.1, plays a scripted root model and\n"
          "answers sub-calls from the task's answer key. The engine, sandbox and dispatcher are\n"
          "the real ones. Prints the answer next to the gold one. Everything it generates is\n"
          "removed afterwards; --trace FILE keeps the run's trace (about 17 MB) in FILE.\n",
          out);
}

/* Removes dir and the files in it (the demo makes no subdirectories). */
static void remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4400];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int cmd_demo(int argc, char **argv)
{
    size_t tokens = DEMO_TOKENS;
    const char *keep_trace = NULL;
    for (int i = 1; i < argc; i++) {
        /* --tokens is hidden: the tests run a small demo. */
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc && parse_size(argv[i + 1], &tokens) == 0 &&
            tokens >= 1024) {
            i++;
        } else if (strcmp(argv[i], "--trace") == 0 && i + 1 < argc) {
            keep_trace = argv[++i];
        } else {
            int help = strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
            usage(help ? stdout : stderr);
            return help ? 0 : 2;
        }
    }
    const char *tmp = getenv("TMPDIR");
    char dir[4096], path[4300], err[4096] = "", url[64];
    snprintf(dir, sizeof dir, "%s/rlm-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    fakelm_proc server = {0};
    rlm_config *cfg = NULL;
    rlm *r = NULL;
    cli_live *live = NULL;
    char *answer = NULL;
    json_t *task = NULL, *report = NULL;
    int rc = 4;

    fputs("rlm demo: SIMULATED MODEL (fakelm oracle) - no real LM is called, no key, no network.\n", stdout);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "rlm demo: cannot create a temporary directory: %s\n", strerror(errno));
        return 4;
    }
    printf("generating a %zuM-token OOLONG-style task in %s ...\n", tokens >> 20, dir);
    fflush(stdout);
    task_spec spec = {.family = TASK_OOLONG, .seed = 1, .tokens = tokens, .depth = -1, .variant = 0};
    if (taskgen_write(&spec, dir, err, sizeof err) != 0)
        goto fail;
    snprintf(path, sizeof path, "%s/task.json", dir);
    if (!(task = json_load_file(path, 0, NULL))) {
        snprintf(err, sizeof err, "cannot read %.3000s", path);
        goto fail;
    }
    if (fakelm_proc_start(&server, dir, -1, err, sizeof err) != 0)
        goto fail;
    snprintf(url, sizeof url, "http://127.0.0.1:%ld/v1", server.port);
    /* A trace file only where the user asked for one: the run log keeps the
     * trace anyway (unless RLM_LOG=0). */
    if (!(cfg = rlm_config_new()) || rlm_config_set(cfg, "base_url", url) != RLM_OK ||
        rlm_config_set(cfg, "model", "fakelm") != RLM_OK || rlm_config_set(cfg, "api_key", "fakelm") != RLM_OK ||
        rlm_config_set(cfg, "provider", "openai") != RLM_OK ||
        (keep_trace && rlm_config_set(cfg, "trace", keep_trace) != RLM_OK)) {
        snprintf(err, sizeof err, "cannot configure the run");
        goto fail;
    }
    rlm_config_set(cfg, "mode", "rlm"); /* a small --tokens demo still shows the RLM loop */
    cli_log_setup(cfg, "demo", 0);
    if (rlm_new(cfg, &r) != RLM_OK) {
        snprintf(err, sizeof err, "%s", r ? rlm_errmsg(r) : "out of memory");
        goto fail;
    }
    snprintf(path, sizeof path, "%s/context.txt", dir);
    if (rlm_set_context_file(r, path) != RLM_OK) {
        snprintf(err, sizeof err, "%s", rlm_errmsg(r));
        goto fail;
    }
    const char *question = json_string_value(json_object_get(task, "question"));
    const char *gold = json_string_value(json_object_get(task, "gold"));
    const char *scoring = json_string_value(json_object_get(task, "scoring"));
    printf("input: %lld characters, %lld lines (about %lld tokens)\nquestion: %s\n",
           (long long)json_integer_value(json_object_get(task, "chars")),
           (long long)json_integer_value(json_object_get(task, "lines")),
           (long long)json_integer_value(json_object_get(task, "tokens")), question ? question : "");
    fflush(stdout);
    /* The demo exists to show what the root model does: its turns and code
     * go to stderr as they happen (the progress line only on a terminal). */
    live = cli_live_new(isatty(STDERR_FILENO), 1, isatty(STDERR_FILENO));
    cli_live_attach(live, r);
    cli_live_begin(live);
    rlm_status st = rlm_ask(r, question ? question : "", &answer);
    cli_live_end(live);
    const char *text = rlm_report_json(r);
    report = text ? json_loads(text, 0, NULL) : NULL;
    double score = taskgen_score(scoring ? scoring : "exact", gold ? gold : "", answer);
    printf("\nanswer:   %s\ngold:     %s\nscore:    %.3f (%s)\n", answer ? answer : "(none)", gold ? gold : "",
           score, scoring ? scoring : "exact");
    printf("run:      %lld root turns, %lld sub-calls (at most %lld in flight), %.2f s\n",
           (long long)json_integer_value(json_object_get(report, "iterations")),
           (long long)json_integer_value(json_object_get(report, "sub_calls")),
           (long long)json_integer_value(json_object_get(report, "max_in_flight")),
           json_number_value(json_object_get(report, "elapsed_seconds")));
    json_t *log_id = json_object_get(report, "log_id");
    if (keep_trace)
        printf("trace:    %s (rlm view %s --open shows it in a browser)\n", keep_trace, keep_trace);
    else if (json_is_integer(log_id))
        printf("trace:    in the run log (rlm view %lld --open shows it in a browser)\n",
               (long long)json_integer_value(log_id));
    else
        printf("trace:    not kept (rlm demo --trace FILE keeps it)\n");
    puts("(simulated model: fakelm played the root and answered sub-calls from the answer key)");
    if (st != RLM_OK && st != RLM_NO_ANSWER)
        fprintf(stderr, "rlm demo: %s\n", rlm_errmsg(r));
    rc = score >= 1.0 ? 0 : 1;
fail:
    if (rc == 4)
        fprintf(stderr, "rlm demo: %s\n", err);
    rlm_string_free(answer);
    rlm_free(r);
    cli_live_free(live);
    rlm_config_free(cfg);
    fakelm_proc_stop(&server);
    json_decref(task);
    json_decref(report);
    /* Everything generated goes: it is large and made again by the next
     * demo. Only the trace the user asked for stays, where they asked. */
    remove_flat_dir(dir);
    return rc;
}
