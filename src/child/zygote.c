/* zygote — rlm-sandbox started with "--zygote": it does once what every
 * child does before its lockdown, then forks children on request (the
 * design note below; docs/internals/sandbox-protocol.md, "Forked
 * children"). */
#include "child.h"

#include "fdpass.h"
#include "frame.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Started with "--zygote" by a sandbox factory (src/sandbox/sandbox_spawn.c): does
 * once what every child does before its lockdown whatever its input — starts
 * Python, imports the allowed modules, loads the glue, installs the import
 * guard, takes the snapshot of the modules, builds the seccomp program — then
 * forks children on request instead of reading an init frame. Each child goes
 * on from the init frame like a spawned one. What a forked child writes to is
 * copied page by page (a fault each, ~30 us on the virtual machines we
 * measured), so the zygote leaves it as little as possible to write: its
 * objects are frozen out of the collector's reach, the snapshot is taken, the
 * seccomp program (whose libseccomp allocations alone cost ~150 faults) is
 * ready to load. */

/* Puts a forked child's descriptors where a spawned child has them — the
 * channel on 3, the input on 4, its data on 5, the cache socket on 6 — and
 * closes every other one, the zygote's channel and pipes included. Absent
 * ones stay the zygote's /dev/null. fds holds n received descriptors, all
 * above 6 (the zygote's 0..6 are open), in that order. */
static int place_fds(const int *fds, int n, int has_context, int has_data, int has_cache)
{
    int targets[4], k = 0;
    targets[k++] = CHANNEL_FD;
    if (has_context)
        targets[k++] = CONTEXT_FD;
    if (has_data)
        targets[k++] = DATA_FD;
    if (has_cache)
        targets[k++] = CACHE_FD;
    if (k != n)
        return -1;
    for (int i = 0; i < n; i++)
        if (fds[i] <= CACHE_FD || dup2(fds[i], targets[i]) < 0)
            return -1;
    return close_range(CACHE_FD + 1, ~0U, 0);
}

/* Serves fork requests until the host hangs up (then exits). Returns only in
 * a forked child, set up like a spawned one waiting for its init frame. */
void zygote_serve(child *c)
{
    sandbox_fork_memory memory = {0};
    for (;;) {
        char err[256];
        json_t *request = NULL;
        int rc = frame_read(CHANNEL_FD, INIT_FRAME_MAX, &request, err, sizeof err);
        if (rc == FRAME_EOF)
            _exit(0);
        const char *type = rc == FRAME_READY
                               ? json_string_value(json_object_get(request, "type"))
                               : NULL;
        if (type && strcmp(type, "add_input") == 0) {
            json_t *reply = child_add_input(c, request, 1);
            json_t *add_id = json_object_get(request, "id");
            if (reply && json_is_integer(add_id))
                json_object_set_new(reply, "id", json_integer(json_integer_value(add_id)));
            json_decref(request);
            if (!reply || frame_write(CHANNEL_FD, reply, INIT_FRAME_MAX, err, sizeof err) != 0)
                _exit(3);
            json_decref(reply);
            continue;
        }
        if (!type || strcmp(type, "fork") != 0)
            _exit(3); /* the host is trusted: this is a bug, not an attack */
        json_int_t inputs = json_integer_value(json_object_get(request, "inputs"));
        int has_context = json_is_true(json_object_get(request, "has_context"));
        int has_data = json_is_true(json_object_get(request, "has_data"));
        int has_cache = json_is_true(json_object_get(request, "has_search_cache"));
        int isolate = json_is_true(json_object_get(request, "namespaces"));
        int required = json_is_true(json_object_get(request, "require_namespaces"));
        json_t *id = json_incref(json_object_get(request, "id"));
        json_decref(request);
        int fds[4] = {-1, -1, -1, -1};
        int n = fd_recv(CHANNEL_FD, NULL, fds, 4);
        if (n != 1 + has_context + has_data + has_cache)
            _exit(3);
        sandbox_fork_report report = {.pid = -1};
        const char *failure = NULL;
        /* The arena allocator's helper thread (py_arena.c) lives here
         * too: fork only while it waits, so that no lock it holds is copied
         * into the child held. */
        if (inputs < 0 || (size_t)inputs > c->n_held) {
            failure = "the zygote does not hold the inputs asked for";
        } else if (sandbox_threads_idle(1.0) != 0) {
            failure = "a thread of the zygote stayed busy";
        } else {
            PyOS_BeforeFork();
            if (sandbox_fork_isolated(isolate, required, &memory, &report) == 0) {
                PyOS_AfterFork_Child();
                json_decref(id);
                if (place_fds(fds, n, has_context, has_data, has_cache) != 0)
                    _exit(3);
                setpgid(0, 0);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                return;
            }
            PyOS_AfterFork_Parent();
            if (report.pid <= 0)
                failure = report.refused[0] && !report.namespaces[0]
                              ? "no namespace set was allowed"
                              : strerror(report.error);
        }
        for (int i = 0; i < n; i++)
            close(fds[i]);
        json_t *reply = json_pack("{s:s, s:o, s:i, s:s, s:s, s:s}", "type", "forked", "id",
                                  id ? id : json_null(), "pid", report.pid, "namespaces",
                                  report.namespaces, "refused", report.refused, "message",
                                  failure ? failure : "");
        if (!reply || frame_write(CHANNEL_FD, reply, INIT_FRAME_MAX, err, sizeof err) != 0)
            _exit(3);
        json_decref(reply);
    }
}

/* Moves every object the zygote made into the collector's permanent
 * generation: a collection in a forked child then never visits them (a visit
 * writes to the object, and every page written is copied). The gc module is
 * not left in sys.modules, where a spawned child does not have it. */
static void freeze_heap(void)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    int had_gc = PyDict_GetItemString(modules, "gc") != NULL;
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *rc = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;
    Py_XDECREF(rc);
    Py_XDECREF(gc);
    if (!had_gc)
        PyDict_DelItemString(modules, "gc");
    PyErr_Clear();
}

/* What every child does before its lockdown whatever its input, done once:
 * Python, the modules, the glue, the seccomp program (for pid 1: each child
 * is the first process of its PID namespace), the import guard, the
 * restore tables every cell is put back to and the rest of arm_repl. */
int zygote_prepare(child *c, char *err, size_t errlen)
{
    if (child_start_interpreter(c, err, errlen) != 0 || child_preload_modules(err, errlen) != 0 ||
        child_load_glue(c, err, errlen) != 0)
        return -1;
    /* Without the program (not expected), each child builds its own. */
    char ignored[256];
    sandbox_filter_build(1, &c->filter, ignored, sizeof ignored);
    freeze_heap();
    return child_arm_repl(c, err, errlen);
}
