/* repl_snapshot — the data a question leaves, as bytes and back.
 *
 * Design note. The snapshot crosses a trust boundary twice: it is written by
 * a child in which model code ran, and read by a fresh child before any
 * model code runs there. So the writer is C that looks at exact types only
 * (no __reduce__, no __iter__, no __len__ of a subclass: nothing of the
 * model's runs while it writes), and the reader takes nothing on trust:
 * every tag, length, count, reference and name is checked against the bytes
 * that are left and the limits, objects are built bottom-up from exact
 * types (hashing a key runs C only), and all of it is built before anything
 * is bound. The format is the smallest that says what it must (format doc:
 * docs/internals/snapshot-format.md): a tag byte, then a fixed payload, or a
 * 64-bit little-endian length or count and what it counts. Objects that can
 * be shared or cyclic are numbered in the order the reader finishes (or, for
 * list, dict and set, starts) them, so that a later occurrence is a
 * reference: a list appended to itself, or one big str in two variables,
 * costs its size once. A cycle through a tuple (or another object built
 * after its items) has no such number when it is met again and is refused;
 * depth is bounded on both sides, so neither recursion outgrows its stack. */
#include "repl_snapshot.h"

#include "sandbox_policy.h"

#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAGIC "RLMSNAP\x01"
#define MAGIC_LEN 8
/* str and bytes shorter than this are written again rather than numbered:
 * a memo entry costs more than they do. */
#define SHARE_MIN 16

enum {
    TAG_NONE = 'N',
    TAG_FALSE = 'F',
    TAG_TRUE = 'T',
    TAG_INT = 'I',         /* int64 */
    TAG_BIGINT = 'L',      /* u64 n, n bytes two's complement */
    TAG_FLOAT = 'D',
    TAG_COMPLEX = 'C',
    TAG_STR = 'S',         /* u64 n, UTF-8 (lone surrogates as themselves) */
    TAG_BYTES = 'B',
    TAG_LIST = '[',        /* u64 n, n values */
    TAG_TUPLE = '(',
    TAG_DICT = '{',        /* u64 n, n key/value pairs */
    TAG_SET = 's',
    TAG_FROZENSET = 'f',
    TAG_COUNTER = 'c',     /* as a dict */
    TAG_ORDERED = 'o',     /* as a dict */
    TAG_DEFAULTDICT = 'd', /* the factory (None, or a module attribute), then as a dict */
    TAG_DEQUE = 'q',       /* i64 maxlen (-1: none), then as a list */
    TAG_REF = 'R',         /* u64 number of an earlier object */
    TAG_MODULE = 'M',      /* u16 n, name of an allowed module */
    TAG_ATTR = 'A',        /* a module name, then u16 n, the attribute's name */
};

const char *repl_snapshot_reason_text(repl_snapshot_reason reason)
{
    switch (reason) {
    case REPL_SNAPSHOT_NOT_DATA:
        return "functions, classes and other objects that are not data";
    case REPL_SNAPSHOT_TOO_LARGE:
        return "too large to carry";
    case REPL_SNAPSHOT_TOO_DEEP:
        return "nested too deeply";
    case REPL_SNAPSHOT_CYCLE:
        return "contains itself through a tuple or frozenset";
    default:
        return "not carried";
    }
}

void repl_snapshot_stats_clear(repl_snapshot_stats *stats)
{
    for (int i = 0; i < REPL_SNAPSHOT_REASONS; i++)
        Py_CLEAR(stats->names[i]);
    memset(stats, 0, sizeof *stats);
}

/* The collections types carried by name, as the sandbox loaded them:
 * looked up in sys.modules['collections'] (borrowed; NULL when absent). */
typedef struct known_types {
    PyObject *counter, *ordered, *defaultdict, *deque;
} known_types;

/* A dict's value for an exact str, only when every key is an exact str
 * (no lookup then runs a model __eq__). Borrowed, or NULL. */
static PyObject *clean_get(PyObject *dict, const char *name)
{
    if (!dict || !PyDict_CheckExact(dict))
        return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value))
        if (!PyUnicode_CheckExact(key))
            return NULL;
    PyObject *found = PyDict_GetItemString(dict, name);
    PyErr_Clear();
    return found;
}

/* An allowed module, by name, as loaded (borrowed), or NULL. */
static PyObject *allowed_module(const char *name)
{
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++)
        if (strcmp(name, sandbox_allowed_modules[i]) == 0) {
            PyObject *module = clean_get(PyImport_GetModuleDict(), name);
            return module && PyModule_CheckExact(module) ? module : NULL;
        }
    return NULL;
}

static void known_types_find(known_types *k)
{
    PyObject *collections = allowed_module("collections");
    PyObject *dict = collections ? PyModule_GetDict(collections) : NULL;
    PyObject *t;
    memset(k, 0, sizeof *k);
    k->counter = (t = clean_get(dict, "Counter")) && PyType_Check(t) ? t : NULL;
    k->ordered = (t = clean_get(dict, "OrderedDict")) && PyType_Check(t) ? t : NULL;
    k->defaultdict = (t = clean_get(dict, "defaultdict")) && PyType_Check(t) ? t : NULL;
    k->deque = (t = clean_get(dict, "deque")) && PyType_Check(t) ? t : NULL;
}

/* 1 for a name the host binds or rebuilds (REPL functions, inputs,
 * histories, answers): never carried, never taken from a snapshot. */
