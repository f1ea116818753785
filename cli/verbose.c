/* verbose — the live view of a run on stderr, from the library's events.
 *
 * Design note. Events arrive one at a time on the run's threads (the
 * library serialises them); a ticker thread of ours redraws the progress
 * line every half second so that its clock moves while nothing happens
 * (a model thinking, a long cell). Both draw under one mutex. Verbose text
 * is printed above the live line: the line is erased, the text written, the
 * line drawn again. Everything a model or an input wrote goes through
 * utf8_escape_terminal: it cannot move the cursor or recolour the screen. */
#include "verbose.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"
#include "util.h"

/* What -v shows of long texts. */
#define REPLY_LINES 12
#define REPLY_CHARS 1500
#define CODE_LINES 60
#define OUTPUT_HEAD_LINES 8
#define OUTPUT_TAIL_LINES 4
#define LINE_CHARS 400
#define BAR_WIDTH 20
#define TICK_NS 500000000L

struct cli_live {
    int progress, verbose, terminal;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t ticker;
    int ticking, stopping;
    int shown;                 /* the live line is on the screen */
    double started;            /* clock_now() when the question began */
    double last_plain;         /* when the last plain progress line was written */
    char state[512];           /* what the run does now: the line's middle */
    char last_state[512];      /* the state of the last plain line written (no repeats) */
    size_t sub_calls;          /* sub-calls done in the question so far */
};

cli_live *cli_live_new(int progress, int verbose, int terminal)
{
    cli_live *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->progress = progress;
    l->verbose = verbose;
    l->terminal = terminal;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->wake, NULL);
    return l;
}

cli_live *cli_live_for_flags(int quiet, int progress, int verbose)
{
    int terminal = isatty(STDERR_FILENO);
    int show_progress = progress || (terminal && !quiet);
    if (!show_progress && !verbose)
        return NULL;
    return cli_live_new(show_progress, verbose, terminal);
}

/* ---- drawing (under l->lock) --------------------------------------------- */

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    return 80;
}

/* The bytes of s that fit in `columns` characters (one column each: the
 * line holds no wide characters of ours, and model text is escaped). */
static size_t fit_columns(const char *s, size_t columns)
{
    size_t cols = 0, i = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cols == columns)
                break;
            cols++;
        }
    }
    return i;
}

