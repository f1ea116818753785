/* child_input — loading an input into the child's Python: the descriptors
 * the host passed are mapped, never read, and become one str, a list of str
 * or a dict name -> str (or, for JSON and JSON lines, the parsed value), the
 * documents the helpers read pointing into the str or the mapping. The
 * design note is in child.h, above struct context_load. */
#include "child.h"

#include "fdpass.h"
#include "pack.h"
#include "repl_module.h"
#include "sandbox_policy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Above this the context is not pre-faulted (a 4 GB input would be read
 * twice). At every size the copy into the str drops the mapping's pages
 * every RELEASE_BLOCK bytes, so an input costs its str plus one block in
 * RSS, not str + mapping. */
#define POPULATE_MAX ((size_t)256 << 20)
#define RELEASE_BLOCK ((size_t)16 << 20)

static void *copy_ascii_main(void *arg)
{
    context_load *cl = arg;
    unsigned char *dst = PyUnicode_1BYTE_DATA(cl->text);
    const size_t block = 64 * 1024;
    size_t released = 0;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t mask = page > 0 ? (uintptr_t)page - 1 : 4095;
    for (size_t done = 0; done < cl->len; done += block) {
        size_t n = cl->len - done < block ? cl->len - done : block;
        memcpy(dst + done, cl->src + done, n);
        unsigned char high = 0;
        for (size_t i = 0; i < n; i++)
            high |= dst[done + i];
        if (high & 0x80) {
            cl->non_ascii = 1;
            break;
        }
        if (cl->release && done + n - released >= RELEASE_BLOCK) {
            /* Unmodified pages of a read-only mapping: dropping them only
             * leaves our page tables; the page cache keeps the file. */
            uintptr_t from = ((uintptr_t)(cl->src + released) + mask) & ~mask;
            uintptr_t to = (uintptr_t)(cl->src + done + n) & ~mask;
            if (to > from)
                madvise((void *)from, to - from, MADV_DONTNEED);
            released = done + n;
        }
    }
    return NULL;
}

static void *map_fd(int fd, size_t len)
{
    int flags = MAP_PRIVATE | (len <= POPULATE_MAX ? MAP_POPULATE : 0);
    void *map = mmap(NULL, len, PROT_READ, flags, fd, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (len > POPULATE_MAX)
        madvise(map, len, MADV_SEQUENTIAL);
    return map;
}

/* The fd must hold at least len bytes: reading a mapping past the end of a
 * file would be SIGBUS. */
static int check_size(int fd, size_t len, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s fd: %s", what, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size < (unsigned long long)len) {
        snprintf(err, errlen, "the %s file holds %lld bytes, %zu were announced", what,
                 (long long)st.st_size, len);
        return -1;
    }
    return 0;
}

/* Maps the input (and its data) and, for a single str, starts filling it:
 * on a thread when `threaded`, else at once. */
int child_input_begin(context_load *cl, const input_spec *in, int threaded, char *err,
                         size_t errlen)
{
    memset(cl, 0, sizeof *cl);
    cl->in = *in;
    cl->kind = INGEST_STR;
    if (in->fd < 0)
        return 0;
    if (check_size(in->fd, in->len, "context", err, errlen) != 0 ||
        (in->data_fd >= 0 && check_size(in->data_fd, in->data_len, "context data", err,
                                        errlen) != 0))
        return -1;
    cl->map_len = in->len;
    if (cl->map_len && !(cl->map = map_fd(in->fd, cl->map_len))) {
        snprintf(err, errlen, "cannot map the context pack: %s", strerror(errno));
        return -1;
    }
    if (in->data_fd >= 0 && in->data_len) {
        cl->data_map_len = in->data_len;
        if (!(cl->data_map = map_fd(in->data_fd, in->data_len))) {
            snprintf(err, errlen, "cannot map the context data: %s", strerror(errno));
            return -1;
        }
    }
    if (pack_read(cl->map, cl->map_len, cl->data_map, cl->data_map_len, &cl->kind, &cl->docs,
                  &cl->n_docs, err, errlen) != 0)
        return -1;
    cl->format = pack_format(cl->map, cl->map_len);
    if (cl->kind != INGEST_STR)
        return 0; /* several documents: decoded one by one in child_input_finish */
    if (cl->n_docs != 1) {
        snprintf(err, errlen, "a str context pack holds %zu documents", cl->n_docs);
        return -1;
    }
    cl->src = (const unsigned char *)cl->docs[0].data;
    cl->len = cl->docs[0].len;
    cl->release = 1;
    if (cl->len == 0 || !cl->src)
        return 0;
    cl->text = PyUnicode_New((Py_ssize_t)cl->len, 127);
    if (!cl->text) {
        PyErr_Clear();
        return 0; /* child_input_finish decodes it the slow way */
    }
    if (!threaded)
        copy_ascii_main(cl);
    else if (pthread_create(&cl->thread, NULL, copy_ascii_main, cl) == 0)
        cl->copying = 1;
    else
        Py_CLEAR(cl->text);
    return 0;
}

