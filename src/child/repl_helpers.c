/* repl_helpers — grep, chunks, search and count_tokens for model code, in C
 * over the documents' bytes (the child's mapping of the input, or the ASCII
 * str itself), never over a second copy of the input.
 *
 * Design note. Offsets handed to model code are character offsets into the
 * document's str, so `context[off:]` (or `context[name][off:]`) works. For
 * ASCII documents they are byte offsets; for others grep counts characters
 * as it scans, and search counts them up to each hit. The search index is
 * built on the first search() and kept for the child's life. For the first
 * input it comes from the host over the cache socket (fd 6): the host builds
 * it from its own copy of the input (or finds it in its cache) and sends a
 * read-only descriptor, which is mapped and validated here like any
 * untrusted file. The child never sends the host an index. */
#include "repl_helpers.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunks.h"
#include "fdpass.h"
#include "grep.h"
#include "search.h"
#include "tokens.h"
#include "utf8.h"
#include "util.h"

/* Bytes of a hit's line kept when the line is longer (one-line JSON, logs). */
#define LINE_TEXT_MAX 1000
/* chunks() refuses to produce more pieces than this. */
#define CHUNKS_MAX ((size_t)10 * 1000 * 1000)
#define HITS_MAX 100000
/* How often a wait for the host's index looks for a signal (the timeout). */
#define CACHE_POLL_MS 50

typedef struct docs_state {
    ingest_kind kind;
    const ingest_doc *docs;
    size_t n;
    const unsigned char *ascii;
    search_index *index;
    int cache_fd;      /* socket to the host's search cache, or -1 */
    int cache_pending; /* a request was sent and its reply not read yet */
    const ingest_doc *configured;   /* the documents of repl_helpers_configure */
} docs_state;

static struct PyModuleDef docs_moduledef;

static docs_state *docs_get(void)
{
    PyObject *module = PyState_FindModule(&docs_moduledef);
    return module ? (docs_state *)PyModule_GetState(module) : NULL;
}

/* The document's key for model code: its name in a dict, its index in a
 * list, None for a single str. */
static PyObject *doc_key(const docs_state *st, size_t i)
{
    if (st->kind == INGEST_DICT)
        return PyUnicode_DecodeUTF8(st->docs[i].name, (Py_ssize_t)strlen(st->docs[i].name),
                                    "replace");
    if (st->kind == INGEST_LIST)
        return PyLong_FromSize_t(i);
    Py_RETURN_NONE;
}

/* doc=None → SIZE_MAX (all); a name (dict) or an index (list, str) → its
 * index. -1 with a Python error for anything else. */
static int doc_index(const docs_state *st, PyObject *doc, size_t *out)
{
    *out = SIZE_MAX;
    if (!doc || doc == Py_None)
        return 0;
    if (PyUnicode_Check(doc)) {
        Py_ssize_t len;
        const char *name = PyUnicode_AsUTF8AndSize(doc, &len);
        if (!name)
            return -1;
        for (size_t i = 0; st->kind == INGEST_DICT && i < st->n; i++)
            if (strcmp(st->docs[i].name, name) == 0) {
                *out = i;
                return 0;
            }
        PyErr_Format(PyExc_KeyError, "no document named %R", doc);
        return -1;
    }
    if (PyLong_Check(doc)) {
        Py_ssize_t i = PyLong_AsSsize_t(doc);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0)
            i += (Py_ssize_t)st->n;
        if (i < 0 || (size_t)i >= st->n) {
            PyErr_SetString(PyExc_IndexError, "document index out of range");
            return -1;
        }
        *out = (size_t)i;
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "doc must be None, a document name (str) or an index (int)");
    return -1;
}

static PyObject *decode(const char *data, size_t len)
{
    return PyUnicode_DecodeUTF8(data ? data : "", (Py_ssize_t)len, "replace");
}

/* Character offset of byte `off` in document i. */
static size_t char_offset(const docs_state *st, size_t i, size_t off)
{
    if (st->ascii && st->ascii[i])
        return off;
    size_t chars, invalid;
    utf8_count(st->docs[i].data, off, &chars, &invalid);
    return chars;
}

