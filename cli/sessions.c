/* sessions — `rlm sessions [list] | rm NAME... | recover`: the conversations
 * kept on disk by --session, listed (a table, or --json), removed, and a
 * damaged session file recovered. Exit 0 when done, 2 for a bad command
 * line or a file, session or lock that stops it (the reason on stderr). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "rlm.h"

static int sessions_usage(FILE *to)
{
    fputs("usage: rlm sessions [list] [--json] [--session-db PATH]\n"
          "       rlm sessions rm NAME... [--session-db PATH]\n"
          "       rlm sessions recover [--session-db PATH]\n"
          "\n"
          "The conversations kept on disk by --session (docs/sessions.md):\n"
          "  list      each session: its questions, when it was last asked one, its model,\n"
          "            and the pid of the process using it, if any (--json: one JSON array)\n"
          "  rm        remove sessions and everything they recorded (refused while in use)\n"
          "  recover   copy what can still be read of a damaged session file into a new one;\n"
          "            the damaged file is kept beside it as FILE.damaged-DATE\n"
          "  --session-db PATH   the sessions' file (default $XDG_DATA_HOME/rlm/sessions.db,\n"
          "                      ~/.local/share/rlm/sessions.db)\n"
          "\n"
          "Exit: 0 done, 2 bad command line, or a file, session or lock that stops it.\n",
          to);
    return to == stdout ? EXIT_ANSWERED : EXIT_USAGE;
}

static void print_table(json_t *list)
{
    if (json_array_size(list) == 0) {
        puts("no sessions");
        return;
    }
    printf("%-24s %9s  %-16s  %-20s %s\n", "session", "questions", "last question", "model", "in use");
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s) {
        char when[32] = "-";
        json_t *last = json_object_get(s, "last_question");
        if (json_is_number(last)) {
            time_t t = (time_t)json_number_value(last);
            struct tm tm;
            strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
        }
        json_t *pid = json_object_get(s, "in_use_by");
        char use[32] = "";
        if (json_is_integer(pid))
            snprintf(use, sizeof use, "pid %lld", (long long)json_integer_value(pid));
        else if (json_is_true(pid))
            snprintf(use, sizeof use, "yes");
        const char *model = json_string_value(json_object_get(s, "model"));
        printf("%-24s %9lld  %-16s  %-20s %s\n", json_string_value(json_object_get(s, "name")),
               (long long)json_integer_value(json_object_get(s, "questions")), when,
               model ? model : "-", use);
    }
}

static void print_recovery(json_t *report)
{
    json_t *sessions = json_object_get(report, "sessions");
    printf("recovered %zu sessions into %s\n", json_array_size(sessions),
           json_string_value(json_object_get(report, "database")));
    printf("the damaged file is kept as %s\n", json_string_value(json_object_get(report, "damaged_copy")));
    size_t i;
    json_t *s;
    json_array_foreach(sessions, i, s) {
        int cells = json_is_true(json_object_get(s, "cells_lost"));
        int history = json_is_true(json_object_get(s, "messages_lost")) ||
                      json_is_true(json_object_get(s, "questions_lost"));
        int data = json_is_true(json_object_get(s, "data_lost"));
        if (cells || history || data)
            printf("  %s: may have lost %s%s%s%s%s\n", json_string_value(json_object_get(s, "name")),
                   data ? "the data its last question left (then its variables are not restored)"
                        : "",
                   data && (cells || history) ? ", " : "",
                   cells ? "part of the record of its cells" : "", cells && history ? " and " : "",
                   history ? "part of its history" : "");
    }
}

/* A result as the JSON the library gave, or through its printer. */
static void show(const char *text, int as_json, void (*printer)(json_t *))
{
    if (as_json) {
        puts(text);
        return;
    }
    json_t *j = json_loads(text, 0, NULL);
    printer(j);
    json_decref(j);
}

int cmd_sessions(int argc, char **argv)
{
    const char *action = "list";
    int as_json = 0, first_name = 0, n_names = 0, action_given = 0;
    rlm_config *cfg = rlm_config_new();
    if (!cfg) {
        fputs("rlm sessions: out of memory\n", stderr);
        return EXIT_INTERNAL;
    }
    int rc = EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            rc = sessions_usage(stdout);
            goto done;
        } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--session-db") == 0 || strncmp(a, "--session-db=", 13) == 0) {
            const char *v = a[12] == '=' ? a + 13 : i + 1 < argc ? argv[++i] : NULL;
            if (!v || rlm_config_set(cfg, "session_db", v) != RLM_OK) {
                fputs("rlm sessions: --session-db needs a path\n", stderr);
                goto done;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "rlm sessions: unknown option '%s'\n", a);
            sessions_usage(stderr);
            goto done;
        } else if (!action_given && (strcmp(a, "list") == 0 || strcmp(a, "rm") == 0 ||
                                     strcmp(a, "recover") == 0)) {
            action = a;
            action_given = 1;
        } else if (strcmp(action, "rm") == 0) {
            if (!n_names++)
                first_name = i;
            else if (first_name + n_names - 1 != i) {
                fputs("rlm sessions rm: give the names together\n", stderr);
                goto done;
            }
        } else {
            fprintf(stderr, "rlm sessions: unexpected argument '%s'\n", a);
            sessions_usage(stderr);
            goto done;
        }
    }
    char *out = NULL;
    rlm_status st;
    if (strcmp(action, "list") == 0) {
        st = rlm_sessions_list(cfg, &out);
        if (st == RLM_OK)
            show(out, as_json, print_table);
    } else if (strcmp(action, "rm") == 0) {
        if (!n_names) {
            fputs("rlm sessions rm: which session? (rlm sessions lists them)\n", stderr);
            goto done;
        }
        st = RLM_OK;
        for (int k = 0; k < n_names && st == RLM_OK; k++) {
            free(out);
            st = rlm_session_remove(cfg, argv[first_name + k], &out);
            if (st == RLM_OK)
                printf("removed session '%s'\n", argv[first_name + k]);
        }
    } else {
        st = rlm_sessions_recover(cfg, &out);
        if (st == RLM_OK)
            show(out, as_json, print_recovery);
    }
    if (st != RLM_OK)
        fprintf(stderr, "rlm sessions: %s\n", out ? out : rlm_status_name(st));
    rc = st == RLM_OK ? EXIT_ANSWERED : cli_exit_code(st);
    free(out);
done:
    rlm_config_free(cfg);
    return rc;
}