/* One str: the ASCII copy, or a proper decode. */
static PyObject *finish_str(context_load *cl, char *err, size_t errlen)
{
    PyObject *text = NULL;
    if (cl->copying) {
        pthread_join(cl->thread, NULL);
        cl->copying = 0;
    }
    if (cl->text) {
        if (!cl->non_ascii)
            text = cl->text;
        else
            Py_DECREF(cl->text);
        cl->text = NULL;
    }
    if (!text && (cl->len == 0 || !cl->src))
        text = PyUnicode_New(0, 0);
    else if (!text)
        text = PyUnicode_DecodeUTF8((const char *)cl->src, (Py_ssize_t)cl->len, "replace");
    return text;
}

/* Several documents: a dict name → str, or a list of str, in pack order. */
static PyObject *finish_docs(context_load *cl)
{
    PyObject *result = cl->kind == INGEST_DICT ? PyDict_New() : PyList_New(0);
    for (size_t i = 0; result && i < cl->n_docs; i++) {
        const ingest_doc *d = &cl->docs[i];
        PyObject *text = PyUnicode_DecodeUTF8(d->data ? d->data : "", (Py_ssize_t)d->len, "replace");
        int rc = -1;
        if (text && cl->kind == INGEST_DICT) {
            PyObject *key = PyUnicode_DecodeUTF8(d->name, (Py_ssize_t)strlen(d->name), "replace");
            rc = key ? PyDict_SetItem(result, key, text) : -1;
            Py_XDECREF(key);
        } else if (text) {
            rc = PyList_Append(result, text);
        }
        Py_XDECREF(text);
        if (rc < 0)
            Py_CLEAR(result);
    }
    return result;
}

/* Marks the ASCII documents; with redirect, points them at their str (the
 * bytes are identical) and drops the mappings nothing reads any more. A
 * parsed input keeps its mappings: its strs go once the values are built. */
static void context_settle(context_load *cl, PyObject *context, int redirect)
{
    int all_ascii = 1;
    for (size_t i = 0; i < cl->n_docs; i++) {
        PyObject *text = NULL;
        if (cl->kind == INGEST_STR)
            text = context;
        else if (cl->kind == INGEST_LIST)
            text = PyList_GET_ITEM(context, (Py_ssize_t)i);
        else {
            PyObject *key = PyUnicode_DecodeUTF8(cl->docs[i].name,
                                                 (Py_ssize_t)strlen(cl->docs[i].name), "replace");
            text = key ? PyDict_GetItem(context, key) : NULL;
            Py_XDECREF(key);
        }
        PyErr_Clear();
        if (text && PyUnicode_IS_ASCII(text) &&
            (size_t)PyUnicode_GET_LENGTH(text) == cl->docs[i].len) {
            cl->ascii[i] = 1;
            if (redirect)
                cl->docs[i].data = cl->docs[i].len ? (const char *)PyUnicode_1BYTE_DATA(text) : NULL;
            cl->docs[i].chars = cl->docs[i].len;
        } else if (cl->docs[i].len) {
            all_ascii = 0;
        }
    }
    if (!all_ascii || !redirect)
        return;
    if (cl->data_map)
        munmap(cl->data_map, cl->data_map_len);
    cl->data_map = NULL;
    if (!cl->map)
        return;
    if (cl->n_docs == 0) {
        munmap(cl->map, cl->map_len);   /* no names to keep */
        cl->map = NULL;
        return;
    }
    /* The names stay (the helpers name documents); an inline pack's bytes
     * start at a page boundary after them and go. */
    long page = sysconf(_SC_PAGESIZE);
    size_t names_end = 0;
    for (size_t i = 0; i < cl->n_docs; i++) {
        size_t end = (size_t)(cl->docs[i].name - (const char *)cl->map) + strlen(cl->docs[i].name) + 1;
        if (end > names_end)
            names_end = end;
    }
    size_t from = page > 0 ? (names_end + (size_t)page - 1) / (size_t)page * (size_t)page : cl->map_len;
    if (from < cl->map_len)
        munmap((char *)cl->map + from, cl->map_len - from);
    cl->map_len = from;
}