static int host_name(const char *name)
{
    const sandbox_repl_name *entry = sandbox_policy_find(name);
    return entry && entry->kind != SANDBOX_NAME_HELPER;
}

/* ---- encoding ---- */

typedef struct writer {
    unsigned char *out;
    size_t cap, len;
} writer;

static int put(writer *w, const void *data, size_t n)
{
    if (n > w->cap - w->len)
        return -1;
    if (n)
        memcpy(w->out + w->len, data, n);
    w->len += n;
    return 0;
}

static int put_u8(writer *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    return put(w, &b, 1);
}

static int put_u16(writer *w, size_t v)
{
    uint16_t le = htole16((uint16_t)v);
    return put(w, &le, 2);
}

static int put_u64(writer *w, uint64_t v)
{
    uint64_t le = htole64(v);
    return put(w, &le, 8);
}

/* Pointer -> number of the objects written so far (open addressing; a
 * removed slot keeps its place as a tombstone). */
typedef struct memo_slot {
    PyObject *key;      /* NULL: empty */
    size_t number;
    int dead;
} memo_slot;

typedef struct memo {
    memo_slot *slots;
    size_t cap, used;   /* used counts tombstones too */
    PyObject **order;   /* order[i] has number i */
    size_t n, order_cap;
} memo;

static size_t memo_hash(const PyObject *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static memo_slot *memo_find(const memo *m, const PyObject *key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = memo_hash(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        memo_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key == key && !s->dead)
            return s;
    }
}

static int memo_put_slot(memo_slot *slots, size_t cap, PyObject *key, size_t number)
{
    for (size_t i = memo_hash(key, cap);; i = (i + 1) & (cap - 1))
        if (!slots[i].key || slots[i].dead) {
            slots[i] = (memo_slot){key, number, 0};
            return 0;
        }
}

