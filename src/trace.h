/* trace — the run's record: one JSON object per line (JSONL), written and
 * flushed as each event happens, so a crash loses nothing already done.
 * Schema: docs/trace.md (version 1). Every event has "v" (schema version),
 * "type", "t" (seconds since the trace was opened) and "time" (Unix time).
 *
 * Ownership: trace_event steals the reference to `fields`. A NULL trace
 * accepts and drops events, so callers need no checks. Thread-safe. */
#ifndef RLM_TRACE_H
#define RLM_TRACE_H

#include <jansson.h>
#include <stddef.h>

#define TRACE_SCHEMA_VERSION 1

typedef struct trace trace;

/* Creates (truncates) the file at path. NULL with err set on failure. */
trace *trace_open(const char *path, char *err, size_t errlen);

/* Appends {"v":1,"type":type,"t":..,"time":.., ...fields} and flushes.
 * Steals fields (may be NULL). Returns 0, or -1 if the write failed (the
 * failure is remembered: see trace_failed). */
int trace_event(trace *t, const char *type, json_t *fields);

/* 1 once a write has failed (disk full, ...). */
int trace_failed(const trace *t);

void trace_close(trace *t);

#endif