static void group_digits(char *out, size_t outlen, size_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%zu", n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < outlen; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static void erase_locked(cli_live *l)
{
    if (l->shown) {
        fputs("\r\033[K", stderr);
        l->shown = 0;
    }
}

static void draw_locked(cli_live *l)
{
    if (!l->progress || !l->state[0])
        return;
    char calls[32], line[1024];
    group_digits(calls, sizeof calls, l->sub_calls);
    snprintf(line, sizeof line, "rlm: %s · %s sub-calls · %.1fs", l->state, calls,
             clock_now() - l->started);
    if (l->terminal) {
        /* One column short of the width: a full line would wrap on some
         * terminals and leave a stale line behind. */
        size_t n = fit_columns(line, (size_t)terminal_width() - 1);
        fprintf(stderr, "\r\033[K%.*s", (int)n, line);
        l->shown = 1;
        fflush(stderr);
        return;
    }
    /* A pipe: whole lines, only when the state changed, at most one a second. */
    double now = clock_now();
    if (now - l->last_plain < 1.0 || strcmp(l->state, l->last_state) == 0)
        return;
    l->last_plain = now;
    snprintf(l->last_state, sizeof l->last_state, "%s", l->state);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

/* ---- verbose text --------------------------------------------------------- */

static const char *color(const cli_live *l, const char *code)
{
    return l->terminal ? code : "";
}

#define C_DIM "\033[2m"
#define C_BOLD "\033[1m"
#define C_KEYWORD "\033[35m"
#define C_STRING "\033[32m"
#define C_NUMBER "\033[36m"
#define C_COMMENT "\033[90m"
#define C_CALL "\033[33m"
#define C_ERROR "\033[31m"
#define C_OFF "\033[0m"

static int python_keyword(const char *w, size_t n)
{
    static const char *const words[] = {
        "False", "None", "True", "and", "as", "assert", "break", "class", "continue", "def",
        "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
        "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try",
        "while", "with", "yield"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && memcmp(words[i], w, n) == 0)
            return 1;
    return 0;
}

/* The REPL's own names, which the reader looks for in model code. */
static int repl_name(const char *w, size_t n)
{
    static const char *const names[] = {"llm_query", "llm_query_batched", "rlm_query",
                                        "rlm_query_batched", "FINAL", "FINAL_VAR", "print",
                                        "context", "answer", "SHOW_VARS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], w, n) == 0)
            return 1;
    return 0;
}

/* One line of Python (already escaped for the terminal), coloured: a
 * tokenizer good enough for reading — keywords, strings, numbers, comments
 * and the REPL's names. *in_string carries a triple-quoted string across
 * lines (its quote character, or 0). */
static void put_python_line(const cli_live *l, const char *s, size_t len, char *in_string)
{
    if (!l->terminal) {
        fwrite(s, 1, len, stderr);
        return;
    }
    size_t i = 0;
    while (i < len) {
        if (*in_string) {
            char q[4] = {*in_string, *in_string, *in_string, 0};
            const char *end = memmem(s + i, len - i, q, 3);
            size_t stop = end ? (size_t)(end - s) + 3 : len;
            fprintf(stderr, "%s%.*s%s", C_STRING, (int)(stop - i), s + i, C_OFF);
            if (end)
                *in_string = 0;
            i = stop;
            continue;
        }
        char c = s[i];
        if (c == '#') {
            fprintf(stderr, "%s%.*s%s", C_COMMENT, (int)(len - i), s + i, C_OFF);
            return;
        }
        if (c == '"' || c == '\'') {
            if (i + 2 < len && s[i + 1] == c && s[i + 2] == c) {
                *in_string = c;
                fprintf(stderr, "%s%c%c%c", C_STRING, c, c, c);
                fputs(C_OFF, stderr);
                i += 3;
                continue;
            }
            size_t j = i + 1;
            while (j < len && s[j] != c)
                j += s[j] == '\\' && j + 1 < len ? 2 : 1;
            j = j < len ? j + 1 : len;
            fprintf(stderr, "%s%.*s%s", C_STRING, (int)(j - i), s + i, C_OFF);
            i = j;
            continue;
        }
        if (isalpha((unsigned char)c) || c == '_') {
            size_t j = i;
            while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_'))
                j++;
            const char *col = python_keyword(s + i, j - i) ? C_KEYWORD
                              : repl_name(s + i, j - i) ? C_CALL : NULL;
            if (col)
                fprintf(stderr, "%s%.*s%s", col, (int)(j - i), s + i, C_OFF);
            else
                fwrite(s + i, 1, j - i, stderr);
            i = j;
            continue;
        }
        if (isdigit((unsigned char)c)) {
            size_t j = i;
            while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '.' || s[j] == '_'))
                j++;
            fprintf(stderr, "%s%.*s%s", C_NUMBER, (int)(j - i), s + i, C_OFF);
            i = j;
            continue;
        }
        fputc(c, stderr);
        i++;
    }
}

/* The lines of an escaped text: start offsets in *starts (caller frees). */
static size_t split_lines(const char *s, size_t len, size_t **starts)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += s[i] == '\n';
    *starts = malloc((n + 1) * sizeof **starts);
    if (!*starts)
        return 0;
    size_t k = 0;
    (*starts)[k++] = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\n')
            (*starts)[k++] = i + 1;
    (*starts)[k] = len + 1;
    if (len > 0 && s[len - 1] == '\n')
        n--;   /* a final newline ends the last line, it starts none */
    return n;
}

/* Prints text as indented lines: the first `head` and the last `tail`
 * (tail 0: the first head, then how many more), each cut at LINE_CHARS;
 * python colours code. */
static void put_block(cli_live *l, int indent, const char *gutter, const char *text, size_t len,
                      size_t head, size_t tail, int python)
{
    size_t elen = 0;
    char *esc = utf8_escape_terminal(text, len, &elen);
    size_t *starts = NULL;
    size_t n = esc ? split_lines(esc, elen, &starts) : 0;
    char in_string = 0;
    for (size_t i = 0; i < n; i++) {
        if (n > head + tail && i == head) {
            fprintf(stderr, "%*s%s%s… %zu more lines%s\n", indent, "", color(l, C_DIM), gutter,
                    n - head - tail, color(l, C_OFF));
            if (tail == 0)
                break;
            i = n - tail;
        }
        size_t from = starts[i], to = starts[i + 1] - 1;
        size_t cut = utf8_cut(esc + from, to - from, LINE_CHARS);
        fprintf(stderr, "%*s%s%s%s", indent, "", color(l, C_DIM), gutter, color(l, C_OFF));
        if (python)
            put_python_line(l, esc + from, cut, &in_string);
        else
            fwrite(esc + from, 1, cut, stderr);
        fputs(cut < to - from ? "…\n" : "\n", stderr);
    }
    free(starts);
    free(esc);
}

