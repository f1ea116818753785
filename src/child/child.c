/* child — main of rlm-sandbox: embeds CPython, preloads the allowed
 * modules, maps the context into one str, locks itself down, then runs cells
 * sent by the host in one persistent namespace and answers with their output.
 * Started with "--zygote" it does the part before the context once and forks
 * children that go on from there (docs/internals/sandbox-protocol.md).
 *
 * Design note. Everything that needs the filesystem happens before
 * sandbox_lockdown: the interpreter, every allowed module (and the helpers
 * they import lazily), the glue (child_glue.c), the context (child_input.c). After it, the child can
 * only compute and talk over fd 3; later inputs (context_1, ...) arrive as
 * descriptors passed over it (SCM_RIGHTS), already open. Output is bounded in
 * the capture object, so a cell printing forever costs a fixed amount of
 * memory. A SIGINT from the host (timeout) or a SIGUSR1 (the user cancelled)
 * becomes CPython's KeyboardInterrupt inside the cell; between requests it
 * only sets a flag, which is drained before the next request runs. */
#include "child.h"

#include "fdpass.h"
#include "frame.h"
#include "pack.h"
#include "py_arena.h"
#include "repl_helpers.h"
#include "repl_module.h"
#include "repl_restore.h"
#include "repl_snapshot.h"
#include "lockdown.h"
#include "sandbox_policy.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef SANDBOX_ASAN
/* LeakSanitizer needs ptrace, which the filter denies, and CPython keeps its
 * memory until exit anyway. Allocation failures must reach Python as
 * MemoryError instead of aborting, since RLIMIT_AS cannot be used here. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0:allocator_may_return_null=1";
}
#endif

/* ---- small helpers ---- */

/* input_error: the input itself is at fault (a .json that does not parse),
 * not the sandbox: the host reports it as an input error. */
static void send_failure_and_exit(int fd, const char *message, int input_error)
{
    json_t *frame = json_pack("{s:s, s:o, s:b}", "type", "error", "message",
                              frame_string(message, strlen(message)), "input_error", input_error);
    char err[128];
    if (frame)
        frame_write(fd, frame, INIT_FRAME_MAX, err, sizeof err);
    json_decref(frame);
    _exit(3);
}

static void send_error_and_exit(int fd, const char *message)
{
    send_failure_and_exit(fd, message, 0);
}


static json_t *json_utf8(PyObject *obj)
{
    PyObject *bytes = repl_utf8_bytes(obj);
    if (!bytes)
        return NULL;
    json_t *s = frame_string(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    return s;
}

/* ---- watchdog ---- */

/* When the host dies, the socket reports POLLHUP even to a poll() that asks
 * for no events. A cell stuck in a loop never reads the socket, so a tiny
 * thread watches it and ends the process; otherwise an orphan could spin
 * forever. All signals are blocked in it so SIGINT reaches the main thread. */
static void *watchdog_main(void *arg)
{
    struct pollfd p = {.fd = (int)(intptr_t)arg, .events = 0};
    for (;;) {
        int n = poll(&p, 1, -1);
        if (n > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)))
            _exit(0);
        if (n < 0 && errno != EINTR)
            return NULL;
    }
}

static int start_watchdog(int fd)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, watchdog_main, (void *)(intptr_t)fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

/* ---- start-up ---- */

