/* repl_helpers — grep, chunks, search and count_tokens for model code, in C
 * over the documents' bytes (the child's mapping of the input, or the ASCII
 * str itself), never over a second copy of the input.
 *
 * Design note. Offsets handed to model code are character offsets into the
 * document's str, so `context[off:]` (or `context[name][off:]`) works. For
 * ASCII documents they are byte offsets; for others grep counts characters
 * as it scans, and search counts them up to each hit. The search index is
 * built on the first search() and kept for the child's life; it is also
 * looked up in and saved to the host's cache over the cache socket (fd 6):
 * the child cannot open or write files, the host does it for it. */
#include "repl_helpers.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunks.h"
#include "grep.h"
#include "search.h"
#include "util.h"

/* Bytes of a hit's line kept when the line is longer (one-line JSON, logs). */
#define LINE_TEXT_MAX 1000
/* chunks() refuses to produce more pieces than this. */
#define CHUNKS_MAX ((size_t)10 * 1000 * 1000)
/* Search chunks: characters each (documents that fit are one chunk). */
#define SEARCH_CHUNK_CHARS 2000
#define HITS_MAX 100000

typedef struct docs_state {
    ingest_kind kind;
    const ingest_doc *docs;
    size_t n;
    const unsigned char *ascii;
    search_index *index;
    int cache_fd;      /* socket to the host's search cache, or -1 */
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
    ingest_count_utf8(st->docs[i].data, off, &chars, &invalid);
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

/* What building one hit costs is most of grep() (100,000 hits of a 400 MB
 * scan take 30 ms in PCRE2 and far longer as Python objects), so the four
 * keys are interned once per call, the document's key is made once per
 * document, and ASCII lines are copied straight into a new str. */
typedef struct hit_builder {
    PyObject *k_doc, *k_line, *k_offset, *k_text;
    size_t doc;          /* the document `doc_obj` is the key of, or SIZE_MAX */
    PyObject *doc_obj;
} hit_builder;

static void hit_builder_clear(hit_builder *b)
{
    Py_CLEAR(b->k_doc);
    Py_CLEAR(b->k_line);
    Py_CLEAR(b->k_offset);
    Py_CLEAR(b->k_text);
    Py_CLEAR(b->doc_obj);
}

static int hit_builder_init(hit_builder *b)
{
    *b = (hit_builder){.doc = SIZE_MAX};
    b->k_doc = PyUnicode_InternFromString("doc");
    b->k_line = PyUnicode_InternFromString("line");
    b->k_offset = PyUnicode_InternFromString("offset");
    b->k_text = PyUnicode_InternFromString("text");
    if (!b->k_doc || !b->k_line || !b->k_offset || !b->k_text) {
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

static PyObject *hit_dict(const docs_state *st, hit_builder *b, const grep_hit *h)
{
    if (b->doc != h->doc) {
        Py_CLEAR(b->doc_obj);
        b->doc_obj = doc_key(st, h->doc);
        if (!b->doc_obj)
            return NULL;
        b->doc = h->doc;
    }
    PyObject *d = PyDict_New();
    Py_INCREF(b->doc_obj);
    if (!d || dict_put(d, b->k_doc, b->doc_obj) < 0 ||
        dict_put(d, b->k_line, PyLong_FromSize_t(h->line_no)) < 0 ||
        dict_put(d, b->k_offset, PyLong_FromSize_t(h->char_offset)) < 0 ||
        dict_put(d, b->k_text, hit_line(st, h)) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
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
    grep_result r = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = grep_run(g, st->docs, st->n, only, (size_t)max_hits, &r, err, sizeof err);
    Py_END_ALLOW_THREADS
    grep_free(g);
    PyObject *list = NULL;
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "grep: %s (simplify the pattern, or narrow it with doc=)",
                     err);
        goto done;
    }
    hit_builder b;
    if (hit_builder_init(&b) != 0)
        goto done;
    list = PyList_New((Py_ssize_t)r.n);
    for (size_t i = 0; list && i < r.n; i++) {
        /* the lines lie all over the input, long out of cache: ask early */
        if (i + 8 < r.n)
            __builtin_prefetch(r.hits[i + 8].line);
        PyObject *d = hit_dict(st, &b, &r.hits[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    hit_builder_clear(&b);
done:
    grep_result_free(&r);
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

/* Asks the host for a saved index under key: 'L' + key, answered by one byte
 * (1: found) with the file's descriptor attached. Returns the fd or -1. */
static int cache_lookup(int sock, const char key[33])
{
    char req[33] = {'L'};
    memcpy(req + 1, key, 32);
    if (write_full(sock, req, sizeof req) != 0)
        return -1;
    char status = 0;
    struct iovec iov = {.iov_base = &status, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    int fd = -1;
    struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    if (status != 1 && fd >= 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Loads the index from a host-provided fd; 0 on success. */
static int cache_load(docs_state *st, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size <= 0) {
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return -1;
    char err[256];
    if (search_load(map, len, st->docs, st->n, &st->index, err, sizeof err) != 0) {
        munmap(map, len);
        return -1;
    }
    return 0; /* the mapping lives as long as the index: the child's life */
}

/* 'S' + key, then the index to the end of the stream: the host stores it
 * once it has checked it. The socket is done with afterwards (the index
 * lives in memory for the child's life), so it is closed. */
static void cache_save(docs_state *st, const char key[33])
{
    char head[33] = {'S'};
    memcpy(head + 1, key, 32);
    char err[256];
    if (write_full(st->cache_fd, head, sizeof head) == 0)
        search_save(st->index, st->cache_fd, err, sizeof err);
    close(st->cache_fd);
    st->cache_fd = -1;
}

static int ensure_index(docs_state *st)
{
    if (st->index)
        return 0;
    char key[33];
    search_content_key(st->docs, st->n, SEARCH_CHUNK_CHARS, key);
    if (st->cache_fd >= 0) {
        int fd = cache_lookup(st->cache_fd, key);
        if (fd >= 0 && cache_load(st, fd) == 0)
            return 0;
    }
    char err[512];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = search_build(st->docs, st->n, SEARCH_CHUNK_CHARS, 0, &st->index, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        PyErr_Format(PyExc_RuntimeError, "search: %s", err);
        return -1;
    }
    if (st->cache_fd >= 0)
        cache_save(st, key);
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
    /* rlm's estimate everywhere (describe.c): 3.5 bytes per token, rounded up. */
    size_t bytes = (size_t)len;
    return PyLong_FromSize_t((bytes * 2 + 6) / 7);
}

#define API_FN(fn) ((PyCFunction)(void (*)(void))(fn))

static PyMethodDef docs_methods[] = {
    {"grep", API_FN(api_grep), METH_VARARGS | METH_KEYWORDS,
     "grep(pattern, flags='', max_hits=1000, doc=None) -> list of {doc, line, offset, text}."},
    {"chunks", API_FN(api_chunks), METH_VARARGS | METH_KEYWORDS,
     "chunks(max_chars=100000, overlap=0, by='lines'|'chars'|'docs') -> list of str."},
    {"search", API_FN(api_search), METH_VARARGS | METH_KEYWORDS,
     "search(query, k=10) -> list of {doc, score, offset, text}, best first (BM25)."},
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

/* Python's object allocator takes memory in 1 MiB arenas, touches it page
 * by page and unmaps an arena as soon as it is empty. On the virtual
 * machine we measured (bench/inputs_bench.py) a page fault costs about
 * 10 us, and a page's first access costs about 5 us even when mmap has
 * populated it; grep()'s 100,000 hits fill about 10,000 pages, which took
 * longer than PCRE2's scan of 400 MB. So arenas are populated in one call
 * (half the cost), and up to ARENA_KEEP emptied arenas are kept for reuse
 * instead of being unmapped (none of it): results built after others were
 * dropped, as in any session that calls grep() more than once, land in
 * memory already mapped. At most ARENA_KEEP MiB stay mapped unused. */
#define ARENA_KEEP 64

typedef struct arena_cache {
    void *kept[ARENA_KEEP];
    size_t size[ARENA_KEEP];
    size_t n;
} arena_cache;

static void *arena_alloc(void *ctx, size_t size)
{
    arena_cache *cache = ctx;
    for (size_t i = cache->n; i-- > 0;)
        if (cache->size[i] == size) {
            void *p = cache->kept[i];
            cache->n--;
            cache->kept[i] = cache->kept[cache->n];
            cache->size[i] = cache->size[cache->n];
            return p;
        }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    arena_cache *cache = ctx;
    if (cache->n < ARENA_KEEP) {
        cache->kept[cache->n] = ptr;
        cache->size[cache->n] = size;
        cache->n++;
        return;
    }
    munmap(ptr, size);
}

int repl_helpers_register(void)
{
    /* The cache lives as long as the process, like the allocator using it;
     * Python calls the allocator under the GIL, so it needs no lock. */
    arena_cache *cache = calloc(1, sizeof *cache);
    if (cache) {
        PyObjectArenaAllocator arenas = {.ctx = cache, .alloc = arena_alloc, .free = arena_free};
        PyObject_SetArenaAllocator(&arenas);
    }
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
    return 0;
}

PyObject *repl_helpers_function(const char *name)
{
    PyObject *module = PyState_FindModule(&docs_moduledef);
    if (!module || !PyObject_HasAttrString(module, name))
        return NULL;
    return PyObject_GetAttrString(module, name);
}