/* The reply's prose: its text with the code blocks left out (the code is
 * shown as it runs), bounded. */
static void put_reply_text(cli_live *l, int indent, const char *text, size_t len)
{
    buf prose;
    buf_init(&prose, REPLY_CHARS + 64);
    int in_code = 0, code_skipped = 0;
    for (size_t i = 0; i < len && prose.len < REPLY_CHARS;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *line = text + i;
        size_t n = end - i;
        size_t lead = 0;
        while (lead < n && (line[lead] == ' ' || line[lead] == '\t'))
            lead++;
        if (n - lead >= 3 && memcmp(line + lead, "```", 3) == 0) {
            code_skipped |= !in_code;
            in_code = !in_code;
        } else if (!in_code && (n > lead || prose.len > 0)) {
            /* Prose after code: say where the code was (it is shown as it runs). */
            if (code_skipped && prose.len > 0)
                buf_puts(&prose, "[code]\n");
            code_skipped = 0;
            buf_append(&prose, line, n);
            buf_puts(&prose, "\n");
        }
        i = end + 1;
    }
    while (prose.len > 0 && (prose.data[prose.len - 1] == '\n' || prose.data[prose.len - 1] == ' '))
        prose.len--;
    if (prose.len > 0)
        put_block(l, indent, "  ", prose.data, utf8_cut(prose.data, prose.len, REPLY_CHARS),
                  REPLY_LINES, 0, 0);
    buf_free(&prose);
}

static void put_bar(const cli_live *l, size_t done, size_t failed, size_t size)
{
    int full = size ? (int)((done * BAR_WIDTH) / size) : BAR_WIDTH;
    int bad = size ? (int)((failed * BAR_WIDTH + size - 1) / size) : 0;
    if (bad > full)
        bad = full;
    fputc('[', stderr);
    fputs(color(l, C_STRING), stderr);
    for (int i = 0; i < full - bad; i++)
        fputs(l->terminal ? "█" : "#", stderr);
    fputs(color(l, C_ERROR), stderr);
    for (int i = 0; i < bad; i++)
        fputs(l->terminal ? "█" : "x", stderr);
    fputs(color(l, C_OFF), stderr);
    for (int i = full; i < BAR_WIDTH; i++)
        fputc(l->terminal ? ' ' : '.', stderr);
    fputc(']', stderr);
}

static void put_tokens(char *out, size_t outlen, const rlm_event *ev)
{
    out[0] = '\0';
    if (ev->prompt_tokens >= 0 && ev->completion_tokens >= 0)
        snprintf(out, outlen, " · %ld+%ld tokens", ev->prompt_tokens, ev->completion_tokens);
    /* Of the prompt, what the provider's cache served (fields a library
     * older than this one does not fill: its size says so). */
    if (ev->size >= offsetof(rlm_event, cache_write_tokens) + sizeof ev->cache_write_tokens &&
        ev->prompt_tokens >= 0 && ev->cached_tokens > 0)
        snprintf(out + strlen(out), outlen - strlen(out), " (%ld cached)", ev->cached_tokens);
    if (ev->cost_usd > 0)
        snprintf(out + strlen(out), outlen - strlen(out), " · $%.4f", ev->cost_usd);
}