static int parse_init(child *c, json_t *init, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(init, "type"));
    json_int_t version = json_integer_value(json_object_get(init, "version"));
    if (!type || strcmp(type, "init") != 0 || version != SANDBOX_PROTOCOL_VERSION) {
        snprintf(err, errlen, "expected an init frame of protocol version %d",
                 SANDBOX_PROTOCOL_VERSION);
        return -1;
    }
    json_int_t context_len = json_integer_value(json_object_get(init, "context_len"));
    json_int_t output_limit = json_integer_value(json_object_get(init, "output_limit"));
    json_int_t memory_limit = json_integer_value(json_object_get(init, "memory_limit"));
    if (context_len < 0 || output_limit < 0 || memory_limit < 0) {
        snprintf(err, errlen, "negative size in the init frame");
        return -1;
    }
    const char *format = json_string_value(json_object_get(init, "context_format"));
    json_int_t data_len = json_integer_value(json_object_get(init, "data_len"));
    c->first = (input_spec){.fd = -1, .data_fd = -1};
    if (json_is_true(json_object_get(init, "has_context"))) {
        /* Every input is a document set: it comes as a pack. */
        if (!format || strcmp(format, "pack") != 0) {
            snprintf(err, errlen, "the first input is not a context pack");
            return -1;
        }
        c->first.fd = CONTEXT_FD;
        c->first.len = (size_t)context_len;
        if (json_is_true(json_object_get(init, "has_data"))) {
            c->first.data_fd = DATA_FD;
            c->first.data_len = data_len > 0 ? (size_t)data_len : 0;
        }
    }
    c->has_search_cache = json_is_true(json_object_get(init, "has_search_cache"));
    c->output_limit = output_limit ? (size_t)output_limit : 20000;
    if (c->output_limit > FRAME_MAX / 8) /* 4 UTF-8 bytes, JSON escapes: stay in a frame */
        c->output_limit = FRAME_MAX / 8;
    c->memory_limit = (size_t)memory_limit;
    c->cell_timeout = json_number_value(json_object_get(init, "cell_timeout"));
    c->unsafe_no_sandbox = json_is_true(json_object_get(init, "unsafe_no_sandbox"));
    c->skip_landlock = json_is_true(json_object_get(init, "skip_landlock"));
    json_int_t preloaded = json_integer_value(json_object_get(init, "preloaded"));
    if (preloaded < 0 || (size_t)preloaded > c->n_held || (preloaded && c->first.fd >= 0)) {
        snprintf(err, errlen, "the init frame names inputs this process does not hold");
        return -1;
    }
    c->preloaded = (size_t)preloaded;
    const char *alias = json_string_value(json_object_get(init, "first_alias"));
    snprintf(c->first_alias, sizeof c->first_alias, "%s", alias ? alias : "");
    c->frame_max = FRAME_MAX;
    return 0;
}

/* Binds name to value in the namespace and protects it: it is put back
 * before and after every cell. 0, or -1 with a Python error set. */
static int protect_name(child *c, const char *name, PyObject *value)
{
    PyObject *key = PyUnicode_FromString(name);
    int rc = key && repl_restore_protect(c->restore, key, value) == 0 &&
                     repl_restore_bind(c->restore, key, value) == 0
                 ? 0
                 : -1;
    Py_XDECREF(key);
    return rc;
}

/* The namespace, from the policy table: the REPL functions (put back after
 * every cell), the helpers (bound once: the model may rebind them), and the
 * first input as `context` and `context_0` (and the host's alias for it),
 * registered for the helpers' context= argument. The answer dict comes with
 * the first restore. */
static int setup_namespace(child *c, PyObject *context, const context_load *cl, char *err,
                           size_t errlen)
{
    if (repl_module_configure(c->fd, c->frame_max, c->output_limit, c->ns))
        goto fail;
    for (size_t i = 0; i < sandbox_repl_names_count; i++) {
        const sandbox_repl_name *n = &sandbox_repl_names[i];
        PyObject *fn = NULL, *helper = NULL;
        int rc = 0;
        if (n->kind == SANDBOX_NAME_FUNCTION) {
            fn = repl_api_function(n->name);
            rc = fn ? protect_name(c, n->name, fn) : -1;
        } else if (n->kind == SANDBOX_NAME_HELPER) {
            helper = repl_helpers_function(n->name);
            fn = helper ? repl_input_helper(n->name, helper) : NULL;
            rc = fn ? PyDict_SetItemString(c->ns, n->name, fn) : -1;
        }
        Py_XDECREF(fn);
        Py_XDECREF(helper);
        if (rc < 0)
            goto fail;
    }
    const char *names[3] = {"context", "context_0", c->first_alias};
    for (int i = 0; i < 3; i++)
        if (names[i][0] && protect_name(c, names[i], context) < 0)
            goto fail;
    if (repl_add_input(context, cl->kind, cl->docs, cl->n_docs, cl->ascii) != 0)
        goto fail;
    char timeout_text[96];
    snprintf(timeout_text, sizeof timeout_text, "TimeoutError: cell exceeded %g s wall time",
             c->cell_timeout);
    c->timeout_text = PyUnicode_FromString(timeout_text);
    c->cancel_text = PyUnicode_FromString("Cancelled: the cell was cancelled by the user");
    if (!c->timeout_text || !c->cancel_text)
        goto fail;
    return 0;
fail:
    child_python_error(err, errlen, "cannot set up the REPL namespace");
    return -1;
}