static void close_input_fds(context_load *cl)
{
    if (cl->in.fd >= 0)
        close(cl->in.fd);
    if (cl->in.data_fd >= 0)
        close(cl->in.data_fd);
    cl->in.fd = cl->in.data_fd = -1;
}

/* Characters of an input's text over all its documents, for the host. */
static size_t context_chars(PyObject *context)
{
    if (PyUnicode_Check(context))
        return (size_t)PyUnicode_GET_LENGTH(context);
    size_t total = 0;
    PyObject *values = PyDict_Check(context) ? PyDict_Values(context) : Py_NewRef(context);
    Py_ssize_t n = values ? PyList_GET_SIZE(values) : 0;
    for (Py_ssize_t i = 0; i < n; i++)
        total += (size_t)PyUnicode_GET_LENGTH(PyList_GET_ITEM(values, i));
    Py_XDECREF(values);
    return total;
}

/* A JSON or JSON lines input: the glue's parse_input turns the text (one
 * str, or a dict name -> str) into the value and its summary. The text is
 * dropped afterwards: the helpers read the mapped bytes. A document that is
 * not JSON is an input error (cl->input_error), with the line and column. */
static PyObject *parse_structured(context_load *cl, PyObject *parse_input, PyObject *text,
                                  char *err, size_t errlen)
{
    const char *fmt = cl->format == INGEST_JSONL ? "jsonl" : "json";
    const char *name = cl->n_docs && cl->docs[0].name ? cl->docs[0].name : "the input";
    PyObject *pair = PyObject_CallFunction(parse_input, "Oss", text, fmt, name);
    PyObject *value = NULL;
    if (!pair) {
        PyObject *exc = child_take_exception();
        PyObject *type = exc ? PyObject_GetAttrString((PyObject *)Py_TYPE(exc), "__name__") : NULL;
        cl->input_error = type && PyUnicode_CompareWithASCIIString(type, "InputError") == 0;
        PyObject *msg = exc ? PyObject_Str(exc) : NULL;
        const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
        if (cl->input_error && m)
            snprintf(err, errlen, "%s", m);
        else
            snprintf(err, errlen, "cannot parse the input: %s: %s",
                     exc ? Py_TYPE(exc)->tp_name : "error", m ? m : "(no message)");
        Py_XDECREF(type);
        Py_XDECREF(msg);
        Py_XDECREF(exc);
        PyErr_Clear();
        return NULL;
    }
    if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
        value = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
        cl->summary = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    } else {
        snprintf(err, errlen, "cannot parse the input: the glue returned no value");
    }
    Py_DECREF(pair);
    return value;
}

/* Waits for the copy and builds the object; the documents then point at what
 * the helpers read (the str, or the mapping). A JSON or JSON lines input is
 * parsed with parse_input (the glue's). Returns the object, or NULL with err
 * set (cl->input_error when the input itself is at fault). The input's
 * descriptors are closed either way. */
