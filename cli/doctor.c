/* doctor — `rlm doctor [--json] [--offline] [--sandbox-exe PATH] [ask's
 * endpoint and file flags]`: which sandbox layers this machine allows and
 * why any others are not; whether the chosen endpoint answers and takes the
 * key; whether the cache, session and price files are usable. As a table,
 * or as the JSON of rlm_doctor with rlm_doctor_setup's keys added. Exit 0
 * when all is well, 4 when the floor (seccomp + rlimits) is not in force or
 * no sandbox could start, else 3 when an endpoint fails, else 2 when a file
 * does (or for a bad command line). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "rlm.h"

static int doctor_usage(FILE *to)
{
    fputs("usage: rlm doctor [--json] [--offline] [--sandbox-exe PATH] [options of rlm ask]\n"
          "Starts one sandbox child and lists each confinement layer (landlock, namespaces,\n"
          "seccomp, rlimits): on or off on this machine, and why. Then checks the endpoint the\n"
          "options and environment choose (--base-url, --model, $OPENAI_API_KEY, ...): a key is\n"
          "set for a hosted API, and GET /models answers with it (--offline: not contacted);\n"
          "and the cache directory, the session file and the price files.\n"
          "Exit 0 when all is well; 4 when the floor (seccomp + rlimits) is not in force;\n"
          "else 3 when an endpoint fails; else 2 when a file does (or a bad command line).\n",
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

static void print_endpoint(const char *label, json_t *e)
{
    if (!json_is_object(e))
        return;
    printf("%-11s %s (%s, model %s, key %s)\n            %s: %s\n", label,
           json_string_value(json_object_get(e, "base_url")),
           json_string_value(json_object_get(e, "provider")),
           json_string_value(json_object_get(e, "model")), json_string_value(json_object_get(e, "key")),
           json_is_true(json_object_get(e, "ok")) ? "ok" : "NOT OK",
           json_string_value(json_object_get(e, "detail")));
    if (json_is_true(json_object_get(e, "hosted")) &&
        strcmp(json_string_value(json_object_get(e, "key")), "none") == 0) {
        char var[64];
        cli_provider_key_variable(json_string_value(json_object_get(e, "provider")), var,
                                  sizeof var);
        printf("            set $%s, or give --api-key\n", var);
    }
}

static void print_setup(json_t *setup)
{
    printf("\n");
    print_endpoint("endpoint", json_object_get(setup, "endpoint"));
    print_endpoint("sub-calls", json_object_get(setup, "sub_endpoint"));
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(setup, "files"), i, f) {
        const char *path = json_string_value(json_object_get(f, "path"));
        printf("%-11s %s%s%s: %s\n", json_string_value(json_object_get(f, "name")),
               json_is_true(json_object_get(f, "ok")) ? "ok" : "NOT OK", path ? " " : "",
               path ? path : "", json_string_value(json_object_get(f, "detail")));
    }
}

int cmd_doctor(int argc, char **argv)
{
    int as_json = 0, offline = 0;
    const char *exe = NULL;
    /* The doctor's own flags; the rest are rlm ask's, which choose the
     * endpoint and files to check (and read the environment as ask does). */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) {
        fputs("rlm doctor: out of memory\n", stderr);
        return 4;
    }
    int n = 0;
    rest[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
            as_json = 1;
        else if (strcmp(argv[i], "--offline") == 0)
            offline = 1;
        else if (strcmp(argv[i], "--sandbox-exe") == 0 && i + 1 < argc)
            exe = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            free(rest);
            return doctor_usage(stdout);
        } else
            rest[n++] = argv[i];
    }
    cli_flags flags;
    int parsed = cli_flags_parse(n, rest, &flags);
    int operands = parsed < 0 && flags.first_operand < n;
    if (operands)
        fprintf(stderr, "rlm doctor: unexpected argument '%s'\n", rest[flags.first_operand]);
    free(rest);
    if (parsed >= 0 || operands) {
        cli_flags_free(&flags);
        if (parsed != EXIT_ANSWERED || operands)
            doctor_usage(stderr);
        return operands ? EXIT_USAGE : parsed;
    }
    rlm_config *cfg = flags.cfg;
    flags.cfg = NULL;
    cli_flags_free(&flags);
    if (exe && rlm_config_set(cfg, "sandbox_exe", exe) != RLM_OK) {
        fprintf(stderr, "rlm doctor: %s\n", rlm_config_errmsg(cfg));
        rlm_config_free(cfg);
        return 2;
    }
    char *text = NULL, *setup_text = NULL;
    rlm_status st = rlm_doctor(cfg, &text);
    rlm_status setup_st = rlm_doctor_setup(cfg, offline, &setup_text);
    rlm_config_free(cfg);
    json_t *setup = setup_text ? json_loads(setup_text, 0, NULL) : NULL;
    rlm_string_free(setup_text);
    if (!text) {
        fprintf(stderr, "rlm doctor: %s\n", rlm_status_name(st));
        json_decref(setup);
        return 4;
    }
    json_error_t error;
    json_t *report = json_loads(text, 0, &error);
    int ok = report && json_is_true(json_object_get(report, "ok"));
    /* One JSON object: the sandbox's report, and the setup's keys beside it. */
    if (report && setup)
        json_object_update(report, setup);
    if (as_json && report) {
        char *all = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        printf("%s\n", all ? all : text);
        free(all);
    } else if (as_json) {
        printf("%s\n", text);
    } else if (report) {
        print_table(report);
        if (setup)
            print_setup(setup);
    }
    json_decref(report);
    json_decref(setup);
    rlm_string_free(text);
    if (st != RLM_OK || !ok)
        return 4;
    return setup_st == RLM_OK ? 0 : cli_exit_code(setup_st);
}