/* ---- cells ---- */

/* After a request that ran model code: everything back, or the end of this
 * child (the host starts a fresh one) when that cannot be done. */
static void end_request(child *c)
{
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
}

/* Writes exc (a traceback from the model's first frame; taken) to the
 * capture. Returns 1 if it was the host's SIGINT or SIGUSR1; the last
 * line then says the cell timed out, or that the user cancelled it. */
static int report_exception(child *c, PyObject *exc)
{
    int interrupted = exc && PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt);
    PyObject *why = child_cancel_requested() ? c->cancel_text : c->timeout_text;
    PyObject *text = exc ? PyObject_CallFunctionObjArgs(c->format_exception, exc, why, NULL)
                         : NULL;
    if (!text) {
        PyErr_Clear();
        text = interrupted ? Py_NewRef(why)
                           : PyUnicode_FromFormat("%s (the traceback could not be formatted)\n",
                                                  exc ? Py_TYPE(exc)->tp_name : "Error");
    }
    if (text && repl_capture_write(text) < 0)
        PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(exc);
    PyErr_Clear();
    return interrupted;
}

/* The text of `FINAL(some words)` when exc is the NameError or SyntaxError
 * those words raised (the glue's final_literal); NULL otherwise. */
static PyObject *literal_final(child *c, PyObject *exc, PyObject *src)
{
    PyObject *words = PyObject_CallFunctionObjArgs(c->final_literal, exc, src, NULL);
    PyErr_Clear();
    if (words && !PyUnicode_Check(words))
        Py_CLEAR(words);
    return words;
}

/* Runs compiled code; shows the value of a trailing expression like a REPL. */
static int run_code(child *c, PyObject *pair)
{
    PyObject *body = PyTuple_GET_ITEM(pair, 0), *last = PyTuple_GET_ITEM(pair, 1);
    PyObject *rc = PyEval_EvalCode(body, c->ns, c->ns);
    if (!rc)
        return -1;
    Py_DECREF(rc);
    if (last == Py_None)
        return 0;
    PyObject *value = PyEval_EvalCode(last, c->ns, c->ns);
    if (!value)
        return -1;
    int status = 0;
    if (value != Py_None) {
        PyObject *repr = PyObject_Repr(value);
        status = repr && repl_capture_write(repr) == 0 && repl_capture_write_utf8("\n") == 0
                     ? 0
                     : -1;
        Py_XDECREF(repr);
    }
    Py_DECREF(value);
    return status;
}

/* The final answer of the cell: FINAL/FINAL_VAR first, else the answer dict
 * when ready is true (ready is then reset, so the next turn does not find a
 * stale answer). NULL without error when there is none. Runs while the cell
 * still counts as model code: __bool__ of `ready` and __str__ of `content`
 * are the model's. The lookups themselves run none: the namespace and the
 * dict are cleaned to exact-str keys first, and only an exact dict counts
 * (the restore replaces anything else). */
static PyObject *cell_final_answer(child *c)
{
    PyObject *final = repl_take_final();
    if (final || PyErr_Occurred())
        return final;
    if (repl_restore_clean_dict(c->restore, c->ns) < 0)
        return NULL;
    PyObject *answer = PyDict_GetItemString(c->ns, "answer");
    if (!answer || !PyDict_CheckExact(answer) ||
        repl_restore_clean_dict(c->restore, answer) < 0)
        return NULL;
    Py_INCREF(answer);
    PyObject *ready = PyDict_GetItemString(answer, "ready");
    Py_XINCREF(ready);
    int is_ready = ready ? PyObject_IsTrue(ready) : 0;
    if (is_ready > 0 && repl_restore_clean_dict(c->restore, answer) == 0) {
        PyObject *content = PyDict_GetItemString(answer, "content");
        Py_XINCREF(content);
        PyObject *text = content ? PyObject_Str(content) : PyUnicode_New(0, 0);
        final = text ? PyUnicode_FromObject(text) : NULL; /* an exact str */
        Py_XDECREF(text);
        Py_XDECREF(content);
        if (final && (repl_restore_clean_dict(c->restore, answer) < 0 ||
                      PyDict_SetItemString(answer, "ready", Py_False) < 0))
            Py_CLEAR(final);
    }
    Py_XDECREF(ready);
    Py_DECREF(answer);
    return final;
}

