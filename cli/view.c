/* view — `rlm view TRACE|ID [-o FILE.html] [--open]`: the page that shows
 * a run. The trace's lines are checked (each must be JSON) and written into
 * the page as they are, inside a <script type="application/json"> block with
 * every '<' as \u003c (no text in it can close the block); the page's own
 * script builds what is shown from them, long parts only when opened. */
#include "view.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "rlm.h"
#include "util.h"

/* The page's parts, from cli/view/ (cmake/embed_assets.cmake). */
extern const unsigned char view_html[], view_css[], view_js[];
extern const size_t view_html_len, view_css_len, view_js_len;

/* Largest trace read: far above any run's (the demo's is about 17 MB). */
#define VIEW_MAX_TRACE ((size_t)2 << 30)

static void note(json_t *notes, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(json_t *notes, const char *level, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_array_append_new(notes, json_pack("{s:s,s:s}", "level", level, "text", text));
}

int view_read(const char *text, size_t len, json_t **events, json_t **notes, const char **format,
              char *err, size_t errlen)
{
    *events = json_array();
    *notes = json_array();
    *format = "rlm";
    size_t bad = 0, first_bad = 0, line_no = 0, rlms = 0;
    int cut = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        line_no++;
        size_t n = end - at;
        while (n > 0 && (text[at + n - 1] == '\r' || text[at + n - 1] == ' '))
            n--;
        if (n > 0) {
            json_t *ev = json_loadb(text + at, n, 0, NULL);
            if (json_is_object(ev)) {
                rlms += view_is_rlms_line(ev);
                json_array_append_new(*events, ev);
            } else {
                json_decref(ev);
                if (!nl)
                    cut = 1;   /* the last line, without its newline: cut short */
                else if (bad++ == 0)
                    first_bad = line_no;
            }
        }
        at = end + 1;
    }
    if (cut)
        note(*notes, "warn", "the last line is cut short (the run was stopped while writing it): "
             "it is left out");
    if (bad)
        note(*notes, "error", "%zu line%s not JSON and left out (the first: line %zu)", bad,
             bad == 1 ? " is" : "s are", first_bad);
    if (json_array_size(*events) == 0) {
        snprintf(err, errlen, "no event in it: not a trace of rlm (docs/trace.md) nor an RLMLogger file");
        json_decref(*events);
        json_decref(*notes);
        *events = *notes = NULL;
        return -1;
    }
    if (rlms * 2 > json_array_size(*events)) {
        json_t *converted = view_from_rlms(*events, *notes);
        json_decref(*events);
        *events = converted;
        *format = "rlms";
    }
    return 0;
}

/* text with every '<' as \u003c: valid JSON still (a '<' is only ever in a
 * string), and nothing in it can end the <script> block it sits in. */
static int write_script_safe(FILE *out, const char *text, size_t len)
{
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '<')
            continue;
        if (fwrite(text + from, 1, i - from, out) != i - from || fputs("\\u003c", out) < 0)
            return -1;
        from = i + 1;
    }
    return fwrite(text + from, 1, len - from, out) == len - from ? 0 : -1;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return write_script_safe(data, buffer, size);
}

int view_write_html(FILE *out, const char *source, const char *format, json_t *events, json_t *notes)
{
    const char *html = (const char *)view_html;
    const char *marks[3] = {"/*@CSS@*/", "/*@DATA@*/", "/*@JS@*/"};
    const char *at = html;
    for (int k = 0; k < 3; k++) {
        const char *m = strstr(at, marks[k]);
        if (!m)
            return -1;   /* the build embedded a page without its marks */
        if (fwrite(at, 1, (size_t)(m - at), out) != (size_t)(m - at))
            return -1;
        if (k == 0 && fwrite(view_css, 1, view_css_len, out) != view_css_len)
            return -1;
        if (k == 2 && fwrite(view_js, 1, view_js_len, out) != view_js_len)
            return -1;
        if (k == 1) {
            json_t *head = json_pack("{s:s,s:s,s:O}", "source", source, "format", format, "notes", notes);
            char *text = head ? json_dumps(head, JSON_COMPACT) : NULL;
            json_decref(head);
            if (!text)
                return -1;
            /* {"source":..,"notes":[..],"events":[ ...the events... ]} */
            size_t tl = strlen(text);
            int rc = write_script_safe(out, text, tl - 1);
            free(text);
            if (rc != 0 || fputs(",\"events\":", out) < 0 ||
                json_dump_callback(events, dump_cb, out, JSON_COMPACT) != 0 || fputc('}', out) == EOF)
                return -1;
        }
        at = m + strlen(marks[k]);
    }
    size_t rest = strlen(at);
    return fwrite(at, 1, rest, out) == rest ? 0 : -1;
}