static int memo_add(memo *m, PyObject *key)
{
    if (m->n == m->order_cap) {
        size_t cap = m->order_cap ? m->order_cap * 2 : 256;
        PyObject **grown = PyMem_RawRealloc(m->order, cap * sizeof *grown);
        if (!grown)
            return -1;
        m->order = grown;
        m->order_cap = cap;
    }
    if ((m->used + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        memo_slot *slots = PyMem_RawCalloc(cap, sizeof *slots);
        if (!slots)
            return -1;
        for (size_t i = 0; i < m->n; i++)
            memo_put_slot(slots, cap, m->order[i], i);
        PyMem_RawFree(m->slots);
        m->slots = slots;
        m->cap = cap;
        m->used = m->n;
    }
    memo_put_slot(m->slots, m->cap, key, m->n);
    m->order[m->n++] = key;
    m->used++;
    return 0;
}

/* Forgets the objects numbered from `mark` on (a variable left out). */
static void memo_rollback(memo *m, size_t mark)
{
    while (m->n > mark) {
        memo_slot *s = memo_find(m, m->order[--m->n]);
        if (s)
            s->dead = 1;
    }
}

static void memo_free(memo *m)
{
    PyMem_RawFree(m->slots);
    PyMem_RawFree(m->order);
    memset(m, 0, sizeof *m);
}

/* An object the allowed modules hold, by name: module and attribute. */
typedef struct named {
    PyObject *module;   /* the module's name (an exact str) */
    PyObject *attr;     /* the attribute's name, or NULL for the module itself */
} named;

typedef struct encoder {
    writer w;
    int max_depth;
    memo memo;
    known_types types;
    PyObject *path[REPL_SNAPSHOT_DEPTH + 2]; /* containers being written */
    int depth;
    PyObject *names;       /* dict id(object) -> index into named; built on first need */
    named *named;
    size_t n_named;
    repl_snapshot_reason why; /* of the variable being written, when it fails */
    int nomem;
} encoder;

/* Adds obj under (module, attr) unless it has a name already: the first
 * module of the allowed list that holds it names it. */
static int add_name(encoder *e, size_t cap, PyObject *obj, PyObject *module, PyObject *attr)
{
    if (e->n_named >= cap)
        return 0;
    PyObject *id = PyLong_FromVoidPtr(obj);
    int known = id ? PyDict_Contains(e->names, id) : -1;
    PyObject *index = known == 0 ? PyLong_FromSize_t(e->n_named) : NULL;
    int rc = known < 0 || (known == 0 && (!index || PyDict_SetItem(e->names, id, index) < 0))
                 ? -1
                 : 0;
    if (rc == 0 && known == 0)
        e->named[e->n_named++] = (named){Py_NewRef(module), Py_XNewRef(attr)};
    Py_XDECREF(index);
    Py_XDECREF(id);
    return rc;
}

/* The allowed modules and their attributes (but other modules), by the
 * object: built from the modules as they are now (the end of a question has
 * put them back as they were at lockdown). */
static int build_names(encoder *e)
{
    e->names = PyDict_New();
    if (!e->names)
        return -1;
    size_t cap = 0;
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++) {
        PyObject *module = allowed_module(sandbox_allowed_modules[i]);
        cap += module ? 1 + (size_t)PyDict_GET_SIZE(PyModule_GetDict(module)) : 0;
    }
    e->named = PyMem_RawCalloc(cap ? cap : 1, sizeof *e->named);
    if (!e->named)
        return -1;
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++) {
        PyObject *module = allowed_module(sandbox_allowed_modules[i]);
        PyObject *dict = module ? PyModule_GetDict(module) : NULL;
        if (!dict || !clean_get(dict, "__name__"))
            continue; /* absent, or holding keys of a model class */
        PyObject *mname = PyUnicode_FromString(sandbox_allowed_modules[i]);
        int rc = mname ? add_name(e, cap, module, mname, NULL) : -1;
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (rc == 0 && PyDict_Next(dict, &pos, &key, &value))
            if (PyUnicode_CheckExact(key) && !PyModule_CheckExact(value))
                rc = add_name(e, cap, value, mname, key);
        Py_XDECREF(mname);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The name of obj when an allowed module holds it; NULL otherwise. */
static const named *find_name(encoder *e, PyObject *obj)
{
    if (!e->names && build_names(e) < 0) {
        e->nomem = 1;
        PyErr_Clear();
        return NULL;
    }
    PyObject *id = PyLong_FromVoidPtr(obj);
    PyObject *index = id ? PyDict_GetItemWithError(e->names, id) : NULL;
    Py_XDECREF(id);
    if (!index) {
        if (PyErr_Occurred()) {
            e->nomem = 1;
            PyErr_Clear();
        }
        return NULL;
    }
    return &e->named[PyLong_AsSize_t(index)];
}

static int fail(encoder *e, repl_snapshot_reason why)
{
    e->why = why;
    return -1;
}

/* Writes the bytes of a str or a bytes object after its tag. */
static int put_sized(encoder *e, int tag, const char *data, size_t n)
{
    if (put_u8(&e->w, (unsigned)tag) < 0 || put_u64(&e->w, n) < 0 || put(&e->w, data, n) < 0)
        return fail(e, REPL_SNAPSHOT_TOO_LARGE);
    return 0;
}

static int encode_str(encoder *e, PyObject *s, size_t *written)
{
    if (PyUnicode_IS_ASCII(s)) {
        *written = (size_t)PyUnicode_GET_LENGTH(s);
        return put_sized(e, TAG_STR, (const char *)PyUnicode_DATA(s), *written);
    }
    /* surrogatepass: a str may hold lone surrogates, which must come back. */
    PyObject *bytes = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (!bytes) {
        PyErr_Clear();
        e->nomem = 1;
        return -1;
    }
    *written = (size_t)PyBytes_GET_SIZE(bytes);
    int rc = put_sized(e, TAG_STR, PyBytes_AS_STRING(bytes), *written);
    Py_DECREF(bytes);
    return rc;
}

static int encode_int(encoder *e, PyObject *v)
{
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!overflow && !(small == -1 && PyErr_Occurred())) {
        if (put_u8(&e->w, TAG_INT) < 0 || put_u64(&e->w, (uint64_t)small) < 0)
            return fail(e, REPL_SNAPSHOT_TOO_LARGE);
        return 0;
    }
    PyErr_Clear();
    /* int's own methods (C, on an exact int): bit_length, then to_bytes. */
    PyObject *bits = PyObject_CallMethod(v, "bit_length", NULL);
    size_t n = bits ? PyLong_AsSize_t(bits) / 8 + 1 : 0;
    Py_XDECREF(bits);
    PyObject *args = n ? Py_BuildValue("(ns)", (Py_ssize_t)n, "little") : NULL;
    PyObject *kwargs = args ? Py_BuildValue("{s:O}", "signed", Py_True) : NULL;
    PyObject *to_bytes = kwargs ? PyObject_GetAttrString(v, "to_bytes") : NULL;
    PyObject *bytes = to_bytes ? PyObject_Call(to_bytes, args, kwargs) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(to_bytes);
    if (!bytes || !PyBytes_Check(bytes)) {
        Py_XDECREF(bytes);
        PyErr_Clear();
        e->nomem = 1;
        return -1;
    }
    int rc = put_sized(e, TAG_BIGINT, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    return rc;
}

static int encode_value(encoder *e, PyObject *v);

/* A tag (none when tag < 0: the payload of a deque or a defaultdict) and a
 * count. */
static int encode_count(encoder *e, int tag, size_t n)
{
    if ((tag >= 0 && put_u8(&e->w, (unsigned)tag) < 0) || put_u64(&e->w, n) < 0)
        return fail(e, REPL_SNAPSHOT_TOO_LARGE);
    return 0;
}

/* The items of an iterable of exact type (set, frozenset, deque: C
 * iterators), n of them. */
static int encode_items(encoder *e, int tag, PyObject *v, size_t n)
{
    if (encode_count(e, tag, n) < 0)
        return -1;
    PyObject *it = PyObject_GetIter(v), *item;
    size_t seen = 0;
    if (!it) {
        PyErr_Clear();
        e->nomem = 1;
        return -1;
    }
    int rc = 0;
    while (rc == 0 && (item = PyIter_Next(it))) {
        rc = ++seen > n ? fail(e, REPL_SNAPSHOT_NOT_DATA) : encode_value(e, item);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        e->nomem = 1;
        return -1;
    }
    return rc == 0 && seen != n ? fail(e, REPL_SNAPSHOT_NOT_DATA) : rc;
}

/* The entries of a dict or a dict subclass of exact type, in its order. */
static int encode_pairs(encoder *e, int tag, PyObject *v)
{
    if (encode_count(e, tag, (size_t)PyDict_GET_SIZE(v)) < 0)
        return -1;
    if (Py_TYPE(v) == (PyTypeObject *)e->types.ordered) {
        /* An OrderedDict's order is its own (move_to_end), not its dict's. */
        PyObject *it = PyObject_GetIter(v), *key;
        int rc = it ? 0 : -1;
        while (rc == 0 && it && (key = PyIter_Next(it))) {
            PyObject *value = PyDict_GetItemWithError(v, key); /* data keys: C compares */
            rc = value ? encode_value(e, key) : -1;
            if (rc == 0)
                rc = encode_value(e, value);
            Py_DECREF(key);
        }
        Py_XDECREF(it);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            e->nomem = 1;
            return -1;
        }
        return rc;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(v, &pos, &key, &value))
        if (encode_value(e, key) < 0 || encode_value(e, value) < 0)
            return -1;
    return 0;
}