static json_t *result_frame(child *c, int raised, int interrupted, PyObject *final,
                            const char *how)
{
    unsigned long long total = 0;
    PyObject *output = repl_capture_text(&total);
    json_t *frame = json_object();
    json_t *out_json = output ? json_utf8(output) : json_string("[sandbox] output lost");
    json_t *final_json = final ? json_utf8(final) : json_null();
    Py_XDECREF(output);
    PyErr_Clear();
    if (!frame || !out_json || !final_json) {
        json_decref(frame);
        json_decref(out_json);
        json_decref(final_json);
        return NULL;
    }
    json_object_set_new(frame, "type", json_string("result"));
    json_object_set_new(frame, "output", out_json);
    json_object_set_new(frame, "output_chars", json_integer((json_int_t)total));
    json_object_set_new(frame, "raised", json_boolean(raised));
    json_object_set_new(frame, "interrupted", json_boolean(interrupted));
    json_object_set_new(frame, "cancelled", json_boolean(interrupted && child_cancel_requested()));
    json_object_set_new(frame, "final_answer", final_json);
    if (how && final)
        json_object_set_new(frame, "final_how", json_string(how));
    PyObject *variables = repl_variables_line();
    json_t *variables_json = variables ? json_utf8(variables) : NULL;
    Py_XDECREF(variables);
    PyErr_Clear();
    if (variables_json)
        json_object_set_new(frame, "variables", variables_json);
    if (frame_encoded_size(frame) > c->frame_max) {
        /* Only a giant final answer can get here; the output is bounded. */
        char note[160];
        snprintf(note, sizeof note,
                 "\n[sandbox] the final answer is too large to return (%zu bytes)\n",
                 json_string_length(final_json));
        json_object_set_new(frame, "final_answer", json_null());
        json_object_set_new(frame, "raised", json_true());
        buf b;
        buf_init(&b, c->frame_max);
        json_t *old = json_object_get(frame, "output");
        if (buf_append(&b, json_string_value(old), json_string_length(old)) == 0 &&
            buf_puts(&b, note) == 0)
            json_object_set_new(frame, "output", json_stringn(b.data, b.len));
        buf_free(&b);
    }
    return frame;
}

/* One cell. The request boundaries (repl_restore) surround the model's
 * code: the state it may have left is released and put back first, the
 * collector is on only while model code runs, and everything is put back
 * before the result is sent. */
static json_t *run_cell(child *c, const char *code, size_t len)
{
    repl_capture_reset();
    Py_XDECREF(repl_take_final());
    PyErr_Clear();
    repl_restore_begin(c->restore);
    child_drain_signals();
    child_install_cancel_handler();
    c->cell_number++;
    int raised = 0, interrupted = 0;
    const char *how = NULL;
    PyObject *final = NULL, *pair = NULL, *exc = NULL, *final_error = NULL;
    PyObject *src = PyUnicode_DecodeUTF8(code, (Py_ssize_t)len, "replace");
    PyObject *filename = PyUnicode_FromFormat("<cell-%lu>", c->cell_number);
    if (src && filename)
        pair = PyObject_CallFunction(c->compile_cell, "OOk", src, filename, c->cell_number);
    if (pair && (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 3)) {
        Py_CLEAR(pair);
        PyErr_SetString(PyExc_SystemError, "the REPL glue returned something unexpected");
    }
    if (pair)
        repl_set_cell_literals(PyTuple_GET_ITEM(pair, 2));
    PyGC_Enable();
    if (!pair || run_code(c, pair) < 0) {
        raised = 1;
        exc = child_take_exception();
    }
    final = cell_final_answer(c);
    if (!final && PyErr_Occurred())
        final_error = child_take_exception();
    repl_restore_quiesce(c->restore);
    if (exc && !final && !final_error && src && (final = literal_final(c, exc, src))) {
        how = "final_literal";
        raised = 0;
        Py_CLEAR(exc);
        PyObject *note = PyUnicode_FromFormat("[rlm] FINAL(%U): these words are no variable; "
                                              "they are the final answer as written.\n", final);
        if (!note || repl_capture_write(note) < 0)
            PyErr_Clear();
        Py_XDECREF(note);
    }
    if (exc)
        interrupted = report_exception(c, exc);
    if (final_error) {
        raised = 1;
        interrupted |= report_exception(c, final_error);
    }
    repl_set_cell_literals(NULL);
    end_request(c);
    json_t *frame = result_frame(c, raised, interrupted, final, how);
    Py_XDECREF(final);
    Py_XDECREF(pair);
    Py_XDECREF(src);
    Py_XDECREF(filename);
    PyErr_Clear();
    return frame;
}

