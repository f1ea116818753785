/* trace — JSONL event log, one flushed line per event. */
#include "trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct trace {
    FILE *file;
    pthread_mutex_t lock;
    double start;
    int failed;
};

trace *trace_open(const char *path, char *err, size_t errlen)
{
    trace *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->file = fopen(path, "we");
    if (!t->file) {
        snprintf(err, errlen, "cannot write trace file '%s': %s", path, strerror(errno));
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
    char *line = json_dumps(event, JSON_COMPACT);
    json_decref(event);
    if (!line)
        return -1;

    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (fputs(line, t->file) == EOF || fputc('\n', t->file) == EOF || fflush(t->file) != 0) {
        t->failed = 1;
        rc = -1;
    }
    pthread_mutex_unlock(&t->lock);
    free(line);
    return rc;
}

int trace_failed(const trace *t)
{
    return t ? t->failed : 0;
}

void trace_close(trace *t)
{
    if (!t)
        return;
    fclose(t->file);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
