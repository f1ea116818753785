/* repl_module — the `_rlm` built-in module of the sandbox child: the REPL
 * functions model code calls (sub-calls go to the host as frames), the bounded
 * output capture behind sys.stdout/sys.stderr, the import guard, and the
 * inputs (context, context_1, ...) the helpers can be pointed at. */
#include "repl_module.h"

#include "capture.h"
#include "frame.h"
#include "repl_helpers.h"
#include "sandbox_policy.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* One input as the helpers see it: the object model code got, the str of
 * each of its documents (kept here: model code may change a list's items, not
 * this tuple), the documents' bytes, and the search indexes built so far. */
typedef struct repl_input {
    PyObject *obj;
    PyObject *documents;          /* tuple: the str of docs[i], in order */
    ingest_kind kind;
    const ingest_doc *docs;       /* borrowed, live as long as the process */
    size_t n_docs;
    const unsigned char *ascii;   /* per document, or NULL */
    search_index *index;          /* the whole input's, while not installed in the helpers */
    search_index **doc_index;     /* one per document viewed alone; NULL until needed */
} repl_input;

#define REPL_MAX_INPUTS 4096
/* Prompts in one call frame: the host refuses more (sandbox-protocol.md). */
#define REPL_MAX_BATCH 65536

typedef struct repl_state {
    int fd;
    size_t frame_max;
    PyObject *ns;            /* the model namespace (borrowed, lives forever) */
    PyObject *capture;       /* capture.c's bounded output object */
    PyObject *final_answer;  /* str set by FINAL / FINAL_VAR */
    PyObject *final_var_literals; /* str literals the running cell passes to FINAL_VAR */
    PyObject *orig_import;   /* the interpreter's own __import__ */
    PyObject *guard;         /* our __import__ */
    PyObject *allowed;       /* frozenset of allowed top-level module names */
    PyObject *allowed_text;  /* "re, json, ..." for error messages */
    PyObject *listing_type;  /* the str subclass SHOW_VARS returns */
    PyObject *library_globals; /* the glue's globals: library code, not the model's */
    repl_input *inputs;      /* inputs[0] is the first (`context`) */
    size_t n_inputs;
    int helpers_switched;    /* a helper runs on another input than the first */
} repl_state;

static struct PyModuleDef repl_moduledef;

static repl_state *state_get(void)
{
    PyObject *module = PyState_FindModule(&repl_moduledef);
    return module ? (repl_state *)PyModule_GetState(module) : NULL;
}

/* ---- output capture (the type is capture.c's) ---- */

PyObject *repl_capture(void)
{
    repl_state *st = state_get();
    return st ? st->capture : NULL;
}

void repl_capture_reset(void)
{
    repl_state *st = state_get();
    if (st && st->capture)
        capture_clear(st->capture);
}

int repl_capture_write(PyObject *str)
{
    repl_state *st = state_get();
    if (!st || !st->capture) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm is not configured");
        return -1;
    }
    return capture_add(st->capture, str);
}

int repl_capture_write_utf8(const char *text)
{
    PyObject *str = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (!str)
        return -1;
    int rc = repl_capture_write(str);
    Py_DECREF(str);
    return rc;
}

PyObject *repl_capture_text(unsigned long long *total)
{
    repl_state *st = state_get();
    if (!st || !st->capture) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm is not configured");
        return NULL;
    }
    return capture_text(st->capture, total);
}

/* ---- helpers ---- */

PyObject *repl_utf8_bytes(PyObject *obj)
{
    PyObject *str = PyUnicode_Check(obj) ? Py_NewRef(obj) : PyObject_Str(obj);
    if (!str)
        return NULL;
    PyObject *bytes = PyUnicode_AsEncodedString(str, "utf-8", "replace");
    Py_DECREF(str);
    return bytes;
}

static json_t *json_from_py(PyObject *obj)
{
    PyObject *bytes = repl_utf8_bytes(obj);
    if (!bytes)
        return NULL;
    json_t *s = frame_string(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    if (!s)
        PyErr_NoMemory();
    return s;
}

/* ---- sub-calls ---- */

/* The pieces of a batch's raw frame (see subcall_raw): the str of each
 * prompt, then of each context there is, and their UTF-8 lengths. Pieces are
 * encoded a group at a time as the frame is written (raw_next), so a batch
 * of non-ASCII prompts never has all its encodings alive at once. */
typedef struct raw_sender {
    PyObject **texts;     /* borrowed from the batch, or str() of an item (owned in keep) */
    PyObject **keep;      /* the str() results we made, released once sent */
    size_t *lens;
    size_t n;
    size_t next;          /* the next piece to hand out */
    PyObject **window;    /* the encodings of the group being written */
    size_t n_window;
} raw_sender;

/* The length of str s encoded as repl_utf8_bytes does (UTF-8, a lone
 * surrogate replaced by '?'), without encoding it. */
static size_t utf8_length_of(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s))
        return (size_t)n;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    size_t len = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        len += c < 0x80 ? 1 : c < 0x800 ? 2 : (c >= 0xD800 && c <= 0xDFFF) ? 1 : c < 0x10000 ? 3 : 4;
    }
    return len;
}

static void raw_release_window(raw_sender *s)
{
    for (size_t i = 0; i < s->n_window; i++)
        Py_DECREF(s->window[i]);
    s->n_window = 0;
}

/* frame_parts_fn: the next group of pieces, each followed by its NUL. ASCII
 * strs go out straight from CPython's buffer; others are encoded now and
 * dropped once the group is written. The frame's length was announced: an
 * encoding that fails (out of memory) leaves no way to finish it, and the
 * child exits (the host replaces it). */
