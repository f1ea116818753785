/* rlm — the command-line tool: a thin client of include/rlm.h. main
 * dispatches to the commands (commands.h); `rlm ask`, which answers a
 * question about a context through a Recursive Language Model, is here. The
 * flags it shares with `rlm chat` are cli/flags.c's, and what both print is
 * cli/output.c's; `rlm --help` documents flags, environment and exit codes. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "verbose.h"
#include "rlm.h"

/* Largest question file we read: questions are short, this is a guard. */
#define MAX_QUESTION_BYTES ((size_t)16 << 20)

/* The commands, one line each: the head of `rlm --help` and, alone, what
 * rlm says when it is given no command. */
static const char commands_text[] =
        "Usage: rlm ask [options] QUESTION\n"
        "  or:  rlm ask [options] --question-file FILE\n"
        "  or:  rlm COMMAND [options]\n"
        "\n"
        "Commands:\n"
        "  ask                     one question about the inputs (--context, or a piped stdin)\n"
        "  chat                    a conversation: question after question about the same inputs\n"
        "  batch TASKS --out FILE  many questions from a JSONL file, resumable, sharded (and merge)\n"
        "  sessions [list|rm NAME|recover]   the conversations kept by --session\n"
        "  doctor [--json]         which sandbox layers this machine allows; the endpoint, key, files\n"
        "  prompt [--template]     the system prompt rlm would send\n"
        "  view TRACE|ID [-o FILE.html] [--open]   a run as one self-contained HTML page\n"
        "  logs [list|show ID|rm]  every run recorded\n"
        "  cost TRACE|ID [--json]  what a run cost by phase, model and node, with and without caching\n"
        "  demo, bench run|report  a simulated 10M-token run, offline, no key; the benchmark suites\n"
        "  serve, mcp --root DIR   an OpenAI-compatible HTTP server; an MCP server on stdio\n"
        "  --version, --help\n";

/* rlm --help: the commands, then the options of rlm ask and rlm chat. */
static void usage(FILE *out)
{
    fputs(commands_text, out);
    fputs("\n", out);
    cli_usage_options(out);
}

/* What rlm says with no command or an unknown one: the commands, and where
 * the rest is. */
static void usage_short(FILE *out)
{
    fputs(commands_text, out);
    fputs("\nrlm ask --help (or rlm COMMAND --help) tells more; rlm --help tells all.\n", out);
}

/* Whether stdin holds an input for `rlm ask` without --context: a pipe,
 * socket or regular file with bytes to read. A terminal, /dev/null (or any
 * other device) and an empty pipe or file hold none. Waits for a pipe that
 * has said nothing yet, as `cat` would, saying so after a moment. */
static int stdin_has_input(void)
{
    struct stat st;
    if (isatty(STDIN_FILENO) || fstat(STDIN_FILENO, &st) != 0)
        return 0;
    if (S_ISREG(st.st_mode)) {
        off_t at = lseek(STDIN_FILENO, 0, SEEK_CUR);
        return st.st_size > (at > 0 ? at : 0);
    }
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
        return 0;
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    int rc = poll(&p, 1, 2000);
    if (rc == 0) {
        fputs("rlm: reading the input from stdin (no --context given; < /dev/null for none)\n", stderr);
        rc = poll(&p, 1, -1);
    }
    int ready = 0;
    if (rc < 0 || !(p.revents & (POLLIN | POLLHUP)))
        return 0;
    /* Readable with nothing to read is the end of the stream: no input. */
    return ioctl(STDIN_FILENO, FIONREAD, &ready) != 0 || ready > 0;
}

/* The run a Ctrl-C cancels. A signal handler can reach nothing but globals,
 * so this is the one mutable global of the command: set only while rlm_ask
 * runs. */
static rlm *volatile ask_in_progress;

/* First Ctrl-C: cancel the question (rlm_ask then returns, the command exits
 * 1 with what it has). SA_RESETHAND restores the default disposition, so a
 * second Ctrl-C ends the process at once (exit 130). */