/* str() of a variable, for FINAL_VAR(name) written in the model's text: a
 * request that runs model code (the value's __str__), bounded like a cell. */
static json_t *get_var(child *c, const char *name, size_t len)
{
    repl_restore_begin(c->restore);
    child_drain_signals();
    int found = 0;
    PyObject *value = NULL, *text = NULL;
    PyObject *key = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "replace");
    PyObject *stripped = key ? PyObject_CallMethod(key, "strip", "s", " \t\r\n'\"`") : NULL;
    /* The namespace has exact-str keys only (the end of the last request
     * saw to it), and stripped is one: the lookup runs no model code. */
    PyObject *var = stripped ? PyDict_GetItemWithError(c->ns, stripped) : NULL;
    if (var) {
        Py_INCREF(var);
        PyGC_Enable();
        text = PyObject_Str(var);
        repl_restore_quiesce(c->restore);
        value = text ? PyUnicode_FromObject(text) : NULL;
        found = value != NULL;
        repl_restore_bury(c->restore, var);
        repl_restore_bury(c->restore, text);
        Py_DECREF(var);
        Py_XDECREF(text);
    }
    if (!value) {
        if (PyErr_Occurred()) {
            char err[512];
            child_python_error(err, sizeof err, "Error: str() of the variable failed");
            value = PyUnicode_FromString(err);
        } else {
            value = PyUnicode_FromFormat("Error: there is no variable named %R in the REPL",
                                         stripped ? stripped : key);
        }
    }
    json_t *value_json = value ? json_utf8(value) : NULL;
    PyErr_Clear();
    json_t *frame = json_pack("{s:s, s:b, s:o*}", "type", "var", "found", found, "value",
                              value_json);
    if (frame && frame_encoded_size(frame) > c->frame_max) {
        json_object_set_new(frame, "found", json_false());
        json_object_set_new(frame, "value",
                            json_string("Error: the value is too large to return"));
    }
    Py_XDECREF(value);
    Py_XDECREF(stripped);
    Py_XDECREF(key);
    end_request(c);
    return frame;
}

/* A JSON value as the Python object json.loads would make (the host's
 * values: a history's list of {"role", "content"} dicts). Depth is bounded
 * by the parser that built the value; strings are repaired UTF-8. */
static PyObject *json_to_py(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return PyUnicode_DecodeUTF8(json_string_value(v), (Py_ssize_t)json_string_length(v),
                                    "replace");
    case JSON_INTEGER:
        return PyLong_FromLongLong(json_integer_value(v));
    case JSON_REAL:
        return PyFloat_FromDouble(json_real_value(v));
    case JSON_TRUE:
        Py_RETURN_TRUE;
    case JSON_FALSE:
        Py_RETURN_FALSE;
    case JSON_ARRAY: {
        PyObject *list = PyList_New((Py_ssize_t)json_array_size(v));
        for (size_t i = 0; list && i < json_array_size(v); i++) {
            PyObject *item = json_to_py(json_array_get(v, i));
            if (!item)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
        return list;
    }
    case JSON_OBJECT: {
        PyObject *dict = PyDict_New();
        const char *k;
        json_t *item;
        json_object_foreach(v, k, item) {
            PyObject *value = dict ? json_to_py(item) : NULL;
            int rc = value ? PyDict_SetItemString(dict, k, value) : -1;
            Py_XDECREF(value);
            if (rc < 0) {
                Py_CLEAR(dict);
                break;
            }
        }
        return dict;
    }
    default:
        Py_RETURN_NONE;
    }
}

/* Binds a value the host gives: a str (a session's answer_1, ...; not
 * protected), or with "json" any JSON value, which "protected" puts back
 * after every cell like an input (a conversation's history_0, ...; binding
 * history_0 binds `history` too). */