static void raw_next(void *ctx, struct iovec *parts, size_t cap, size_t *n)
{
    static const char nul = '\0';
    raw_sender *s = ctx;
    raw_release_window(s);
    *n = 0;
    while (s->next < s->n && *n + 2 <= cap) {
        PyObject *t = s->texts[s->next];
        const char *data;
        size_t len;
        if (PyUnicode_IS_ASCII(t)) {
            data = PyUnicode_DATA(t);
            len = (size_t)PyUnicode_GET_LENGTH(t);
        } else {
            PyObject *bytes = PyUnicode_AsEncodedString(t, "utf-8", "replace");
            if (!bytes)
                _exit(3);
            s->window[s->n_window++] = bytes;
            data = PyBytes_AS_STRING(bytes);
            len = (size_t)PyBytes_GET_SIZE(bytes);
        }
        if (len != s->lens[s->next])
            _exit(3); /* cannot happen: utf8_length_of is the codec's count */
        if (len > 0)
            parts[(*n)++] = (struct iovec){(void *)data, len};
        parts[(*n)++] = (struct iovec){(void *)&nul, 1};
        s->next++;
    }
}

/* Sends one "call" frame (and the raw frame of its pieces, when raw is
 * given) and waits for its "call_result". The host may take as long as the
 * sub-models need; a SIGINT meanwhile only sets CPython's flag (read_full
 * retries EINTR) and surfaces as KeyboardInterrupt afterwards. */
static PyObject *subcall_exchange(repl_state *st, json_t *call, Py_ssize_t n, const char *fname,
                                  raw_sender *raw, size_t raw_size)
{
    char err[256];
    size_t size = frame_encoded_size(call);
    if (size == 0 || size > st->frame_max || raw_size > st->frame_max)
        return PyErr_Format(PyExc_ValueError,
                            "%s: the prompts and contexts are too large to send (%zu bytes, "
                            "the limit is %zu); send smaller pieces",
                            fname, raw ? raw_size : size, st->frame_max);
    if (frame_write(st->fd, call, st->frame_max, err, sizeof err) != 0)
        _exit(3); /* the host is gone: nothing left to serve */
    if (raw && frame_write_raw_from(st->fd, raw_size, st->frame_max, raw_next, raw, err, sizeof err) != 0)
        _exit(3);
    if (raw) {
        /* Sent: what we encoded or str()'d for it is not needed any more. */
        raw_release_window(raw);
        for (size_t i = 0; i < raw->n; i++)
            Py_CLEAR(raw->keep[i]);
    }
    json_t *reply = NULL;
    int rc = frame_read(st->fd, st->frame_max, &reply, err, sizeof err);
    if (rc != FRAME_READY)
        _exit(rc == FRAME_EOF ? 0 : 3);
    PyObject *list = NULL;
    json_t *results = json_object_get(reply, "results");
    const char *type = json_string_value(json_object_get(reply, "type"));
    if (!type || strcmp(type, "call_result") != 0 ||
        !json_is_array(results) || json_array_size(results) != (size_t)n)
        _exit(3); /* the host broke the protocol; it will restart us */
    if (PyErr_CheckSignals() < 0)
        goto fail;
    if (json_is_true(json_object_get(reply, "stop"))) {
        const char *why = json_string_value(json_array_get(results, 0));
        PyErr_Format(PyExc_RuntimeError, "%s: sub-calls were stopped by the host: %s", fname,
                     why ? why : "no reason given");
        goto fail;
    }
    list = PyList_New(n);
    if (!list)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        json_t *r = json_array_get(results, (size_t)i);
        PyObject *s = json_is_string(r) ? PyUnicode_DecodeUTF8(json_string_value(r),
                                                               (Py_ssize_t)json_string_length(r),
                                                               "replace")
                                        : PyUnicode_FromString("Error: no result");
        if (!s) {
            Py_CLEAR(list);
            goto fail;
        }
        PyList_SET_ITEM(list, i, s);
    }
fail:
    json_decref(reply);
    return list;
}

/* Design note. A batch of sub-calls can carry the whole input (the
 * OOLONG-style scripts send every line once), and rlm_query's contexts can be
 * tens of megabytes: encoding them as JSON would make two more copies here (a
 * json_t per prompt, then the dumped text) and cost the host a JSON parse
 * before the first request goes out. So prompts and contexts go as one raw
 * frame after a small "call" frame that lists their byte lengths
 * ("prompt_lengths", "context_lengths" with null for a prompt without
 * context); each piece is followed by a NUL, the prompts first, then the
 * contexts that are there. The lengths are counted without encoding
 * (utf8_length_of); ASCII strings (the common case, `context` itself above
 * all) are then written straight from CPython's buffer, others encoded a
 * group at a time as they go (raw_next) — the host reads a plain batch
 * only as fast as its requests leave, so the write can last the whole batch.
 * A non-str object is str()'d once, up front (model code: it runs before
 * anything is sent). The host reads each prompt into a buffer of its own. */
static PyObject *subcall_raw(repl_state *st, int rlm, PyObject *seq, PyObject *ctx_seq,
                             Py_ssize_t n, PyObject *model, const char *fname)
{
    PyObject *result = NULL;
    size_t pieces = (size_t)n * (ctx_seq ? 2 : 1);
    raw_sender raw = {.texts = calloc(pieces, sizeof(PyObject *)),
                      .keep = calloc(pieces, sizeof(PyObject *)),
                      .lens = calloc(pieces, sizeof(size_t)),
                      .window = calloc(FRAME_IOV_GROUP_MAX, sizeof(PyObject *))};
    json_t *call = json_object();
    json_t *lengths = json_array();
    json_t *ctx_lengths = ctx_seq ? json_array() : NULL;
    size_t total = 0;
    if (!raw.texts || !raw.keep || !raw.lens || !raw.window || !call || !lengths ||
        (ctx_seq && !ctx_lengths)) {
        PyErr_NoMemory();
        goto fail;
    }
    for (size_t pass = 0; pass < (ctx_seq ? 2u : 1u); pass++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(pass ? ctx_seq : seq, i);
            json_t *list = pass ? ctx_lengths : lengths;
            json_t *entry;
            if (pass && item == Py_None) {
                entry = json_null();
            } else {
                PyObject *text = item;
                if (!PyUnicode_Check(item)) {
                    text = raw.keep[raw.n] = PyObject_Str(item);
                    if (!text)
                        goto fail;
                }
                size_t len = utf8_length_of(text);
                raw.texts[raw.n] = text;
                raw.lens[raw.n++] = len;
                total = len + 1 > SIZE_MAX - total ? SIZE_MAX : total + len + 1;
                entry = json_integer((json_int_t)len);
            }
            if (json_array_append_new(list, entry) != 0) {
                PyErr_NoMemory();
                goto fail;
            }
        }
    }
    json_t *model_json = model && model != Py_None ? json_from_py(model) : json_null();
    if (!model_json || json_object_set_new(call, "model", model_json) != 0 ||
        json_object_set_new(call, "type", json_string("call")) != 0 ||
        json_object_set_new(call, "kind", json_string(rlm ? "rlm" : "llm")) != 0 ||
        json_object_set(call, "prompt_lengths", lengths) != 0 ||
        (ctx_lengths && json_object_set(call, "context_lengths", ctx_lengths) != 0)) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto fail;
    }
    result = subcall_exchange(st, call, n, fname, &raw, total);
