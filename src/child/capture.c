/* capture — the bounded output of one REPL cell: a small Python type
 * installed as sys.stdout and sys.stderr that keeps the first and the last
 * characters of everything written and counts the rest (capture.h). */
#include "capture.h"

/* Output capture: the first head_cap and the last tail_cap characters of all
 * output of a cell, plus a count of everything. Memory is fixed at creation
 * (output_limit code points), whatever the cell prints. */
typedef struct capture_object {
    PyObject_HEAD
    Py_UCS4 *head;
    size_t head_cap, head_len;
    Py_UCS4 *tail; /* ring buffer */
    size_t tail_cap, tail_len, tail_pos;
    unsigned long long total;
} capture_object;

static void capture_dealloc(PyObject *self)
{
    capture_object *c = (capture_object *)self;
    PyTypeObject *type = Py_TYPE(self);
    PyMem_Free(c->head);
    PyMem_Free(c->tail);
    type->tp_free(self);
    Py_DECREF(type);
}

int capture_add(PyObject *capture, PyObject *str)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(str) < 0) /* every str is ready from 3.12 on */
        return -1;
#endif
    capture_object *c = (capture_object *)capture;
    Py_ssize_t n = PyUnicode_GET_LENGTH(str);
    int kind = PyUnicode_KIND(str);
    const void *data = PyUnicode_DATA(str);
    c->total += (unsigned long long)n;
    Py_ssize_t i = 0;
    while (c->head_len < c->head_cap && i < n)
        c->head[c->head_len++] = PyUnicode_READ(kind, data, i++);
    if (i >= n || c->tail_cap == 0)
        return 0;
    /* Only the last tail_cap characters of this write can survive. */
    if (n - i > (Py_ssize_t)c->tail_cap)
        i = n - (Py_ssize_t)c->tail_cap;
    for (; i < n; i++) {
        c->tail[c->tail_pos] = PyUnicode_READ(kind, data, i);
        c->tail_pos = (c->tail_pos + 1) % c->tail_cap;
        if (c->tail_len < c->tail_cap)
            c->tail_len++;
    }
    return 0;
}

static PyObject *capture_write_method(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg))
        return PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.100s",
                            Py_TYPE(arg)->tp_name);
    if (capture_add(self, arg) < 0)
        return NULL;
    return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(arg));
}

static PyObject *capture_none(PyObject *self, PyObject *unused)
{
    Py_RETURN_NONE;
}

static PyObject *capture_false(PyObject *self, PyObject *unused)
{
    Py_RETURN_FALSE;
}

static PyObject *capture_true(PyObject *self, PyObject *unused)
{
    Py_RETURN_TRUE;
}

static PyObject *capture_get_encoding(PyObject *self, void *unused)
{
    return PyUnicode_FromString("utf-8");
}

static PyObject *capture_get_errors(PyObject *self, void *unused)
{
    return PyUnicode_FromString("strict");
}

static PyObject *capture_get_closed(PyObject *self, void *unused)
{
    Py_RETURN_FALSE;
}

static PyMethodDef capture_methods[] = {
    {"write", capture_write_method, METH_O, "Append text to the cell's output."},
    {"flush", capture_none, METH_NOARGS, NULL},
    {"isatty", capture_false, METH_NOARGS, NULL},
    {"readable", capture_false, METH_NOARGS, NULL},
    {"seekable", capture_false, METH_NOARGS, NULL},
    {"writable", capture_true, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef capture_getset[] = {
    {"encoding", capture_get_encoding, NULL, NULL, NULL},
    {"errors", capture_get_errors, NULL, NULL, NULL},
    {"closed", capture_get_closed, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot capture_slots[] = {
    {Py_tp_dealloc, capture_dealloc},
    {Py_tp_methods, capture_methods},
    {Py_tp_getset, capture_getset},
    {Py_tp_doc, "Bounded output of one REPL cell."},
    {0, NULL},
};

static PyType_Spec capture_spec = {
    .name = "_rlm.Output",
    .basicsize = sizeof(capture_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = capture_slots,
};

PyObject *capture_new(size_t limit)
{
    PyObject *type = PyType_FromSpec(&capture_spec);
    if (!type)
        return NULL;
    capture_object *c = PyObject_New(capture_object, (PyTypeObject *)type);
    Py_DECREF(type); /* the instance holds its own reference to a heap type */
    if (!c)
        return NULL;
    if (limit < 2)
        limit = 2;
    c->head_cap = limit / 2;
    c->tail_cap = limit - c->head_cap;
    c->head_len = c->tail_len = c->tail_pos = 0;
    c->total = 0;
    c->head = PyMem_Calloc(c->head_cap, sizeof(Py_UCS4));
    c->tail = PyMem_Calloc(c->tail_cap, sizeof(Py_UCS4));
    if (!c->head || !c->tail) {
        Py_DECREF(c);
        PyErr_NoMemory();
        return NULL;
    }
    return (PyObject *)c;
}

void capture_clear(PyObject *capture)
{
    capture_object *c = (capture_object *)capture;
    c->head_len = c->tail_len = c->tail_pos = 0;
    c->total = 0;
}

PyObject *capture_text(PyObject *capture, unsigned long long *total)
{
    capture_object *c = (capture_object *)capture;
    *total = c->total;
    PyObject *head = NULL, *tail = NULL, *out = NULL;
    Py_UCS4 *ordered = NULL;
    head = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, c->head, (Py_ssize_t)c->head_len);
    if (!head)
        goto fail;
    if (c->tail_len == 0) {
        out = Py_NewRef(head);
        goto fail;
    }
    ordered = PyMem_Malloc(c->tail_len * sizeof(Py_UCS4));
    if (!ordered) {
        PyErr_NoMemory();
        goto fail;
    }
    /* Unroll the ring: oldest character first. */
    size_t start = c->tail_len < c->tail_cap ? 0 : c->tail_pos;
    for (size_t i = 0; i < c->tail_len; i++)
        ordered[i] = c->tail[(start + i) % c->tail_cap];
    tail = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, ordered, (Py_ssize_t)c->tail_len);
    if (!tail)
        goto fail;
    unsigned long long kept = (unsigned long long)(c->head_len + c->tail_len);
    if (c->total > kept)
        out = PyUnicode_FromFormat("%U\n... [%llu characters cut] ...\n%U", head,
                                   c->total - kept, tail);
    else
        out = PyUnicode_Concat(head, tail);
fail:
    PyMem_Free(ordered);
    Py_XDECREF(head);
    Py_XDECREF(tail);
    return out;
}
