/* trace — the event stream of a run and its JSONL record, one whole line per
 * event, written as it happens. A line is handed to the kernel in one
 * write(2) loop; a write that fails half-way (a full disk) is cut back to the
 * line before it, and nothing is written after it: the file ends on a whole
 * line, and the failure is kept for the caller to report. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

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
};

trace *trace_new(void)
{
    trace *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fd = -1;
    pthread_mutex_init(&t->lock, NULL);
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

void trace_set_line_sink(trace *t, trace_line_fn fn, void *ctx)
{
    t->line_sink = fn;
    t->line_ctx = ctx;
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
    t->listener(t->listener_ctx, type, event);
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
    if (t->fd >= 0 || t->line_sink) {
        /* Compact JSON escapes every newline inside strings: one event, one line. */
        char *text = json_dumps(event, JSON_COMPACT);
        len = text ? strlen(text) : 0;
        line = text ? realloc(text, len + 2) : NULL;
        if (!line) {
            free(text);
            json_decref(event);
            return -1;
        }
        line[len++] = '\n';
    }

    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (t->listener)
        t->listener(t->listener_ctx, type, event);
    if (t->fd >= 0)
        rc = trace_write_locked(t, type, line, len);
    if (t->line_sink)
        t->line_sink(t->line_ctx, line, len);
    pthread_mutex_unlock(&t->lock);
    json_decref(event);
    free(line);
    return rc;
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
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
