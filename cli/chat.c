/* chat — `rlm chat [ask's flags]`: a conversation with one RLM, question
 * after question over the same inputs, the sandbox's variables and the
 * earlier answers (answer_1, ...) kept; saved on disk with --session.
 * On a terminal: a prompt with line editing and history (libedit), Ctrl-C
 * cancels the running question or clears the line, Ctrl-D or /quit ends.
 * From a pipe: one question per line, each answer printed followed by a
 * blank line. Exit 0 when every question was answered, 1 when some were
 * not, else the first error's code (2 usage or input, 3 model, 4 sandbox). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <jansson.h>

#include "commands.h"
#include "verbose.h"
#include "rlm.h"

/* Longest question line read from a pipe. */
#define MAX_LINE_BYTES (1u << 20)

/* What the SIGINT handler needs; a handler can reach nothing but globals, so
 * this is the command's one mutable global. */
static struct {
    rlm *volatile run;              /* the handle, while a question runs */
    volatile sig_atomic_t pressed;  /* Ctrl-C during this question or at the prompt */
    volatile sig_atomic_t terminated; /* SIGTERM or SIGHUP: the conversation ends */
    int interactive;                /* set before the handler is installed */
} interrupt;

/* While a question runs, the first Ctrl-C cancels it and a second ends the
 * process (exit 130) in case cancelling hangs. At the prompt it interrupts
 * readline, which clears the line; from a pipe it ends the process. */
static void on_interrupt(int sig)
{
    rlm *r = interrupt.run;
    if (r && !interrupt.pressed) {
        interrupt.pressed = 1;
        rlm_cancel(r);
        static const char msg[] = "\nrlm: cancelling… (Ctrl-C again to quit)\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
            /* nothing to do about it here */
        }
        return;
    }
    if (!r && interrupt.interactive) {
        interrupt.pressed = 1;
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* SIGTERM or SIGHUP: the question in progress is cancelled as by Ctrl-C
 * (its sandbox stopped, its run_end traced) and the conversation ends; at
 * the prompt, the read is interrupted and the conversation ends. A second
 * one ends the process at once. */
static void on_terminate(int sig)
{
    if (interrupt.terminated) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    interrupt.terminated = 1;
    rlm *r = interrupt.run;
    if (r)
        rlm_cancel(r);
    static const char msg[] = "\nrlm: terminated: ending the conversation…\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing to do about it here */
    }
}

/* restart = 0 at the prompt, so that Ctrl-C interrupts readline's read; 1
 * while a question runs, so that no read or poll of the engine's threads
 * sees EINTR. */
static void interrupt_install(int restart)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_interrupt;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_terminate;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void chat_help(FILE *out)
{
    fputs("Type a question and press Enter. Commands:\n"
          "  /context ARG   add an input for the next question (a file, a directory, a glob or\n"
          "                 JSONL, as --context); it becomes context_1, context_2, ...\n"
          "  /report        the last question's report (JSON: iterations, sub-calls, cost, ...)\n"
          "  /help          this list\n"
          "  /quit          end the conversation (also Ctrl-D)\n"
          "Earlier answers are the variables answer_1, answer_2, ... in the REPL, and earlier\n"
          "questions' messages history_0, history_1, .... Ctrl-C cancels the question in progress.\n",
          out);
}

typedef struct chat {
    rlm *r;
    const cli_flags *flags;
    int interactive;
    int rc;                 /* the exit code so far */
    size_t warned;          /* bytes of warnings already printed */
    cli_live *live;         /* the live view (progress line, -v), or NULL */
} chat;

/* Keeps the worst outcome: the first error's code wins over "no answer". */
static void chat_note(chat *c, int code)
{
    if (code >= EXIT_USAGE) {
        if (c->rc < EXIT_USAGE)
            c->rc = code;
    } else if (code == EXIT_NO_ANSWER && c->rc == EXIT_ANSWERED) {
        c->rc = EXIT_NO_ANSWER;
    }
}

