/* capture — the bounded output of one REPL cell: an object with write(),
 * flush() and the attributes print() and tracebacks look for, installed as
 * sys.stdout and sys.stderr. It keeps the first half and the last half of
 * `limit` characters of all output and counts everything, so memory is
 * fixed at creation (limit code points) whatever the cell prints. Lives only
 * in rlm-sandbox; the REPL module (repl_module.c) owns the one instance.
 *
 * Ownership: capture_new and capture_text return new references; the
 * others borrow the capture and the str. */
#ifndef RLM_CAPTURE_H
#define RLM_CAPTURE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

/* A new capture keeping `limit` characters (at least 2), or NULL with a
 * Python error set. */
PyObject *capture_new(size_t limit);

/* Appends str (an exact or subclassed str): counted, and kept while it fits
 * the head or the tail. 0, or -1 with a Python error set. */
int capture_add(PyObject *capture, PyObject *str);

/* Forgets everything written (a new cell). */
void capture_clear(PyObject *capture);

/* What was kept as one str: the head, then "... [N characters cut] ..." and
 * the tail when something was cut; *total is every character written. New
 * reference, or NULL with a Python error set. */
PyObject *capture_text(PyObject *capture, unsigned long long *total);

#endif