static void on_interrupt(int sig)
{
    rlm *r = ask_in_progress;
    if (r)
        rlm_cancel(r);
    /* SIGTERM (and SIGHUP) end the question as Ctrl-C does: the sandbox is
     * stopped, the trace gets its run_end, and rlm says why it stopped. */
    static const char msg[] = "\nrlm: cancelling… (Ctrl-C again to quit at once)\n";
    static const char term[] = "\nrlm: terminated: cancelling the question…\n";
    int terminated = sig != SIGINT;
    if (write(STDERR_FILENO, terminated ? term : msg, terminated ? sizeof term - 1 : sizeof msg - 1) < 0) {
        /* nothing to do about it in a signal handler */
    }
}

/* A failure before the question ran: said on stderr, and with --json as
 * the one JSON object on stdout. Returns the exit code. */
static int ask_failed(const cli_flags *f, rlm_status st, const char *message)
{
    cli_error(message);
    if (f->json)
        cli_json_failure(st, message);
    return cli_exit_code(st);
}

static int cmd_ask(int argc, char **argv)
{
    cli_flags f;
    char *question = NULL;
    rlm *r = NULL;
    int rc = cli_flags_parse(argc, argv, &f);
    if (rc >= 0)
        goto done;
    rc = EXIT_USAGE;

    int rest = argc - f.first_operand;
    int question_from_stdin = f.question_file && strcmp(f.question_file, "-") == 0;
    for (size_t i = 0; question_from_stdin && i < f.n_contexts; i++) {
        if (strcmp(f.contexts[i], "-") == 0) {
            rc = ask_failed(&f, RLM_ERR_USAGE, "--question-file - and --context - cannot both read stdin");
            goto done;
        }
    }
    if (f.question_file) {
        if (rest > 0) {
            rc = ask_failed(&f, RLM_ERR_USAGE, "give the question either as an argument or with "
                            "--question-file, not both");
            goto done;
        }
        char err[1024];
        question = cli_read_text_file(f.question_file, "question file", MAX_QUESTION_BYTES, err,
                                  sizeof err);
        if (!question) {
            rc = ask_failed(&f, RLM_ERR_INPUT, err);
            goto done;
        }
    } else if (rest == 1 && argv[f.first_operand][0]) {
        question = strdup(argv[f.first_operand]);
    } else {
        rc = ask_failed(&f, RLM_ERR_USAGE, rest > 1 ? "give the question as one argument (quote it)"
                                                    : "no question given (rlm ask [options] QUESTION)");
        goto done;
    }

    rlm_status st = rlm_new(f.cfg, &r);
    if (st != RLM_OK) {
        rc = ask_failed(&f, st, rlm_errmsg(r));
        goto done;
    }
    size_t warned = cli_print_warnings(r, 0);
    for (size_t i = 0; i < f.n_contexts; i++) {
        if ((st = rlm_add_context(r, f.contexts[i])) != RLM_OK) {
            rc = ask_failed(&f, st, rlm_errmsg(r));
            goto done;
        }
    }
    if (f.n_contexts == 0 && !question_from_stdin && stdin_has_input() &&
        (st = rlm_add_context(r, "-")) != RLM_OK) {
        rc = ask_failed(&f, st, rlm_errmsg(r));
        goto done;
    }

    cli_live *live = cli_live_for_flags(f.quiet, f.progress, f.verbose);
    cli_live_attach(live, r);
    cli_live_begin(live);
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ask_in_progress = r;
    struct sigaction old_term, old_hup;
    sigaction(SIGINT, &sa, &old);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);
    char *answer = NULL;
    size_t answer_len = 0;
    st = rlm_ask_len(r, question, &answer, &answer_len);
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    ask_in_progress = NULL;
    cli_live_end(live);
    rc = cli_exit_code(st);
    cli_print_warnings(r, warned);

    if (f.json) {
        const char *report = rlm_report_json(r);
        if (report)
            cli_print_json(report);
        else
            cli_json_failure(st, rlm_errmsg(r));
    } else if (answer) {
        cli_print_answer(answer, answer_len);
    }
    if (st == RLM_NO_ANSWER)
        cli_say("rlm: no answer: ", rlm_errmsg(r)[0] ? rlm_errmsg(r) : "turn limit reached");
    else if (st != RLM_OK)
        cli_error(rlm_errmsg(r));
    if (st == RLM_ERR_MODEL && f.key_note[0])
        cli_say("rlm: note: ", f.key_note);
    /* The answer is out, but the record the user asked for is not whole. */
    if (rlm_trace_error(r)[0] && rc < EXIT_USAGE)
        rc = EXIT_USAGE;
    if (answer)
        cli_live_summary(live, rlm_report_json(r));
    cli_live_free(live);
    rlm_string_free(answer);

