/* trace — the run's record: one JSON object per line (JSONL), written and
 * flushed as each event happens, so a crash loses nothing already done.
 * Schema: docs/trace.md (version 1). Every event has "v" (schema version),
 * "type", "t" (seconds since the trace was opened), "time" (Unix time),
 * "node" and "parent" (the call-tree node that emitted it: fields given by
 * the caller override the root's defaults).
 *
 * Ownership: trace_event steals the reference to `fields`. A NULL trace
 * accepts and drops events, so callers need no checks. Thread-safe. */
#ifndef RLM_TRACE_H
#define RLM_TRACE_H

#include <jansson.h>
#include <stddef.h>

#define TRACE_SCHEMA_VERSION 1

/* Node ids of the call tree: the top RLM is "0", its children "0.1", "0.2",
 * theirs "0.1.1", ...; every event carries "node" and "parent" (null for the
 * root), so the tree can be rebuilt from the file. */
#define TRACE_ROOT_NODE "0"

typedef struct trace trace;

/* Creates (truncates) the file at path. NULL with err set on failure. */
trace *trace_open(const char *path, char *err, size_t errlen);

/* Appends {"v":1,"type":type,"t":..,"time":.., ...fields} as one line,
 * written at once (no buffering in the process). Steals fields (may be NULL).
 * Returns 0, or -1 if the write failed: the file is cut back to its last
 * whole line, nothing more is written, and trace_error says why. */
int trace_event(trace *t, const char *type, json_t *fields);

/* 1 once a write has failed (disk full, ...). */
int trace_failed(const trace *t);

/* Why the first failed write failed, naming the file and how many events it
 * holds; "" while none has failed (or for a NULL trace). Borrowed from t. */
const char *trace_error(trace *t);

void trace_close(trace *t);

#endif