fail:
    if (raw.window)
        raw_release_window(&raw);
    for (size_t i = 0; raw.keep && i < raw.n; i++)
        Py_XDECREF(raw.keep[i]);
    free(raw.texts);
    free(raw.keep);
    free(raw.lens);
    free(raw.window);
    json_decref(lengths);
    json_decref(ctx_lengths);
    json_decref(call);
    return result;
}

/* The items of a sequence as a tuple of its own: str() of an item (model
 * code) can change a list while the frame is built, never this tuple, whose
 * strs the raw frame points into. */
static PyObject *own_items(PyObject *obj, const char *message)
{
    PyObject *seq = PySequence_Fast(obj, message);
    if (!seq || PyTuple_CheckExact(seq))
        return seq;
    PyObject *items = PySequence_Tuple(seq);
    Py_DECREF(seq);
    return items;
}

static PyObject *subcall(PyObject *module, int rlm, PyObject *prompts, PyObject *contexts,
                         PyObject *model, const char *fname)
{
    repl_state *st = PyModule_GetState(module);
    PyObject *seq = NULL, *ctx_seq = NULL, *result = NULL;
    if (PyUnicode_Check(prompts))
        return PyErr_Format(PyExc_TypeError,
                            "%s expects a list of prompts, got one str; use %s for a single "
                            "prompt",
                            fname, rlm ? "rlm_query" : "llm_query");
    seq = own_items(prompts, "prompts must be a list of strings");
    if (!seq)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        result = PyList_New(0);
        goto fail;
    }
    if (n > REPL_MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "%s: %zd prompts in one batch; at most %d, send the rest "
                     "in another batch", fname, n, REPL_MAX_BATCH);
        goto fail;
    }
    if (contexts && contexts != Py_None) {
        if (PyUnicode_Check(contexts)) {
            PyErr_Format(PyExc_TypeError,
                         "%s expects a list of contexts (one per prompt), got one str", fname);
            goto fail;
        }
        ctx_seq = own_items(contexts, "contexts must be a list (one per prompt)");
        if (!ctx_seq)
            goto fail;
        if (PySequence_Fast_GET_SIZE(ctx_seq) != n) {
            PyErr_Format(PyExc_ValueError, "%s: %zd prompts but %zd contexts", fname, n,
                         PySequence_Fast_GET_SIZE(ctx_seq));
            goto fail;
        }
        /* A list of None is no context at all. */
        Py_ssize_t given = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            given += PySequence_Fast_GET_ITEM(ctx_seq, i) != Py_None;
        if (given == 0)
            Py_CLEAR(ctx_seq);
    }
    result = subcall_raw(st, rlm, seq, ctx_seq, n, model, fname);
fail:
    if (!result && !PyErr_Occurred())
        PyErr_NoMemory();
    Py_XDECREF(seq);
    Py_XDECREF(ctx_seq);
    return result;
}

static PyObject *single(PyObject *module, int rlm, PyObject *prompt, PyObject *context,
                        PyObject *model, const char *fname)
{
    PyObject *prompts = PyTuple_Pack(1, prompt);
    PyObject *contexts = context && context != Py_None ? PyTuple_Pack(1, context) : NULL;
    PyObject *out = NULL, *list = NULL;
    if (!prompts || (context && context != Py_None && !contexts))
        goto fail;
    list = subcall(module, rlm, prompts, contexts, model, fname);
    if (list)
        out = Py_NewRef(PyList_GET_ITEM(list, 0));
fail:
    Py_XDECREF(prompts);
    Py_XDECREF(contexts);
    Py_XDECREF(list);
    return out;
}

static PyObject *api_llm_query(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prompt", "model", NULL};
    PyObject *prompt, *model = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:llm_query", kwlist, &prompt, &model))
        return NULL;
    return single(module, 0, prompt, NULL, model, "llm_query");
}

static PyObject *api_llm_query_batched(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prompts", "model", NULL};
    PyObject *prompts, *model = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:llm_query_batched", kwlist, &prompts,
                                     &model))
        return NULL;
    return subcall(module, 0, prompts, NULL, model, "llm_query_batched");
}

static PyObject *api_rlm_query(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prompt", "context", "model", NULL};
    PyObject *prompt, *context = Py_None, *model = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:rlm_query", kwlist, &prompt, &context,
                                     &model))
        return NULL;
    return single(module, 1, prompt, context, model, "rlm_query");
}

static PyObject *api_rlm_query_batched(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prompts", "contexts", "model", NULL};
    PyObject *prompts, *contexts = Py_None, *model = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:rlm_query_batched", kwlist, &prompts,
                                     &contexts, &model))
        return NULL;
    return subcall(module, 1, prompts, contexts, model, "rlm_query_batched");
}

/* ---- finishing ---- */

/* The answer is kept as an exact str: what str() returned may be a str
 * subclass, whose methods the child must never call later. */
