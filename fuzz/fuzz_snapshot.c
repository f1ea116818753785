/* fuzz_snapshot — libFuzzer harness for the conversation snapshot's decoder
 * (src/repl_snapshot.c) in an embedded interpreter: any input is decoded;
 * one that is accepted is encoded again, and that must decode (what the
 * encoder writes is always valid) to as many variables. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "repl_snapshot.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int bind_into(void *userdata, PyObject *name, PyObject *value)
{
    return PyDict_SetItem(userdata, name, value);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    PyStatus status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        abort();
    PyObject *g = PyModule_GetDict(PyImport_AddModule("__main__"));
    /* The modules a snapshot may name, loaded as in the sandbox. */
    PyObject *rc = PyRun_String("import re, json, math, collections, itertools, functools, "
                                "string, datetime, random, fractions, decimal",
                                Py_file_input, g, g);
    if (!rc)
        abort();
    Py_DECREF(rc);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    size_t bound = 0;
    PyObject *ns = PyDict_New();
    if (!ns)
        abort();
    if (repl_snapshot_decode(data, size, 0, bind_into, ns, &bound, err, sizeof err) == 0) {
        size_t cap = size * 2 + 4096;
        unsigned char *again = malloc(cap);
        repl_snapshot_stats stats;
        if (!again || repl_snapshot_encode(ns, again, cap, 0, &stats, err, sizeof err) != 0)
            abort();
        PyObject *back = PyDict_New();
        size_t rebound = 0;
        if (!back || repl_snapshot_decode(again, stats.bytes, 0, bind_into, back, &rebound, err,
                                          sizeof err) != 0 ||
            rebound != stats.carried)
            abort();
        repl_snapshot_stats_clear(&stats);
        Py_DECREF(back);
        free(again);
    }
    Py_DECREF(ns);
    return 0;
}