/* Writes a container: numbered before its items (list, dict, set: a cycle
 * comes back as a reference) or after them (the others), and on the path
 * while its items are written (a cycle through one numbered after is
 * refused). */
static int encode_container(encoder *e, PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    int early = t == &PyList_Type || t == &PyDict_Type || t == &PySet_Type;
    for (int i = 0; i < e->depth; i++)
        if (e->path[i] == v)
            return fail(e, REPL_SNAPSHOT_CYCLE);
    if (e->depth >= e->max_depth)
        return fail(e, REPL_SNAPSHOT_TOO_DEEP);
    if (early && memo_add(&e->memo, v) < 0) {
        e->nomem = 1;
        return -1;
    }
    e->path[e->depth++] = v;
    int rc;
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        rc = encode_count(e, t == &PyList_Type ? TAG_LIST : TAG_TUPLE, (size_t)n);
        for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
            /* A list is only read: no model code runs, so it cannot shrink. */
            rc = encode_value(e, PySequence_Fast_GET_ITEM(v, i));
        }
    } else if (t == &PyDict_Type) {
        rc = encode_pairs(e, TAG_DICT, v);
    } else if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        rc = encode_items(e, t == &PySet_Type ? TAG_SET : TAG_FROZENSET, v,
                          (size_t)PySet_GET_SIZE(v));
    } else if ((PyObject *)t == e->types.counter || (PyObject *)t == e->types.ordered) {
        rc = encode_pairs(e, (PyObject *)t == e->types.counter ? TAG_COUNTER : TAG_ORDERED, v);
    } else if ((PyObject *)t == e->types.defaultdict) {
        PyObject *factory = PyObject_GetAttrString(v, "default_factory");
        rc = -1;
        if (!factory) {
            PyErr_Clear();
            e->nomem = 1;
        } else if (factory != Py_None && !find_name(e, factory)) {
            rc = fail(e, REPL_SNAPSHOT_NOT_DATA);
        } else if (put_u8(&e->w, TAG_DEFAULTDICT) < 0) {
            rc = fail(e, REPL_SNAPSHOT_TOO_LARGE);
        } else if (encode_value(e, factory) == 0) {
            rc = encode_pairs(e, -1, v);
        }
        Py_XDECREF(factory);
    } else { /* deque */
        PyObject *maxlen = PyObject_GetAttrString(v, "maxlen");
        Py_ssize_t n = PyObject_Length(v); /* deque's own length: C */
        long long m = maxlen && maxlen != Py_None ? PyLong_AsLongLong(maxlen) : -1;
        Py_XDECREF(maxlen);
        rc = -1;
        if (!maxlen || n < 0 || PyErr_Occurred()) {
            PyErr_Clear();
            e->nomem = 1;
        } else if (put_u8(&e->w, TAG_DEQUE) < 0 || put_u64(&e->w, (uint64_t)m) < 0) {
            rc = fail(e, REPL_SNAPSHOT_TOO_LARGE);
        } else {
            rc = encode_items(e, -1, v, (size_t)n);
        }
    }
    e->depth--;
    if (rc == 0 && !early && memo_add(&e->memo, v) < 0) {
        e->nomem = 1;
        return -1;
    }
    return rc;
}

static int is_container(const encoder *e, PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    PyObject *o = (PyObject *)t;
    return t == &PyList_Type || t == &PyTuple_Type || t == &PyDict_Type || t == &PySet_Type ||
           t == &PyFrozenSet_Type ||
           (o && (o == e->types.counter || o == e->types.ordered ||
                  o == e->types.defaultdict || o == e->types.deque));
}