static PyObject *api_final(PyObject *module, PyObject *value)
{
    repl_state *st = PyModule_GetState(module);
    PyObject *text = PyObject_Str(value);
    PyObject *answer = text ? PyUnicode_FromObject(text) : NULL;
    Py_XDECREF(text);
    if (!answer)
        return NULL;
    Py_XSETREF(st->final_answer, answer);
    Py_RETURN_NONE;
}

/* 1 when every key of dict is an exact str: then a lookup of an exact str
 * compares strs in C and runs no model code. */
static int keys_exact(PyObject *dict)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value))
        if (!PyUnicode_CheckExact(key))
            return 0;
    return 1;
}

/* The namespace's value for key (an exact str), as a new reference; NULL
 * without an error when there is none. Model code may have put keys of its
 * own classes in the namespace during the cell: then the entries are
 * compared one by one, exact strs only, rather than looked up (a colliding
 * str subclass's __eq__ would run inside the lookup). */
static PyObject *ns_get(repl_state *st, PyObject *key)
{
    if (keys_exact(st->ns)) {
        PyObject *value = PyDict_GetItemWithError(st->ns, key);
        return Py_XNewRef(value);
    }
    PyObject *items = PyDict_Items(st->ns), *found = NULL;
    for (Py_ssize_t i = 0; items && !found && i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0);
        if (PyUnicode_CheckExact(k) && PyUnicode_Compare(k, key) == 0)
            found = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    }
    Py_XDECREF(items);
    return found;
}

PyObject *repl_take_final(void)
{
    repl_state *st = state_get();
    if (!st)
        return NULL;
    PyObject *answer = st->final_answer;
    st->final_answer = NULL;
    return answer;
}

void repl_set_cell_literals(PyObject *literals)
{
    repl_state *st = state_get();
    if (st)
        Py_XSETREF(st->final_var_literals, Py_XNewRef(literals));
}

/* FINAL_VAR("name") answers with str() of that variable. Models also write
 * FINAL_VAR(result) with the value itself: anything that is not a str, and a
 * str naming no variable that the cell did not write as a literal, is taken
 * as that value. A literal naming no variable is an error the model sees,
 * never an answer: the literal name is the classic wrong final answer. */
static PyObject *api_final_var(PyObject *module, PyObject *name)
{
    repl_state *st = PyModule_GetState(module);
    if (!PyUnicode_Check(name))
        return api_final(module, name);
    /* An exact copy first: a str subclass's strip() or __repr__ is model
     * code that could return anything. */
    PyObject *exact = PyUnicode_FromObject(name);
    PyObject *key = exact ? PyObject_CallMethod(exact, "strip", "s", " \t\r\n'\"`") : NULL;
    PyObject *value = key ? ns_get(st, key) : NULL;
    PyObject *rc = NULL;
    if (!value && key && !PyErr_Occurred()) {
        int literal = st->final_var_literals ? PySet_Contains(st->final_var_literals, key) : 1;
        if (literal == 0)
            rc = api_final(module, exact);
        else if (literal > 0)
            PyErr_Format(PyExc_NameError,
                         "FINAL_VAR(%R): there is no variable named %R in the REPL. Assign it "
                         "in a code block first (%U = ...), or use FINAL(value).",
                         exact, key, key);
    } else if (value) {
        rc = api_final(module, value);
    }
    Py_XDECREF(value);
    Py_XDECREF(key);
    Py_XDECREF(exact);
    return rc;
}

/* ---- SHOW_VARS ---- */

/* A variable worth listing: not private (_x), not the answer dict, not a
 * module, and not a C function — the REPL's functions and helpers are all C
 * functions, the model's own are Python ones. The inputs and histories the
 * host bound are listed: they are the model's data, and seeing context_0 in
 * the list is how a model learns the name. */
static int listed_var(PyObject *key, PyObject *value)
{
    if (!PyUnicode_Check(key) || PyUnicode_GET_LENGTH(key) == 0 ||
        PyUnicode_READ_CHAR(key, 0) == '_' || PyUnicode_CompareWithASCIIString(key, "answer") == 0)
        return 0;
    return !PyModule_Check(value) && !PyCFunction_Check(value);
}

/* Sizes only for exact built-in types: a subclass's __len__ is model code and
 * must not run while we walk the namespace. */
static PyObject *describe_var(repl_state *st, PyObject *key, PyObject *value)
{
    const char *type = Py_TYPE(value)->tp_name;
    if (PyUnicode_Check(value)) /* the length of any str is read in C */
        return PyUnicode_FromFormat("  %U: %s (%zd chars)", key,
                                    Py_TYPE(value) == (PyTypeObject *)st->listing_type ? "str" : type,
                                    PyUnicode_GET_LENGTH(value));
    if (PyBytes_CheckExact(value) || PyByteArray_CheckExact(value))
        return PyUnicode_FromFormat("  %U: %s (%zd bytes)", key, type, PyObject_Size(value));
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value) || PyDict_CheckExact(value) ||
        PyAnySet_CheckExact(value))
        return PyUnicode_FromFormat("  %U: %s (%zd items)", key, type, PyObject_Size(value));
    return PyUnicode_FromFormat("  %U: %s", key, type);
}

/* The listing's type: a str whose repr is the text itself, so that a bare
 * SHOW_VARS() as a cell's last line shows the listing, not a quoted one-line
 * repr of it. */
static PyObject *listing_repr(PyObject *self)
{
    return PyUnicode_FromObject(self);
}

static PyType_Slot listing_slots[] = {
    {Py_tp_repr, listing_repr},
    {Py_tp_doc, "The text SHOW_VARS() returns."},
    {0, NULL},
};

static PyType_Spec listing_spec = {
    .name = "_rlm.Listing",
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = listing_slots,
};

/* The namespace's entries as a list of (key, value) pairs held by the
 * list: the listing below allocates, an allocation may collect, and a
 * collection runs model finalizers that can change the namespace under a
 * walk of borrowed entries. Only exact-str keys are listed. */
