/* child — the sandbox child's own header: the process's state (struct
 * child) and the pieces of rlm-sandbox that share it, each calling only the
 * ones listed after it: child.c (main, the requests, cells), zygote.c (a
 * zygote's fork service), child_input.c (loading an input into Python, the
 * add_input request), child_glue.c (the Python half of a cell) and
 * child_python.c (the interpreter's start, signals, errors). Internal to
 * rlm-sandbox; the host never includes it.
 *
 * Ownership: one struct child lives for the process (main's); the objects
 * it holds are never freed (the process ends by _exit). A context_load is
 * the caller's; what its documents point into lives as long as the load,
 * which for a bound input is the life of the process. */
#ifndef RLM_CHILD_H
#define RLM_CHILD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

#include "docs.h"
#include "lockdown.h"
#include "repl_restore.h"

#define CHANNEL_FD 3 /* socket to the host */
#define CONTEXT_FD 4 /* the first input's bytes, or its pack, when there is one */
#define DATA_FD 5    /* an external pack's data: the one input file, mapped here */
#define CACHE_FD 6   /* socket to the host's search-index cache */
#define SANDBOX_PROTOCOL_VERSION 2 /* sandbox.c sends the same */
#define INIT_FRAME_MAX ((size_t)1 << 20)

/* Where one input's bytes are: descriptors (closed once it is loaded) and
 * what they hold. */
typedef struct input_spec {
    int fd;                     /* the input's pack (docs/internals/context-format.md),
                                   or -1: none (an empty str) */
    size_t len;
    int data_fd;                /* an external pack's data, or -1 */
    size_t data_len;
} input_spec;

/* Loading an input. The bytes are mapped, not read, and become `context` (or
 * context_1, ...): one str (a file, stdin, text), a list of str (JSONL) or a
 * dict name → str (several files), each input byte copied once; invalid
 * UTF-8 becomes U+FFFD. A large single str is mostly ASCII, and filling 40 MB
 * of fresh memory is dominated by page faults, so for the first input that
 * copy runs on a second core while the main thread imports modules: the str
 * is allocated as ASCII up front and a plain C thread (no Python API) fills
 * it, noting any byte >= 0x80. Such an input is decoded again properly
 * afterwards. Inputs added after the lockdown, where no thread can be
 * started, run the same copy on the main thread.
 *
 * The helpers (grep, chunks, search) need the raw bytes afterwards. For an
 * ASCII document the str's own buffer is those bytes, so the mapping goes;
 * a document with other bytes keeps its mapping (page cache, which the
 * kernel can reclaim) and the helpers read it there: faster than re-encoding
 * the str to UTF-8, and no second anonymous copy. */
typedef struct context_load {
    input_spec in;              /* its fds are closed (-1) once loaded */
    const unsigned char *src;   /* bytes the ASCII copy reads (one str), or NULL */
    size_t len;
    int release;                /* the copy drops source pages as it goes */
    PyObject *text;             /* ASCII str being filled, or the result */
    int copying;                /* 1 while the copy thread runs */
    int non_ascii;              /* set by the copy */
    pthread_t thread;
    void *map;                  /* the input's fd mapped (raw bytes or the pack) */
    size_t map_len;
    void *data_map;             /* the data fd mapped (external data) */
    size_t data_map_len;
    ingest_kind kind;
    ingest_format format;       /* a pack's: TEXT, or JSON / JSONL parsed into values */
    ingest_doc *docs;           /* what the helpers read; kept for the process's life */
    size_t n_docs;
    unsigned char *ascii;       /* per document: its str is ASCII */
    size_t chars;               /* characters of the input's text, every document's */
    PyObject *summary;          /* a parsed input's summary, JSON text (the glue's) */
    PyObject *kept_text;        /* text the documents point into (an unmappable input
                                   that was parsed), kept for the helpers */
    int input_error;            /* child_input_finish failed on the input itself (bad JSON) */
} context_load;

/* An input a zygote loaded for its children: each forked child binds the
 * first `preloaded` of them (sandbox-protocol.md, "Forked children"). */
struct held_input {
    PyObject *name;   /* the variable (an exact str) */
    PyObject *obj;
    context_load *cl; /* what the helpers read, for the process's life */
};

