/* output — how the rlm command writes what the user or a model controls:
 * text through an escape on a terminal (never to a pipe or a file), JSON
 * kept ASCII on a terminal, answers, warnings, and the JSON of a question
 * that failed before it ran. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "rlm.h"
#include "utf8.h"
#include "util.h"

void cli_write_text(FILE *to, const char *text, size_t len)
{
    if (!isatty(fileno(to))) {
        fwrite(text, 1, len, to);
        return;
    }
    size_t n = 0;
    char *shown = utf8_escape_terminal(text, len, &n);
    if (shown)
        fwrite(shown, 1, n, to);
    else
        fputs("[text not shown: out of memory]", to);
    free(shown);
}

void cli_say(const char *prefix, const char *text)
{
    fputs(prefix, stderr);
    cli_write_text(stderr, text, strlen(text));
    fputc('\n', stderr);
}

void cli_print_json(const char *text)
{
    json_t *j = isatty(STDOUT_FILENO) ? json_loads(text, JSON_ALLOW_NUL, NULL) : NULL;
    char *ascii = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    puts(ascii ? ascii : text);
    free(ascii);
    json_decref(j);
}

void cli_print_answer(const char *answer, size_t len)
{
    cli_write_text(stdout, answer, len);
    fputc('\n', stdout);
}

size_t cli_print_warnings(const rlm *r, size_t from)
{
    const char *w = rlm_warnings(r);
    size_t len = strlen(w);
    for (const char *line = w + (from < len ? from : len); *line;) {
        const char *nl = strchr(line, '\n');
        int n = nl ? (int)(nl - line) : (int)strlen(line);
        fputs("rlm: warning: ", stderr);
        cli_write_text(stderr, line, (size_t)n);
        fputc('\n', stderr);
        line += n + (nl != NULL);
    }
    return len;
}

void cli_json_failure(rlm_status st, const char *message)
{
    json_t *j = json_pack("{s:n,s:s,s:s}", "answer", "status", rlm_status_name(st), "error", message);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    puts(text ? text : "{\"answer\":null,\"status\":\"out of memory\",\"error\":\"out of memory\"}");
    free(text);
    json_decref(j);
}