static void usage(FILE *out)
{
    fputs("usage: rlm view TRACE|ID [-o FILE.html] [--open]\n"
          "Writes one self-contained HTML page (no network: its style and script are inline) that\n"
          "shows a run: the call tree (root, child RLMs, batches of sub-calls) with each node's\n"
          "time, tokens and cost; each turn's reply, code and output; the sub-calls' prompts and\n"
          "replies; a timeline; search across everything; the answer and how it was given.\n"
          "TRACE is a file written by --trace (docs/trace.md) or by the rlms library's RLMLogger;\n"
          "ID is a run of the run log (rlm logs).\n"
          "  -o, --output FILE  where to write the page (default: TRACE with .html for .jsonl,\n"
          "                     or rlm-run-ID.html in the current directory for a logged run)\n"
          "  --open             open it in a browser: $BROWSER (programs separated by ':'),\n"
          "                     else xdg-open; if none opens it, a warning (the page is written)\n"
          "  --log-db PATH      the run log to take ID from (default $XDG_DATA_HOME/rlm/logs.db)\n"
          "Exit codes: 0 written, 2 the trace cannot be read or is no trace, or the page cannot\n"
          "be written.\n",
          out);
}

/* The default page path of a trace file. */
static char *default_output(const char *trace_path)
{
    size_t n = strlen(trace_path);
    const char *dot = strrchr(trace_path, '.');
    const char *slash = strrchr(trace_path, '/');
    if (dot && (!slash || dot > slash) && strcmp(dot, ".html") != 0)
        n = (size_t)(dot - trace_path);
    char *out = malloc(n + 6);
    if (out)
        snprintf(out, n + 6, "%.*s.html", (int)n, trace_path);
    return out;
}

/* The run id an argument names ("42"), or 0. */
static long long run_id(const char *arg)
{
    char *end;
    long long id = strtoll(arg, &end, 10);
    return *arg && !*end && id > 0 ? id : 0;
}

/* Runs one opener (a program found on PATH, or a path) on the page and
 * waits for it; 0 when it ran and exited 0, else -1 with why in err. */
static int run_opener(const char *prog, const char *page, char *err, size_t errlen)
{
    char *argv[] = {(char *)prog, (char *)page, NULL};
    extern char **environ;
    pid_t pid;
    int rc = posix_spawnp(&pid, prog, NULL, NULL, argv, environ);
    if (rc != 0) {
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror(rc));
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "%s: %s", prog, strerror(errno));
            return -1;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        snprintf(err, errlen, "%s exited with status %d", prog, WEXITSTATUS(status));
    else
        snprintf(err, errlen, "%s was killed by signal %d", prog, WTERMSIG(status));
    return -1;
}

/* --open: the page in a browser. $BROWSER (programs separated by ':', tried
 * in turn, as Python's webbrowser reads it) comes first, then xdg-open. The
 * page is written whatever happens here, so a failure is a warning naming
 * what was tried; the exit status stays 0. */
static void open_in_browser(const char *path)
{
    char *page = realpath(path, NULL);
    char err[512] = "";
    const char *browsers = getenv("BROWSER");
    char *list = browsers && *browsers ? strdup(browsers) : NULL;
    int opened = 0;
    for (char *prog = list, *next; prog && !opened; prog = next) {
        next = strchr(prog, ':');
        if (next)
            *next++ = '\0';
        if (*prog)
            opened = run_opener(prog, page ? page : path, err, sizeof err) == 0;
    }
    if (!opened) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        opened = run_opener("xdg-open", page ? page : path, err, sizeof err) == 0;
        if (!opened)
            fprintf(stderr, "rlm view: the page is written, but could not be opened in a browser (%s%s%s);"
                    " open %s yourself\n", why, *why ? "; " : "", err, page ? page : path);
    }
    free(list);
    free(page);
}

