/* repl_module — the built-in `_rlm` module behind the names model code calls
 * (llm_query, llm_query_batched, rlm_query, rlm_query_batched, FINAL,
 * FINAL_VAR, SHOW_VARS), the bounded stdout/stderr capture, the import
 * guard, and the inputs (context, context_1, ...) the helpers grep, chunks
 * and search can be pointed at. Lives only in the rlm-sandbox child.
 *
 * Ownership: functions returning PyObject* return new references unless they
 * say "borrowed". The module keeps its state (channel, namespace, capture,
 * final answer) in its module state for the life of the process. */
#ifndef RLM_REPL_MODULE_H
#define RLM_REPL_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

#include "docs.h"

/* Registers `_rlm` as a built-in module; call before Py_Initialize. */
int repl_module_register(void);

/* Imports and configures `_rlm` after Py_Initialize: fd is the channel to the
 * host, frame_max the largest frame, output_limit the characters kept per
 * cell, ns the model namespace (borrowed; must outlive the process). Returns
 * 0, or -1 with a Python error set. */
int repl_module_configure(int fd, size_t frame_max, size_t output_limit, PyObject *ns);

/* Tells the import guard that code running with `globals` (the glue's
 * private dict, which is no module's) is library code. 0, or -1 with a
 * Python error set (_rlm not imported yet). */
int repl_set_library_globals(PyObject *globals);

/* Replaces builtins.__import__ with the guard (call after the preloading).
 * Safe to call again after each cell to undo tampering. 0 / -1 (error set). */
int repl_install_import_guard(void);

/* The capture object installed as sys.stdout and sys.stderr (borrowed). */
PyObject *repl_capture(void);
void repl_capture_reset(void);
/* Appends text to the capture (counted and bounded like any output). */
int repl_capture_write_utf8(const char *text);
int repl_capture_write(PyObject *str);
/* The kept output (head, a cut marker if needed, tail) as a new str; *total
 * receives the characters written since the reset. NULL on error. */
PyObject *repl_capture_text(unsigned long long *total);

/* The model's variables as one line, "name: type, ..." in namespace order
 * (those SHOW_VARS lists: the inputs and histories too, not the REPL's
 * functions, modules, `answer` or _names), at most 100 names and about
 * 1,500 characters, then "... and N more". New reference; NULL with a
 * Python error set. */
PyObject *repl_variables_line(void);

/* The answer given by FINAL / FINAL_VAR since the last call (new reference),
 * or NULL without an error when there is none. Clears it. */
PyObject *repl_take_final(void);

/* The str literals the cell about to run passes to FINAL_VAR (a frozenset
 * from the glue's compile_cell; NULL: treat every str as a name). Borrowed
 * reference taken. */
void repl_set_cell_literals(PyObject *literals);

/* The REPL callables by their namespace name (new reference), NULL if unknown. */
PyObject *repl_api_function(const char *name);

/* Registers an input: obj (the object bound to its names), or any of its
 * documents, can be passed to the helpers as context=. kind, docs and ascii
 * are what obj was built from, as for repl_helpers_configure (borrowed; they
 * must live as long as the process). The first input registered must be the
 * one the helpers were configured with. 0, or -1 with a Python error set. */
int repl_add_input(PyObject *obj, ingest_kind kind, const ingest_doc *docs, size_t n_docs,
                   const unsigned char *ascii);

/* What the namespace binds for helper `name`: for the helpers that take
 * context= in the policy table (grep, chunks, search) a wrapper around
 * `helper` taking it; for anything else helper itself. New reference; NULL
 * with a Python error set. */
PyObject *repl_input_helper(const char *name, PyObject *helper);

/* str(obj) as UTF-8 that is always valid (lone surrogates become '?'), as a
 * new bytes object. NULL with an error set on failure. */
PyObject *repl_utf8_bytes(PyObject *obj);

#endif
