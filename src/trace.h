/* trace — the run's record and its event stream: every event is one JSON
 * object, handed to whoever listens — the JSONL trace file (written and
 * flushed as each event happens, so a crash loses nothing already done), the
 * library's event callback (events.c), and a line sink (the run log's
 * compressed copy, runlog.c). Schema: docs/trace.md (version 1). Every event
 * has "v" (schema version), "type", "t" (seconds since the trace was
 * created), "time" (Unix time), "node" and "parent" (the call-tree node that
 * emitted it: fields given by the caller override the root's defaults).
 *
 * Ownership: trace_event and trace_notify steal the reference to `fields`.
 * What fields holds must not change afterwards, even a value the caller
 * shares (json_pack's "O"): the sink's thread may be writing it out.
 * A NULL trace, or one nothing listens to, accepts and drops events, so
 * callers need no checks (trace_active tells when building one is wasted).
 * Events are thread-safe and serialised: the listener is called one event
 * at a time, under the trace's lock, the line sink one line at a time on
 * its own thread. The sinks themselves are set between runs, never while
 * events flow. */
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

/* Appends an event's own fields as members of its JSON object, each as
 * ,"key":value (json_out.h), "node" and "parent" first: everything after
 * the common "v", "type", "t" and "time". 0, or -1 when out of memory. */
typedef struct buf buf;
typedef int (*trace_render_fn)(void *ctx, buf *out);
typedef void (*trace_release_fn)(void *ctx);

/* An event recorded late (trace_event_later) as a listener sees it: what it
 * was gathered from, for the listener that knows the type, and its JSON on
 * demand (trace_late_json). */
typedef struct trace_late {
    const char *type;
    double t, time;          /* its "t" and "time" */
    trace_render_fn render;
    void *ctx;               /* the gatherer's, e.g. a subcall_event for "sub_call" */
} trace_late;

/* late's whole event as compact JSON (no newline), malloc'd; NULL when out
 * of memory. */
char *trace_late_json(const trace_late *late);

/* Gets every event (traced or notified) as it happens, borrowed for the
 * call: whole (event), or, recorded late, its view (late); one is NULL. */
typedef void (*trace_listener_fn)(void *ctx, const char *type, json_t *event, const trace_late *late);
/* Gets every traced event as its JSONL line (with its newline), borrowed. */
typedef void (*trace_line_fn)(void *ctx, const char *line, size_t len);

/* A trace with no file and no listener yet. NULL when out of memory. */
trace *trace_new(void);

/* Creates (truncates) the file at path and writes every later event to it.
 * 0, or -1 with err set. */
int trace_open_file(trace *t, const char *path, char *err, size_t errlen);

/* trace_new and trace_open_file in one. NULL with err set on failure. */
trace *trace_open(const char *path, char *err, size_t errlen);

void trace_set_listener(trace *t, trace_listener_fn fn, void *ctx);

/* The line sink gets every traced line in trace order, one at a time, on a
 * thread of the trace's own once a few dozen are pending (a short run's
 * few are written by trace_sink_flush), so a run never waits for it;
 * without a file, that thread also turns the events into lines. A run with
 * many lines pending (a thousand) writes the oldest out itself, and
 * trace_sink_flush writes out what is left (in the caller's thread) and
 * returns when the sink has had every line traced so far: call it before
 * reading what the sink built. */
void trace_set_line_sink(trace *t, trace_line_fn fn, void *ctx);
void trace_sink_flush(trace *t);

/* 1 when an event would reach anything (a file, a listener, a sink). */
int trace_active(const trace *t);

/* Records {"v":1,"type":type,"t":..,"time":.., ...fields}: the listener gets
 * it, and the file and the line sink get it as one line, written at once (no
 * buffering in the process). Steals fields (may be NULL). Returns 0, or -1
 * if the file's write failed: the file is cut back to its last whole line,
 * nothing more is written to it, and trace_error says why. */
int trace_event(trace *t, const char *type, json_t *fields);

/* trace_event for events too many to build on the run's own thread (a
 * batch's thousands of sub-calls): the caller gathers what the event needs
 * in ctx, and render writes it out, with no jansson tree, on the line
 * sink's thread; the run pays only for the gathering. A listener gets the
 * late view now (trace_late); with a file, the line is written now. "t" and
 * "time" are this call's. release(ctx) is called once nothing needs ctx
 * (at once when nothing listens): ctx must hold copies of everything render
 * reads, for it may run after the caller is gone (before trace_sink_flush
 * returns); type must outlive the trace (a literal). Returns as trace_event. */
int trace_event_later(trace *t, const char *type, trace_render_fn render, trace_release_fn release,
                      void *ctx);

/* Progress that is no part of the record (a reply arriving, a batch under
 * way): the listener only. Steals fields. */
void trace_notify(trace *t, const char *type, json_t *fields);

/* The longest line the trace writes: an event past it is not written, as
 * when memory runs out (no event the engine builds comes near it). */
#define TRACE_LINE_MAX ((size_t)256 << 20)

/* event as one JSONL line: its compact JSON (json_dumps' JSON_COMPACT, byte
 * for byte) and a newline, *len bytes, the caller's to free. NULL when out
 * of memory, past TRACE_LINE_MAX or nested past 2,048 levels. Compact JSON
 * escapes every newline inside strings: one event, one line. */
char *trace_json_line(json_t *event, size_t *len);

/* Seconds since the trace was created (an event's "t"). */
double trace_elapsed(const trace *t);

/* 1 once a write to the file has failed (disk full, ...). */
int trace_failed(const trace *t);

/* Why the first failed write failed, naming the file and how many events it
 * holds; "" while none has failed (or for a NULL trace). Borrowed from t. */
const char *trace_error(trace *t);

void trace_close(trace *t);

#endif