PyObject *child_input_finish(context_load *cl, PyObject *parse_input, char *err, size_t errlen)
{
    PyObject *context = cl->kind == INGEST_STR ? finish_str(cl, err, errlen) : finish_docs(cl);
    close_input_fds(cl);
    if (!context) {
        if (PyErr_Occurred())
            child_python_error(err, errlen, "cannot load the context");
        return NULL;
    }
    if (cl->n_docs && !(cl->ascii = calloc(cl->n_docs, 1))) {
        Py_DECREF(context);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cl->chars = context_chars(context);
    int parse = cl->format != INGEST_TEXT && parse_input;
    if (cl->n_docs)
        context_settle(cl, context, !parse);
    if (!parse)
        return context;
    if (!cl->map && cl->kind == INGEST_STR)
        cl->kept_text = Py_NewRef(context); /* the helpers read its UTF-8 form */
    PyObject *value = parse_structured(cl, parse_input, context, err, errlen);
    Py_DECREF(context);
    return value;
}

/* Gives back what a load that failed holds (an input the host adds later;
 * a failed first input ends the process). */
void child_input_discard(context_load *cl)
{
    if (cl->copying)
        pthread_join(cl->thread, NULL);
    Py_CLEAR(cl->text);
    Py_CLEAR(cl->summary);
    Py_CLEAR(cl->kept_text);
    close_input_fds(cl);
    if (cl->map)
        munmap(cl->map, cl->map_len);
    if (cl->data_map)
        munmap(cl->data_map, cl->data_map_len);
    free(cl->docs);
    free(cl->ascii);
    memset(cl, 0, sizeof *cl);
}

/* A parsed input's summary for the host (the glue's JSON text), or NULL. */
json_t *child_input_summary(const context_load *cl)
{
    const char *text = cl->summary ? PyUnicode_AsUTF8(cl->summary) : NULL;
    json_t *summary = text ? json_loads(text, 0, NULL) : NULL;
    PyErr_Clear();
    return summary;
}

/* ---- the add_input request ---- */

/* A name the host may bind (sandbox_add_input, sandbox_set_var): an
 * identifier of at most 64 characters that is no fixed name of the policy
 * table (context, answer, llm_query, grep, ...: numbered ones such as
 * context_1 or history_0 are the host's to bind), not bound already as an
 * input or a protected value (repl_restore's), and not a dunder. New
 * reference, or NULL with a message in err. */
PyObject *child_bindable_name(child *c, json_t *name, char *err, size_t errlen)
{
    const char *text = json_string_value(name);
    size_t len = json_string_length(name);
    const sandbox_repl_name *entry = text ? sandbox_policy_find(text) : NULL;
    if (!text || len == 0 || len > 64 || (len >= 2 && text[0] == '_' && text[1] == '_') ||
        (entry && !entry->numbered)) {
        snprintf(err, errlen, "'%.64s' cannot be bound by the host", text ? text : "");
        return NULL;
    }
    PyObject *key = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
    int taken = key ? repl_restore_is_protected(c->restore, key) : -1;
    if (!key || taken != 0 || PyUnicode_IsIdentifier(key) != 1) {
        PyErr_Clear();
        snprintf(err, errlen, "'%.64s' %s", text,
                 taken > 0 ? "is already a name of the REPL or an input"
                           : "is not a Python identifier");
        Py_XDECREF(key);
        return NULL;
    }
    return key;
}

/* Loads the input an add_input request announces, from the descriptors in
 * the byte that follows it: on the main thread (no thread can be started
 * after the lockdown), under the memory limit set at start-up. Returns 0
 * with *key, *obj and *cl set (the caller owns them); -1 with err (and
 * *input_error when the input itself is at fault); -2 when the byte with
 * the descriptors did not come (out of step with the host). */
static int load_requested(child *c, json_t *request, PyObject **key, PyObject **obj,
                          context_load **cl, int *input_error, char *err, size_t errlen)
{
    int fds[2] = {-1, -1};
    int want = json_is_true(json_object_get(request, "has_context")) +
               json_is_true(json_object_get(request, "has_data"));
    int got = fd_recv(c->fd, NULL, fds, 2);
    if (got < 0)
        return -2;
    json_int_t len = json_integer_value(json_object_get(request, "context_len"));
    json_int_t data_len = json_integer_value(json_object_get(request, "data_len"));
    const char *format = json_string_value(json_object_get(request, "context_format"));
    input_spec in = {.fd = -1, .data_fd = -1};
    *key = child_bindable_name(c, json_object_get(request, "name"), err, errlen);
    *obj = NULL;
    *cl = NULL;
    int rc = -1;
    if (!*key)
        goto done;
    if (got != want || len < 0 || data_len < 0) {
        snprintf(err, errlen, "the input's descriptors did not arrive");
        goto done;
    }
    if (want > 0 && (!format || strcmp(format, "pack") != 0)) {
        snprintf(err, errlen, "the input is not a context pack");
        goto done;
    }
    if (want > 0) {
        in.fd = fds[0];
        in.len = (size_t)len;
        fds[0] = -1;
        if (want > 1) {
            in.data_fd = fds[1];
            in.data_len = (size_t)data_len;
            fds[1] = -1;
        }
    }
    *cl = calloc(1, sizeof **cl); /* kept for the process's life: the helpers read it */
    if (!*cl) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (child_input_begin(*cl, &in, 0, err, errlen) != 0 ||
        !(*obj = child_input_finish(*cl, c->parse_input, err, errlen))) {
        *input_error = (*cl)->input_error;
        goto done;
    }
    rc = 0;
done:
    if (rc != 0 && *cl) {
        child_input_discard(*cl);
        free(*cl);
        *cl = NULL;
    } else if (rc != 0) {
        if (in.fd >= 0)
            close(in.fd);
        if (in.data_fd >= 0)
            close(in.data_fd);
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rc != 0)
        Py_CLEAR(*key);
    PyErr_Clear();
    return rc;
}

/* Binds an input under key, protected like `context` (put back after every
 * cell), and registers it for the helpers' context= argument. 0, or -1
 * with a Python error set. */
int child_bind_input(child *c, PyObject *key, PyObject *obj, const context_load *cl)
{
    return repl_add_input(obj, cl->kind, cl->docs, cl->n_docs, cl->ascii) == 0 &&
                   repl_restore_protect(c->restore, key, obj) == 0 &&
                   repl_restore_bind(c->restore, key, obj) == 0
               ? 0
               : -1;
}

static json_t *input_reply(int ok, const char *err, const context_load *cl, int input_error)
{
    return json_pack("{s:s, s:b, s:s, s:I, s:b, s:o*}", "type", "input_added", "ok", ok,
                     "message", err, "chars", (json_int_t)(ok ? cl->chars : 0), "input_error",
                     input_error, "summary", ok ? child_input_summary(cl) : NULL);
}

/* A zygote keeps an input under its name, for every child it forks later
 * (their copy-on-write share of it); takes *key and *obj on success. 0, or
 * -1 with err (a name it holds already, out of memory). */
static int hold_input(child *c, PyObject **key, PyObject **obj, context_load *cl, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < c->n_held; i++)
        if (PyUnicode_Compare(c->held[i].name, *key) == 0) {
            snprintf(err, errlen, "'%s' is already an input", PyUnicode_AsUTF8(*key));
            return -1;
        }
    struct held_input *grown = realloc(c->held, (c->n_held + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->held = grown;
    c->held[c->n_held++] = (struct held_input){*key, *obj, cl};
    *key = *obj = NULL;
    /* Out of the collector's reach, like the rest of the zygote. */
    repl_restore_freeze(c->restore);
    return 0;
}

/* An add_input request: the input is loaded, then bound (a child:
 * sandbox_add_input) or kept for the children to come (a zygote:
 * sandbox_factory_add_input). */
json_t *child_add_input(child *c, json_t *request, int zygote)
{
    char err[512] = "";
    PyObject *key, *obj;
    context_load *cl;
    int input_error = 0;
    int rc = load_requested(c, request, &key, &obj, &cl, &input_error, err, sizeof err);
    if (rc == -2)
        return NULL; /* out of step with the host */
    if (!zygote)
        child_drain_signals();
    if (rc == 0 && zygote)
        rc = hold_input(c, &key, &obj, cl, err, sizeof err);
    else if (rc == 0 && child_bind_input(c, key, obj, cl) < 0) {
        child_python_error(err, sizeof err, "cannot bind the input");
        rc = -1;
    }
    if (rc != 0 && cl) {
        child_input_discard(cl);
        free(cl);
        cl = NULL;
    }
    json_t *reply = input_reply(rc == 0, err, cl, input_error);
    Py_XDECREF(obj);
    Py_XDECREF(key);
    PyErr_Clear();
    return reply;
}