/* -v: one event as text above the live line. */
static void verbose_event(cli_live *l, const rlm_event *ev)
{
    int indent = 2 * (ev->depth > 1 ? ev->depth - 1 : 0);
    char extra[128];
    switch (ev->kind) {
    case RLM_EVENT_ROOT_REPLY:
        put_tokens(extra, sizeof extra, ev);
        fprintf(stderr, "%*s%s── turn %d · %s · %.1fs%s%s%s\n", indent, "", color(l, C_BOLD), ev->turn,
                ev->depth > 1 ? ev->node : "root", ev->seconds, extra,
                ev->error && strcmp(ev->error, "ok") ? " · error" : "", color(l, C_OFF));
        if (ev->text)
            put_reply_text(l, indent, ev->text, ev->text_len);
        break;
    case RLM_EVENT_CODE_START:
        fprintf(stderr, "%*s%s▸ block %d of %d%s\n", indent, "", color(l, C_DIM), ev->block,
                ev->blocks, color(l, C_OFF));
        if (ev->text)
            put_block(l, indent, "│ ", ev->text, ev->text_len, CODE_LINES, 0, 1);
        break;
    case RLM_EVENT_CODE:
        fprintf(stderr, "%*s%s◂ output of block %d · %.2fs%s%s\n", indent, "",
                color(l, ev->raised ? C_ERROR : C_DIM), ev->block, ev->seconds,
                ev->raised ? " · raised" : "", color(l, C_OFF));
        if (ev->output && ev->output_len)
            put_block(l, indent, "  ", ev->output, ev->output_len, OUTPUT_HEAD_LINES,
                      OUTPUT_TAIL_LINES, 0);
        break;
    case RLM_EVENT_BATCH_END:
        fprintf(stderr, "%*s%s × %zu ", indent, "", ev->batch_size == 1 ? "sub-call" : "sub-calls",
                ev->batch_size);
        put_bar(l, ev->done, ev->failed, ev->batch_size);
        fprintf(stderr, " %zu done", ev->done - (ev->failed < ev->done ? ev->failed : ev->done));
        if (ev->failed)
            fprintf(stderr, ", %s%zu failed%s", color(l, C_ERROR), ev->failed, color(l, C_OFF));
        if (ev->retried)
            fprintf(stderr, ", %zu retried", ev->retried);
        fprintf(stderr, " · %.1fs\n", ev->seconds);
        break;
    case RLM_EVENT_CHILD_START:
        fprintf(stderr, "%*s%s↳ child RLM %s (depth %d) starts%s\n", indent, "", color(l, C_BOLD),
                ev->node, ev->depth, color(l, C_OFF));
        if (ev->text)
            put_block(l, indent + 2, "? ", ev->text, ev->text_len, 3, 0, 0);
        break;
    case RLM_EVENT_CHILD_END:
        fprintf(stderr, "%*s%s↳ child RLM %s: %s · %.1fs%s\n", indent + 2, "", color(l, C_BOLD),
                ev->node, ev->status ? ev->status : "?", ev->seconds, color(l, C_OFF));
        if (ev->text)
            put_block(l, indent + 2, "= ", ev->text, ev->text_len, 3, 0, 0);
        break;
    case RLM_EVENT_FINAL_ANSWER:
        fprintf(stderr, "%*s%s✓ final answer (%s) at turn %d%s\n", indent, "", color(l, C_BOLD),
                ev->how ? ev->how : "?", ev->turn, color(l, C_OFF));
        break;
    case RLM_EVENT_BUDGET_STOP:
        fprintf(stderr, "%*s%sbudget %s ran out%s", indent, "", color(l, C_ERROR),
                ev->budget ? ev->budget : "?", color(l, C_OFF));
        if (ev->text) {
            fputs(": ", stderr);
            put_block(l, 0, "", ev->text, ev->text_len, 1, 0, 0);
        } else {
            fputc('\n', stderr);
        }
        break;
    default:
        break;
    }
}

/* The live line's middle for an event; 0 when the event changes nothing. */
static int progress_event(cli_live *l, const rlm_event *ev)
{
    const char *who = ev->depth > 1 ? ev->node : NULL;
    char prefix[64] = "";
    if (who)
        snprintf(prefix, sizeof prefix, "child %s · ", who);
    switch (ev->kind) {
    case RLM_EVENT_ROOT_REQUEST:
        snprintf(l->state, sizeof l->state, "%sturn %d · waiting for %s", prefix, ev->turn,
                 ev->model ? ev->model : "the model");
        return 1;
    case RLM_EVENT_ROOT_WAIT:
        if (ev->done)
            snprintf(l->state, sizeof l->state, "%sturn %d · %s writing: %zu chars", prefix, ev->turn,
                     ev->model ? ev->model : "the model", ev->done);
        return ev->done > 0;
    case RLM_EVENT_CODE_START:
        snprintf(l->state, sizeof l->state, "%sturn %d · running block %d of %d", prefix, ev->turn,
                 ev->block, ev->blocks);
        return 1;
    case RLM_EVENT_BATCH_START:
    case RLM_EVENT_BATCH_PROGRESS: {
        char size[32];
        group_digits(size, sizeof size, ev->batch_size);
        int n = snprintf(l->state, sizeof l->state, "%sturn %d · batch of %s (%zu in flight) %zu done",
                         prefix, ev->turn, size, ev->in_flight, ev->done);
        if (ev->failed && n > 0 && (size_t)n < sizeof l->state)
            n += snprintf(l->state + n, sizeof l->state - (size_t)n, ", %zu failed", ev->failed);
        if (ev->retried && n > 0 && (size_t)n < sizeof l->state)
            snprintf(l->state + n, sizeof l->state - (size_t)n, ", %zu retried", ev->retried);
        return 1;
    }
    case RLM_EVENT_BATCH_END:
        l->sub_calls += ev->batch_size;
        return 1;
    case RLM_EVENT_CHILD_START:
        snprintf(l->state, sizeof l->state, "child RLM %s started (depth %d)", ev->node, ev->depth);
        return 1;
    default:
        return 0;
    }
}