static PyObject *ns_items(repl_state *st)
{
    return PyDict_Items(st->ns);
}

/* SHOW_VARS() returns the listing (models write print(SHOW_VARS())) and
 * prints nothing itself. */
static PyObject *api_show_vars(PyObject *module, PyObject *unused)
{
    repl_state *st = PyModule_GetState(module);
    PyObject *items = ns_items(st), *lines = PyList_New(0), *text = NULL, *sep = NULL;
    if (!items || !lines)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(key) || !listed_var(key, value))
            continue;
        PyObject *line = describe_var(st, key, value);
        if (!line || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            goto fail;
        }
        Py_DECREF(line);
    }
    if (PyList_GET_SIZE(lines) == 0) {
        text = PyUnicode_FromString("No variables yet (llm_query, grep, ... are built in).");
    } else {
        sep = PyUnicode_FromString("\n");
        PyObject *body = sep ? PyUnicode_Join(sep, lines) : NULL;
        if (body)
            text = PyUnicode_FromFormat("REPL variables:\n%U", body);
        Py_XDECREF(body);
    }
    if (text && st->listing_type)
        Py_SETREF(text, PyObject_CallOneArg(st->listing_type, text));
fail:
    Py_XDECREF(items);
    Py_XDECREF(lines);
    Py_XDECREF(sep);
    return text;
}

/* Names and characters of the one-line listing after each cell. */
#define VARIABLES_LINE_NAMES 100
#define VARIABLES_LINE_CHARS 1500

PyObject *repl_variables_line(void)
{
    repl_state *st = state_get();
    if (!st || !st->ns)
        return PyUnicode_FromString("");
    PyObject *items = ns_items(st), *parts = PyList_New(0), *sep = PyUnicode_FromString(", ");
    PyObject *out = NULL;
    Py_ssize_t chars = 0, more = 0;
    if (!items || !parts || !sep)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(key) || !listed_var(key, value))
            continue;
        const char *type = PyUnicode_Check(value) ? "str" : Py_TYPE(value)->tp_name;
        if (PyList_GET_SIZE(parts) >= VARIABLES_LINE_NAMES ||
            chars + PyUnicode_GET_LENGTH(key) > VARIABLES_LINE_CHARS) {
            more++;
            continue;
        }
        PyObject *part = PyUnicode_FromFormat("%U: %.40s", key, type);
        if (!part || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            goto fail;
        }
        chars += PyUnicode_GET_LENGTH(part) + 2;
        Py_DECREF(part);
    }
    out = PyUnicode_Join(sep, parts);
    if (out && more)
        Py_SETREF(out, PyUnicode_FromFormat("%U, ... and %zd more", out, more));
fail:
    Py_XDECREF(items);
    Py_XDECREF(parts);
    Py_XDECREF(sep);
    return out;
}

/* ---- import guard ---- */

/* Model code runs with the namespace as globals, or with a dict it made
 * itself (exec(src, {}), a function built with other globals). Library code
 * runs with the __dict__ of a module registered in sys.modules. */
static int is_model_globals(repl_state *st, PyObject *globals)
{
    if (!globals || !PyDict_Check(globals))
        return 0;
    if (globals == st->library_globals)
        return 0;
    /* A dict with keys of the model's own classes is the model's; a lookup
     * in it could run their __eq__. So could a lookup in sys.modules while
     * it holds such keys (model code may add some during a cell): the dicts
     * are compared by walking, never by a lookup with a model key. */
    if (globals == st->ns || !PyDict_CheckExact(globals) || !keys_exact(globals))
        return 1;
    PyObject *name = PyDict_GetItemString(globals, "__name__"); /* borrowed */
    if (!name || !PyUnicode_CheckExact(name))
        return 1;
    Py_INCREF(name);
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    int library = 0;
    if (keys_exact(modules)) {
        PyObject *module = PyDict_GetItemWithError(modules, name);
        library = module && PyModule_Check(module) && PyModule_GetDict(module) == globals;
    }
    PyErr_Clear();
    Py_DECREF(name);
    return !library;
}

/* PyImport_Import (what C modules use for their lazy imports, e.g. _datetime
 * importing _strptime or time) calls __import__(name, g, g, [], 0) with g the
 * globals of whichever Python frame is running — the model's own when model
 * code calls datetime.strptime. The import statement never passes a list as
 * fromlist (None or a tuple), so that shape gets the library rule (already
 * loaded only). Model code could imitate it; that reaches only modules that
 * are loaded anyway, which model code can reach through attributes of allowed
 * modules too (json.codecs.sys.modules). The guard explains the rules; the
 * boundary is the seccomp filter. */
static int is_c_api_import(PyObject *caller, PyObject *globals, PyObject *locals,
                           PyObject *fromlist, int level)
{
    return level == 0 && caller && globals == caller && locals == caller && fromlist &&
           PyList_CheckExact(fromlist) && PyList_GET_SIZE(fromlist) == 0;
}

static PyObject *import_error(PyObject *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg) {
        PyErr_SetImportError(msg, name, NULL);
        Py_DECREF(msg);
    }
    return NULL;
}

/* 1 when sys.modules has name (an exact str), 0 when not, -1 on error. */
static int module_loaded(PyObject *name)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    if (keys_exact(modules))
        return PyDict_GetItemWithError(modules, name) != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(modules, &pos, &key, &value))
        if (PyUnicode_CheckExact(key) && PyUnicode_Compare(key, name) == 0)
            return 1;
    return 0;
}

/* Model rule: the top-level name is on the allowlist and the module (and any
 * submodule named in fromlist) was loaded before lockdown. */
