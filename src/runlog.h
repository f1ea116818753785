/* runlog — the log of every run: one row per question answered (the
 * question, the inputs' names and sizes, the models, the answer, status,
 * how, turns, sub-calls, tokens, cost, time, and its trace, compressed) in
 * a SQLite file, $XDG_DATA_HOME/rlm/logs.db by default. The traces' total
 * size is capped: past the cap the oldest traces are dropped, their rows
 * kept. The log never breaks a run: a file that cannot be opened, is not a
 * database or stays locked is a warning, and the run goes on.
 *
 * Ownership: runlog_open's handle is freed by runlog_close; strings and
 * JSON handed in are borrowed; JSON and buffers handed out are the
 * caller's. A runlog_capture is fed from the trace's line sink (one thread
 * at a time: the trace serialises its lines). */
#ifndef RLM_RUNLOG_H
#define RLM_RUNLOG_H

#include <jansson.h>
#include <stddef.h>

/* Default cap of the traces kept, compressed, in the whole log. */
#define RUNLOG_DEFAULT_MAX_BYTES ((size_t)256 << 20)
/* Largest compressed trace one run may keep; a larger one is dropped from
 * the log (its row kept, saying so). */
#define RUNLOG_MAX_TRACE_BYTES ((size_t)64 << 20)

typedef struct runlog runlog;

/* Opens (creates, with its directory) the log at path. NULL with err set
 * when it cannot be opened, is damaged or is no log of rlm's. */
runlog *runlog_open(const char *path, char *err, size_t errlen);
void runlog_close(runlog *l);

/* ---- capturing a run's trace ------------------------------------------------ */

typedef struct runlog_capture runlog_capture;

/* A compressor for one run's trace lines (zstd), bounded by
 * RUNLOG_MAX_TRACE_BYTES. NULL when out of memory. */
runlog_capture *runlog_capture_new(void);
/* Starts a new run's trace: what was captured is dropped, `prologue` (may
 * be NULL; e.g. the run_start line) opens the new one. */
void runlog_capture_reset(runlog_capture *c, const char *prologue, size_t len);
/* A trace_line_fn: appends one line. */
void runlog_capture_line(void *ctx, const char *line, size_t len);
void runlog_capture_free(runlog_capture *c);

/* ---- writing and reading ------------------------------------------------------- */

/* Records one run: `run` holds the row's fields ("command", "question",
 * "inputs" (array), "model", "sub_model", "answer", "status", "how",
 * "turns", "sub_calls", "prompt_tokens", "completion_tokens", "cost_usd",
 * "elapsed", "error", "session", "started", "cached_tokens",
 * "cache_write_tokens", "cost_no_cache_usd", "sub_calls_deduplicated",
 * "trace_note": why no trace is kept, when capture is NULL), capture its
 * trace (may be NULL). Then applies the cap: past max_bytes of traces in the whole log
 * the oldest are dropped (0: none is kept). 0 and *id, or -1
 * with err (the run is not logged). */
int runlog_record(runlog *l, json_t *run, runlog_capture *capture, size_t max_bytes, long long *id,
                  char *err, size_t errlen);

/* runlog_record with the row built from a run's report (rlm_report_json's
 * text): command ("ask", "chat", "bench", ...), question, inputs (an array
 * of {"name", "bytes"}), started (Unix time). */
int runlog_record_report(runlog *l, const char *command, const char *question, json_t *inputs,
                         double started, const char *report, runlog_capture *capture,
                         size_t max_bytes, long long *id, char *err, size_t errlen);

/* Runs matching filter ({"text", "model", "status", "since", "until" (Unix
 * seconds), "limit"}; all optional), newest first, as a new array of
 * objects without the trace (but "trace_bytes", 0 when none is kept). */
int runlog_list(runlog *l, json_t *filter, json_t **out, char *err, size_t errlen);

/* One run's row (as runlog_list's), or NULL with err ("no run N"). */
json_t *runlog_get(runlog *l, long long id, char *err, size_t errlen);

/* One run's trace, decompressed (*len bytes, NUL-terminated). -1 with err
 * when the run does not exist or its trace is not kept. */
int runlog_trace(runlog *l, long long id, char **trace, size_t *len, char *err, size_t errlen);

/* Removes runs: the ids given, or all before `before` (Unix seconds; 0:
 * none), or every run with all. *removed says how many. */
int runlog_remove(runlog *l, const long long *ids, size_t n, double before, int all, long *removed,
                  char *err, size_t errlen);

#endif