static int encode_value(encoder *e, PyObject *v)
{
    if (e->nomem)
        return -1;
    memo_slot *known = memo_find(&e->memo, v);
    if (known) {
        if (put_u8(&e->w, TAG_REF) < 0 || put_u64(&e->w, known->number) < 0)
            return fail(e, REPL_SNAPSHOT_TOO_LARGE);
        return 0;
    }
    PyTypeObject *t = Py_TYPE(v);
    if (v == Py_None)
        return put_u8(&e->w, TAG_NONE) < 0 ? fail(e, REPL_SNAPSHOT_TOO_LARGE) : 0;
    if (t == &PyBool_Type)
        return put_u8(&e->w, v == Py_True ? TAG_TRUE : TAG_FALSE) < 0
                   ? fail(e, REPL_SNAPSHOT_TOO_LARGE)
                   : 0;
    if (t == &PyLong_Type)
        return encode_int(e, v);
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_u8(&e->w, TAG_FLOAT) < 0 || put_u64(&e->w, bits) < 0
                   ? fail(e, REPL_SNAPSHOT_TOO_LARGE)
                   : 0;
    }
    if (t == &PyComplex_Type) {
        Py_complex c = PyComplex_AsCComplex(v);
        uint64_t re, im;
        memcpy(&re, &c.real, 8);
        memcpy(&im, &c.imag, 8);
        return put_u8(&e->w, TAG_COMPLEX) < 0 || put_u64(&e->w, re) < 0 || put_u64(&e->w, im) < 0
                   ? fail(e, REPL_SNAPSHOT_TOO_LARGE)
                   : 0;
    }
    if (t == &PyUnicode_Type || t == &PyBytes_Type) {
        size_t n = 0;
        int rc = t == &PyUnicode_Type
                     ? encode_str(e, v, &n)
                     : put_sized(e, TAG_BYTES, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
        if (t == &PyBytes_Type)
            n = (size_t)PyBytes_GET_SIZE(v);
        if (rc == 0 && n >= SHARE_MIN && memo_add(&e->memo, v) < 0) {
            e->nomem = 1;
            return -1;
        }
        return rc;
    }
    if (is_container(e, v))
        return encode_container(e, v);
    const named *name = find_name(e, v);
    if (!name)
        return e->nomem ? -1 : fail(e, REPL_SNAPSHOT_NOT_DATA);
    Py_ssize_t mlen, alen = 0;
    const char *mod = PyUnicode_AsUTF8AndSize(name->module, &mlen);
    const char *attr = name->attr ? PyUnicode_AsUTF8AndSize(name->attr, &alen) : NULL;
    if (!mod || (name->attr && !attr) || mlen > REPL_SNAPSHOT_NAME_MAX ||
        alen > REPL_SNAPSHOT_NAME_MAX) {
        PyErr_Clear();
        return fail(e, REPL_SNAPSHOT_NOT_DATA);
    }
    if (put_u8(&e->w, attr ? TAG_ATTR : TAG_MODULE) < 0 || put_u16(&e->w, (size_t)mlen) < 0 ||
        put(&e->w, mod, (size_t)mlen) < 0 ||
        (attr && (put_u16(&e->w, (size_t)alen) < 0 || put(&e->w, attr, (size_t)alen) < 0)))
        return fail(e, REPL_SNAPSHOT_TOO_LARGE);
    return 0;
}

/* 1 for a variable the snapshot looks at: an identifier that is neither a
 * dunder nor a name the host binds, and not a helper still bound to the
 * REPL's own (C) function. */
static int candidate(PyObject *key, PyObject *value, const char **utf8, Py_ssize_t *len)
{
    if (!PyUnicode_CheckExact(key) || PyUnicode_IsIdentifier(key) != 1)
        return 0;
    *utf8 = PyUnicode_AsUTF8AndSize(key, len);
    if (!*utf8) {
        PyErr_Clear();
        return 0;
    }
    if (*len > REPL_SNAPSHOT_NAME_MAX || (*len >= 2 && (*utf8)[0] == '_' && (*utf8)[1] == '_') ||
        host_name(*utf8))
        return 0;
    const sandbox_repl_name *entry = sandbox_policy_find(*utf8);
    return !(entry && entry->kind == SANDBOX_NAME_HELPER && PyCFunction_Check(value));
}

static void note(repl_snapshot_stats *stats, repl_snapshot_reason why, PyObject *name)
{
    stats->not_carried[why]++;
    if (!stats->names[why])
        stats->names[why] = PyList_New(0);
    if (stats->names[why] && PyList_GET_SIZE(stats->names[why]) < REPL_SNAPSHOT_LISTED &&
        PyList_Append(stats->names[why], name) < 0)
        PyErr_Clear();
}

int repl_snapshot_encode(PyObject *ns, unsigned char *out, size_t cap, int max_depth,
                         repl_snapshot_stats *stats, char *err, size_t errlen)
{
    memset(stats, 0, sizeof *stats);
    encoder e = {.w = {out, cap, 0},
                 .max_depth = max_depth > 0 && max_depth <= REPL_SNAPSHOT_DEPTH
                                  ? max_depth
                                  : REPL_SNAPSHOT_DEPTH};
    known_types_find(&e.types);
    PyObject *items = PyDict_Items(ns);
    int rc = -1;
    if (!items) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (put(&e.w, MAGIC, MAGIC_LEN) < 0 || put_u64(&e.w, 0) < 0) {
        snprintf(err, errlen, "no room for a snapshot (%zu bytes)", cap);
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
        PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        const char *name;
        Py_ssize_t len;
        if (!candidate(key, value, &name, &len))
            continue;
        size_t start = e.w.len, mark = e.memo.n;
        e.depth = 0;
        int ok = put_u16(&e.w, (size_t)len) == 0 && put(&e.w, name, (size_t)len) == 0
                     ? encode_value(&e, value) == 0
                     : (fail(&e, REPL_SNAPSHOT_TOO_LARGE), 0);
        if (e.nomem) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        if (ok) {
            stats->carried++;
            continue;
        }
        e.w.len = start;
        memo_rollback(&e.memo, mark);
        note(stats, e.why, key);
    }
    uint64_t count = htole64((uint64_t)stats->carried);
    memcpy(out + MAGIC_LEN, &count, 8);
    stats->bytes = e.w.len;
    rc = 0;
done:
    Py_XDECREF(items);
    memo_free(&e.memo);
    for (size_t i = 0; i < e.n_named; i++) {
        Py_XDECREF(e.named[i].module);
        Py_XDECREF(e.named[i].attr);
    }
    PyMem_RawFree(e.named);
    Py_XDECREF(e.names);
    PyErr_Clear();
    if (rc != 0)
        repl_snapshot_stats_clear(stats);
    return rc;
}

/* ---- decoding ---- */