static json_t *set_var(child *c, json_t *request)
{
    char err[256] = "";
    child_drain_signals();
    json_t *value = json_object_get(request, "value");
    int as_json = json_is_true(json_object_get(request, "json"));
    int protect = json_is_true(json_object_get(request, "protected"));
    PyObject *key = child_bindable_name(c, json_object_get(request, "name"), err, sizeof err);
    PyObject *obj = NULL;
    if (key && as_json)
        obj = json_to_py(value);
    else if (key && json_is_string(value))
        obj = PyUnicode_DecodeUTF8(json_string_value(value), (Py_ssize_t)json_string_length(value),
                                   "replace");
    int ok = obj && repl_restore_bind(c->restore, key, obj) == 0 &&
             (!protect || repl_restore_protect(c->restore, key, obj) == 0);
    /* The contract's alias: `history` is history_0, as `context` is context_0. */
    if (ok && protect && PyUnicode_CompareWithASCIIString(key, "history_0") == 0)
        ok = protect_name(c, "history", obj) == 0;
    if (!ok && key)
        child_python_error(err, sizeof err, "cannot set the variable");
    Py_XDECREF(obj);
    Py_XDECREF(key);
    PyErr_Clear();
    return json_pack("{s:s, s:b, s:s}", "type", "var_set", "ok", ok, "message", err);
}

/* ---- snapshots: what a question leaves for the next ---- */

/* Maps the descriptor in the byte after a snapshot request: at least len
 * bytes, shared and writable (the host's memfd, sized by it: no write()
 * is needed, RLIMIT_FSIZE is 0) or private and read-only. NULL with err. */
static void *map_snapshot_fd(int fd, size_t len, int writable, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (unsigned long long)st.st_size < (unsigned long long)len ||
        len == 0) {
        snprintf(err, errlen, "the snapshot's descriptor holds fewer bytes than announced");
        return NULL;
    }
    void *map = mmap(NULL, len, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                     writable ? MAP_SHARED : MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the snapshot: %s", strerror(errno));
        return NULL;
    }
    return map;
}

/* What was left out, for the host: [{"reason", "count", "names"}]. */
static json_t *not_carried_json(const repl_snapshot_stats *stats)
{
    static const char *const reasons[REPL_SNAPSHOT_REASONS] = {"not_data", "too_large",
                                                               "too_deep", "cycle"};
    json_t *list = json_array();
    for (int r = 0; list && r < REPL_SNAPSHOT_REASONS; r++) {
        if (!stats->not_carried[r])
            continue;
        json_t *names = json_array();
        PyObject *given = stats->names[r];
        for (Py_ssize_t i = 0; names && given && i < PyList_GET_SIZE(given); i++) {
            PyObject *bytes = repl_utf8_bytes(PyList_GET_ITEM(given, i));
            if (bytes)
                json_array_append_new(names, frame_string(PyBytes_AS_STRING(bytes),
                                                          (size_t)PyBytes_GET_SIZE(bytes)));
            Py_XDECREF(bytes);
            PyErr_Clear();
        }
        json_array_append_new(list, json_pack("{s:s, s:I, s:o*}", "reason", reasons[r], "count",
                                              (json_int_t)stats->not_carried[r], "names", names));
    }
    return list;
}

/* Writes the data variables into the host's memfd (the byte after the
 * frame carries it). No model code runs: the namespace is put back first,
 * and the encoder looks at exact types only. */
static json_t *take_snapshot(child *c, json_t *request)
{
    char err[256] = "";
    int fd = -1;
    if (fd_recv(c->fd, NULL, &fd, 1) != 1)
        return NULL;
    json_int_t max = json_integer_value(json_object_get(request, "max_bytes"));
    repl_snapshot_stats stats = {0};
    json_t *not_carried = NULL;
    int ok = 0;
    void *map = NULL;
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
    if (max <= 0 || (uint64_t)max > SIZE_MAX)
        snprintf(err, sizeof err, "a bad snapshot size");
    else if ((map = map_snapshot_fd(fd, (size_t)max, 1, err, sizeof err)) &&
             repl_snapshot_encode(c->ns, map, (size_t)max, 0, &stats, err, sizeof err) == 0)
        ok = 1;
    if (map)
        munmap(map, (size_t)max);
    close(fd);
    not_carried = ok ? not_carried_json(&stats) : NULL;
    json_t *reply = json_pack("{s:s, s:b, s:s, s:I, s:I, s:o*}", "type", "snapshot_taken", "ok", ok,
                              "message", err, "bytes", (json_int_t)stats.bytes, "carried",
                              (json_int_t)stats.carried, "not_carried", not_carried);
    repl_snapshot_stats_clear(&stats);
    PyErr_Clear();
    return reply;
}