static int dict_set(PyObject *d, const char *key, PyObject *value)
{
    if (!value)
        return -1;
    int rc = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return rc;
}

/* An ASCII str of data[0..len), copied without decoding. */
static PyObject *ascii_str(const char *data, size_t len)
{
    PyObject *s = PyUnicode_New((Py_ssize_t)len, 127);
    if (s)
        memcpy(PyUnicode_DATA(s), data, len);
    return s;
}

/* The line of a hit as str; a line longer than LINE_TEXT_MAX bytes (one-line
 * JSON, minified code) is cut to a window that starts a little before the match. */
static PyObject *hit_line(const docs_state *st, const grep_hit *h)
{
    const char *line = h->line;
    size_t len = h->line_len;
    if (len > LINE_TEXT_MAX) {
        size_t into = (size_t)(st->docs[h->doc].data + h->offset - line);
        size_t from = into > LINE_TEXT_MAX / 4 ? into - LINE_TEXT_MAX / 4 : 0;
        if (from > len - LINE_TEXT_MAX)
            from = len - LINE_TEXT_MAX;
        line += from;
        len = LINE_TEXT_MAX;
    }
    if (st->ascii && st->ascii[h->doc])
        return ascii_str(line, len);
    return decode(line, len);
}

/* Building the hits is half of grep() or more: 100,000 hits over 400 MB
 * took ~25 ms in grep_scan and ~20 ms more as dicts in reused memory, ~50 ms
 * more again in fresh memory (bench/helpers_bench.py --sandbox). So the
 * four keys are interned once per call, the document's key is made once
 * per document, ASCII lines are copied straight into a new str, and hits
 * on the same line share its number and (unless the line is cut) its text.
 * Each hit becomes its dict as grep_scan finds it: no array of C hits in
 * between, whose 6 MB of fresh 4 KiB pages cost ~15 ms on our VM. That
 * holds the GIL through the scan; the sandbox runs no other Python thread,
 * so nothing waits on it. */
typedef struct hit_builder {
    const docs_state *st;
    PyObject *list;
    PyObject *k_doc, *k_line, *k_offset, *k_text;
    size_t doc;             /* the document of the fields below, or SIZE_MAX */
    PyObject *doc_obj;      /* its key */
    size_t line_no;         /* the previous hit's line, */
    PyObject *line_no_obj;  /* its number */
    PyObject *text;         /* and its text, when not cut (else NULL) */
} hit_builder;

static void hit_builder_clear(hit_builder *b)
{
    Py_CLEAR(b->list);
    Py_CLEAR(b->k_doc);
    Py_CLEAR(b->k_line);
    Py_CLEAR(b->k_offset);
    Py_CLEAR(b->k_text);
    Py_CLEAR(b->doc_obj);
    Py_CLEAR(b->line_no_obj);
    Py_CLEAR(b->text);
}

static int hit_builder_init(hit_builder *b, const docs_state *st)
{
    *b = (hit_builder){.st = st, .doc = SIZE_MAX};
    b->list = PyList_New(0);
    b->k_doc = PyUnicode_InternFromString("doc");
    b->k_line = PyUnicode_InternFromString("line");
    b->k_offset = PyUnicode_InternFromString("offset");
    b->k_text = PyUnicode_InternFromString("text");
    if (!b->list || !b->k_doc || !b->k_line || !b->k_offset || !b->k_text) {
        hit_builder_clear(b);
        return -1;
    }
    return 0;
}

/* Stores value (a new reference, NULL on error) under key; consumes value. */
static int dict_put(PyObject *d, PyObject *key, PyObject *value)
{
    if (!value)
        return -1;
    int rc = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return rc;
}

/* Points the builder at h's document and line, making their objects when
 * they differ from the previous hit's. -1 with a Python error set. */
static int hit_builder_move(hit_builder *b, const grep_hit *h)
{
    if (b->doc != h->doc) {
        Py_CLEAR(b->doc_obj);
        Py_CLEAR(b->line_no_obj);
        b->doc_obj = doc_key(b->st, h->doc);
        if (!b->doc_obj)
            return -1;
        b->doc = h->doc;
    }
    if (!b->line_no_obj || b->line_no != h->line_no) {
        Py_CLEAR(b->line_no_obj);
        Py_CLEAR(b->text);
        b->line_no_obj = PyLong_FromSize_t(h->line_no);
        if (!b->line_no_obj)
            return -1;
        b->line_no = h->line_no;
    }
    return 0;
}