typedef struct reader {
    const unsigned char *data;
    size_t len, pos;
} reader;

typedef struct decoder {
    reader r;
    int max_depth;
    known_types types;
    PyObject *modules;    /* dict: name -> module, the allowed ones whose dicts have
                             exact-str keys only (found once, not per tag) */
    PyObject *numbered;   /* list: the objects a reference can name, in order */
    char *err;
    size_t errlen;
} decoder;

static int bad(decoder *d, const char *what)
{
    if (!d->err[0])
        snprintf(d->err, d->errlen, "invalid snapshot at byte %zu: %s", d->r.pos, what);
    return -1;
}

static PyObject *bad_obj(decoder *d, const char *what)
{
    bad(d, what);
    return NULL;
}

static size_t left(const decoder *d)
{
    return d->r.len - d->r.pos;
}

static int get(decoder *d, void *out, size_t n)
{
    if (n > left(d))
        return bad(d, "it ends early");
    memcpy(out, d->r.data + d->r.pos, n);
    d->r.pos += n;
    return 0;
}

static int get_u16(decoder *d, size_t *v)
{
    uint16_t le;
    if (get(d, &le, 2) < 0)
        return -1;
    *v = le16toh(le);
    return 0;
}

static int get_u64(decoder *d, uint64_t *v)
{
    uint64_t le;
    if (get(d, &le, 8) < 0)
        return -1;
    *v = le64toh(le);
    return 0;
}

/* A length or count: at most what is left (each unit takes a byte at
 * least), times `unit`. */
static int get_size(decoder *d, size_t unit, size_t *n)
{
    uint64_t v;
    if (get_u64(d, &v) < 0)
        return -1;
    if (v > left(d) / unit)
        return bad(d, "a length goes past the end");
    *n = (size_t)v;
    return 0;
}

static int number(decoder *d, PyObject *obj)
{
    if (PyList_Append(d->numbered, obj) < 0) {
        PyErr_Clear();
        return bad(d, "out of memory");
    }
    return 0;
}

/* A module name (u16 n, bytes) naming an allowed, loaded module. Borrowed. */
static PyObject *get_module(decoder *d, char *name, size_t size)
{
    size_t n;
    if (get_u16(d, &n) < 0 || n == 0 || n >= size || get(d, name, n) < 0)
        return bad_obj(d, "a bad module name");
    name[n] = '\0';
    if (memchr(name, '\0', n))
        return bad_obj(d, "a bad module name");
    PyObject *module = PyDict_GetItemString(d->modules, name);
    PyErr_Clear();
    return module ? module : bad_obj(d, "a module that is not allowed");
}

/* The allowed modules, loaded and with clean dicts, by name. */
static PyObject *usable_modules(void)
{
    PyObject *modules = PyDict_New();
    for (size_t i = 0; modules && i < sandbox_allowed_modules_count; i++) {
        PyObject *module = allowed_module(sandbox_allowed_modules[i]);
        if (module && clean_get(PyModule_GetDict(module), "__name__") &&
            PyDict_SetItemString(modules, sandbox_allowed_modules[i], module) < 0)
            Py_CLEAR(modules);
    }
    return modules;
}

static PyObject *decode_value(decoder *d, int depth);

/* n values into a new list (or the given one). */
static int decode_items(decoder *d, PyObject *list, size_t n, int depth)
{
    for (size_t i = 0; i < n; i++) {
        PyObject *item = decode_value(d, depth + 1);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            PyErr_Clear();
            return bad(d, "a bad item");
        }
        Py_DECREF(item);
    }
    return 0;
}

/* n key/value pairs into dict; a duplicate key or an unhashable one is a
 * flaw (keys are exact data types: hashing them runs C only). */
static int decode_pairs(decoder *d, PyObject *dict, size_t n, int depth)
{
    for (size_t i = 0; i < n; i++) {
        PyObject *key = decode_value(d, depth + 1);
        PyObject *value = key ? decode_value(d, depth + 1) : NULL;
        int rc = value ? PyDict_SetItem(dict, key, value) : -1;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (rc < 0) {
            PyErr_Clear();
            return bad(d, "a bad or unhashable key");
        }
    }
    if ((size_t)PyDict_GET_SIZE(dict) != n)
        return bad(d, "a duplicate key");
    return 0;
}

/* Calls a collections type with args (a tuple): the library's own code,
 * on data of exact types. */
static PyObject *make(decoder *d, PyObject *type, PyObject *args)
{
    PyObject *obj = type && args ? PyObject_CallObject(type, args) : NULL;
    Py_XDECREF(args);
    if (!obj) {
        PyErr_Clear();
        return bad_obj(d, "a collections object could not be rebuilt");
    }
    return obj;
}

