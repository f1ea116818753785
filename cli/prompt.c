/* prompt — `rlm prompt [--template] [options]`: the system prompt rlm would
 * send the root model with these options (rlm's own, or --system-prompt's,
 * with its placeholders filled), or with --template rlm's own with the
 * placeholders left in, to start a custom one from. Exit 0, or 2 for a bad
 * command line (a --system-prompt file missing or empty included). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "rlm.h"

/* Most arguments `rlm prompt` takes (its own and those of `rlm ask`). */
#define PROMPT_MAX_ARGS 512

int cmd_prompt(int argc, char **argv)
{
    char *rest[PROMPT_MAX_ARGS + 1];
    int n = 0, template = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--template") == 0) {
            template = 1;
            continue;
        }
        if (n == PROMPT_MAX_ARGS) {
            fputs("rlm: too many arguments\n", stderr);
            return EXIT_USAGE;
        }
        rest[n++] = argv[i];
    }
    rest[n] = NULL;
    cli_flags f;
    int rc = cli_flags_parse(n, rest, &f);
    if (rc < 0 && f.first_operand < n) {
        fprintf(stderr, "rlm: prompt takes no question ('%s'); it prints the system prompt\n",
                rest[f.first_operand]);
        rc = EXIT_USAGE;
    }
    if (rc >= 0) {
        cli_flags_free(&f);
        return rc;
    }
    char *text = NULL;
    rlm_status st = rlm_system_prompt(f.cfg, template, &text);
    cli_flags_free(&f);
    if (st != RLM_OK) {
        fprintf(stderr, "rlm: %s\n", rlm_status_name(st));
        return cli_exit_code(st);
    }
    fputs(text, stdout);
    if (text[0] && text[strlen(text) - 1] != '\n')
        fputc('\n', stdout);
    rlm_string_free(text);
    return fflush(stdout) == 0 && !ferror(stdout) ? EXIT_ANSWERED : EXIT_USAGE;
}
