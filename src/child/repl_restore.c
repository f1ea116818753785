/* repl_restore — the sandbox child's request boundaries: restore tables in
 * C, exact-str keys, hooks reset, the audit hook, classes frozen.
 *
 * Design note. Model code is untrusted, and it runs in the same interpreter
 * as the REPL machinery. Three things keep one cell from steering the next:
 *
 * 1. Nothing the restore uses is a Python object model code can find: the
 *    tables are C arrays of strong references (gc.get_objects, get_referrers
 *    and get_referents, which would otherwise reach a dict of them, are
 *    refused by the audit hook anyway).
 * 2. No model code runs while the child works between requests. Lookups go
 *    only through dicts whose keys are all exact str (a str subclass with a
 *    colliding hash would run its __eq__ inside PyDict_GetItem); the
 *    collector is off between requests (a collection runs finalizers and gc
 *    callbacks); an object a restore displaces (a model value bound to
 *    FINAL, a module attribute the model set) is not released there but kept
 *    in a graveyard until the next request starts, where its finalizer runs
 *    as part of that request and the restore runs again after it.
 * 3. What cannot be put back is refused: the audit hook refuses
 *    sys.addaudithook (a hook can never be removed), sys.setprofile and
 *    sys.settrace (and their all-threads and sys.monitoring forms), the gc
 *    walks, and replacing the code or defaults of a function model code did
 *    not define; every class that exists before the first cell is made
 *    immutable (type.__setattr__ refuses), so ast.Expr or a stdlib class the
 *    glue calls cannot be given model methods; and `_imp.create_builtin` is
 *    removed, so that built-in modules not loaded at lockdown (gc, _signal,
 *    faulthandler, ...) cannot be made afresh.
 *
 * What this does not cover, within one question (a conversation's next
 * question runs in a fresh process, sandbox.md): the contents of mutable
 * objects inside modules (re's cache, lists such as sys.meta_path), and a
 * finalizer model code planted that runs in the middle of a later cell (it
 * can rebind a name of that cell's namespace; what reaches the host still
 * goes through the C functions). */
#include "repl_restore.h"

#include "repl_module.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

/* Rounds of releasing the graveyard before a request; a model finalizer
 * that keeps displacing protected names gets no more. */
#define RELEASE_ROUNDS 4

typedef struct entry {
    PyObject *key;   /* exact str */
    PyObject *value;
} entry;

/* A dict and its entries when the table was taken, in iteration order. */
typedef struct dict_table {
    PyObject *dict;
    entry *entries;
    size_t n;
    int sys;          /* sys.__dict__: stdout and stderr are the child's to set */
    uint64_t version; /* the dict's version tag when it last matched (0: none) */
} dict_table;

struct repl_restore {
    PyObject *ns;             /* the namespace (borrowed; lives forever) */
    entry *names;             /* protected names of the namespace */
    size_t n_names, cap_names;
    dict_table *tables;
    size_t n_tables;
    PyObject *graveyard;      /* list of what restores displaced */
    PyObject *builtins;       /* the builtins module */
    PyObject *stdout_name, *stderr_name, *answer_name, *builtins_name;
    int armed;                /* the audit hook refuses */
    int bypass;               /* the child's own call of an audited function */
    PyObject *gc_callbacks;   /* gc.callbacks, the list the collector reads */
    PyObject *gc_set_threshold;
    PyObject *gc_freeze;
    PyObject *gc_thresholds;  /* tuple: the thresholds at arming */
    PyObject *signal_signal;  /* _signal.signal */
    PyObject *signal_default; /* _signal.default_int_handler */
    PyObject *signal_wakeup;  /* _signal.set_wakeup_fd */
    int recursion_limit;
};

repl_restore *repl_restore_new(PyObject *ns)
{
    repl_restore *r = PyMem_RawCalloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->ns = ns;
    r->graveyard = PyList_New(0);
    r->stdout_name = PyUnicode_InternFromString("stdout");
    r->stderr_name = PyUnicode_InternFromString("stderr");
    r->answer_name = PyUnicode_InternFromString("answer");
    r->builtins_name = PyUnicode_InternFromString("__builtins__");
    r->builtins = PyImport_ImportModule("builtins");
    if (!r->graveyard || !r->stdout_name || !r->stderr_name || !r->answer_name ||
        !r->builtins_name || !r->builtins) {
        PyErr_Clear();
        return NULL;
    }
    return r;
}