typedef struct child {
    int fd;
    size_t frame_max;
    size_t output_limit;
    size_t memory_limit;
    double cell_timeout;
    int unsafe_no_sandbox;
    int skip_landlock;
    input_spec first;           /* fds 4 and 5 */
    char first_alias[65];       /* one more name for the first input (a legacy session's
                                   context_1), or "" */
    int has_search_cache;       /* fd 6 is the search cache socket */
    PyObject *ns;               /* __main__.__dict__, borrowed */
    PyObject *builtins;         /* the builtins module */
    PyObject *glue;             /* the glue's globals: a dict no module and no model
                                   code holds (repl_restore puts it back) */
    PyObject *compile_cell;     /* glue functions */
    PyObject *format_exception;
    PyObject *final_literal;
    PyObject *parse_input;
    repl_restore *restore;      /* the tables and hooks of the request boundaries */
    struct held_input *held;    /* a zygote's: the inputs it loaded for its children */
    size_t n_held;
    size_t preloaded;           /* a forked child binds held[0 .. preloaded) (init frame) */
    PyObject *timeout_text;     /* "TimeoutError: cell exceeded N s wall time" */
    PyObject *cancel_text;      /* the same line for a cell the user cancelled */
    unsigned long cell_number;
    size_t context_chars;
    char layers[256];
    sandbox_lockdown_report report;
    sandbox_filter filter;      /* seccomp program a zygote built for its children */
} child;

/* ---- child_python.c ---- */

/* Takes the pending exception as one normalized object with its traceback
 * attached (NULL if none); the error indicator is cleared. */
PyObject *child_take_exception(void);

/* Moves the pending Python exception into err as "what: Type: message". */
void child_python_error(char *err, size_t errlen, const char *what);

/* 1 when the user cancelled (SIGUSR1) the cell being run. */
int child_cancel_requested(void);

/* (Re)installs the SIGUSR1 handler: the user's cancel becomes a
 * KeyboardInterrupt in the running cell. 0, or -1 (sigaction failed). */
int child_install_cancel_handler(void);

/* A SIGINT or SIGUSR1 that arrived while no cell ran must not hit the next
 * request: drains Python's pending signal and the cancel flag. */
void child_drain_signals(void);

/* Python up, ready for the modules: the interpreter, the cancel handler
 * and builtins. 0, or -1 with err. */
int child_start_interpreter(child *c, char *err, size_t errlen);

/* Imports every allowed module and then the preload list of the policy
 * table, before the lockdown. 0, or -1 with err. */
int child_preload_modules(char *err, size_t errlen);

/* The defences model code must find in place from its first cell: the
 * import guard, the restore tables, and what repl_restore_arm sets up for
 * good. 0, or -1 with err. */
int child_arm_repl(child *c, char *err, size_t errlen);

/* ---- child_input.c ---- */

/* Maps the input (and its data) and, for a single str, starts filling it:
 * on a thread when `threaded`, else at once. 0, or -1 with err (the load
 * is then given back with child_input_discard). */
int child_input_begin(context_load *cl, const input_spec *in, int threaded, char *err,
                      size_t errlen);

/* Waits for the copy and builds the object; the documents then point at
 * what the helpers read (the str, or the mapping). A JSON or JSON lines
 * input is parsed with parse_input (the glue's). Returns the object, or
 * NULL with err set (cl->input_error when the input itself is at fault).
 * The input's descriptors are closed either way. */
PyObject *child_input_finish(context_load *cl, PyObject *parse_input, char *err, size_t errlen);

/* Gives back what a load that failed holds (an input the host adds later;
 * a failed first input ends the process). */
void child_input_discard(context_load *cl);

/* A parsed input's summary for the host (the glue's JSON text), or NULL. */
json_t *child_input_summary(const context_load *cl);

/* A name the host may bind (sandbox_add_input, sandbox_set_var): an
 * identifier of at most 64 characters that is no fixed name of the policy
 * table, not bound already as an input or a protected value, and not a
 * dunder. New reference, or NULL with a message in err. */
PyObject *child_bindable_name(child *c, json_t *name, char *err, size_t errlen);

/* Binds an input under key, protected like `context` (put back after every
 * cell), and registers it for the helpers' context= argument. 0, or -1 with
 * a Python error set. */
int child_bind_input(child *c, PyObject *key, PyObject *obj, const context_load *cl);

/* An add_input request: the input is loaded, then bound (a child:
 * sandbox_add_input) or kept for the children to come (a zygote:
 * sandbox_factory_add_input). The reply frame, or NULL when the descriptors
 * did not follow (out of step with the host). */
json_t *child_add_input(child *c, json_t *request, int zygote);

/* ---- child_glue.c ---- */

/* Loads the glue into a dict of its own and takes its functions into c
 * (compile_cell, format_exception, final_literal, parse_input). 0, or -1
 * with err. */
int child_load_glue(child *c, char *err, size_t errlen);

/* ---- zygote.c ---- */

/* What every child does before its lockdown whatever its input, done once
 * by a zygote. 0, or -1 with err. */
int zygote_prepare(child *c, char *err, size_t errlen);

/* Serves fork requests until the host hangs up (then exits). Returns only
 * in a forked child, set up like a spawned one waiting for its init frame. */
void zygote_serve(child *c);

#endif
