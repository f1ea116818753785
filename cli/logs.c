/* logs — `rlm logs [list] [filters] | show ID | rm ID...|--before DATE|--all`:
 * the run log (every ask, chat question, bench task and demo, recorded when
 * it ends; include/rlm.h, "The run log"). `rlm view ID` shows a logged run's
 * trace (cli/view.c). Exit 0 when done, 2 for a bad command line or a log
 * that cannot be read or has no such run (the reason on stderr). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "commands.h"
#include "rlm.h"
#include "utf8.h"

static int logs_usage(FILE *to)
{
    fputs("usage: rlm logs [list] [--search TEXT] [--model M] [--status S] [--since DATE]\n"
          "                [--until DATE] [-n N] [--json] [--log-db PATH]\n"
          "       rlm logs show ID [--json] [--log-db PATH]\n"
          "       rlm logs rm ID... | --before DATE | --all   [--log-db PATH]\n"
          "       rlm view ID [-o FILE.html] [--open]   a logged run's trace as a page\n"
          "\n"
          "Every rlm ask, chat question, bench task, demo and served request is recorded when it\n"
          "ends (unless --no-log or RLM_LOG=0): the question, the inputs' names and sizes, the\n"
          "models, the answer, status, how, turns, sub-calls, tokens, cost, time and the trace\n"
          "(compressed). A served request refused before its run is a row of status \"refused\"\n"
          "with the reason (clients that failed the server's keys are not logged).\n"
          "  list      the newest runs first (20 unless -n; --json: all fields, one JSON array);\n"
          "            --search finds TEXT in questions and answers, --model and --status match\n"
          "            exactly, --since / --until take YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time)\n"
          "  show      one run: every field and the whole answer\n"
          "  rm        remove runs by id, those started before DATE, or all\n"
          "  --log-db PATH  the log (default $XDG_DATA_HOME/rlm/logs.db, ~/.local/share/rlm/...)\n"
          "The traces kept are capped (256 MB compressed; RLM_LOG_MAX=SIZE): past it the oldest\n"
          "traces are dropped and their runs' other fields kept.\n"
          "\n"
          "Exit: 0 done, 2 bad command line, a log that cannot be read, or no such run.\n",
          to);
    return to == stdout ? EXIT_ANSWERED : EXIT_USAGE;
}

/* "2026-12-06" or "2026-12-06T14:30" (local time) as Unix time; -1 if neither. */
static double parse_date(const char *s)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M", &tm);
    if (!end || *end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || *end)
        return -1;
    tm.tm_isdst = -1;
    return (double)mktime(&tm);
}

static void format_time(char *out, size_t outlen, json_t *when)
{
    time_t t = (time_t)json_number_value(when);
    struct tm tm;
    strftime(out, outlen, "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
}

/* A text of the log on one line of the table: newlines and controls escaped, cut. */
static void put_cell(const char *text, size_t max)
{
    size_t len = text ? strlen(text) : 0;
    char *esc = utf8_escape_terminal(text ? text : "", len, &len);
    for (size_t i = 0; esc && i < len; i++)
        if (esc[i] == '\n' || esc[i] == '\t')
            esc[i] = ' ';
    size_t cut = esc ? utf8_cut(esc, len, max) : 0;
    printf("%.*s%s", (int)cut, esc ? esc : "", cut < len ? "…" : "");
    free(esc);
}

static void print_table(json_t *runs)
{
    if (json_array_size(runs) == 0) {
        puts("no runs logged");
        return;
    }
    printf("%6s  %-16s  %-6s  %-10s  %5s  %8s  %9s  %7s  %s\n", "id", "started", "from", "status",
           "turns", "sub-calls", "cost", "time", "question → answer");
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        char when[32], cost[32];
        format_time(when, sizeof when, json_object_get(r, "started"));
        json_t *c = json_object_get(r, "cost_usd");
        if (json_is_number(c))
            snprintf(cost, sizeof cost, "$%.4f", json_number_value(c));
        else
            snprintf(cost, sizeof cost, "?");
        printf("%6lld  %-16s  %-6.6s  %-10.10s  %5lld  %8lld  %9s  %6.1fs  ",
               (long long)json_integer_value(json_object_get(r, "id")), when,
               json_string_value(json_object_get(r, "command")) ? json_string_value(json_object_get(r, "command")) : "?",
               json_string_value(json_object_get(r, "status")) ? json_string_value(json_object_get(r, "status")) : "?",
               (long long)json_integer_value(json_object_get(r, "turns")),
               (long long)json_integer_value(json_object_get(r, "sub_calls")), cost,
               json_number_value(json_object_get(r, "elapsed")));
        put_cell(json_string_value(json_object_get(r, "question")), 50);
        fputs(" → ", stdout);
        put_cell(json_string_value(json_object_get(r, "answer")), 30);
        putchar('\n');
    }
}

