/* child_python — the child's Python plumbing, shared by every part of
 * rlm-sandbox: starting the embedded interpreter (isolated, our allocator
 * and built-in modules registered first), the preload before the lockdown,
 * the defences armed before model code runs, the cancel signal, and moving a
 * Python exception into an error message. */
#include "child.h"

#include "py_arena.h"
#include "repl_helpers.h"
#include "repl_module.h"
#include "repl_restore.h"
#include "sandbox_policy.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* The cancel signal's handler has nothing but a global to tell the cell's
 * error report why it was interrupted; one process, one flag. */
static volatile sig_atomic_t cancel_requested;

int child_cancel_requested(void)
{
    return cancel_requested != 0;
}

/* Takes the pending exception as one normalized object with its traceback
 * attached (NULL if none); the error indicator is cleared. */
PyObject *child_take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Moves the pending Python exception into err as "what: Type: message". */
void child_python_error(char *err, size_t errlen, const char *what)
{
    PyObject *exc = child_take_exception();
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    snprintf(err, errlen, "%s: %s: %s", what, exc ? Py_TYPE(exc)->tp_name : "error",
             msg ? msg : "(no message)");
    Py_XDECREF(text);
    Py_XDECREF(exc);
    PyErr_Clear();
}

/* A SIGINT or SIGUSR1 that arrived while no cell ran must not hit the next one. */
void child_drain_signals(void)
{
    if (PyErr_CheckSignals() < 0)
        PyErr_Clear();
    cancel_requested = 0;
}

/* SIGUSR1: the user cancelled the cell. Interrupts it the way SIGINT does
 * (both calls are async-signal-safe) and says why. */
static void on_cancel(int sig)
{
    (void)sig;
    cancel_requested = 1;
    PyErr_SetInterruptEx(SIGINT);
}

int child_install_cancel_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_cancel;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGUSR1, &sa, NULL);
}

static int start_python(char *err, size_t errlen)
{
    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    PyStatus status = Py_PreInitialize(&pre);
    if (PyStatus_Exception(status))
        goto fail;
    py_arena_install(); /* without it, Python's own arenas: slower, not wrong */
    if (repl_module_register() != 0 || repl_helpers_register() != 0) {
        snprintf(err, errlen, "cannot register the _rlm modules");
        return -1;
    }
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 1; /* SIGINT -> KeyboardInterrupt */
    config.site_import = 0;
    config.user_site_directory = 0;
    config.use_environment = 0;
    config.write_bytecode = 0;
    config.parse_argv = 0;
    config.safe_path = 1;
    config.pathconfig_warnings = 0;
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot start Python: %s%s%s", status.func ? status.func : "",
             status.func ? ": " : "", status.err_msg ? status.err_msg : "unknown error");
    return -1;
}

static int import_module(const char *name, char *err, size_t errlen)
{
    PyObject *module = PyImport_ImportModule(name);
    if (!module) {
        char what[128];
        snprintf(what, sizeof what, "cannot preload module %s", name);
        child_python_error(err, errlen, what);
        return -1;
    }
    Py_DECREF(module);
    return 0;
}

int child_preload_modules(char *err, size_t errlen)
{
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++)
        if (import_module(sandbox_allowed_modules[i], err, errlen))
            return -1;
    for (size_t i = 0; i < sandbox_preload_modules_count; i++)
        if (import_module(sandbox_preload_modules[i], err, errlen))
            return -1;
    return 0;
}

/* Python up, ready for the modules: the interpreter, the cancel handler and
 * builtins. */
int child_start_interpreter(child *c, char *err, size_t errlen)
{
    if (start_python(err, errlen) != 0)
        return -1;
    if (child_install_cancel_handler() != 0) {
        snprintf(err, errlen, "cannot install the cancel handler");
        return -1;
    }
    c->builtins = PyImport_ImportModule("builtins");
    PyObject *main_module = PyImport_AddModule("__main__"); /* borrowed */
    c->ns = main_module ? PyModule_GetDict(main_module) : NULL;
    c->restore = c->ns ? repl_restore_new(c->ns) : NULL;
    if (!c->builtins || !c->restore) {
        snprintf(err, errlen, "cannot set up the interpreter's namespace");
        return -1;
    }
    return 0;
}

/* The defences model code must find in place from its first cell: the
 * import guard, the restore tables, and what repl_restore_arm sets up for
 * good. */
int child_arm_repl(child *c, char *err, size_t errlen)
{
    if (repl_install_import_guard() != 0) {
        child_python_error(err, errlen, "cannot install the import guard");
        return -1;
    }
    /* Armed first: the tables keep what arming replaced (_imp). */
    return repl_restore_arm(c->restore, err, errlen) == 0 && repl_restore_snapshot(c->restore, c->glue, err, errlen) == 0
               ? 0
               : -1;
}
