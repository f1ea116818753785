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

#include "util.h"

/* Lines waiting for the sink at most: past it a run waits for its sink. */
#define TRACE_SINK_QUEUE 4096

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
    int sink_running, sink_stop, sink_busy;
    char *queue[TRACE_SINK_QUEUE];            /* a line, or */
    size_t queue_len[TRACE_SINK_QUEUE];
    json_t *queue_event[TRACE_SINK_QUEUE];    /* an event the thread writes out itself */
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

/* Design note. An event's line is written here rather than by json_dumps.
 * The run log turns every event into a line, and the demo's 4,935 sub-call
 * events are 17 MB of prompt excerpts: jansson's dump, which hands its
 * output on piece by piece and decodes every character, took about 90 ms
 * of CPU for them, the largest part of what the log cost the demo. This
 * copies each run of plain bytes of a string at once. Its output is
 * jansson's compact form byte for byte (tests/unit/test_events.c compares
 * them): keys in insertion order, the escapes \" \\ \b \f \n \r \t and
 * \u00XX for the other control bytes, UTF-8 as it is, integers in full,
 * reals as %.17g with ".0" when that reads as an integer and the exponent
 * without "+" or leading zeros. */

/* Nesting deeper than jansson's parser takes is refused (-1). */
#define TRACE_JSON_MAX_DEPTH 2048

static int json_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

/* The end of the run of plain bytes from i: eight at a time while no byte
 * of the eight is below 0x20, a quote or a backslash (the tests for a byte
 * below n, and for a zero byte after an XOR, are exact for "any of the
 * eight"), then one by one. */
static size_t json_plain_run(const char *s, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
        if (((w - ones * 0x20) & ~w & highs) | ((quote - ones) & ~quote & highs) |
            ((backslash - ones) & ~backslash & highs))
            break;
    }
    while (i < n && json_plain((unsigned char)s[i]))
        i++;
    return i;
}

/* Escapes go through a small staging area, flushed when full: a prompt has
 * a newline every few dozen bytes, and appending each piece to the buffer
 * on its own cost more than the copying. */
static int put_json_string(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char stage[4096];
    size_t k = 0;
    stage[k++] = '"';
    for (size_t i = 0; i < n;) {
        size_t j = json_plain_run(s, i, n);
        if (k + (j - i) + 8 > sizeof stage) {
            if (buf_append(b, stage, k) != 0)
                return -1;
            k = 0;
        }
        if ((j - i) + 8 > sizeof stage) {
            if (buf_append(b, s + i, j - i) != 0)
                return -1;
        } else {
            memcpy(stage + k, s + i, j - i);
            k += j - i;
        }
        if (j == n)
            break;
        unsigned char c = (unsigned char)s[j];
        stage[k++] = '\\';
        switch (c) {
        case '"': stage[k++] = '"'; break;
        case '\\': stage[k++] = '\\'; break;
        case '\b': stage[k++] = 'b'; break;
        case '\f': stage[k++] = 'f'; break;
        case '\n': stage[k++] = 'n'; break;
        case '\r': stage[k++] = 'r'; break;
        case '\t': stage[k++] = 't'; break;
        default:
            memcpy(stage + k, "u00", 3);
            stage[k + 3] = hex[c >> 4];
            stage[k + 4] = hex[c & 15];
            k += 5;
        }
        i = j + 1;
    }
    stage[k++] = '"';
    return buf_append(b, stage, k);
}

static int put_json_real(buf *b, double v)
{
    char text[40];
    int n = snprintf(text, sizeof text, "%.17g", v);
    if (n <= 0 || (size_t)n >= sizeof text - 2)
        return -1;
    char *e = strchr(text, 'e');
    if (!e && !strchr(text, '.')) {
        memcpy(text + n, ".0", 3);
    } else if (e) {
        char *digits = e + 1 + (e[1] == '-'), *from = e + 1 + (e[1] == '-' || e[1] == '+');
        while (*from == '0' && from[1])
            from++;
        memmove(digits, from, strlen(from) + 1);
    }
    return buf_puts(b, text);
}

/* Digits by hand: a printf per number (ten an event) cost as much as the
 * strings. */