static PyObject *check_model_import(repl_state *st, PyObject *name, PyObject *fromlist, int level)
{
    if (level > 0)
        return import_error(name, "relative imports are not available in the REPL");
    PyObject *dot = PyUnicode_FromString(".");
    PyObject *split = dot ? PyUnicode_Partition(name, dot) : NULL;
    Py_XDECREF(dot);
    if (!split)
        return NULL;
    PyObject *top = PyTuple_GET_ITEM(split, 0);
    int allowed = PySet_Contains(st->allowed, top);
    if (allowed < 0) {
        Py_DECREF(split);
        return NULL;
    }
    const char *hint = allowed ? NULL : sandbox_policy_refusal(PyUnicode_AsUTF8(top));
    PyErr_Clear(); /* a name that is not UTF-8 has no hint */
    Py_DECREF(split);
    if (hint)
        return import_error(name, "import of '%U' is not allowed: %s.", name, hint);
    if (!allowed)
        return import_error(name,
                            "import of '%U' is not allowed in the sandbox. Allowed modules: %U",
                            name, st->allowed_text);
    int loaded = module_loaded(name);
    if (loaded <= 0)
        return loaded < 0 ? NULL
                          : import_error(name,
                                         "module '%U' is not available in the sandbox. "
                                         "Allowed modules: %U",
                                         name, st->allowed_text);
    if (fromlist && PySequence_Check(fromlist) && !PyUnicode_Check(fromlist)) {
        /* fromlist and the module's attributes can be model objects: hold
         * what is used across their calls. */
        PyObject *module = keys_exact(PyImport_GetModuleDict())
                               ? Py_XNewRef(PyDict_GetItemWithError(PyImport_GetModuleDict(), name))
                               : NULL;
        Py_ssize_t n = module ? PySequence_Size(fromlist) : 0;
        for (Py_ssize_t i = 0; module && i < n; i++) {
            PyObject *item = PySequence_GetItem(fromlist, i);
            PyObject *exact = item && PyUnicode_Check(item) ? PyUnicode_FromObject(item) : NULL;
            int ok = item != NULL && (!PyUnicode_Check(item) || exact);
            if (exact && PyUnicode_CompareWithASCIIString(exact, "*") != 0 &&
                !PyObject_HasAttr(module, exact)) {
                PyObject *full = PyUnicode_FromFormat("%U.%U", name, exact);
                ok = full && module_loaded(full) > 0;
                Py_XDECREF(full);
                if (!ok && !PyErr_Occurred())
                    import_error(name, "cannot import '%U' from '%U' in the sandbox", exact, name);
            }
            Py_XDECREF(exact);
            Py_XDECREF(item);
            if (!ok) {
                Py_DECREF(module);
                return NULL;
            }
        }
        Py_XDECREF(module);
        if (PyErr_Occurred())
            return NULL;
    }
    Py_RETURN_NONE;
}

/* Library rule: whatever the module asks for must already be in sys.modules;
 * after lockdown nothing can be read from disk anyway, and this says so. */
static PyObject *check_library_import(PyObject *name, PyObject *globals, int level)
{
    PyObject *full = NULL;
    if (level == 0) {
        full = Py_NewRef(name);
    } else {
        PyObject *package = globals && PyDict_Check(globals)
                                ? PyDict_GetItemString(globals, "__package__")
                                : NULL;
        if (!package || !PyUnicode_Check(package))
            return import_error(name, "relative import of '%U' without a package", name);
        PyObject *base = Py_NewRef(package);
        for (int i = 1; i < level && base; i++) {
            PyObject *dot = PyUnicode_FromString(".");
            PyObject *parts = dot ? PyUnicode_RPartition(base, dot) : NULL;
            Py_XDECREF(dot);
            Py_SETREF(base, parts ? Py_NewRef(PyTuple_GET_ITEM(parts, 0)) : NULL);
            Py_XDECREF(parts);
        }
        if (!base)
            return NULL;
        full = PyUnicode_GET_LENGTH(name) ? PyUnicode_FromFormat("%U.%U", base, name)
                                          : Py_NewRef(base);
        Py_DECREF(base);
        if (!full)
            return NULL;
    }
    int loaded = module_loaded(full);
    PyObject *rc = NULL;
    if (loaded > 0)
        rc = Py_NewRef(Py_None);
    else if (loaded == 0)
        import_error(full,
                     "import of '%U' blocked: the sandbox only provides modules loaded before "
                     "it was locked down",
                     full);
    Py_DECREF(full);
    return rc;
}

static PyObject *guard_import(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "globals", "locals", "fromlist", "level", NULL};
    PyObject *name, *globals = NULL, *locals = NULL, *fromlist = NULL;
    int level = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|OOOi:__import__", kwlist, &name, &globals,
                                     &locals, &fromlist, &level))
        return NULL;
    repl_state *st = PyModule_GetState(module);
    PyObject *caller = PyEval_GetGlobals(); /* borrowed */
    /* The checks use an exact copy of the name: a str subclass's methods
     * and hash are model code. */
    PyObject *exact = PyUnicode_FromObject(name);
    if (!exact)
        return NULL;
    PyObject *verdict;
    Py_XINCREF(caller);
    if (is_model_globals(st, caller) &&
        !is_c_api_import(caller, globals, locals, fromlist, level))
        verdict = check_model_import(st, exact, fromlist, level);
    else
        verdict = check_library_import(exact, globals ? globals : caller, level);
    Py_XDECREF(caller);
    Py_DECREF(exact);
    if (!verdict)
        return NULL;
    Py_DECREF(verdict);
    return PyObject_Call(st->orig_import, args, kwds);
}

static PyMethodDef guard_def = {"__import__", (PyCFunction)(void (*)(void))guard_import,
                                METH_VARARGS | METH_KEYWORDS,
                                "Import one of the modules the sandbox allows."};

int repl_set_library_globals(PyObject *globals)
{
    repl_state *st = state_get();
    if (!st) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm is not loaded");
        return -1;
    }
    Py_XSETREF(st->library_globals, Py_NewRef(globals));
    return 0;
}

