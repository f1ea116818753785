/* repl_restore — what the sandbox child puts back around every request that
 * runs model code, and what model code can neither reach nor undo: the
 * restore tables (the REPL's protected names; sys.modules; the attributes of
 * builtins, sys, the allowed modules, the modules the glue uses and the glue
 * itself) held in C arrays; the namespace and every restored dict kept to
 * exact-str keys, so that no lookup the child makes runs model code (a str
 * subclass's __hash__ or __eq__); the hooks a cell can leave (profile,
 * trace, gc callbacks and thresholds, signal handlers, the recursion limit)
 * reset before each cell; an audit hook refusing what cannot be undone or
 * would reach the tables; and the classes that exist before any model code
 * made immutable. Lives only in the rlm-sandbox child.
 *
 * Ownership: one repl_restore per process, made by repl_restore_new and
 * never freed (the child exits without finalizing Python). It holds strong
 * references to everything in its tables; functions taking PyObject* borrow
 * them. */
#ifndef RLM_REPL_RESTORE_H
#define RLM_REPL_RESTORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

typedef struct repl_restore repl_restore;

/* An empty state for the namespace ns (`__main__.__dict__`; borrowed: it
 * lives as long as the process). NULL when out of memory. */
repl_restore *repl_restore_new(PyObject *ns);

/* Takes the tables: every entry of sys.modules, and the attributes of every
 * loaded module (the allowed ones, what they use, builtins, sys except its
 * stdout and stderr, which the child sets itself) but __main__, whose dict is
 * the namespace, and of `glue` (the glue's private globals). Call once,
 * after every import and after repl_restore_arm (the tables keep what it
 * replaced). 0, or -1 with err. */
int repl_restore_snapshot(repl_restore *r, PyObject *glue, char *err, size_t errlen);

/* Arms the defences that cannot be taken back, once, before any model code:
 * the audit hook (sandbox.md lists what it refuses), every class that
 * exists now made immutable, `_imp.create_builtin` replaced by a function
 * that raises ImportError (importlib._bootstrap._builtin_from_name would
 * otherwise load gc, _signal or fcntl afresh), and the defaults the hooks
 * are reset to. 0, or -1 with err. A forked child inherits all of it from its
 * zygote. */
int repl_restore_arm(repl_restore *r, char *err, size_t errlen);

/* Moves every object there is now into the collector's permanent
 * generation (gc.freeze, held since arming: gc is not importable then): a
 * zygote does it after loading an input, so that its children's
 * collections never visit, and copy, the input's objects. */
void repl_restore_freeze(repl_restore *r);

/* Protects `name` (an exact str) in the namespace: the request boundaries
 * put `value` back under it. Binding a protected name again replaces its
 * value. 0, or -1 with a Python error set. */
int repl_restore_protect(repl_restore *r, PyObject *name, PyObject *value);

/* 1 when name (an exact str) is protected, else 0. */
int repl_restore_is_protected(const repl_restore *r, PyObject *name);

/* Binds name to value in the namespace. A value it displaces is kept alive
 * until the next request's start (repl_restore_begin), so that no model
 * finalizer runs in the middle of the child's own work. 0, or -1 with a
 * Python error set. */
int repl_restore_bind(repl_restore *r, PyObject *name, PyObject *value);

/* Before a request that runs model code (a cell, a str() of a variable):
 * releases what earlier restores displaced (their finalizers are model code
 * and run now, then the restore runs again, a few rounds at most) and resets
 * the hooks. The collector stays off: the caller turns it on
 * (PyGC_Enable) right before the model's code. */
void repl_restore_begin(repl_restore *r);

/* Keeps obj alive until the next request's start (a new reference of the
 * restore's own; NULL is ignored): the caller can drop its reference to a
 * model object without its finalizer running now. */
void repl_restore_bury(repl_restore *r, PyObject *obj);

/* Right after model code: turns the collector off (no finalizer of a model
 * object runs while the child works between requests) and resets the hooks,
 * before the glue formats the cell's traceback. A pending Python error is
 * kept. */
void repl_restore_quiesce(repl_restore *r);

/* After the request: quiesce, then put back every table and protected name,
 * the namespace's __builtins__ and `answer` dict (a fresh one unless it is
 * an exact dict of exact-str keys), the import guard and the capture as
 * sys.stdout and sys.stderr. Returns 0, or -1 when the child cannot restore
 * itself (out of memory): it must then exit, and the host starts a fresh
 * one. Also called once before the first request. */
int repl_restore_end(repl_restore *r);

/* Removes every key of dict (an exact dict) that is not an exact str,
 * without running model code (what the removed entries held stays alive
 * until the next request's start). 0, or -1 with a Python error set. */
int repl_restore_clean_dict(repl_restore *r, PyObject *dict);

#endif