/* ---- the graveyard ---- */

/* Keeps obj alive until the next request starts. When even that fails (out
 * of memory) it is kept for good: a leak is better than model code running
 * now. */
static void bury(repl_restore *r, PyObject *obj)
{
    if (!obj)
        return;
    if (PyList_Append(r->graveyard, obj) < 0) {
        PyErr_Clear();
        Py_INCREF(obj);
    }
}

void repl_restore_bury(repl_restore *r, PyObject *obj)
{
    bury(r, obj);
}

/* ---- exact-str keys ---- */

static int keys_exact(PyObject *dict)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value))
        if (!PyUnicode_CheckExact(key))
            return 0;
    return 1;
}

/* Rebuilds dict from its entries with exact-str keys. The old entries stay
 * alive in the graveyard (PyDict_Items copies pointers and runs no model
 * code; clearing then releases only the dict's own references). */
int repl_restore_clean_dict(repl_restore *r, PyObject *dict)
{
    if (keys_exact(dict))
        return 0;
    PyObject *items = PyDict_Items(dict);
    if (!items)
        return -1;
    bury(r, items);
    PyDict_Clear(dict);
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && rc == 0; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(pair, 0);
        if (PyUnicode_CheckExact(key))
            rc = PyDict_SetItem(dict, key, PyTuple_GET_ITEM(pair, 1));
    }
    Py_DECREF(items); /* the graveyard holds it */
    return rc;
}

/* ---- tables ---- */

/* The dict's version tag, which CPython changes at every modification:
 * comparing it spares walking an unchanged dict. 3.12 deprecated it; there
 * every check walks. */
static uint64_t dict_version(PyObject *dict)
{
#if PY_VERSION_HEX < 0x030C0000
    return ((PyDictObject *)dict)->ma_version_tag;
#else
    (void)dict;
    return 0;
#endif
}

static int table_take(dict_table *t, PyObject *dict, int is_sys)
{
    Py_ssize_t size = PyDict_GET_SIZE(dict);
    t->entries = PyMem_RawCalloc(size ? (size_t)size : 1, sizeof *t->entries);
    if (!t->entries) {
        PyErr_NoMemory();
        return -1;
    }
    t->dict = Py_NewRef(dict);
    t->sys = is_sys;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value) && t->n < (size_t)size) {
        if (!PyUnicode_CheckExact(key))
            continue; /* no such key exists before model code; never restored */
        t->entries[t->n++] = (entry){Py_NewRef(key), Py_NewRef(value)};
    }
    t->version = dict_version(dict);
    return 0;
}

static int table_skips_value(const repl_restore *r, const dict_table *t, PyObject *key)
{
    return t->sys && (key == r->stdout_name || key == r->stderr_name);
}

/* 1 when the dict holds exactly the table's keys, in the same order, with
 * the same values (identity): a walk, no lookup, so a forked child writes
 * nothing to its zygote's pages and no model __eq__ can run. */
static int table_unchanged(const repl_restore *r, const dict_table *t)
{
    if (t->version && dict_version(t->dict) == t->version)
        return 1;
    if (PyDict_GET_SIZE(t->dict) != (Py_ssize_t)t->n)
        return 0;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    size_t i = 0;
    while (PyDict_Next(t->dict, &pos, &key, &value)) {
        if (i >= t->n || key != t->entries[i].key)
            return 0;
        if (value != t->entries[i].value && !table_skips_value(r, t, key))
            return 0;
        i++;
    }
    return i == t->n;
}

static int table_restore(repl_restore *r, dict_table *t)
{
    if (!table_unchanged(r, t)) {
        PyObject *items = PyDict_Items(t->dict);
        if (!items)
            return -1;
        bury(r, items);
        Py_DECREF(items);
        PyDict_Clear(t->dict);
        for (size_t i = 0; i < t->n; i++)
            if (PyDict_SetItem(t->dict, t->entries[i].key, t->entries[i].value) < 0)
                return -1;
    }
    /* sys.stdout and sys.stderr are set after this, which moves the tag
     * on: the sys table is walked every time. */
    t->version = t->sys ? 0 : dict_version(t->dict);
    return 0;
}

