/* commands — the rlm subcommands other than ask, each in its own file under
 * cli/. Each takes argv starting at the subcommand's name and returns the
 * process exit code documented in `rlm --help`. Also what `rlm ask` and
 * `rlm chat` share: their flags and exit codes (cli/flags.c), and how the
 * commands print text, answers and warnings (cli/output.c); the live view
 * of a run is cli/verbose.h. */
#ifndef RLM_CLI_COMMANDS_H
#define RLM_CLI_COMMANDS_H

#include <stddef.h>
#include <stdio.h>

#include "rlm.h"

int cmd_doctor(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_sessions(int argc, char **argv);
int cmd_prompt(int argc, char **argv);
int cmd_view(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_cost(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_serve(int argc, char **argv);   /* cli/serve/serve.c */
int cmd_mcp(int argc, char **argv);     /* cli/serve/mcp.c */

enum {
    EXIT_ANSWERED = 0,
    EXIT_NO_ANSWER = 1,
    EXIT_USAGE = 2,
    EXIT_MODEL = 3,
    EXIT_INTERNAL = 4,
};

/* Most --context arguments on one command line. */
#define CLI_MAX_CONTEXTS 1024

/* The flags of `rlm ask` and `rlm chat`, parsed. */
typedef struct cli_flags {
    rlm_config *cfg;            /* every option the environment and the flags set */
    const char *contexts[CLI_MAX_CONTEXTS];   /* --context arguments, borrowed from argv */
    size_t n_contexts;
    const char *question_file;  /* --question-file, or NULL */
    int json, quiet;
    int verbose, progress;      /* -v, --progress (cli/verbose.c) */
    int no_log;                 /* --no-log */
    int first_operand;          /* argv index of the first argument that is not a flag */
    char key_note[1024];        /* why a key in the environment was not sent, or "" */
} cli_flags;

/* Which endpoint options the command line gave (cli_apply_environment). */
enum {
    CLI_GIVEN_BASE_URL = 1,
    CLI_GIVEN_API_KEY = 2,
    CLI_GIVEN_SUB_BASE_URL = 4,
    CLI_GIVEN_SUB_API_KEY = 8,
    CLI_GIVEN_MODEL = 16,
};

/* Fills what the flags (`given`) did not set from the environment, after
 * them: RLM_MODEL; the provider's base URL variable (OPENAI_BASE_URL or
 * ANTHROPIC_BASE_URL) and its key variable (OPENAI_API_KEY or
 * ANTHROPIC_API_KEY), the key only when the endpoint is on the hosts of the
 * URL it is for (that variable, else the provider's own API); the same for a
 * sub-call endpoint on other hosts (sub_base_url, sub_api_key). A key kept
 * back is explained in note (else ""), for when the endpoint refuses the
 * run. 0, or EXIT_USAGE after saying which variable is bad. */
int cli_apply_environment(rlm_config *cfg, unsigned given, char *note, size_t notelen);

/* The variable that holds a provider's key, named after it
 * (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...): a new provider needs no code
 * here. */
void cli_provider_key_variable(const char *provider, char *out, size_t outlen);

/* The run log for a command (cli/logs.c): on, with `command` as the
 * runs' origin, unless no_log or RLM_LOG is 0/no/off/false; RLM_LOG_MAX
 * sets its cap. */
void cli_log_setup(rlm_config *cfg, const char *command, int no_log);

/* Prints "rlm: MESSAGE" to stderr, a message of the library, with the
 * option names in it (max_cost, session_db) said as the flags that set them
 * (--max-cost, --session-db). */
void cli_error(const char *message);

/* Parses argv (argv[0] is the subcommand) after the environment
 * (OPENAI_BASE_URL, OPENAI_API_KEY or ANTHROPIC_API_KEY, RLM_MODEL). Returns
 * -1 when the command should go on, else the exit code it should end with
 * (after --help or --version, or a bad flag already explained on stderr).
 * Either way f->cfg is set (NULL only when out of memory) and is freed by
 * cli_flags_free. */
int cli_flags_parse(int argc, char **argv, cli_flags *f);
void cli_flags_free(cli_flags *f);

/* Edit distance between a and b (at most 63 characters each are compared):
 * "did you mean" for a misspelt flag or command. */
size_t cli_edit_distance(const char *a, const char *b);

/* The options of rlm ask and rlm chat, the body of their --help and of
 * rlm --help. */
void cli_usage_options(FILE *out);

/* The text of a file (stdin for "-"), at most max bytes, trailing newlines
 * dropped: the question (--question-file) or a system prompt
 * (--system-prompt). NULL with err saying why: it cannot be read, is too
 * large, or holds nothing but blanks ("what" names it). */
char *cli_read_text_file(const char *path, const char *what, size_t max, char *err,
                         size_t errlen);

/* The exit code for a status (0 answered, 1 no answer, 2 usage or input,
 * 3 model, 4 sandbox or internal). */
int cli_exit_code(rlm_status st);

/* Prints {"answer": null, "status": ..., "error": message} on stdout: what
 * --json shows for a question that failed before it ran. */
void cli_json_failure(rlm_status st, const char *message);

/* Adds f's --context arguments to r. 0, or an exit code after saying why. */
int cli_add_contexts(rlm *r, const cli_flags *f);

/* Writes text[0..len) to `to`: on a terminal through utf8_escape_terminal
 * (control characters, escape sequences, bidirectional overrides and bytes
 * that are not UTF-8 written as \x1b, \u202e, ...: an answer or a file name
 * cannot clear the screen, set the title or write the clipboard); to
 * anything else (a pipe, a file) every byte as it is. Every text the user
 * or the model controls goes to the terminal through here. */
void cli_write_text(FILE *to, const char *text, size_t len);

/* A JSON text and a newline on stdout; on a terminal with every character
 * past ASCII written as \uXXXX (the same JSON, and nothing a terminal acts
 * on: JSON already escapes C0 controls, not C1 ones or U+202E). */
void cli_print_json(const char *text);

/* prefix, then text through cli_write_text, then a newline, on stderr. */
void cli_say(const char *prefix, const char *text);

/* Prints an answer of len bytes and a newline on stdout, through
 * cli_write_text: exactly to a pipe or a file (NUL bytes included),
 * escaped on a terminal. */
void cli_print_answer(const char *answer, size_t len);

/* Prints r's warnings after the first `from` bytes to stderr; returns how
 * many bytes have now been printed. */
size_t cli_print_warnings(const rlm *r, size_t from);

#endif