static PyObject *decode_container(decoder *d, int tag, int depth)
{
    size_t n;
    PyObject *obj = NULL, *tmp = NULL, *factory = NULL;
    long long maxlen = -1;
    if (tag == TAG_DEFAULTDICT) {
        factory = decode_value(d, depth + 1);
        if (!factory)
            return NULL;
        if (factory != Py_None && !PyCallable_Check(factory)) {
            Py_DECREF(factory);
            return bad_obj(d, "a defaultdict factory that cannot be called");
        }
    }
    if (tag == TAG_DEQUE) {
        uint64_t m;
        if (get_u64(d, &m) < 0)
            return NULL;
        maxlen = (long long)m;
        if (maxlen < -1)
            return bad_obj(d, "a bad deque length");
    }
    int pairs = tag == TAG_DICT || tag == TAG_COUNTER || tag == TAG_ORDERED ||
                tag == TAG_DEFAULTDICT;
    if (get_size(d, pairs ? 2 : 1, &n) < 0)
        goto fail;
    switch (tag) {
    case TAG_LIST:
        if (!(obj = PyList_New(0)) || number(d, obj) < 0 || decode_items(d, obj, n, depth) < 0)
            goto fail;
        return obj;
    case TAG_DICT:
        if (!(obj = PyDict_New()) || number(d, obj) < 0 || decode_pairs(d, obj, n, depth) < 0)
            goto fail;
        return obj;
    case TAG_SET:
    case TAG_FROZENSET:
        /* A set is numbered before its items (as a list is), a frozenset
         * after them. */
        if (!(tmp = PyList_New(0)) ||
            (tag == TAG_SET && (!(obj = PySet_New(NULL)) || number(d, obj) < 0)))
            goto fail;
        if (decode_items(d, tmp, n, depth) < 0)
            goto fail;
        if (tag == TAG_SET) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tmp); i++)
                if (PySet_Add(obj, PyList_GET_ITEM(tmp, i)) < 0) {
                    PyErr_Clear();
                    bad(d, "an unhashable item in a set");
                    goto fail;
                }
        } else if (!(obj = PyFrozenSet_New(tmp))) {
            PyErr_Clear();
            bad(d, "an unhashable item in a frozenset");
            goto fail;
        }
        if ((size_t)PySet_GET_SIZE(obj) != n) {
            bad(d, "a duplicate item in a set");
            goto fail;
        }
        if (tag == TAG_SET) {
            Py_DECREF(tmp);
            return obj;
        }
        break;
    case TAG_TUPLE:
        if (!(tmp = PyList_New(0)) || decode_items(d, tmp, n, depth) < 0 ||
            !(obj = PyList_AsTuple(tmp)))
            goto fail;
        break;
    case TAG_DEQUE:
        if (!(tmp = PyList_New(0)) || decode_items(d, tmp, n, depth) < 0)
            goto fail;
        obj = maxlen >= 0 ? make(d, d->types.deque, Py_BuildValue("(OL)", tmp, maxlen))
                          : make(d, d->types.deque, Py_BuildValue("(O)", tmp));
        if (!obj)
            goto fail;
        break;
    default: /* Counter, OrderedDict, defaultdict: a dict, then the type */
        if (!(tmp = PyDict_New()) || decode_pairs(d, tmp, n, depth) < 0)
            goto fail;
        if (tag == TAG_DEFAULTDICT)
            obj = make(d, d->types.defaultdict, Py_BuildValue("(OO)", factory, tmp));
        else
            obj = make(d, tag == TAG_COUNTER ? d->types.counter : d->types.ordered,
                       Py_BuildValue("(O)", tmp));
        if (!obj)
            goto fail;
        if ((size_t)PyDict_GET_SIZE(obj) != n) {
            bad(d, "a collections object lost keys");
            goto fail;
        }
        break;
    }
    Py_XDECREF(tmp);
    Py_XDECREF(factory);
    if (number(d, obj) < 0) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
fail:
    if (PyErr_Occurred()) {
        PyErr_Clear();
        bad(d, "out of memory");
    }
    Py_XDECREF(tmp);
    Py_XDECREF(factory);
    Py_XDECREF(obj);
    return NULL;
}

