/* view — `rlm view`: a trace (docs/trace.md), or a log file of the
 * reference library's RLMLogger, as one self-contained HTML page (the page
 * is cli/view/, embedded at build time).
 *
 * Ownership: view_read's *events is the caller's (json_decref);
 * view_load's *text is the caller's (free). */
#ifndef RLM_CLI_VIEW_H
#define RLM_CLI_VIEW_H

#include <jansson.h>
#include <stddef.h>

/* The events of a JSONL text of len bytes: an rlm trace as it is, an
 * RLMLogger file converted to rlm's events (view_rlms.c). Lines that are
 * not JSON are skipped, a last line cut short (a run killed mid-write)
 * dropped, each said in *notes (an array of {"level","text"}). 0 with
 * *events and *notes set and *format "rlm" or "rlms"; -1 with err when
 * nothing in it is an event. */
int view_read(const char *text, size_t len, json_t **events, json_t **notes, const char **format,
              char *err, size_t errlen);

/* The text of a trace named on a command line: a file, or (when no file of
 * that name exists and it is a number) that run of the run log in log_db
 * (NULL: the default log), then *log_id is set (else 0). 0 with *text and
 * *len; -1 after saying why on stderr, as "rlm COMMAND: ...". */
int view_load(const char *command, const char *input, const char *log_db, char **text, size_t *len,
              long long *log_id);

/* Writes the page for events (and notes, source: the trace's name) to out.
 * 0, or -1 when the write failed. */
int view_write_html(FILE *out, const char *source, const char *format, json_t *events,
                    json_t *notes);

/* An RLMLogger file's parsed lines (metadata and iteration objects) as
 * rlm trace events (docs/trace.md, "Reading rlms logs"). A new array. */
json_t *view_from_rlms(json_t *lines, json_t *notes);

/* 1 when the parsed line is one an RLMLogger writes. */
int view_is_rlms_line(json_t *line);

#endif
