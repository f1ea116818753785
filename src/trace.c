/* trace — the event stream of a run and its JSONL record, one whole line per
 * event, written as it happens. A line is handed to the kernel in one
 * write(2) loop; a write that fails half-way (a full disk) is cut back to the
 * line before it, and nothing is written after it: the file ends on a whole
 * line, and the failure is kept for the caller to report. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_out.h"
#include "util.h"

/* Lines waiting for the sink at most: a run that finds it full waits for
 * the line being written. */
#define TRACE_SINK_QUEUE 4096
/* Lines queued at once that start the sink's thread. */
#define TRACE_SINK_THREAD_AT 64
/* Lines waiting past which a run writes out the oldest itself (when no one
 * else is writing one): a starved sink thread holds at most about this many
 * events (a sub-call's ~4 KB: 4 MB) — and a batch's burst of 640 stays
 * under it, left to the thread. */
#define TRACE_SINK_HELP 1024

/* What waits for the sink's thread: a line; or an event it writes out
 * itself; or a late one (trace_event_later) it renders, released after. */
struct trace_slot {
    char *line;
    size_t len;
    json_t *event;
    trace_late late;
    trace_release_fn release;
};

struct trace {
    int fd;                  /* -1: no file */
    char *path;
    off_t size;              /* bytes of whole lines written */
    size_t events;           /* events written */
    pthread_mutex_t lock;
    double start;
    int failed;
    char error[1024];        /* why the first failed write failed */
    trace_listener_fn listener;
    void *listener_ctx;
    trace_line_fn line_sink;
    void *line_ctx;
    /* The sink's lines go to a thread of the trace's own (see trace_sink_main). */
    pthread_mutex_t sink_lock;
    pthread_cond_t sink_wake;      /* a line was queued, or the thread must stop */
    pthread_cond_t sink_changed;   /* a line was taken or done */
    pthread_t sink_thread;
    int sink_thread_tried, sink_thread_started;
    int sink_stop, sink_busy;
    struct trace_slot queue[TRACE_SINK_QUEUE];
    size_t queue_head, queued;
};

trace *trace_new(void)
{
    trace *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fd = -1;
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->sink_lock, NULL);
    pthread_cond_init(&t->sink_wake, NULL);
    pthread_cond_init(&t->sink_changed, NULL);
    t->start = clock_now();
    return t;
}