done:
    free(question);
    rlm_free(r);
    cli_flags_free(&f);
    return rc;
}

/* Every command's output is checked once it is all written: an answer
 * lost to a full disk or a closed file must not end in exit 0. */
static int finish_output(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "rlm: cannot write to stdout: %s\n", strerror(errno ? errno : EIO));
        return rc < EXIT_USAGE ? EXIT_USAGE : rc;
    }
    return rc;
}

static int run_command(int argc, char **argv);

/* SIGBUS in rlm is an input file cut short under one of its mappings (a log
 * rotated with copytruncate between the check before a read and the read):
 * the library checks the files before each pass over them, and this is the
 * last net for the moment between, so that it ends with a message and the
 * input error's code rather than a crash. */
static void on_bus_error(int sig)
{
    (void)sig;
    static const char msg[] = "\nrlm: an input file was cut short while rlm was reading it (a log "
                              "rotated with copytruncate?); run again on a copy of the file\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(EXIT_USAGE);
}

int main(int argc, char **argv)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_bus_error;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    return finish_output(run_command(argc, argv));
}

static int run_command(int argc, char **argv)
{
    if (argc < 2) {
        usage_short(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_ANSWERED;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("rlm %s\n", rlm_version());
        return EXIT_ANSWERED;
    }
    if (strcmp(cmd, "ask") == 0)
        return cmd_ask(argc - 1, argv + 1);
    if (strcmp(cmd, "chat") == 0)
        return cmd_chat(argc - 1, argv + 1);
    if (strcmp(cmd, "doctor") == 0)
        return cmd_doctor(argc - 1, argv + 1);
    if (strcmp(cmd, "sessions") == 0)
        return cmd_sessions(argc - 1, argv + 1);
    if (strcmp(cmd, "prompt") == 0)
        return cmd_prompt(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "demo") == 0)
        return cmd_demo(argc - 1, argv + 1);
    if (strcmp(cmd, "view") == 0)
        return cmd_view(argc - 1, argv + 1);
    if (strcmp(cmd, "logs") == 0)
        return cmd_logs(argc - 1, argv + 1);
    if (strcmp(cmd, "cost") == 0)
        return cmd_cost(argc - 1, argv + 1);
    if (strcmp(cmd, "batch") == 0)
        return cmd_batch(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "mcp") == 0)
        return cmd_mcp(argc - 1, argv + 1);
    static const char *const commands[] = {"ask", "chat", "sessions", "doctor", "demo", "bench", "view",
                                           "logs", "cost", "batch", "serve", "mcp"};
    const char *guess = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (cli_edit_distance(cmd, commands[i]) <= 2 && !guess)
            guess = commands[i];
    if (guess)
        fprintf(stderr, "rlm: unknown command '%s': did you mean '%s'?\n", cmd, guess);
    else
        fprintf(stderr, "rlm: unknown command '%s'\n", cmd);
    usage_short(stderr);
    return EXIT_USAGE;
}