/* The hit's line as str: the previous hit's when on the same line and not
 * cut. New reference, NULL with a Python error set. */
static PyObject *hit_text(hit_builder *b, const grep_hit *h)
{
    if (b->text)
        return Py_NewRef(b->text);
    PyObject *text = hit_line(b->st, h);
    if (text && h->line_len <= LINE_TEXT_MAX)
        b->text = Py_NewRef(text);
    return text;
}

/* grep_scan's callback: the hit as {doc, line, offset, text}, appended to
 * the list. Nonzero (a Python error set) stops the scan. */
static int hit_append(void *ctx, const grep_hit *h)
{
    hit_builder *b = ctx;
    if (hit_builder_move(b, h) != 0)
        return -1;
    PyObject *d = PyDict_New();
    if (!d || dict_put(d, b->k_doc, Py_NewRef(b->doc_obj)) < 0 ||
        dict_put(d, b->k_line, Py_NewRef(b->line_no_obj)) < 0 ||
        dict_put(d, b->k_offset, PyLong_FromSize_t(h->char_offset)) < 0 ||
        dict_put(d, b->k_text, hit_text(b, h)) < 0 || PyList_Append(b->list, d) < 0) {
        Py_XDECREF(d);
        return -1;
    }
    Py_DECREF(d);
    return 0;
}

static PyObject *api_grep(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pattern", "flags", "max_hits", "doc", NULL};
    const char *pattern, *flags = "";
    Py_ssize_t pattern_len, max_hits = 1000;
    PyObject *doc = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s#|snO:grep", kwlist, &pattern, &pattern_len,
                                     &flags, &max_hits, &doc))
        return NULL;
    docs_state *st = docs_get();
    size_t only;
    if (!st || doc_index(st, doc, &only) != 0)
        return NULL;
    if (max_hits < 1 || max_hits > HITS_MAX) {
        PyErr_Format(PyExc_ValueError, "max_hits must be 1 to %d", HITS_MAX);
        return NULL;
    }
    char err[512];
    grep *g;
    if (grep_compile(pattern, (size_t)pattern_len, flags, NULL, &g, err, sizeof err) != 0) {
        PyErr_Format(PyExc_ValueError, "grep: %s", err);
        return NULL;
    }
    hit_builder b;
    PyObject *list = NULL;
    if (hit_builder_init(&b, st) != 0)
        goto done;
    int rc = grep_scan(g, st->docs, st->n, only, (size_t)max_hits, hit_append, &b, NULL, err,
                       sizeof err);
    if (rc < 0)
        PyErr_Format(PyExc_RuntimeError, "grep: %s (simplify the pattern, or narrow it with doc=)",
                     err);
    if (rc == 0) {
        list = b.list;
        b.list = NULL;
    }
    hit_builder_clear(&b);
done:
    grep_free(g);
    return list;
}

static PyObject *api_chunks(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_chars", "overlap", "by", NULL};
    Py_ssize_t max_chars = 100000, overlap = 0;
    const char *by_name = "lines";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nns:chunks", kwlist, &max_chars, &overlap,
                                     &by_name))
        return NULL;
    docs_state *st = docs_get();
    chunks_by by;
    if (!st)
        return NULL;
    if (chunks_parse_by(by_name, &by) != 0) {
        PyErr_SetString(PyExc_ValueError, "by must be \"lines\", \"chars\" or \"docs\"");
        return NULL;
    }
    if (max_chars < 1 || overlap < 0 || overlap >= max_chars) {
        PyErr_SetString(PyExc_ValueError, "need max_chars >= 1 and 0 <= overlap < max_chars");
        return NULL;
    }
    chunk_list cl = {0};
    char err[512];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = chunks_split(st->docs, st->n, (size_t)max_chars, (size_t)overlap, by, CHUNKS_MAX, &cl,
                      err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        chunk_list_free(&cl);
        PyErr_Format(PyExc_ValueError, "chunks: %s", err);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)cl.n);
    for (size_t i = 0; list && i < cl.n; i++) {
        const chunk *c = &cl.items[i];
        PyObject *s = decode(st->docs[c->doc].data ? st->docs[c->doc].data + c->off : NULL, c->len);
        if (!s) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    chunk_list_free(&cl);
    return list;
}