int trace_open_file(trace *t, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char *copy = fd >= 0 ? strdup(path) : NULL;
    if (fd < 0 || !copy) {
        snprintf(err, errlen, "cannot write trace file '%s': %s", path,
                 fd < 0 ? strerror(errno) : "out of memory");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    t->fd = fd;
    t->path = copy;
    t->size = 0;
    t->events = 0;
    t->failed = 0;
    t->error[0] = '\0';
    return 0;
}

trace *trace_open(const char *path, char *err, size_t errlen)
{
    trace *t = trace_new();
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (trace_open_file(t, path, err, errlen) != 0) {
        trace_close(t);
        return NULL;
    }
    return t;
}

void trace_set_listener(trace *t, trace_listener_fn fn, void *ctx)
{
    t->listener = fn;
    t->listener_ctx = ctx;
}

/* A late event as JSON (trace_event_later): the common fields up to
 * "time", then the renderer's, and newline when asked. */
static char *trace_late_text(const trace_late *late, int newline, size_t *len)
{
    buf b;
    buf_init(&b, TRACE_LINE_MAX);
    *len = 0;
    if (buf_puts(&b, "{\"v\":") != 0 || json_out_integer(&b, TRACE_SCHEMA_VERSION) != 0 ||
        json_out_key(&b, "type") != 0 || json_out_string(&b, late->type, strlen(late->type)) != 0 ||
        json_out_key(&b, "t") != 0 || json_out_real(&b, late->t) != 0 ||
        json_out_key(&b, "time") != 0 || json_out_real(&b, late->time) != 0 ||
        late->render(late->ctx, &b) != 0 || buf_append(&b, "}\n", newline ? 2 : 1) != 0) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return buf_take(&b);
}

char *trace_late_json(const trace_late *late)
{
    size_t len;
    return trace_late_text(late, 0, &len);
}

char *trace_json_line(json_t *event, size_t *len)
{
    buf b;
    /* Bounded as the trace's readers bound a line (docs/trace.md). */
    buf_init(&b, TRACE_LINE_MAX);
    if (json_out_value(&b, event) != 0 || buf_append(&b, "\n", 1) != 0) {
        buf_free(&b);
        *len = 0;
        return NULL;
    }
    *len = b.len;
    return buf_take(&b);
}

/* Design note. What the sink does with a line (the run log compresses it)
 * must not hold up the run that wrote it: lines are queued, in trace order
 * (queued under the trace's lock), for a thread of the trace's own, which
 * hands them to the sink one by one. Whoever must not wait for that thread
 * does the work itself instead: a run with TRACE_SINK_HELP lines pending
 * writes out the oldest, and trace_sink_flush writes out what is left, so
 * a thread that gets little CPU (a saturated rlm serve) delays no run by
 * more than the writing, and holds a bounded queue. One writer at a time
 * (sink_busy), taking lines in order: the sink sees them in trace order.
 * The thread starts with the TRACE_SINK_THREAD_AT-th line queued: a short
 * run's few dozen lines are written by its flush, with no thread to start,
 * wake and join (the join alone took up to 4 ms on a loaded machine).
 * The thread keeps the run's priority: at idle priority (SCHED_IDLE, tried)
 * it took the demo's idle moments, but a run then waited for it wherever
 * it held the one writer's turn or had to exit (4 ms at each run's end on
 * a loaded machine), and an unprivileged thread cannot be raised again. */

/* Writes out the oldest slot, as the one writer: called under sink_lock,
 * with a slot queued and no other writer, and dropping the lock while it
 * writes. */
static void trace_sink_write_next(trace *t)
{
    struct trace_slot slot = t->queue[t->queue_head];
    t->queue_head = (t->queue_head + 1) % TRACE_SINK_QUEUE;
    t->queued--;
    t->sink_busy = 1;
    pthread_mutex_unlock(&t->sink_lock);
    char *line = slot.line;
    size_t len = slot.len;
    if (slot.release) {
        line = trace_late_text(&slot.late, 1, &len);
        slot.release(slot.late.ctx);
    } else if (slot.event) {
        line = trace_json_line(slot.event, &len);
        json_decref(slot.event);
    }
    if (line)
        t->line_sink(t->line_ctx, line, len);
    free(line);
    pthread_mutex_lock(&t->sink_lock);
    t->sink_busy = 0;
    pthread_cond_broadcast(&t->sink_changed);
    if (t->queued > 0)   /* the thread may have stood aside for this writer */
        pthread_cond_signal(&t->sink_wake);
}

static void *trace_sink_main(void *arg)
{
    trace *t = arg;
    pthread_mutex_lock(&t->sink_lock);
    for (;;) {
        while ((t->queued == 0 || t->sink_busy) && !t->sink_stop)
            pthread_cond_wait(&t->sink_wake, &t->sink_lock);
        if (t->queued == 0)
            break;   /* stopped, with every line written */
        if (t->sink_busy) {
            pthread_cond_wait(&t->sink_changed, &t->sink_lock);
            continue;
        }
        trace_sink_write_next(t);
    }
    pthread_mutex_unlock(&t->sink_lock);
    return NULL;
}

static void trace_sink_stop(trace *t)
{
    if (!t->line_sink)
        return;
    pthread_mutex_lock(&t->sink_lock);
    t->sink_stop = 1;
    pthread_cond_signal(&t->sink_wake);
    pthread_mutex_unlock(&t->sink_lock);
    trace_sink_flush(t);   /* here, not left to the thread */
    if (t->sink_thread_started)
        pthread_join(t->sink_thread, NULL);
    t->sink_stop = t->sink_thread_tried = t->sink_thread_started = 0;
}

void trace_set_line_sink(trace *t, trace_line_fn fn, void *ctx)
{
    trace_sink_stop(t);
    t->line_sink = fn;
    t->line_ctx = ctx;
}

void trace_sink_flush(trace *t)
{
    if (!t || !t->line_sink)
        return;
    pthread_mutex_lock(&t->sink_lock);
    while (t->queued > 0 || t->sink_busy) {
        if (t->sink_busy)
            pthread_cond_wait(&t->sink_changed, &t->sink_lock);
        else
            trace_sink_write_next(t);
    }
    pthread_mutex_unlock(&t->sink_lock);
}

/* Hands slot (what it holds taken) to the sink's thread; under t->lock, so
 * in trace order. */
static void trace_sink_queue(trace *t, struct trace_slot slot)
{
    pthread_mutex_lock(&t->sink_lock);
    while (t->queued >= TRACE_SINK_HELP && (!t->sink_busy || t->queued == TRACE_SINK_QUEUE)) {
        if (t->sink_busy)
            pthread_cond_wait(&t->sink_changed, &t->sink_lock);
        else
            trace_sink_write_next(t);
    }
    t->queue[(t->queue_head + t->queued) % TRACE_SINK_QUEUE] = slot;
    t->queued++;
    /* Without a thread (none could start), runs and flushes write it all. */
    if (!t->sink_thread_tried && t->queued >= TRACE_SINK_THREAD_AT) {
        t->sink_thread_tried = 1;
        t->sink_thread_started = pthread_create(&t->sink_thread, NULL, trace_sink_main, t) == 0;
    }
    pthread_cond_signal(&t->sink_wake);
    pthread_mutex_unlock(&t->sink_lock);
}

int trace_active(const trace *t)
{
    return t && (t->fd >= 0 || t->listener || t->line_sink);
}

double trace_elapsed(const trace *t)
{
    return t ? clock_now() - t->start : 0;
}

/* The whole event: the common fields, then the caller's. Steals fields. */
static json_t *trace_build(trace *t, const char *type, json_t *fields)
{
    json_t *event = json_object();
    if (!event) {
        json_decref(fields);
        return NULL;
    }
    json_object_set_new(event, "v", json_integer(TRACE_SCHEMA_VERSION));
    json_object_set_new(event, "type", json_string(type));
    json_object_set_new(event, "t", json_real(clock_now() - t->start));
    json_object_set_new(event, "time", json_real(clock_wall()));
    /* Events of the top RLM need not say so: the root node is the default. */
    json_object_set_new(event, "node", json_string(TRACE_ROOT_NODE));
    json_object_set_new(event, "parent", json_null());
    if (fields)
        json_object_update(event, fields);
    json_decref(fields);
    return event;
}

void trace_notify(trace *t, const char *type, json_t *fields)
{
    if (!t || !t->listener) {
        json_decref(fields);
        return;
    }
    json_t *event = trace_build(t, type, fields);
    if (!event)
        return;
    pthread_mutex_lock(&t->lock);
    t->listener(t->listener_ctx, type, event, NULL);
    pthread_mutex_unlock(&t->lock);
    json_decref(event);
}

/* Writes one line to the file; under the lock. */
static int trace_write_locked(trace *t, const char *type, const char *line, size_t len)
{
    if (t->failed)
        return -1;
    if (write_full(t->fd, line, len) == 0) {
        t->size += (off_t)len;
        t->events++;
        return 0;
    }
    int e = errno;
    /* A line cut by a full disk would break every reader of the file: cut
     * back to the last whole one (a device such as /dev/full cannot be, and
     * holds nothing anyway). */
    if (ftruncate(t->fd, t->size) == 0)
        lseek(t->fd, t->size, SEEK_SET);
    snprintf(t->error, sizeof t->error, "cannot write trace file '%.700s': %s (it holds the "
             "first %zu events, up to before '%.40s')", t->path, strerror(e), t->events, type);
    t->failed = 1;
    return -1;
}

/* Hands an event to everything that listens, under the lock, so in trace
 * order: to the listener as it is (slot's event, or its late view); line,
 * when there is one, to the file and the sink; else to the sink's thread
 * the event, or the late one, for it to write out. Takes what slot holds. */
static int trace_deliver(trace *t, const char *type, struct trace_slot slot)
{
    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (t->listener)
        t->listener(t->listener_ctx, type, slot.event, slot.release ? &slot.late : NULL);
    if (t->fd >= 0)
        rc = trace_write_locked(t, type, slot.line, slot.len);
    if (t->line_sink) {
        if (slot.line) {   /* the thread needs no more than the line */
            json_decref(slot.event);
            if (slot.release)
                slot.release(slot.late.ctx);
            slot.event = NULL;
            slot.release = NULL;
        }
        trace_sink_queue(t, slot);
        slot = (struct trace_slot){0};
    }
    pthread_mutex_unlock(&t->lock);
    json_decref(slot.event);
    if (slot.release)
        slot.release(slot.late.ctx);
    free(slot.line);
    return rc;
}

int trace_event(trace *t, const char *type, json_t *fields)
{
    if (!trace_active(t)) {
        json_decref(fields);
        return 0;
    }
    json_t *event = trace_build(t, type, fields);
    if (!event)
        return -1;
    char *line = NULL;
    size_t len = 0;
    /* Without a file, the sink's thread writes the line out itself: the run
     * does not wait for that either. The event is then the thread's alone. */
    int handed = t->fd < 0 && t->line_sink;
    if (!handed && t->fd >= 0 && !(line = trace_json_line(event, &len))) {
        json_decref(event);
        return -1;
    }
    return trace_deliver(t, type, (struct trace_slot){.line = line, .len = len, .event = event});
}

int trace_event_later(trace *t, const char *type, trace_render_fn render, trace_release_fn release,
                      void *ctx)
{
    if (!trace_active(t)) {
        release(ctx);
        return 0;
    }
    struct trace_slot slot = {.release = release,
                              .late = {.type = type, .t = clock_now() - t->start, .time = clock_wall(),
                                       .render = render, .ctx = ctx}};
    /* A file's line is written now: its failure is this call's to report.
     * Else the sink's writer renders it. */
    if (t->fd >= 0 && !(slot.line = trace_late_text(&slot.late, 1, &slot.len))) {
        release(ctx);
        return -1;
    }
    return trace_deliver(t, type, slot);
}

int trace_failed(const trace *t)
{
    return t ? t->failed : 0;
}

const char *trace_error(trace *t)
{
    if (!t)
        return "";
    pthread_mutex_lock(&t->lock);
    const char *e = t->failed ? t->error : "";
    pthread_mutex_unlock(&t->lock);
    return e;
}

void trace_close(trace *t)
{
    if (!t)
        return;
    trace_sink_stop(t);
    pthread_mutex_destroy(&t->sink_lock);
    pthread_cond_destroy(&t->sink_wake);
    pthread_cond_destroy(&t->sink_changed);
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