int repl_install_import_guard(void)
{
    repl_state *st = state_get();
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed dict */
    if (!st || !builtins) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm is not configured");
        return -1;
    }
    if (!st->orig_import) {
        PyObject *orig = PyDict_GetItemString(builtins, "__import__");
        if (!orig) {
            PyErr_SetString(PyExc_RuntimeError, "builtins.__import__ is missing");
            return -1;
        }
        st->orig_import = Py_NewRef(orig);
        PyObject *module = PyState_FindModule(&repl_moduledef);
        st->guard = PyCFunction_NewEx(&guard_def, module, NULL);
        if (!st->guard)
            return -1;
    }
    if (PyDict_GetItemString(builtins, "__import__") == st->guard)
        return 0;
    return PyDict_SetItemString(builtins, "__import__", st->guard);
}

/* ---- inputs, and the helpers pointed at one ----
 *
 * Design note. The helpers (repl_helpers.c) work on one set of documents at
 * a time, with that set's search index. Every input (context, context_1, ...)
 * is registered here with its documents; grep, chunks and search in the
 * namespace are wrappers that take context=<an input, or one document of
 * one> and point the helpers at it for the length of the call (a document
 * alone is a set of one: offsets are into that str, hits have doc None),
 * then back at the first input. Each set's index is kept here between calls,
 * so none is built twice. A helper cannot run model code between the switch
 * and the switch back except through argument conversion (an __index__
 * method), so a nested helper call meanwhile is refused: it would swap
 * indexes under the running one. */

typedef struct helper_view {
    ingest_kind kind;
    const ingest_doc *docs;
    size_t n_docs;
    const unsigned char *ascii;
    search_index **index;   /* where the view's index is kept between calls */
} helper_view;

/* The str of each document of obj, as loaded, in document order. */
static PyObject *input_documents(PyObject *obj, ingest_kind kind, const ingest_doc *docs,
                                 size_t n_docs)
{
    PyObject *documents = PyTuple_New((Py_ssize_t)n_docs);
    for (size_t i = 0; documents && i < n_docs; i++) {
        PyObject *doc = NULL; /* borrowed */
        if (kind == INGEST_STR) {
            doc = i == 0 ? obj : NULL;
        } else if (kind == INGEST_LIST) {
            doc = PyList_Check(obj) && (Py_ssize_t)i < PyList_GET_SIZE(obj)
                      ? PyList_GET_ITEM(obj, (Py_ssize_t)i)
                      : NULL;
        } else if (PyDict_Check(obj)) {
            PyObject *key = PyUnicode_DecodeUTF8(docs[i].name, (Py_ssize_t)strlen(docs[i].name),
                                                 "replace");
            doc = key ? PyDict_GetItemWithError(obj, key) : NULL;
            Py_XDECREF(key);
            if (PyErr_Occurred())
                Py_CLEAR(documents);
        }
        if (documents)
            PyTuple_SET_ITEM(documents, (Py_ssize_t)i, Py_NewRef(doc ? doc : Py_None));
    }
    return documents;
}

int repl_add_input(PyObject *obj, ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                   const unsigned char *ascii)
{
    repl_state *st = state_get();
    if (!st) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm is not configured");
        return -1;
    }
    if (st->n_inputs >= REPL_MAX_INPUTS) {
        PyErr_Format(PyExc_RuntimeError, "too many inputs (at most %d)", REPL_MAX_INPUTS);
        return -1;
    }
    repl_input *grown = PyMem_Realloc(st->inputs, (st->n_inputs + 1) * sizeof *grown);
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    st->inputs = grown;
    PyObject *documents = input_documents(obj, kind, docs, n_docs);
    if (!documents)
        return -1;
    st->inputs[st->n_inputs++] = (repl_input){
        .obj = Py_NewRef(obj), .documents = documents, .kind = kind, .docs = docs,
        .n_docs = n_docs, .ascii = ascii};
    return 0;
}

/* What obj is: an input (whole), or one document of an input. 0, or -1 when
 * it is neither. */
static int find_view(repl_state *st, PyObject *obj, size_t *input, size_t *doc)
{
    for (size_t k = 0; k < st->n_inputs; k++)
        if (st->inputs[k].obj == obj) {
            *input = k;
            *doc = SIZE_MAX;
            return 0;
        }
    for (size_t k = 0; k < st->n_inputs; k++) {
        PyObject *documents = st->inputs[k].documents;
        for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(documents); d++)
            if (PyTuple_GET_ITEM(documents, d) == obj) {
                *input = k;
                *doc = (size_t)d;
                return 0;
            }
    }
    return -1;
}

static int view_of(repl_input *in, size_t doc, helper_view *v)
{
    if (doc == SIZE_MAX) {
        *v = (helper_view){in->kind, in->docs, in->n_docs, in->ascii, &in->index};
        return 0;
    }
    if (!in->doc_index && !(in->doc_index = PyMem_Calloc(in->n_docs, sizeof *in->doc_index))) {
        PyErr_NoMemory();
        return -1;
    }
    *v = (helper_view){INGEST_STR, in->docs + doc, 1, in->ascii ? in->ascii + doc : NULL,
                       &in->doc_index[doc]};
    return 0;
}

/* grep / chunks / search with context=: self is the helper itself. */
static PyObject *helper_call(PyObject *helper, PyObject *args, PyObject *kwds)
{
    repl_state *st = state_get();
    PyObject *target = NULL, *kw = NULL, *result = NULL;
    if (!st)
        return PyErr_Format(PyExc_RuntimeError, "_rlm is not configured");
    if (st->helpers_switched)
        return PyErr_Format(PyExc_RuntimeError, "%s: the helpers cannot be called while one "
                            "is running", PyEval_GetFuncName(helper));
    if (kwds) {
        /* Keyword names are strs, but may be of a model subclass: refused
         * before a lookup could run its __eq__. */
        if (!keys_exact(kwds)) {
            PyErr_Format(PyExc_TypeError, "%s: keyword names must be plain str",
                         PyEval_GetFuncName(helper));
            goto done;
        }
        target = Py_XNewRef(PyDict_GetItemString(kwds, "context"));
        kw = PyDict_Copy(kwds);
        if (!kw || (target && PyDict_DelItemString(kw, "context") < 0))
            goto done;
    }
    size_t input = 0, doc = SIZE_MAX;
    if (target && target != Py_None && find_view(st, target, &input, &doc) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s(context=...) takes one of the inputs (context, context_1, ...) or one "
                     "of their documents (context_1[0], context_1['name']), not a %.100s made "
                     "in the REPL; for other text use re",
                     PyEval_GetFuncName(helper), Py_TYPE(target)->tp_name);
        goto done;
    }
    if (st->n_inputs == 0 || (input == 0 && doc == SIZE_MAX)) {
        result = PyObject_Call(helper, args, kw);
        goto done;
    }
    repl_input *first = &st->inputs[0];
    helper_view v;
    if (view_of(&st->inputs[input], doc, &v) != 0)
        goto done;
    st->helpers_switched = 1;
    first->index = repl_helpers_switch(v.kind, v.docs, v.n_docs, v.ascii, *v.index);
    result = PyObject_Call(helper, args, kw);
    *v.index = repl_helpers_switch(first->kind, first->docs, first->n_docs, first->ascii,
                                   first->index);
    first->index = NULL;
    st->helpers_switched = 0;