static void print_run(json_t *r)
{
    char when[32];
    format_time(when, sizeof when, json_object_get(r, "started"));
    printf("run %lld, %s, from rlm %s\n", (long long)json_integer_value(json_object_get(r, "id")), when,
           json_string_value(json_object_get(r, "command")) ? json_string_value(json_object_get(r, "command")) : "?");
    static const char *const fields[] = {"question", "model", "sub_model", "status", "how", "error",
                                         "session", "turns", "sub_calls", "sub_calls_deduplicated",
                                         "prompt_tokens", "cached_tokens", "cache_write_tokens",
                                         "completion_tokens", "cost_usd", "cost_no_cache_usd", "elapsed",
                                         "trace_bytes", "trace_note"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(r, fields[i]);
        if (!v || json_is_null(v))
            continue;
        printf("%-18s ", fields[i]);
        if (json_is_string(v)) {
            cli_write_text(stdout, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v)) {
            printf("%lld", (long long)json_integer_value(v));
        } else {
            printf("%g", json_number_value(v));
        }
        putchar('\n');
    }
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(r, "inputs"), i, in) {
        printf("%-18s ", "input");
        const char *name = json_string_value(json_object_get(in, "name"));
        cli_write_text(stdout, name ? name : "?", name ? strlen(name) : 1);
        json_int_t bytes = json_integer_value(json_object_get(in, "bytes"));
        if (bytes >= 0)
            printf(" (%lld bytes)", (long long)bytes);
        putchar('\n');
    }
    json_t *answer = json_object_get(r, "answer");
    puts("answer:");
    if (json_is_string(answer)) {
        cli_write_text(stdout, json_string_value(answer), json_string_length(answer));
        putchar('\n');
    } else {
        puts("(none)");
    }
}

void cli_log_setup(rlm_config *cfg, const char *command, int no_log)
{
    const char *env = getenv("RLM_LOG");
    int off = no_log || (env && (strcmp(env, "0") == 0 || strcasecmp(env, "no") == 0 ||
                                 strcasecmp(env, "off") == 0 || strcasecmp(env, "false") == 0));
    rlm_config_set(cfg, "log", off ? "0" : "1");
    rlm_config_set(cfg, "log_command", command);
    const char *max = getenv("RLM_LOG_MAX");
    if (max && max[0] && rlm_config_set(cfg, "log_max", max) != RLM_OK)
        fprintf(stderr, "rlm: warning: RLM_LOG_MAX: %s (the default cap is kept)\n", rlm_config_errmsg(cfg));
}