static int add_table(repl_restore *r, PyObject *dict, int is_sys)
{
    dict_table *grown = PyMem_RawRealloc(r->tables, (r->n_tables + 1) * sizeof *grown);
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    r->tables = grown;
    memset(&r->tables[r->n_tables], 0, sizeof *grown);
    if (table_take(&r->tables[r->n_tables], dict, is_sys) < 0)
        return -1;
    r->n_tables++;
    return 0;
}

int repl_restore_snapshot(repl_restore *r, PyObject *glue, char *err, size_t errlen)
{
    PyObject *loaded = PyImport_GetModuleDict(); /* borrowed */
    PyObject *sys = PyDict_GetItemString(loaded, "sys");
    if (add_table(r, loaded, 0) < 0 || (glue && add_table(r, glue, 0) < 0))
        goto fail;
    /* Every loaded module but __main__, whose dict is the namespace: the
     * allowed ones, the modules they use (re._compiler, enum, ...), the
     * glue's (traceback, linecache), builtins and sys. */
    PyObject *key, *module;
    Py_ssize_t pos = 0;
    while (PyDict_Next(loaded, &pos, &key, &module)) {
        if (!PyModule_Check(module))
            continue;
        PyObject *dict = PyModule_GetDict(module);
        if (dict == r->ns)
            continue;
        if (!dict || add_table(r, dict, module == sys) < 0)
            goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot take the restore tables: out of memory");
    PyErr_Clear();
    return -1;
}

/* 1 when globals belong to library code as it was at lockdown: a loaded
 * module's dict, or the glue's. A walk of the sys.modules table (the first),
 * no lookup. */
static int library_globals(const repl_restore *r, PyObject *globals)
{
    if (globals == r->ns)
        return 0;
    for (size_t t = 1; t < r->n_tables; t++)
        if (r->tables[t].dict == globals)
            return 1;
    return 0;
}

/* ---- protected names ---- */

static entry *find_name(const repl_restore *r, PyObject *name)
{
    for (size_t i = 0; i < r->n_names; i++)
        if (r->names[i].key == name ||
            PyUnicode_Compare(r->names[i].key, name) == 0) /* both exact str: C only */
            return &r->names[i];
    return NULL;
}

int repl_restore_is_protected(const repl_restore *r, PyObject *name)
{
    return PyUnicode_CheckExact(name) && find_name(r, name) != NULL;
}

int repl_restore_protect(repl_restore *r, PyObject *name, PyObject *value)
{
    if (!PyUnicode_CheckExact(name)) {
        PyErr_SetString(PyExc_TypeError, "a protected name must be a str");
        return -1;
    }
    entry *e = find_name(r, name);
    if (e) {
        bury(r, e->value);
        Py_DECREF(e->value);
        e->value = Py_NewRef(value);
        return 0;
    }
    if (r->n_names == r->cap_names) {
        size_t cap = r->cap_names ? r->cap_names * 2 : 32;
        entry *grown = PyMem_RawRealloc(r->names, cap * sizeof *grown);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        r->names = grown;
        r->cap_names = cap;
    }
    r->names[r->n_names++] = (entry){Py_NewRef(name), Py_NewRef(value)};
    return 0;
}

/* Binds in a namespace whose keys are all exact str already, so that the
 * lookup runs no model code. */
static int bind_clean(repl_restore *r, PyObject *name, PyObject *value)
{
    PyObject *old = PyDict_GetItemWithError(r->ns, name);
    if (old == value)
        return 0;
    if (!old && PyErr_Occurred())
        return -1;
    bury(r, old);
    return PyDict_SetItem(r->ns, name, value);
}

int repl_restore_bind(repl_restore *r, PyObject *name, PyObject *value)
{
    if (!r->ns || !PyUnicode_CheckExact(name)) {
        PyErr_SetString(PyExc_TypeError, "a name must be a str");
        return -1;
    }
    if (repl_restore_clean_dict(r, r->ns) < 0)
        return -1;
    return bind_clean(r, name, value);
}

/* ---- the audit hook ---- */

static int refuse(const char *what, const char *why)
{
    PyErr_Format(PyExc_RuntimeError, "%s is not available in the sandbox: %s", what, why);
    return -1;
}

/* Runs for every audited event of the interpreter, so it compares a few
 * names and returns. PySys_Audit hands it a tuple. */
static int audit_hook(const char *event, PyObject *args, void *data)
{
    repl_restore *r = data;
    if (!r->armed || r->bypass)
        return 0;
    if (strcmp(event, "sys.addaudithook") == 0)
        return refuse("sys.addaudithook", "an audit hook could never be removed");
    if (strcmp(event, "sys.setprofile") == 0 || strcmp(event, "sys.settrace") == 0 ||
        strcmp(event, "sys._setprofileallthreads") == 0 ||
        strcmp(event, "sys._settraceallthreads") == 0 ||
        strncmp(event, "sys.monitoring.", 15) == 0)
        return refuse(event + 4, "the REPL's hooks are its own");
    if (strcmp(event, "gc.get_objects") == 0 || strcmp(event, "gc.get_referrers") == 0 ||
        strcmp(event, "gc.get_referents") == 0)
        return refuse(event, "the REPL's objects are not the model's to walk");
    if ((strcmp(event, "object.__setattr__") == 0 || strcmp(event, "object.__delattr__") == 0) &&
        PyTuple_Check(args) && PyTuple_GET_SIZE(args) >= 2) {
        PyObject *obj = PyTuple_GET_ITEM(args, 0);
        /* A function of a module or of the glue keeps its code and
         * defaults; the model's own (defined in a cell), and those library
         * code makes at run time with globals of their own (namedtuple's
         * __new__), are theirs to change. */
        if (PyFunction_Check(obj) && library_globals(r, PyFunction_GET_GLOBALS(obj)))
            return refuse("changing a function the REPL did not let you define",
                          "define your own function instead");
    }
    return 0;
}

/* Makes every heap class that exists now immutable: setting or deleting an
 * attribute of json.JSONEncoder, ast.Expr or a class of the glue's modules
 * raises TypeError, as it does for built-in types. Classes are found from
 * `object` down through __subclasses__; visited ones are kept by address. */
static int freeze_classes(void)
{
    PyObject *seen = PySet_New(NULL), *stack = PyList_New(0);
    /* type.__subclasses__(t): called on t itself it would not work for
     * metaclasses (type.__subclasses__ looked up on `type` is unbound). */
    PyObject *subclasses = PyObject_GetAttrString((PyObject *)&PyType_Type, "__subclasses__");
    int rc = -1;
    if (!seen || !stack || !subclasses ||
        PyList_Append(stack, (PyObject *)&PyBaseObject_Type) < 0)
        goto done;
    while (PyList_GET_SIZE(stack) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(stack) - 1;
        PyObject *type = Py_NewRef(PyList_GET_ITEM(stack, last));
        if (PyList_SetSlice(stack, last, last + 1, NULL) < 0) {
            Py_DECREF(type);
            goto done;
        }
        PyObject *id = PyLong_FromVoidPtr(type);
        int known = id ? PySet_Contains(seen, id) : -1;
        if (known == 0)
            known = PySet_Add(seen, id) < 0 ? -1 : 0;
        Py_XDECREF(id);
        PyObject *subs = known == 0 ? PyObject_CallOneArg(subclasses, type) : NULL;
        if (known == 0 && PyType_HasFeature((PyTypeObject *)type, Py_TPFLAGS_HEAPTYPE))
            ((PyTypeObject *)type)->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE;
        Py_DECREF(type);
        if (known < 0 || (known == 0 && !subs))
            goto done;
        for (Py_ssize_t i = 0; subs && i < PyList_GET_SIZE(subs); i++)
            if (PyList_Append(stack, PyList_GET_ITEM(subs, i)) < 0) {
                Py_DECREF(subs);
                goto done;
            }
        Py_XDECREF(subs);
    }
    rc = 0;
done:
    Py_XDECREF(seen);
    Py_XDECREF(stack);
    Py_XDECREF(subclasses);
    return rc;
}

/* A module's attribute, importing the module when it is not loaded yet and
 * dropping it from sys.modules again (nothing model code could import
 * before arming appears after it). New reference, or NULL. */
static PyObject *module_attr(const char *module, const char *name)
{
    PyObject *loaded = PyImport_GetModuleDict();
    int had = PyDict_GetItemString(loaded, module) != NULL;
    /* Straight to the import machinery: builtins.__import__ is the guard by
     * now, which loads nothing new. */
    PyObject *m = PyImport_ImportModuleLevel(module, NULL, NULL, NULL, 0);
    PyObject *attr = m ? PyObject_GetAttrString(m, name) : NULL;
    Py_XDECREF(m);
    if (!had && PyDict_GetItemString(loaded, module))
        PyDict_DelItemString(loaded, module);
    return attr;
}

static PyObject *no_builtin(PyObject *self, PyObject *spec)
{
    PyErr_SetString(PyExc_ImportError,
                    "built-in modules cannot be created in the sandbox: only the modules "
                    "loaded before it was locked down are available");
    return NULL;
}

static PyMethodDef no_builtin_def = {"create_builtin", no_builtin, METH_O,
                                     "Refuses: the sandbox creates no module after lockdown."};

int repl_restore_arm(repl_restore *r, char *err, size_t errlen)
{
    PyObject *get_threshold = module_attr("gc", "get_threshold");
    r->gc_thresholds = get_threshold ? PyObject_CallNoArgs(get_threshold) : NULL;
    Py_XDECREF(get_threshold);
    r->gc_set_threshold = module_attr("gc", "set_threshold");
    r->gc_callbacks = module_attr("gc", "callbacks");
    r->gc_freeze = module_attr("gc", "freeze");
    r->signal_signal = module_attr("_signal", "signal");
    r->signal_default = module_attr("_signal", "default_int_handler");
    r->signal_wakeup = module_attr("_signal", "set_wakeup_fd");
    r->recursion_limit = Py_GetRecursionLimit();
    if (!r->gc_thresholds || !PyTuple_Check(r->gc_thresholds) || !r->gc_set_threshold ||
        !r->gc_callbacks || !PyList_Check(r->gc_callbacks) || !r->gc_freeze || !r->signal_signal ||
        !r->signal_default || !r->signal_wakeup) {
        PyErr_Clear();
        snprintf(err, errlen, "cannot arm the REPL: gc or _signal is missing");
        return -1;
    }
    if (freeze_classes() < 0) {
        PyErr_Clear();
        snprintf(err, errlen, "cannot arm the REPL: the classes could not be frozen");
        return -1;
    }
    /* After this no built-in module can be created: the import guard
     * already refuses every module not loaded, this closes the back door
     * (importlib._bootstrap._builtin_from_name and BuiltinImporter). */
    PyObject *imp = PyDict_GetItemString(PyImport_GetModuleDict(), "_imp");
    PyObject *refusal = PyCFunction_New(&no_builtin_def, NULL);
    int replaced = imp && refusal && PyObject_SetAttrString(imp, "create_builtin", refusal) == 0;
    Py_XDECREF(refusal);
    if (!replaced) {
        PyErr_Clear();
        snprintf(err, errlen, "cannot arm the REPL: _imp.create_builtin stays");
        return -1;
    }
    if (PySys_AddAuditHook(audit_hook, r) < 0) {
        PyErr_Clear();
        snprintf(err, errlen, "cannot arm the REPL: the audit hook was refused");
        return -1;
    }
    r->armed = 1;
    return 0;
}

void repl_restore_freeze(repl_restore *r)
{
    if (r->gc_freeze)
        Py_XDECREF(PyObject_CallNoArgs(r->gc_freeze));
    PyErr_Clear();
}

/* ---- request boundaries ---- */

/* Puts the hooks back: no profile or trace function, no gc callback, the
 * thresholds and recursion limit of the start, SIGINT raising
 * KeyboardInterrupt again, no wake-up fd, no interval timer, no signal
 * blocked. What they held goes to the graveyard. (The child reinstalls its
 * own SIGUSR1 handler.) */
static void reset_hooks(repl_restore *r)
{
    r->bypass = 1;
    PyEval_SetProfile(NULL, NULL);
    PyEval_SetTrace(NULL, NULL);
    r->bypass = 0;
    PyErr_Clear();
    if (!r->gc_callbacks)
        return; /* not armed yet */
    Py_ssize_t n = PyList_GET_SIZE(r->gc_callbacks);
    if (n > 0) {
        PyObject *old = PyList_GetSlice(r->gc_callbacks, 0, n);
        if (old) {
            bury(r, old);
            Py_DECREF(old);
            PyList_SetSlice(r->gc_callbacks, 0, n, NULL);
        }
    }
    Py_XDECREF(PyObject_Call(r->gc_set_threshold, r->gc_thresholds, NULL));
    PyObject *old = PyObject_CallFunction(r->signal_signal, "iO", SIGINT, r->signal_default);
    bury(r, old);
    Py_XDECREF(old);
    Py_XDECREF(PyObject_CallFunction(r->signal_wakeup, "i", -1));
    /* Timers and a blocked mask (signal.setitimer, pthread_sigmask) would
     * interrupt or shield later cells. */
    static const int timers[] = {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF};
    struct itimerval off = {{0, 0}, {0, 0}};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        setitimer(timers[i], &off, NULL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    Py_SetRecursionLimit(r->recursion_limit);
    PyErr_Clear();
}

static PyObject *new_answer_dict(void)
{
    return Py_BuildValue("{s:s, s:O}", "content", "", "ready", Py_False);
}

/* Everything back as the tables say. -1 when that could not be done. */
static int restore_all(repl_restore *r)
{
    int rc = 0;
    for (size_t i = 0; i < r->n_tables; i++)
        rc |= table_restore(r, &r->tables[i]);
    if (!r->ns)
        return rc;
    rc |= repl_restore_clean_dict(r, r->ns);
    for (size_t i = 0; rc == 0 && i < r->n_names; i++)
        rc |= bind_clean(r, r->names[i].key, r->names[i].value);
    /* The answer dict keeps the model's values while it is an exact dict
     * with exact-str keys (the child reads it with lookups). */
    PyObject *answer = rc == 0 ? PyDict_GetItemWithError(r->ns, r->answer_name) : NULL;
    if (answer && PyDict_CheckExact(answer))
        rc |= repl_restore_clean_dict(r, answer);
    else if (rc == 0 && !PyErr_Occurred()) {
        PyObject *fresh = new_answer_dict();
        rc |= fresh ? bind_clean(r, r->answer_name, fresh) : -1;
        Py_XDECREF(fresh);
    }
    if (rc == 0)
        rc |= bind_clean(r, r->builtins_name, r->builtins);
    if (repl_install_import_guard() < 0)
        rc = -1;
    PyObject *capture = repl_capture(); /* borrowed */
    if (capture && (PySys_SetObject("stdout", capture) < 0 || PySys_SetObject("stderr", capture) < 0))
        rc = -1;
    return rc ? -1 : 0;
}

void repl_restore_begin(repl_restore *r)
{
    for (int round = 0; round < RELEASE_ROUNDS && PyList_GET_SIZE(r->graveyard) > 0; round++) {
        PyObject *fresh = PyList_New(0);
        if (!fresh)
            break;
        PyObject *old = r->graveyard;
        r->graveyard = fresh;
        Py_DECREF(old); /* model finalizers run here, as part of this request */
        PyErr_Clear();
        PyGC_Disable(); /* a finalizer may have turned it on */
        reset_hooks(r);
        if (restore_all(r) < 0)
            PyErr_Clear(); /* the end of the request tries again, and exits if it must */
    }
    reset_hooks(r);
    PyErr_Clear();
}

void repl_restore_quiesce(repl_restore *r)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* the model's error stays the caller's to report */
    PyGC_Disable();
    reset_hooks(r);
    PyErr_Restore(type, value, tb);
}

int repl_restore_end(repl_restore *r)
{
    PyErr_Clear();
    repl_restore_quiesce(r);
    int rc = restore_all(r);
    PyErr_Clear();
    return rc;
}