done:
    Py_XDECREF(kw);
    Py_XDECREF(target);
    return result;
}

#define API_FN(fn) ((PyCFunction)(void (*)(void))(fn))

/* Wrappers for the helpers that take context= (the policy table says
 * which): helper_call bound to the helper, named and documented as the
 * helper itself (its docstring in repl_helpers.c says what context= does).
 * The definitions live for the process's life: one per helper. */
#define INPUT_HELPERS_MAX 16

PyObject *repl_input_helper(const char *name, PyObject *helper)
{
    static PyMethodDef defs[INPUT_HELPERS_MAX];
    static size_t n_defs;
    const sandbox_repl_name *entry = sandbox_policy_find(name);
    if (!entry || !entry->takes_context)
        return Py_NewRef(helper);
    PyMethodDef *def = NULL;
    for (size_t i = 0; i < n_defs && !def; i++)
        if (strcmp(defs[i].ml_name, entry->name) == 0)
            def = &defs[i];
    if (!def && n_defs < INPUT_HELPERS_MAX) {
        def = &defs[n_defs++];
        *def = (PyMethodDef){entry->name, API_FN(helper_call), METH_VARARGS | METH_KEYWORDS,
                             repl_helpers_doc(entry->name)};
    }
    if (!def)
        return PyErr_Format(PyExc_RuntimeError, "more than %d helpers take context=",
                            INPUT_HELPERS_MAX);
    return PyCFunction_NewEx(def, helper, NULL);
}

/* ---- module ---- */

static PyMethodDef repl_methods[] = {
    {"llm_query", API_FN(api_llm_query), METH_VARARGS | METH_KEYWORDS,
     "llm_query(prompt, model=None) -> str: one sub-model call."},
    {"llm_query_batched", API_FN(api_llm_query_batched), METH_VARARGS | METH_KEYWORDS,
     "llm_query_batched(prompts, model=None) -> list[str]: concurrent calls, results in "
     "order; a failed prompt gives an error string in its slot."},
    {"rlm_query", API_FN(api_rlm_query), METH_VARARGS | METH_KEYWORDS,
     "rlm_query(prompt, context=None) -> str: a recursive RLM call."},
    {"rlm_query_batched", API_FN(api_rlm_query_batched), METH_VARARGS | METH_KEYWORDS,
     "rlm_query_batched(prompts, contexts=None) -> list[str]."},
    {"FINAL", api_final, METH_O, "FINAL(value): answer with str(value)."},
    {"FINAL_VAR", api_final_var, METH_O,
     "FINAL_VAR(name): answer with str() of the variable called name."},
    {"SHOW_VARS", api_show_vars, METH_NOARGS, "SHOW_VARS(): list your variables."},
    {NULL, NULL, 0, NULL},
};

/* CPython requires a static definition object for a built-in module; it is
 * process-wide by nature (one interpreter per child). */
static struct PyModuleDef repl_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rlm",
    .m_doc = "The REPL functions of the rlm sandbox.",
    .m_size = sizeof(repl_state),
    .m_methods = repl_methods,
};

static PyObject *repl_module_init(void)
{
    PyObject *module = PyModule_Create(&repl_moduledef);
    if (module)
        memset(PyModule_GetState(module), 0, sizeof(repl_state));
    return module;
}

int repl_module_register(void)
{
    return PyImport_AppendInittab("_rlm", repl_module_init);
}

PyObject *repl_api_function(const char *name)
{
    PyObject *module = PyState_FindModule(&repl_moduledef);
    return module ? PyObject_GetAttrString(module, name) : NULL;
}

static int set_allowlist(repl_state *st)
{
    PyObject *names = PyList_New(0), *sep = PyUnicode_FromString(", ");
    int rc = -1;
    if (!names || !sep)
        goto fail;
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++) {
        PyObject *s = PyUnicode_FromString(sandbox_allowed_modules[i]);
        if (!s || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            goto fail;
        }
        Py_DECREF(s);
    }
    st->allowed = PyFrozenSet_New(names);
    st->allowed_text = PyUnicode_Join(sep, names);
    rc = st->allowed && st->allowed_text ? 0 : -1;
fail:
    Py_XDECREF(names);
    Py_XDECREF(sep);
    return rc;
}

int repl_module_configure(int fd, size_t frame_max, size_t output_limit, PyObject *ns)
{
    PyObject *module = PyImport_ImportModule("_rlm");
    if (!module)
        return -1;
    Py_DECREF(module); /* sys.modules keeps it */
    repl_state *st = state_get();
    if (!st) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm has no state");
        return -1;
    }
    st->fd = fd;
    st->frame_max = frame_max;
    st->ns = ns;
    st->capture = capture_new(output_limit);
    st->listing_type = PyType_FromSpecWithBases(&listing_spec, (PyObject *)&PyUnicode_Type);
    if (!st->capture || !st->listing_type || set_allowlist(st) != 0)
        return -1;
    return 0;
}