static void on_event(void *userdata, const rlm_event *ev)
{
    cli_live *l = userdata;
    pthread_mutex_lock(&l->lock);
    int changed = l->progress ? progress_event(l, ev) : 0;
    if (l->verbose && ev->kind != RLM_EVENT_ROOT_WAIT && ev->kind != RLM_EVENT_BATCH_PROGRESS) {
        int had_line = l->shown;
        erase_locked(l);
        verbose_event(l, ev);
        fflush(stderr);
        if (had_line)
            changed = 1;
    }
    if (changed)
        draw_locked(l);
    pthread_mutex_unlock(&l->lock);
}

/* ---- the ticker ---------------------------------------------------------- */

static void *ticker_main(void *arg)
{
    cli_live *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += TICK_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->wake, &l->lock, &until);
        if (!l->stopping && l->terminal)
            draw_locked(l);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

void cli_live_attach(cli_live *l, rlm *r)
{
    if (l)
        rlm_set_event_callback(r, on_event, l);
}

void cli_live_begin(cli_live *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->started = clock_now();
    l->sub_calls = 0;
    l->last_plain = 0;
    l->last_state[0] = '\0';
    snprintf(l->state, sizeof l->state, "starting");
    draw_locked(l);
    l->stopping = 0;
    pthread_mutex_unlock(&l->lock);
    if (l->progress && l->terminal && !l->ticking)
        l->ticking = pthread_create(&l->ticker, NULL, ticker_main, l) == 0;
}

void cli_live_end(cli_live *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->lock);
    if (l->ticking)
        pthread_join(l->ticker, NULL);
    l->ticking = 0;
    pthread_mutex_lock(&l->lock);
    erase_locked(l);
    l->state[0] = '\0';
    fflush(stderr);
    pthread_mutex_unlock(&l->lock);
}

void cli_live_summary(cli_live *l, const char *report_json)
{
    if (!l || !l->progress || !report_json)
        return;
    json_t *rep = json_loads(report_json, 0, NULL);
    if (!rep)
        return;
    json_int_t tokens = 0;
    const char *model;
    json_t *u;
    json_object_foreach(json_object_get(rep, "usage"), model, u) {
        tokens += json_integer_value(json_object_get(u, "prompt_tokens"));
        tokens += json_integer_value(json_object_get(u, "completion_tokens"));
    }
    char calls[32], toks[32], cost[48], dedup[48] = "", cached[48] = "";
    group_digits(calls, sizeof calls, (size_t)json_integer_value(json_object_get(rep, "sub_calls")));
    group_digits(toks, sizeof toks, tokens > 0 ? (size_t)tokens : 0);
    /* What the run did not pay in full: sub-calls not sent, prompt tokens
     * the provider's cache served (docs/costs.md). */
    json_int_t n = json_integer_value(json_object_get(rep, "sub_calls_deduplicated"));
    if (n > 0) {
        char d[32];
        group_digits(d, sizeof d, (size_t)n);
        snprintf(dedup, sizeof dedup, " (%s deduplicated)", d);
    }
    n = json_integer_value(json_object_get(rep, "cached_tokens"));
    if (n > 0) {
        char d[32];
        group_digits(d, sizeof d, (size_t)n);
        snprintf(cached, sizeof cached, " (%s cached)", d);
    }
    json_t *c = json_object_get(rep, "cost_usd");
    if (json_is_number(c))
        snprintf(cost, sizeof cost, "$%.4f", json_number_value(c));
    else
        snprintf(cost, sizeof cost, "prices unknown");
    long long turns = (long long)json_integer_value(json_object_get(rep, "iterations"));
    fprintf(stderr, "rlm: %lld turn%s · %s sub-calls%s · %s tokens%s · %s · %.1fs\n", turns,
            turns == 1 ? "" : "s", calls, dedup, toks, cached, cost,
            json_number_value(json_object_get(rep, "elapsed_seconds")));
    fflush(stderr);
    json_decref(rep);
}

void cli_live_free(cli_live *l)
{
    if (!l)
        return;
    cli_live_end(l);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->wake);
    free(l);
}