/* The snapshot decoder's binding: a variable of the model's, not protected. */
static int bind_variable(void *userdata, PyObject *name, PyObject *value)
{
    child *c = userdata;
    return repl_restore_bind(c->restore, name, value);
}

/* Binds the variables of the snapshot in the memfd that follows the frame
 * (the data earlier questions left), after validating all of it. */
static json_t *load_snapshot(child *c, json_t *request)
{
    char err[256] = "";
    int fd = -1;
    if (fd_recv(c->fd, NULL, &fd, 1) != 1)
        return NULL;
    json_int_t len = json_integer_value(json_object_get(request, "bytes"));
    size_t bound = 0;
    int ok = 0;
    void *map = NULL;
    if (len <= 0 || (uint64_t)len > SIZE_MAX)
        snprintf(err, sizeof err, "a bad snapshot size");
    else if ((map = map_snapshot_fd(fd, (size_t)len, 0, err, sizeof err)) &&
             repl_snapshot_decode(map, (size_t)len, 0, bind_variable, c, &bound, err,
                                  sizeof err) == 0)
        ok = 1;
    if (map)
        munmap(map, (size_t)len);
    close(fd);
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
    PyErr_Clear();
    return json_pack("{s:s, s:b, s:s, s:I}", "type", "snapshot_loaded", "ok", ok, "message", err,
                     "variables", (json_int_t)bound);
}

/* The report of sandbox_lockdown as [{"name", "label", "active", "detail"}]. */
static json_t *layer_details(const sandbox_lockdown_report *report)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < report->n; i++) {
        const sandbox_layer_state *l = &report->layers[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:b, s:s}", "name", l->name, "label",
                                              l->label[0] ? l->label : l->name, "active",
                                              l->active, "detail", l->detail));
    }
    return list;
}

static int serve(child *c)
{
    for (;;) {
        char err[256];
        json_t *request = NULL;
        int rc = frame_read(c->fd, c->frame_max, &request, err, sizeof err);
        if (rc == FRAME_EOF)
            return 0;
        if (rc != FRAME_READY)
            return 3;
        const char *type = json_string_value(json_object_get(request, "type"));
        json_t *reply = NULL;
        json_t *code = json_object_get(request, "code");
        json_t *name = json_object_get(request, "name");
        if (type && strcmp(type, "exec") == 0 && json_is_string(code))
            reply = run_cell(c, json_string_value(code), json_string_length(code));
        else if (type && strcmp(type, "get_var") == 0 && json_is_string(name))
            reply = get_var(c, json_string_value(name), json_string_length(name));
        else if (type && strcmp(type, "set_var") == 0)
            reply = set_var(c, request);
        else if (type && strcmp(type, "add_input") == 0)
            reply = child_add_input(c, request, 0);
        else if (type && strcmp(type, "snapshot") == 0)
            reply = take_snapshot(c, request);
        else if (type && strcmp(type, "load_snapshot") == 0)
            reply = load_snapshot(c, request);
        /* The host's request id comes back in the reply: a frame model code
         * forges on fd 3 cannot know it, so the host cannot be fooled into
         * taking it for the answer (and falling out of step). */
        json_t *id = json_object_get(request, "id");
        if (reply && json_is_integer(id))
            json_object_set_new(reply, "id", json_integer(json_integer_value(id)));
        json_decref(request);
        if (!reply)
            return 3; /* protocol violation or out of memory: the host restarts us */
        rc = frame_write(c->fd, reply, c->frame_max, err, sizeof err);
        json_decref(reply);
        if (rc != 0)
            return 3;
    }
}