static void chat_ask(chat *c, const char *question)
{
    char *answer = NULL;
    size_t answer_len = 0;
    interrupt.pressed = 0;
    interrupt.run = c->r;
    interrupt_install(1);
    cli_live_begin(c->live);
    rlm_status st = rlm_ask_len(c->r, question, &answer, &answer_len);
    interrupt_install(0);
    interrupt.run = NULL;
    interrupt.pressed = 0;
    cli_live_end(c->live);
    c->warned = cli_print_warnings(c->r, c->warned);
    const char *why = rlm_errmsg(c->r);
    int cancelled = st == RLM_NO_ANSWER && strcmp(why, "cancelled") == 0;
    if (c->flags->json) {
        /* A question refused before it ran (a bad input, ...) leaves the
         * previous question's report in place: say what happened instead. */
        const char *report = rlm_report_json(c->r);
        if (report && st != RLM_ERR_USAGE && st != RLM_ERR_INPUT) {
            cli_print_json(report);
        } else {
            json_t *j = json_pack("{s:n,s:s,s:s}", "answer", "status", rlm_status_name(st), "error", why);
            char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            puts(text ? text : "{}");
            free(text);
            json_decref(j);
        }
    } else if (answer) {
        cli_print_answer(answer, answer_len);
    }
    if (cancelled)
        fputs("cancelled\n", stderr);
    else if (st == RLM_NO_ANSWER)
        cli_say("rlm: no answer: ", why[0] ? why : "turn limit reached");
    else if (st != RLM_OK)
        cli_error(why);
    if (st == RLM_ERR_MODEL && c->flags->key_note[0])
        cli_say("rlm: note: ", c->flags->key_note);
    if (!c->flags->json)
        putchar('\n');
    fflush(stdout);
    if (answer)
        cli_live_summary(c->live, rlm_report_json(c->r));
    rlm_string_free(answer);
    chat_note(c, cli_exit_code(st));
}

/* Runs one /command. Returns 1 when the conversation should end. */
static int chat_command(chat *c, const char *line)
{
    FILE *out = c->interactive ? stdout : stderr;   /* a pipe's stdout holds answers only */
    const char *arg = line + strcspn(line, " \t");
    size_t name_len = (size_t)(arg - line);
    arg += strspn(arg, " \t");
#define IS(name) (name_len == sizeof(name) - 1 && strncmp(line, name, name_len) == 0)
    if (IS("/quit") || IS("/exit"))
        return 1;
    if (IS("/help")) {
        chat_help(out);
    } else if (IS("/report")) {
        const char *report = rlm_report_json(c->r);
        fprintf(out, "%s\n", report ? report : "no question has been asked yet");
    } else if (IS("/context")) {
        rlm_status st = arg[0] ? rlm_add_context(c->r, arg) : RLM_ERR_USAGE;
        if (!arg[0])
            fputs("rlm: /context needs an argument: a file, a directory, a glob or JSONL\n", stderr);
        else if (st != RLM_OK)
            cli_error(rlm_errmsg(c->r));
        else if (c->interactive) {
            cli_write_text(out, arg, strlen(arg));
            fputs(": read with the next question\n", out);
        }
        if (st != RLM_OK)
            chat_note(c, cli_exit_code(st));
    } else {
        fputs("rlm: unknown command '", stderr);
        cli_write_text(stderr, line, name_len);
        fputs("' (/help lists them)\n", stderr);
        chat_note(c, EXIT_USAGE);
    }
#undef IS
    fflush(out);
    return 0;
}

/* Trims the line in place: no surrounding blanks, no end of line. */
static char *trim(char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n > 0 && strchr(" \t\r\n", line[n - 1]))
        line[--n] = '\0';
    return line;
}

/* One line from the terminal (readline) or the pipe. NULL at the end of
 * input; *interrupted when Ctrl-C cleared the line instead. The caller frees
 * the line. */