static int put_json_integer(buf *b, json_int_t v)
{
    char text[24];
    size_t at = sizeof text;
    /* In unsigned arithmetic: the most negative value has no positive twin. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        text[--at] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        text[--at] = '-';
    return buf_append(b, text + at, sizeof text - at);
}

static int put_json(buf *b, json_t *j, int depth)
{
    if (depth > TRACE_JSON_MAX_DEPTH)
        return -1;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        int first = 1;
        if (buf_append(b, "{", 1) != 0)
            return -1;
        json_object_foreach(j, key, v) {
            if ((!first && buf_append(b, ",", 1) != 0) || put_json_string(b, key, strlen(key)) != 0 ||
                buf_append(b, ":", 1) != 0 || put_json(b, v, depth + 1) != 0)
                return -1;
            first = 0;
        }
        return buf_append(b, "}", 1);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        if (buf_append(b, "[", 1) != 0)
            return -1;
        json_array_foreach(j, i, v) {
            if ((i > 0 && buf_append(b, ",", 1) != 0) || put_json(b, v, depth + 1) != 0)
                return -1;
        }
        return buf_append(b, "]", 1);
    }
    case JSON_STRING: return put_json_string(b, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return put_json_integer(b, json_integer_value(j));
    case JSON_REAL: return put_json_real(b, json_real_value(j));
    case JSON_TRUE: return buf_puts(b, "true");
    case JSON_FALSE: return buf_puts(b, "false");
    default: return buf_puts(b, "null");
    }
}

char *trace_json_line(json_t *event, size_t *len)
{
    buf b;
    /* Bounded as the trace's readers bound a line (docs/trace.md). */
    buf_init(&b, TRACE_LINE_MAX);
    if (put_json(&b, event, 0) != 0 || buf_append(&b, "\n", 1) != 0) {
        buf_free(&b);
        *len = 0;
        return NULL;
    }
    *len = b.len;
    return buf_take(&b);
}

/* Design note. What the sink does with a line (the run log deflates it)
 * must not hold up the run that wrote it: lines are queued, in trace order
 * (queued under the trace's lock), for this thread, which hands them to the
 * sink one by one. The queue is bounded (TRACE_SINK_QUEUE): a run that
 * outpaces its sink waits for room. trace_sink_flush waits until every line
 * queued is done, so the sink's owner can read what it built. */
static void *trace_sink_main(void *arg)
{
    trace *t = arg;
    pthread_mutex_lock(&t->sink_lock);
    for (;;) {
        while (t->queued == 0 && !t->sink_stop)
            pthread_cond_wait(&t->sink_wake, &t->sink_lock);
        if (t->queued == 0)
            break;
        char *line = t->queue[t->queue_head];
        size_t len = t->queue_len[t->queue_head];
        json_t *event = t->queue_event[t->queue_head];
        t->queue_head = (t->queue_head + 1) % TRACE_SINK_QUEUE;
        t->queued--;
        t->sink_busy = 1;
        pthread_mutex_unlock(&t->sink_lock);
        if (event) {
            line = trace_json_line(event, &len);
            json_decref(event);
        }
        if (line)
            t->line_sink(t->line_ctx, line, len);
        free(line);
        pthread_mutex_lock(&t->sink_lock);
        t->sink_busy = 0;
        pthread_cond_broadcast(&t->sink_changed);
    }
    pthread_mutex_unlock(&t->sink_lock);
    return NULL;
}

static void trace_sink_stop(trace *t)
{
    if (!t->sink_running)
        return;
    pthread_mutex_lock(&t->sink_lock);
    t->sink_stop = 1;
    pthread_cond_signal(&t->sink_wake);
    pthread_mutex_unlock(&t->sink_lock);
    pthread_join(t->sink_thread, NULL);
    t->sink_running = t->sink_stop = 0;
}

void trace_set_line_sink(trace *t, trace_line_fn fn, void *ctx)
{
    trace_sink_stop(t);
    t->line_sink = fn;
    t->line_ctx = ctx;
    /* Without its thread the sink is called in line, as the file is written. */
    if (fn)
        t->sink_running = pthread_create(&t->sink_thread, NULL, trace_sink_main, t) == 0;
}

void trace_sink_flush(trace *t)
{
    if (!t || !t->sink_running)
        return;
    pthread_mutex_lock(&t->sink_lock);
    while (t->queued > 0 || t->sink_busy)
        pthread_cond_wait(&t->sink_changed, &t->sink_lock);
    pthread_mutex_unlock(&t->sink_lock);
}

/* Hands line, or event (both taken), to the sink's thread; under t->lock,
 * so in trace order. */
static void trace_sink_queue(trace *t, char *line, size_t len, json_t *event)
{
    pthread_mutex_lock(&t->sink_lock);
    while (t->queued == TRACE_SINK_QUEUE)
        pthread_cond_wait(&t->sink_changed, &t->sink_lock);
    size_t at = (t->queue_head + t->queued) % TRACE_SINK_QUEUE;
    t->queue[at] = line;
    t->queue_len[at] = len;
    t->queue_event[at] = event;
    t->queued++;
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
    /* Without a file, the sink's thread writes the line out itself: the run
     * does not wait for that either. The event is then the thread's alone. */
    int handed = t->fd < 0 && t->line_sink && t->sink_running;
    if (!handed && (t->fd >= 0 || t->line_sink) && !(line = trace_json_line(event, &len))) {
        json_decref(event);
        return -1;
    }

    pthread_mutex_lock(&t->lock);
    int rc = 0;
    if (t->listener)
        t->listener(t->listener_ctx, type, event);
    if (t->fd >= 0)
        rc = trace_write_locked(t, type, line, len);
    if (handed) {
        trace_sink_queue(t, NULL, 0, event);
        event = NULL;
    } else if (t->line_sink && t->sink_running) {
        trace_sink_queue(t, line, len, NULL);
        line = NULL;
    } else if (t->line_sink) {
        t->line_sink(t->line_ctx, line, len);
    }
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