/* ---- the search cache, through the host ---- */

/* Closes the cache socket for good: the host's replies are no longer read. */
static void cache_close(docs_state *st)
{
    if (st->cache_fd >= 0)
        close(st->cache_fd);
    st->cache_fd = -1;
    st->cache_pending = 0;
}

/* Asks the host for the index of the first input under key: 'L' + key,
 * answered by one byte (1: here it is) with a read-only descriptor
 * attached. The host may build the index first, which takes as long as
 * building it here; a signal (the cell timeout, a cancel) ends the wait
 * within CACHE_POLL_MS with the Python exception pending, and the reply is then read by
 * the next search(), so the host's work is not lost. Returns the fd, -1
 * (no index from the host: build it here) or -2 (interrupted). */
static int cache_lookup(docs_state *st, const char key[33])
{
    if (!st->cache_pending) {
        char req[33] = {'L'};
        memcpy(req + 1, key, 32);
        if (write_full(st->cache_fd, req, sizeof req) != 0) {
            cache_close(st);
            return -1;
        }
        st->cache_pending = 1;
    }
    /* A signal that lands just before a blocking read would not interrupt
     * it: wait in slices and look at Python's signal flags between them. */
    struct pollfd pfd = {.fd = st->cache_fd, .events = POLLIN};
    while (poll(&pfd, 1, CACHE_POLL_MS) <= 0)
        if (PyErr_CheckSignals() != 0)
            return -2;
    char status = 0;
    int fd = -1;
    int n = fd_recv(st->cache_fd, &status, &fd, 1);
    st->cache_pending = 0;
    if (status != 1 && fd >= 0) {
        close(fd);
        fd = -1;
    }
    if (n < 0)
        cache_close(st);
    return fd;
}

/* Loads the index from a host-provided fd; 0 on success. */
static int cache_load(docs_state *st, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return -1;
    char err[256];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = search_load(map, len, st->docs, st->n, &st->index, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        munmap(map, len);
        return -1;
    }
    return 0; /* the mapping lives as long as the index: the child's life */
}

static int ensure_index(docs_state *st)
{
    if (st->index)
        return 0;
    /* the host serves the configured documents' index only */
    if (st->cache_fd >= 0 && st->docs == st->configured) {
        char key[33];
        search_content_key(st->docs, st->n, SEARCH_CHUNK_CHARS, key);
        int fd = cache_lookup(st, key);
        if (fd == -2)
            return -1;
        if (fd >= 0 && cache_load(st, fd) == 0)
            return 0;
    }
    char err[512];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = search_build(st->docs, st->n, SEARCH_CHUNK_CHARS, 0, NULL, &st->index, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "search: %s", err);
        return -1;
    }
    return 0;
}

static PyObject *api_search(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"query", "k", NULL};
    const char *query;
    Py_ssize_t query_len, k = 10;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s#|n:search", kwlist, &query, &query_len, &k))
        return NULL;
    docs_state *st = docs_get();
    if (!st)
        return NULL;
    if (k < 1 || k > 10000) {
        PyErr_SetString(PyExc_ValueError, "k must be 1 to 10000");
        return NULL;
    }
    if (ensure_index(st) != 0)
        return NULL;
    search_hit *hits = PyMem_Malloc((size_t)k * sizeof *hits);
    size_t n = 0;
    if (!hits)
        return PyErr_NoMemory();
    if (search_query(st->index, query, (size_t)query_len, (size_t)k, hits, &n) != 0) {
        PyMem_Free(hits);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        const search_hit *h = &hits[i];
        const ingest_doc *d = &st->docs[h->doc];
        PyObject *item = PyDict_New();
        if (!item || dict_set(item, "doc", doc_key(st, h->doc)) < 0 ||
            dict_set(item, "score", PyFloat_FromDouble(h->score)) < 0 ||
            dict_set(item, "offset", PyLong_FromSize_t(char_offset(st, h->doc, h->off))) < 0 ||
            dict_set(item, "text", decode(d->data ? d->data + h->off : NULL, h->len)) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    PyMem_Free(hits);
    return list;
}

static PyObject *api_count_tokens(PyObject *module, PyObject *text)
{
    Py_ssize_t len;
    const char *s;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "count_tokens(text) takes a str");
        return NULL;
    }
    /* ASCII strs are their own UTF-8; others are measured without a copy. */
    if (PyUnicode_IS_ASCII(text)) {
        len = PyUnicode_GET_LENGTH(text);
    } else {
        s = PyUnicode_AsUTF8AndSize(text, &len);
        if (!s)
            return NULL;
    }
    return PyLong_FromSize_t(tokens_estimate((size_t)len, TOKENS_PROSE));
}