static char *chat_read(chat *c, int *interrupted)
{
    *interrupted = 0;
    if (c->interactive) {
        interrupt.pressed = 0;
        char *line = readline("rlm> ");
        if (!line && interrupt.pressed) {
            /* readline returns at the interrupted read; the next call
             * starts on an empty line. */
            fputs("\n", stdout);
            fflush(stdout);
            *interrupted = 1;
        }
        interrupt.pressed = 0;
        return line;
    }
    char *line = malloc(MAX_LINE_BYTES + 2);
    if (!line || !fgets(line, MAX_LINE_BYTES + 2, stdin)) {
        free(line);
        return NULL;
    }
    size_t n = strlen(line);
    if (n > MAX_LINE_BYTES && line[n - 1] != '\n') {
        int ch;
        while ((ch = getchar()) != EOF && ch != '\n')
            ;
        fprintf(stderr, "rlm: a question line is longer than %u bytes: skipped\n", MAX_LINE_BYTES);
        chat_note(c, EXIT_USAGE);
        line[0] = '\0';
    }
    return line;
}

int cmd_chat(int argc, char **argv)
{
    cli_flags f;
    rlm *r = NULL;
    cli_live *live = NULL;
    int rc = cli_flags_parse(argc, argv, &f);
    if (rc >= 0)
        goto done;
    rc = EXIT_USAGE;
    if (f.first_operand < argc) {
        fprintf(stderr, "rlm: rlm chat takes no question argument ('%s'): type the questions at "
                "its prompt, or pipe them in, one per line\n", argv[f.first_operand]);
        goto done;
    }
    if (f.question_file) {
        fputs("rlm: rlm chat reads its questions from its input, not from --question-file\n", stderr);
        goto done;
    }
    int interactive = isatty(STDIN_FILENO);
    for (size_t i = 0; i < f.n_contexts; i++) {
        if (strcmp(f.contexts[i], "-") == 0) {
            fputs("rlm: rlm chat reads its questions from stdin, so --context - cannot read an "
                  "input from there\n", stderr);
            goto done;
        }
    }

    rlm_status st = rlm_new(f.cfg, &r);
    if (st != RLM_OK) {
        cli_error(rlm_errmsg(r));
        rc = cli_exit_code(st);
        goto done;
    }
    if ((st = rlm_begin_conversation(r)) != RLM_OK) {
        cli_error(rlm_errmsg(r));
        rc = cli_exit_code(st);
        goto done;
    }
    chat c = {.r = r, .flags = &f, .interactive = interactive};
    c.warned = cli_print_warnings(r, 0);
    if ((rc = cli_add_contexts(r, &f)) != 0)
        goto done;
    c.live = live = cli_live_for_flags(f.quiet, f.progress, f.verbose);
    cli_live_attach(live, r);

    interrupt.interactive = interactive;
    struct sigaction old, old_term, old_hup;
    sigaction(SIGINT, NULL, &old);
    sigaction(SIGTERM, NULL, &old_term);
    sigaction(SIGHUP, NULL, &old_hup);
    interrupt_install(0);
    if (interactive) {
        const char *session = rlm_config_get(f.cfg, "session");
        fprintf(stderr, "rlm chat with %s%s%s. /help for commands, Ctrl-D to quit.\n",
                rlm_config_get(f.cfg, "model"), session[0] ? ", session " : "", session);
    }
    for (;;) {
        int interrupted = 0;
        char *raw = interrupt.terminated ? NULL : chat_read(&c, &interrupted);
        if (!raw && interrupt.terminated)
            break;
        if (!raw) {
            if (interrupted)
                continue;
            if (interactive)
                fputs("\n", stdout);
            break;
        }
        char *line = trim(raw);
        int quit = 0;
        if (line[0]) {
            if (interactive)
                add_history(line);
            if (line[0] == '/')
                quit = chat_command(&c, line);
            else
                chat_ask(&c, line);
        }
        free(raw);
        if (quit)
            break;
    }
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    rc = c.rc;
    if (rlm_trace_error(r)[0] && rc < EXIT_USAGE)
        rc = EXIT_USAGE;   /* the trace asked for is not whole (said as a warning) */

done:
    rlm_free(r);
    cli_live_free(live);
    cli_flags_free(&f);
    return rc;
}