/* The --log-db option, shared by every form. */
static rlm_config *logs_config(const char *db)
{
    rlm_config *cfg = rlm_config_new();
    if (cfg && db && rlm_config_set(cfg, "log_db", db) != RLM_OK) {
        rlm_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static int fail(rlm_status st, const char *why)
{
    fprintf(stderr, "rlm logs: %s\n", why ? why : "out of memory");
    return st == RLM_ERR_NOMEM ? EXIT_INTERNAL : EXIT_USAGE;
}

int cmd_logs(int argc, char **argv)
{
    const char *db = NULL, *sub = "list";
    int json = 0, all = 0;
    json_t *filter = json_object(), *ids = json_array();
    double before = 0;
    int rc = EXIT_USAGE;
    int first = 1;
    if (argc > 1 && (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "show") == 0 || strcmp(argv[1], "rm") == 0)) {
        sub = argv[1];
        first = 2;
    }
    json_object_set_new(filter, "limit", json_integer(20));
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            rc = logs_usage(stdout);
            goto done;
        } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            json = 1;
        } else if (strcmp(a, "--all") == 0) {
            all = 1;
        } else if (strcmp(a, "--log-db") == 0 && value) {
            db = argv[++i];
        } else if ((strcmp(a, "--search") == 0 || strcmp(a, "--model") == 0 || strcmp(a, "--status") == 0) && value) {
            json_object_set_new(filter, strcmp(a, "--search") == 0 ? "text" : a + 2, json_string(value));
            i++;
        } else if ((strcmp(a, "--since") == 0 || strcmp(a, "--until") == 0 || strcmp(a, "--before") == 0) && value) {
            double t = parse_date(value);
            if (t < 0) {
                fprintf(stderr, "rlm logs: %s takes YYYY-MM-DD or YYYY-MM-DDTHH:MM, not '%s'\n", a, value);
                goto done;
            }
            if (strcmp(a, "--before") == 0)
                before = t;
            else
                json_object_set_new(filter, a + 2, json_real(t));
            i++;
        } else if (strcmp(a, "-n") == 0 && value) {
            char *end;
            long n = strtol(value, &end, 10);
            if (*end || n <= 0) {
                fprintf(stderr, "rlm logs: -n takes a positive number, not '%s'\n", value);
                goto done;
            }
            json_object_set_new(filter, "limit", json_integer(n));
            i++;
        } else if (a[0] != '-' && strcmp(sub, "list") != 0) {
            char *end;
            long long id = strtoll(a, &end, 10);
            if (*end || id <= 0) {
                fprintf(stderr, "rlm logs: '%s' is no run id (rlm logs lists them)\n", a);
                goto done;
            }
            json_array_append_new(ids, json_integer(id));
        } else {
            fprintf(stderr, "rlm logs: unknown argument '%s'\n", a);
            logs_usage(stderr);
            goto done;
        }
    }
    rlm_config *cfg = logs_config(db);
    if (!cfg) {
        fprintf(stderr, "rlm logs: bad --log-db\n");
        goto done;
    }
    char *out = NULL;
    rlm_status st;
    if (strcmp(sub, "list") == 0) {
        char *f = json_dumps(filter, JSON_COMPACT);
        st = rlm_logs_list(cfg, f, &out);
        free(f);
        if (st != RLM_OK) {
            rc = fail(st, out);
        } else if (json) {
            cli_print_json(out);
            rc = EXIT_ANSWERED;
        } else {
            json_t *runs = json_loads(out, 0, NULL);
            print_table(runs);
            json_decref(runs);
            rc = EXIT_ANSWERED;
        }
    } else if (strcmp(sub, "show") == 0) {
        if (json_array_size(ids) != 1) {
            fprintf(stderr, "rlm logs show takes one run id\n");
            rlm_config_free(cfg);
            goto done;
        }
        st = rlm_logs_show(cfg, (long long)json_integer_value(json_array_get(ids, 0)), &out);
        if (st != RLM_OK) {
            rc = fail(st, out);
        } else {
            json_t *run = json_loads(out, 0, NULL);
            if (json)
                cli_print_json(out);
            else
                print_run(run);
            json_decref(run);
            rc = EXIT_ANSWERED;
        }
    } else {
        if (!all && before <= 0 && json_array_size(ids) == 0) {
            fprintf(stderr, "rlm logs rm: say which runs: ids, --before DATE or --all\n");
            rlm_config_free(cfg);
            goto done;
        }
        json_t *what = json_pack("{s:O,s:f,s:b}", "ids", ids, "before", before, "all", all);
        char *w = json_dumps(what, JSON_COMPACT);
        json_decref(what);
        st = rlm_logs_remove(cfg, w, &out);
        free(w);
        if (st != RLM_OK) {
            rc = fail(st, out);
        } else {
            json_t *res = json_loads(out, 0, NULL);
            printf("removed %lld run%s\n", (long long)json_integer_value(json_object_get(res, "removed")),
                   json_integer_value(json_object_get(res, "removed")) == 1 ? "" : "s");
            json_decref(res);
            rc = EXIT_ANSWERED;
        }
    }
    rlm_string_free(out);
    rlm_config_free(cfg);
done:
    json_decref(filter);
    json_decref(ids);
    return rc;
}
