/* doctor — `rlm doctor [--json] [--sandbox-exe PATH]`: which sandbox layers
 * this machine allows and why any others are not, as a table or as the JSON
 * of rlm_doctor. Exit 0 when the floor (seccomp + rlimits) is in force, 4
 * when it is not or no sandbox could start, 2 for a bad command line. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "rlm.h"

static int doctor_usage(FILE *to)
{
    fputs("usage: rlm doctor [--json] [--sandbox-exe PATH]\n"
          "Starts one sandbox child and lists each confinement layer (landlock, namespaces,\n"
          "seccomp, rlimits): on or off on this machine, and why. Exit 0 when the floor\n"
          "(seccomp + rlimits) is in force, 4 otherwise.\n",
          to);
    return to == stdout ? 0 : 2;
}

static void print_table(json_t *report)
{
    json_t *layers = json_object_get(report, "layers");
    const char *error = json_string_value(json_object_get(report, "error"));
    const char *exe = json_string_value(json_object_get(report, "sandbox_exe"));
    fputs("sandbox     ", stdout);
    cli_write_text(stdout, exe ? exe : "", exe ? strlen(exe) : 0);
    fputc('\n', stdout);
    printf("kernel      Linux %s\n", json_string_value(json_object_get(report, "kernel")));
    if (error) {
        fputs("\nThe sandbox could not start: ", stdout);
        cli_write_text(stdout, error, strlen(error));
        fputc('\n', stdout);
    } else {
        printf("python      %s, ready in %.0f ms\n\n",
               json_string_value(json_object_get(report, "python")),
               json_number_value(json_object_get(report, "ready_seconds")) * 1e3);
        printf("%-11s %-4s %s\n", "layer", "", "what it does here, or why it is off");
        for (size_t i = 0; i < json_array_size(layers); i++) {
            json_t *l = json_array_get(layers, i);
            printf("%-11s %-4s %s\n", json_string_value(json_object_get(l, "name")),
                   json_is_true(json_object_get(l, "active")) ? "on" : "OFF",
                   json_string_value(json_object_get(l, "detail")));
        }
    }
    json_t *gaps = json_object_get(report, "not_covered");
    if (json_is_true(json_object_get(report, "ok")) && json_array_size(gaps) == 0)
        printf("\nok: the floor (seccomp + rlimits) is in force; model code runs confined.\n");
    else if (json_is_true(json_object_get(report, "ok"))) {
        printf("\nok: the floor (seccomp + rlimits) is in force: model code cannot open files, "
               "reach the\nnetwork, start processes or signal others. Not covered here:\n");
        for (size_t i = 0; i < json_array_size(gaps); i++)
            printf("  - %s\n", json_string_value(json_array_get(gaps, i)));
    } else
        printf("\nNOT OK: without seccomp + rlimits rlm refuses to run model code\n"
               "(--unsafe-no-sandbox runs it unconfined, and the trace records that).\n");
}

int cmd_doctor(int argc, char **argv)
{
    int as_json = 0;
    const char *exe = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            as_json = 1;
        else if (strcmp(argv[i], "--sandbox-exe") == 0 && i + 1 < argc)
            exe = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return doctor_usage(stdout);
        else {
            fprintf(stderr, "rlm doctor: unexpected argument '%s'\n", argv[i]);
            return doctor_usage(stderr);
        }
    }
    rlm_config *cfg = rlm_config_new();
    if (!cfg) {
        fputs("rlm doctor: out of memory\n", stderr);
        return 4;
    }
    if (exe && rlm_config_set(cfg, "sandbox_exe", exe) != RLM_OK) {
        fprintf(stderr, "rlm doctor: %s\n", rlm_config_errmsg(cfg));
        rlm_config_free(cfg);
        return 2;
    }
    char *text = NULL;
    rlm_status st = rlm_doctor(cfg, &text);
    rlm_config_free(cfg);
    if (!text) {
        fprintf(stderr, "rlm doctor: %s\n", rlm_status_name(st));
        return 4;
    }
    json_error_t error;
    json_t *report = json_loads(text, 0, &error);
    int ok = report && json_is_true(json_object_get(report, "ok"));
    if (as_json)
        printf("%s\n", text);
    else if (report)
        print_table(report);
    json_decref(report);
    rlm_string_free(text);
    return st == RLM_OK && ok ? 0 : 4;
}