#define API_FN(fn) ((PyCFunction)(void (*)(void))(fn))

/* The docstrings are what help() shows model code: a helper the policy
 * table says takes context= is bound through repl_module.c's wrapper, which
 * takes this docstring, so it describes context= too. */
static PyMethodDef docs_methods[] = {
    {"grep", API_FN(api_grep), METH_VARARGS | METH_KEYWORDS,
     "grep(pattern, flags='', max_hits=1000, doc=None, context=None) -> list of {doc, line, "
     "offset, text}. context: the input to search (default: context), e.g. context_1, or one "
     "document of one."},
    {"chunks", API_FN(api_chunks), METH_VARARGS | METH_KEYWORDS,
     "chunks(max_chars=100000, overlap=0, by='lines'|'chars'|'docs', context=None) -> list of "
     "str. context: as for grep."},
    {"search", API_FN(api_search), METH_VARARGS | METH_KEYWORDS,
     "search(query, k=10, context=None) -> list of {doc, score, offset, text}, best first "
     "(BM25). context: as for grep."},
    {"count_tokens", api_count_tokens, METH_O, "count_tokens(text) -> estimated tokens."},
    {NULL, NULL, 0, NULL},
};

/* A static module definition, as CPython requires for a built-in module. */
static struct PyModuleDef docs_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rlm_docs",
    .m_doc = "Fast helpers over the rlm sandbox's input.",
    .m_size = sizeof(docs_state),
    .m_methods = docs_methods,
};

static PyObject *docs_module_init(void)
{
    PyObject *module = PyModule_Create(&docs_moduledef);
    if (module) {
        docs_state *st = PyModule_GetState(module);
        memset(st, 0, sizeof *st);
        st->cache_fd = -1;
    }
    return module;
}

int repl_helpers_register(void)
{
    return PyImport_AppendInittab("_rlm_docs", docs_module_init);
}

int repl_helpers_configure(ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                           const unsigned char *ascii, int cache_fd)
{
    PyObject *module = PyImport_ImportModule("_rlm_docs");
    if (!module)
        return -1;
    Py_DECREF(module); /* sys.modules keeps it */
    docs_state *st = docs_get();
    if (!st) {
        PyErr_SetString(PyExc_RuntimeError, "_rlm_docs has no state");
        return -1;
    }
    st->kind = kind;
    st->docs = docs;
    st->n = n_docs;
    st->ascii = ascii;
    st->cache_fd = cache_fd;
    st->configured = docs;
    return 0;
}

search_index *repl_helpers_switch(ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                                  const unsigned char *ascii, search_index *index)
{
    docs_state *st = docs_get();
    if (!st)
        return index;
    search_index *had = st->index;
    st->kind = kind;
    st->docs = docs;
    st->n = n_docs;
    st->ascii = ascii;
    st->index = index;
    return had;
}

const char *repl_helpers_doc(const char *name)
{
    for (const PyMethodDef *def = docs_methods; def->ml_name; def++)
        if (strcmp(def->ml_name, name) == 0)
            return def->ml_doc;
    return NULL;
}

PyObject *repl_helpers_function(const char *name)
{
    PyObject *module = PyState_FindModule(&docs_moduledef);
    if (!module || !PyObject_HasAttrString(module, name))
        return NULL;
    return PyObject_GetAttrString(module, name);
}