static PyObject *decode_value(decoder *d, int depth)
{
    if (depth > d->max_depth)
        return bad_obj(d, "nested too deeply");
    unsigned char tag;
    if (get(d, &tag, 1) < 0)
        return NULL;
    uint64_t u, v;
    size_t n;
    PyObject *obj;
    switch (tag) {
    case TAG_NONE:
        return Py_NewRef(Py_None);
    case TAG_FALSE:
        return Py_NewRef(Py_False);
    case TAG_TRUE:
        return Py_NewRef(Py_True);
    case TAG_INT:
        return get_u64(d, &u) < 0 ? NULL : PyLong_FromLongLong((long long)u);
    case TAG_BIGINT: {
        if (get_size(d, 1, &n) < 0 || n == 0)
            return bad_obj(d, "a bad integer");
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)d->r.data + d->r.pos,
                                                    (Py_ssize_t)n);
        PyObject *args = bytes ? Py_BuildValue("(Os)", bytes, "little") : NULL;
        PyObject *kwargs = args ? Py_BuildValue("{s:O}", "signed", Py_True) : NULL;
        PyObject *from = kwargs ? PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes")
                                : NULL;
        obj = from ? PyObject_Call(from, args, kwargs) : NULL;
        Py_XDECREF(bytes);
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
        Py_XDECREF(from);
        d->r.pos += n;
        if (!obj) {
            PyErr_Clear();
            return bad_obj(d, "out of memory");
        }
        return obj;
    }
    case TAG_FLOAT: {
        double x;
        if (get_u64(d, &u) < 0)
            return NULL;
        memcpy(&x, &u, 8);
        return PyFloat_FromDouble(x);
    }
    case TAG_COMPLEX: {
        double re, im;
        if (get_u64(d, &u) < 0 || get_u64(d, &v) < 0)
            return NULL;
        memcpy(&re, &u, 8);
        memcpy(&im, &v, 8);
        return PyComplex_FromDoubles(re, im);
    }
    case TAG_STR:
    case TAG_BYTES: {
        if (get_size(d, 1, &n) < 0)
            return NULL;
        const char *p = (const char *)d->r.data + d->r.pos;
        obj = tag == TAG_STR ? PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogatepass")
                             : PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
        if (!obj) {
            PyErr_Clear();
            return bad_obj(d, tag == TAG_STR ? "a str that is not UTF-8" : "out of memory");
        }
        d->r.pos += n;
        if (n >= SHARE_MIN && number(d, obj) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
        return obj;
    }
    case TAG_REF:
        if (get_u64(d, &u) < 0)
            return NULL;
        if (u >= (uint64_t)PyList_GET_SIZE(d->numbered))
            return bad_obj(d, "a reference to nothing before it");
        return Py_NewRef(PyList_GET_ITEM(d->numbered, (Py_ssize_t)u));
    case TAG_MODULE:
    case TAG_ATTR: {
        char mname[REPL_SNAPSHOT_NAME_MAX + 1], aname[REPL_SNAPSHOT_NAME_MAX + 1];
        PyObject *module = get_module(d, mname, sizeof mname);
        if (!module)
            return NULL;
        if (tag == TAG_MODULE)
            return Py_NewRef(module);
        if (get_u16(d, &n) < 0 || n == 0 || n >= sizeof aname || get(d, aname, n) < 0)
            return bad_obj(d, "a bad attribute name");
        aname[n] = '\0';
        /* usable_modules checked the module's dict: a lookup runs C only. */
        PyObject *attr = memchr(aname, '\0', n)
                             ? NULL
                             : PyDict_GetItemString(PyModule_GetDict(module), aname);
        return attr ? Py_NewRef(attr) : bad_obj(d, "an attribute the module does not have");
    }
    case TAG_LIST:
    case TAG_TUPLE:
    case TAG_DICT:
    case TAG_SET:
    case TAG_FROZENSET:
    case TAG_DEQUE:
    case TAG_DEFAULTDICT:
        return decode_container(d, tag, depth);
    case TAG_COUNTER:
    case TAG_ORDERED:
        if (!(tag == TAG_COUNTER ? d->types.counter : d->types.ordered))
            return bad_obj(d, "collections is not loaded");
        return decode_container(d, tag, depth);
    default:
        return bad_obj(d, "an unknown tag");
    }
}

int repl_snapshot_decode(const unsigned char *data, size_t len, int max_depth,
                         repl_snapshot_bind_fn bind, void *userdata, size_t *bound, char *err,
                         size_t errlen)
{
    if (bound)
        *bound = 0;
    err[0] = '\0';
    decoder d = {.r = {data, len, 0},
                 .max_depth = max_depth > 0 && max_depth <= REPL_SNAPSHOT_DEPTH
                                  ? max_depth
                                  : REPL_SNAPSHOT_DEPTH,
                 .err = err,
                 .errlen = errlen};
    known_types_find(&d.types);
    PyObject *entries = PyList_New(0), *names = PySet_New(NULL);
    d.numbered = PyList_New(0);
    d.modules = usable_modules();
    int rc = -1;
    size_t count;
    char magic[MAGIC_LEN];
    if (!entries || !names || !d.numbered || !d.modules) {
        bad(&d, "out of memory");
        goto done;
    }
    if (len < MAGIC_LEN || get(&d, magic, MAGIC_LEN) < 0 || memcmp(magic, MAGIC, MAGIC_LEN) != 0) {
        bad(&d, "not a snapshot of this version");
        goto done;
    }
    if (get_size(&d, 2, &count) < 0)
        goto done;
    for (size_t i = 0; i < count; i++) {
        size_t n;
        char name[REPL_SNAPSHOT_NAME_MAX + 1];
        if (get_u16(&d, &n) < 0 || n == 0 || n > REPL_SNAPSHOT_NAME_MAX || get(&d, name, n) < 0) {
            bad(&d, "a bad variable name");
            goto done;
        }
        name[n] = '\0';
        PyObject *key = memchr(name, '\0', n) ? NULL
                                             : PyUnicode_DecodeUTF8(name, (Py_ssize_t)n, "strict");
        int known = key ? PySet_Contains(names, key) : -1;
        if (!key || PyUnicode_IsIdentifier(key) != 1 || known != 0 ||
            (n >= 2 && name[0] == '_' && name[1] == '_') || host_name(name)) {
            PyErr_Clear();
            Py_XDECREF(key);
            bad(&d, known > 0 ? "a variable named twice" : "a name the snapshot may not bind");
            goto done;
        }
        PyObject *value = decode_value(&d, 0);
        PyObject *pair = value ? PyTuple_Pack(2, key, value) : NULL;
        int ok = pair && PySet_Add(names, key) == 0 && PyList_Append(entries, pair) == 0;
        Py_DECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(pair);
        if (!ok) {
            PyErr_Clear();
            bad(&d, "out of memory");
            goto done;
        }
    }
    if (left(&d) != 0) {
        bad(&d, "bytes after the last variable");
        goto done;
    }
    /* All of it checked and built: only now is anything bound. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *pair = PyList_GET_ITEM(entries, i);
        if (bind(userdata, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) < 0) {
            PyErr_Clear();
            snprintf(err, errlen, "could not bind a variable of the snapshot");
            goto done;
        }
        if (bound)
            (*bound)++;
    }
    rc = 0;
done:
    Py_XDECREF(entries);
    Py_XDECREF(names);
    Py_XDECREF(d.numbered);
    Py_XDECREF(d.modules);
    PyErr_Clear();
    return rc;
}
