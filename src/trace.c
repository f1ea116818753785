/* trace — JSONL event log, one whole line per event, written as it happens.
 * A line is handed to the kernel in one write(2) loop; a write that fails
 * half-way (a full disk) is cut back to the line before it, and nothing is
 * written after it: the file ends on a whole line, and the failure is kept
 * for the caller to report. */
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
    int fd;
    char *path;
    off_t size;              /* bytes of whole lines written */
    size_t events;           /* events written */
    pthread_mutex_t lock;
    double start;
    int failed;
    char error[1024];        /* why the first failed write failed */
};

trace *trace_open(const char *path, char *err, size_t errlen)
{
    trace *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (t->fd < 0 || !(t->path = strdup(path))) {
        snprintf(err, errlen, "cannot write trace file '%s': %s", path,
                 t->fd < 0 ? strerror(errno) : "out of memory");
        if (t->fd >= 0)
            close(t->fd);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->start = clock_now();
    return t;
}

int trace_event(trace *t, const char *type, json_t *fields)
{
    if (!t) {
        json_decref(fields);
        return 0;
    }
    json_t *event = json_object();
    if (!event) {
        json_decref(fields);
        return -1;
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

    /* Compact JSON escapes every newline inside strings: one event, one line. */
    char *text = json_dumps(event, JSON_COMPACT);
    json_decref(event);
    size_t len = text ? strlen(text) : 0;
    char *line = text ? realloc(text, len + 2) : NULL;
    if (!line) {
        free(text);
        return -1;
    }
    line[len++] = '\n';

    pthread_mutex_lock(&t->lock);
    int rc = -1;
    if (!t->failed) {
        if (write_full(t->fd, line, len) == 0) {
            t->size += (off_t)len;
            t->events++;
            rc = 0;
        } else {
            int e = errno;
            /* A line cut by a full disk would break every reader of the
             * file: cut back to the last whole one (a device such as
             * /dev/full cannot be, and holds nothing anyway). */
            if (ftruncate(t->fd, t->size) == 0)
                lseek(t->fd, t->size, SEEK_SET);
            snprintf(t->error, sizeof t->error, "cannot write trace file '%.700s': %s (it holds the "
                     "first %zu events, up to before '%.40s')", t->path, strerror(e), t->events, type);
            t->failed = 1;
        }
    }
    pthread_mutex_unlock(&t->lock);
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
    close(t->fd);
    free(t->path);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