int main(int argc, char **argv)
{
    struct stat st;
    if (fstat(CHANNEL_FD, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "rlm-sandbox: this program is started by rlm (fd 3 must be its "
                        "socket); it is not meant to be run by hand\n");
        return 2;
    }
    child c = {.fd = CHANNEL_FD};
    char err[1024];
    int zygote = argc > 1 && strcmp(argv[1], "--zygote") == 0;
    if (zygote) {
        if (zygote_prepare(&c, err, sizeof err) != 0)
            send_error_and_exit(c.fd, err);
        json_t *ready = json_pack("{s:s, s:s, s:i}", "type", "zygote_ready", "python",
                                  Py_GetVersion(), "pid", (int)getpid());
        if (!ready || frame_write(c.fd, ready, INIT_FRAME_MAX, err, sizeof err) != 0)
            return 3;
        json_decref(ready);
        zygote_serve(&c); /* returns in a forked child */
    }
    json_t *init = NULL;
    if (frame_read(c.fd, INIT_FRAME_MAX, &init, err, sizeof err) != FRAME_READY)
        return 3;
    int rc = parse_init(&c, init, err, sizeof err);
    json_decref(init);
    if (rc != 0)
        send_error_and_exit(c.fd, err);
    if (!zygote && child_start_interpreter(&c, err, sizeof err) != 0)
        send_error_and_exit(c.fd, err);
    /* A spawned child imports the modules while a second thread copies the
     * context; a forked one has them already, and perhaps the inputs too
     * (a conversation's zygote loaded them once for all its questions). */
    context_load loaded; /* lives as long as the process: main never returns */
    context_load *first = c.preloaded ? c.held[0].cl : &loaded;
    PyObject *context = c.preloaded ? Py_NewRef(c.held[0].obj) : NULL;
    if (!c.preloaded && child_input_begin(&loaded, &c.first, !zygote, err, sizeof err) != 0)
        send_error_and_exit(c.fd, err);
    if (!zygote && (child_preload_modules(err, sizeof err) != 0 || child_load_glue(&c, err, sizeof err) != 0))
        send_error_and_exit(c.fd, err);
    if (!context && !(context = child_input_finish(&loaded, c.parse_input, err, sizeof err)))
        send_failure_and_exit(c.fd, err, loaded.input_error);
    if (repl_helpers_configure(first->kind, first->docs, first->n_docs, first->ascii,
                               c.has_search_cache ? CACHE_FD : -1) != 0) {
        child_python_error(err, sizeof err, "cannot set up the helpers");
        send_error_and_exit(c.fd, err);
    }
    c.context_chars = first->chars;
    rc = setup_namespace(&c, context, first, err, sizeof err);
    Py_DECREF(context); /* the namespace and the restore hold it */
    for (size_t i = 1; rc == 0 && i < c.preloaded; i++)
        if (child_bind_input(&c, c.held[i].name, c.held[i].obj, c.held[i].cl) < 0) {
            child_python_error(err, sizeof err, "cannot bind an input");
            rc = -1;
        }
    if (rc != 0 || (!zygote && child_arm_repl(&c, err, sizeof err) != 0))
        send_error_and_exit(c.fd, err);
    if (repl_restore_end(c.restore) != 0)
        send_error_and_exit(c.fd, "cannot set up the REPL namespace: out of memory");
    /* The threads come last (none can start after the lockdown), so that a
     * forked child's set-up runs single-threaded: with a second thread every
     * copy-on-write fault costs a TLB shoot-down too. A forked child has no
     * allocator helper yet (a spawned one keeps its own); without one it
     * populates arenas itself. */
    py_arena_start_thread();
    if (start_watchdog(c.fd) != 0)
        send_error_and_exit(c.fd, "cannot start the watchdog thread");

    sandbox_lockdown_options lock = {.memory_limit = c.memory_limit,
                                     .unsafe_no_sandbox = c.unsafe_no_sandbox,
                                     .skip_landlock = c.skip_landlock,
                                     .filter = &c.filter};
    if (sandbox_lockdown(&lock, &c.report, c.layers, sizeof c.layers, err, sizeof err) != 0) {
        char msg[1200];
        snprintf(msg, sizeof msg, "lockdown failed: %s", err);
        send_error_and_exit(c.fd, msg);
    }
    json_t *ready = json_pack("{s:s, s:s, s:s, s:I, s:i, s:o, s:o*}", "type", "ready", "layers",
                              c.layers, "python", Py_GetVersion(), "context_chars",
                              (json_int_t)c.context_chars, "pid", (int)getpid(),
                              "layer_details", layer_details(&c.report), "summary",
                              child_input_summary(first));
    if (!ready || frame_write(c.fd, ready, c.frame_max, err, sizeof err) != 0)
        return 3;
    json_decref(ready);
    /* No Py_Finalize: the host kills or disconnects us, and there is nothing
     * to flush; exiting at once keeps restarts cheap. */
    _exit(serve(&c));
}