int view_load(const char *command, const char *input, const char *log_db, char **text, size_t *len,
              long long *log_id)
{
    *text = NULL;
    *len = 0;
    *log_id = 0;
    if (access(input, F_OK) != 0 && (*log_id = run_id(input)) > 0) {
        /* A run of the run log: its trace, kept compressed there. */
        rlm_config *cfg = rlm_config_new();
        rlm_status st = cfg && (!log_db || rlm_config_set(cfg, "log_db", log_db) == RLM_OK)
                            ? rlm_logs_trace(cfg, *log_id, text, len) : RLM_ERR_USAGE;
        rlm_config_free(cfg);
        if (st != RLM_OK) {
            fprintf(stderr, "rlm %s: %s\n", command, *text ? *text : "bad --log-db");
            free(*text);
            *text = NULL;
            return -1;
        }
        return 0;
    }
    if (!(*text = file_read(input, VIEW_MAX_TRACE, len))) {
        fprintf(stderr, "rlm %s: cannot read '%s': %s\n", command, input, errno ? strerror(errno) : "too large");
        return -1;
    }
    return 0;
}

int cmd_view(int argc, char **argv)
{
    const char *input = NULL, *output = NULL, *log_db = NULL;
    int open_it = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return EXIT_ANSWERED;
        } else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) && i + 1 < argc) {
            output = argv[++i];
        } else if (strcmp(argv[i], "--log-db") == 0 && i + 1 < argc) {
            log_db = argv[++i];
        } else if (strcmp(argv[i], "--open") == 0) {
            open_it = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "rlm view: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        } else if (!input) {
            input = argv[i];
        } else {
            fprintf(stderr, "rlm view: one trace at a time ('%s' is one too many)\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!input) {
        usage(stderr);
        return EXIT_USAGE;
    }
    char err[1024];
    char *text = NULL, *out_path = NULL;
    size_t len = 0;
    json_t *events = NULL, *notes = NULL;
    const char *format = "rlm";
    int rc = EXIT_USAGE;
    long long log_id = 0;
    char label[64];
    if (view_load("view", input, log_db, &text, &len, &log_id) != 0)
        goto done;
    if (log_id > 0)
        snprintf(label, sizeof label, "run %lld of the run log", log_id);
    if (view_read(text, len, &events, &notes, &format, err, sizeof err) != 0) {
        fprintf(stderr, "rlm view: '%s': %s\n", input, err);
        goto done;
    }
    free(text);
    text = NULL;
    if (output) {
        out_path = strdup(output);
    } else if (log_id > 0) {
        out_path = malloc(64);
        if (out_path)
            snprintf(out_path, 64, "rlm-run-%lld.html", log_id);
    } else {
        out_path = default_output(input);
    }
    FILE *out = out_path ? fopen(out_path, "w") : NULL;
    if (!out) {
        fprintf(stderr, "rlm view: cannot write '%s': %s\n", out_path ? out_path : "?", strerror(errno));
        goto done;
    }
    const char *base = strrchr(input, '/');
    int failed = view_write_html(out, log_id > 0 ? label : base ? base + 1 : input, format, events,
                                 notes) != 0;
    failed |= fclose(out) != 0;
    if (failed) {
        fprintf(stderr, "rlm view: cannot write '%s': %s\n", out_path, strerror(errno ? errno : EIO));
        unlink(out_path);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(notes); i++)
        fprintf(stderr, "rlm view: note: %s\n", json_string_value(json_object_get(json_array_get(notes, i), "text")));
    printf("%s\n", out_path);
    rc = EXIT_ANSWERED;
    if (open_it)
        open_in_browser(out_path);
done:
    free(text);
    free(out_path);
    json_decref(events);
    json_decref(notes);
    return rc;
}
