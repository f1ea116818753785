/* child — main of rlm-sandbox: embeds CPython, preloads the allowed
 * modules, maps the context into one str, locks itself down, then runs cells
 * sent by the host in one persistent namespace and answers with their output.
 * Started with "--zygote" it does the part before the context once and forks
 * children that go on from there (docs/internals/sandbox-protocol.md).
 *
 * Design note. Everything that needs the filesystem happens before
 * sandbox_lockdown: the interpreter, every allowed module (and the helpers
 * they import lazily), the glue below, the context. After it, the child can
 * only compute and talk over fd 3; later inputs (context_1, ...) arrive as
 * descriptors passed over it (SCM_RIGHTS), already open. Output is bounded in
 * the capture object, so a cell printing forever costs a fixed amount of
 * memory. A SIGINT from the host (timeout) or a SIGUSR1 (the user cancelled)
 * becomes CPython's KeyboardInterrupt inside the cell; between requests it
 * only sets a flag, which is drained before the next request runs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fdpass.h"
#include "frame.h"
#include "pack.h"
#include "py_arena.h"
#include "repl_helpers.h"
#include "repl_module.h"
#include "repl_restore.h"
#include "repl_snapshot.h"
#include "lockdown.h"
#include "sandbox_policy.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHANNEL_FD 3 /* socket to the host */
#define CONTEXT_FD 4 /* the first input's bytes, or its pack, when there is one */
#define DATA_FD 5    /* an external pack's data: the one input file, mapped here */
#define CACHE_FD 6   /* socket to the host's search-index cache */
#define SANDBOX_PROTOCOL_VERSION 2 /* sandbox.c sends the same */
/* Above this the context is not pre-faulted (a 4 GB input would be read
 * twice). At every size the copy into the str drops the mapping's pages
 * every RELEASE_BLOCK bytes, so an input costs its str plus one block in
 * RSS, not str + mapping. */
#define POPULATE_MAX ((size_t)256 << 20)
#define RELEASE_BLOCK ((size_t)16 << 20)
#define INIT_FRAME_MAX ((size_t)1 << 20)

#ifdef SANDBOX_ASAN
/* LeakSanitizer needs ptrace, which the filter denies, and CPython keeps its
 * memory until exit anyway. Allocation failures must reach Python as
 * MemoryError instead of aborting, since RLIMIT_AS cannot be used here. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0:allocator_may_return_null=1";
}
#endif

/* Modules the allowed ones import lazily, and the glue's own needs: loaded
 * before lockdown so library code finds them in sys.modules. */
static const char *const helper_modules[] = {
    "_strptime",          "time",
    "linecache",          "traceback",
    "encodings.ascii",
    "encodings.latin_1",  "encodings.utf_8_sig",
    "encodings.utf_16",   "encodings.utf_16_le",
    "encodings.utf_16_be", "encodings.utf_32",
    "encodings.cp1252",   "encodings.cp437",
    "encodings.unicode_escape", "encodings.raw_unicode_escape",
    "encodings.idna",     "_rlm",
    "_rlm_docs",
};

/* The Python half of a cell: REPL-style compilation (the last expression is
 * evaluated separately so its value can be shown), tracebacks that start at
 * the model's code, and the finishing forms that need the cell's source.
 * Source lines come from linecache entries we add.
 *
 * compile_cell also returns the string literals the cell passes to
 * FINAL_VAR: FINAL_VAR("name") naming no variable is an error (the name is
 * the classic wrong answer), while FINAL_VAR(x) whose value names no
 * variable answers with that value (the reference's models write it).
 *
 * final_literal: a cell that fails on a line `FINAL(some words)` — a
 * NameError for one of the words, or a SyntaxError on that line — meant the
 * words as the answer, as the reference library (which read FINAL(...)
 * anywhere in the reply) took them. One or more words (identifiers,
 * numbers, with trailing punctuation), nothing that calls or computes. */
static const char glue_source[] =
    "import ast, collections, itertools, json, linecache, re, traceback\n"
    "_KEEP_SOURCES = 200\n"
    "def compile_cell(src, filename, number):\n"
    "    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)\n"
    "    linecache.cache.pop('<cell-%d>' % (number - _KEEP_SOURCES), None)\n"
    "    tree = ast.parse(src, filename, 'exec')\n"
    "    literals = frozenset(n.args[0].value.strip(\" \\t\\r\\n'\\\"`\") for n in ast.walk(tree)\n"
    "                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)\n"
    "                         and n.func.id == 'FINAL_VAR' and n.args\n"
    "                         and isinstance(n.args[0], ast.Constant)\n"
    "                         and isinstance(n.args[0].value, str))\n"
    "    last = None\n"
    "    if tree.body and isinstance(tree.body[-1], ast.Expr):\n"
    "        last = compile(ast.Expression(tree.body.pop().value), filename, 'eval')\n"
    "    return compile(tree, filename, 'exec'), last, literals\n"
    "def format_exception(exc, interrupt_text):\n"
    "    tb = exc.__traceback__\n"
    "    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<cell-'):\n"
    "        tb = tb.tb_next\n"
    "    lines = traceback.format_exception(type(exc), exc, tb)\n"
    "    if isinstance(exc, KeyboardInterrupt):\n"
    "        lines = lines[:-1] + [interrupt_text + '\\n']\n"
    "    return ''.join(lines)\n"
    "_WORD = r\"(?:[A-Za-z_][\\w'-]*|\\d[\\w.]*)[.:;!?]*\"\n"
    "_FINAL_WORDS = re.compile(r'[ \\t]*FINAL\\([ \\t]*(' + _WORD + r'(?:(?:[ \\t]*,[ \\t]*|[ \\t]+)' +\n"
    "                          _WORD + r')*)[ \\t]*\\)[ \\t]*(?:#.*)?')\n"
    "def final_literal(exc, src):\n"
    "    if isinstance(exc, SyntaxError):\n"
    "        if not str(exc.filename).startswith('<cell-'):\n"
    "            return None\n"
    "        line = exc.lineno\n"
    "    elif type(exc) is NameError:\n"
    "        tb = exc.__traceback__\n"
    "        while tb is not None and tb.tb_next is not None:\n"
    "            tb = tb.tb_next\n"
    "        if tb is None or not tb.tb_frame.f_code.co_filename.startswith('<cell-'):\n"
    "            return None\n"
    "        line = tb.tb_lineno\n"
    "    else:\n"
    "        return None\n"
    "    lines = src.splitlines()\n"
    "    if not line or line > len(lines):\n"
    "        return None\n"
    "    if len(lines[line - 1]) > 500:\n"
    "        return None\n"
    "    m = _FINAL_WORDS.fullmatch(lines[line - 1])\n"
    "    if m is None or not re.search(r'[A-Za-z_]', m.group(1)):\n"
    "        return None\n"
    "    if isinstance(exc, NameError) and exc.name not in re.findall(r'[A-Za-z_]\\w*', m.group(1)):\n"
    "        return None\n"
    "    return m.group(1)\n"
    "_decoder = json.JSONDecoder()\n"
    "class InputError(Exception):\n"
    "    pass\n"
    "def _json_value(text, name):\n"
    "    try:\n"
    "        return _decoder.decode(text[1:] if text.startswith('\\ufeff') else text)\n"
    "    except json.JSONDecodeError as e:\n"
    "        raise InputError('%s is not valid JSON: %s at line %d, column %d'\n"
    "                         % (name, e.msg, e.lineno, e.colno)) from None\n"
    "    except RecursionError:\n"
    "        raise InputError('%s: the JSON is nested too deeply to load' % name) from None\n"
    "def _json_lines(text, name, out, problems):\n"
    "    skipped = number = pos = 0\n"
    "    end = len(text)\n"
    "    while pos < end:\n"
    "        nl = text.find('\\n', pos)\n"
    "        if nl < 0:\n"
    "            nl = end\n"
    "        number += 1\n"
    "        line = text[pos:nl]\n"
    "        pos = nl + 1\n"
    "        if not line.strip():\n"
    "            continue\n"
    "        try:\n"
    "            out.append(_decoder.decode(line))\n"
    "        except (json.JSONDecodeError, RecursionError) as e:\n"
    "            skipped += 1\n"
    "            if len(problems) < 20:\n"
    "                why = ('%s (column %d)' % (e.msg, e.colno)\n"
    "                       if isinstance(e, json.JSONDecodeError) else 'nested too deeply')\n"
    "                problems.append('%s line %d: not valid JSON: %s; skipped' % (name, number, why))\n"
    "    return skipped\n"
    "def _cut(v, depth):\n"
    "    if isinstance(v, str):\n"
    "        return v if len(v) <= 160 else v[:160] + '...'\n"
    "    if depth >= 3:\n"
    "        return v if not isinstance(v, (list, dict)) else ('[...]' if isinstance(v, list) else '{...}')\n"
    "    if isinstance(v, list):\n"
    "        out = [_cut(x, depth + 1) for x in v[:4]]\n"
    "        return out + ['... %d more' % (len(v) - 4)] if len(v) > 4 else out\n"
    "    if isinstance(v, dict):\n"
    "        out = {k: _cut(x, depth + 1) for k, x in itertools.islice(v.items(), 10)}\n"
    "        if len(v) > 10:\n"
    "            out['...'] = '%d more keys' % (len(v) - 10)\n"
    "        return out\n"
    "    return v\n"
    "def _summary(value, fmt, problems, skipped):\n"
    "    s = {'format': fmt, 'type': type(value).__name__, 'skipped': skipped, 'problems': problems}\n"
    "    if isinstance(value, (list, dict, str)):\n"
    "        s['length'] = len(value)\n"
    "    if isinstance(value, dict):\n"
    "        s['keys'] = [str(k)[:100] for k in itertools.islice(value, 40)]\n"
    "        items = value.values()\n"
    "    else:\n"
    "        items = value if isinstance(value, list) else ()\n"
    "    types = collections.Counter(type(x).__name__ for x in itertools.islice(items, 10000))\n"
    "    if types:\n"
    "        s['item_types'] = dict(types.most_common(6))\n"
    "    if isinstance(value, list) and value and isinstance(value[0], dict):\n"
    "        s['first_keys'] = [str(k)[:100] for k in itertools.islice(value[0], 40)]\n"
    "    s['preview'] = repr(_cut(value, 0))[:2000]\n"
    "    return json.dumps(s)\n"
    "def parse_input(obj, fmt, name):\n"
    "    problems = []\n"
    "    skipped = 0\n"
    "    texts = [(name, obj)] if isinstance(obj, str) else list(obj.items())\n"
    "    if fmt == 'jsonl':\n"
    "        value = []\n"
    "        for n, text in texts:\n"
    "            skipped += _json_lines(text, n, value, problems)\n"
    "        if not value and skipped:\n"
    "            raise InputError('no line of the JSON lines input is valid JSON (%s)' % problems[0])\n"
    "    elif isinstance(obj, str):\n"
    "        value = _json_value(obj, name)\n"
    "    else:\n"
    "        value = {n: _json_value(text, n) for n, text in texts}\n"
    "    return value, _summary(value, fmt, problems, skipped)\n";

/* Where one input's bytes are: descriptors (closed once it is loaded) and
 * what they hold. */
typedef struct input_spec {
    int fd;                     /* the input, or -1: none (an empty str) */
    size_t len;
    int pack;                   /* fd holds a pack (docs/internals/context-format.md) */
    int data_fd;                /* an external pack's data, or -1 */
    size_t data_len;
} input_spec;

/* The cancel signal's handler has nothing but a global to tell the cell's
 * error report why it was interrupted; one process, one flag. */
static volatile sig_atomic_t cancel_requested;

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

/* ---- small helpers ---- */

/* input_error: the input itself is at fault (a .json that does not parse),
 * not the sandbox: the host reports it as an input error. */
static void send_failure_and_exit(int fd, const char *message, int input_error)
{
    json_t *frame = json_pack("{s:s, s:o, s:b}", "type", "error", "message",
                              frame_string(message, strlen(message)), "input_error", input_error);
    char err[128];
    if (frame)
        frame_write(fd, frame, INIT_FRAME_MAX, err, sizeof err);
    json_decref(frame);
    _exit(3);
}

static void send_error_and_exit(int fd, const char *message)
{
    send_failure_and_exit(fd, message, 0);
}


/* Takes the pending exception as one normalized object with its traceback
 * attached (NULL if none); the error indicator is cleared. */
static PyObject *take_exception(void)
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
static void python_error(char *err, size_t errlen, const char *what)
{
    PyObject *exc = take_exception();
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    snprintf(err, errlen, "%s: %s: %s", what, exc ? Py_TYPE(exc)->tp_name : "error",
             msg ? msg : "(no message)");
    Py_XDECREF(text);
    Py_XDECREF(exc);
    PyErr_Clear();
}

/* A SIGINT or SIGUSR1 that arrived while no cell ran must not hit the next one. */
static void drain_signals(void)
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

static int install_cancel_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_cancel;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGUSR1, &sa, NULL);
}

static json_t *json_utf8(PyObject *obj)
{
    PyObject *bytes = repl_utf8_bytes(obj);
    if (!bytes)
        return NULL;
    json_t *s = frame_string(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    return s;
}

/* ---- watchdog ---- */

/* When the host dies, the socket reports POLLHUP even to a poll() that asks
 * for no events. A cell stuck in a loop never reads the socket, so a tiny
 * thread watches it and ends the process; otherwise an orphan could spin
 * forever. All signals are blocked in it so SIGINT reaches the main thread. */
static void *watchdog_main(void *arg)
{
    struct pollfd p = {.fd = (int)(intptr_t)arg, .events = 0};
    for (;;) {
        int n = poll(&p, 1, -1);
        if (n > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)))
            _exit(0);
        if (n < 0 && errno != EINTR)
            return NULL;
    }
}

static int start_watchdog(int fd)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, watchdog_main, (void *)(intptr_t)fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

/* ---- start-up ---- */

static int parse_init(child *c, json_t *init, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(init, "type"));
    json_int_t version = json_integer_value(json_object_get(init, "version"));
    if (!type || strcmp(type, "init") != 0 || version != SANDBOX_PROTOCOL_VERSION) {
        snprintf(err, errlen, "expected an init frame of protocol version %d",
                 SANDBOX_PROTOCOL_VERSION);
        return -1;
    }
    json_int_t context_len = json_integer_value(json_object_get(init, "context_len"));
    json_int_t output_limit = json_integer_value(json_object_get(init, "output_limit"));
    json_int_t memory_limit = json_integer_value(json_object_get(init, "memory_limit"));
    if (context_len < 0 || output_limit < 0 || memory_limit < 0) {
        snprintf(err, errlen, "negative size in the init frame");
        return -1;
    }
    const char *format = json_string_value(json_object_get(init, "context_format"));
    json_int_t data_len = json_integer_value(json_object_get(init, "data_len"));
    c->first = (input_spec){.fd = -1, .data_fd = -1};
    if (json_is_true(json_object_get(init, "has_context"))) {
        c->first.fd = CONTEXT_FD;
        c->first.len = (size_t)context_len;
        c->first.pack = format && strcmp(format, "pack") == 0;
        if (c->first.pack && json_is_true(json_object_get(init, "has_data"))) {
            c->first.data_fd = DATA_FD;
            c->first.data_len = data_len > 0 ? (size_t)data_len : 0;
        }
    }
    c->has_search_cache = json_is_true(json_object_get(init, "has_search_cache"));
    c->output_limit = output_limit ? (size_t)output_limit : 20000;
    if (c->output_limit > FRAME_MAX / 8) /* 4 UTF-8 bytes, JSON escapes: stay in a frame */
        c->output_limit = FRAME_MAX / 8;
    c->memory_limit = (size_t)memory_limit;
    c->cell_timeout = json_number_value(json_object_get(init, "cell_timeout"));
    c->unsafe_no_sandbox = json_is_true(json_object_get(init, "unsafe_no_sandbox"));
    c->skip_landlock = json_is_true(json_object_get(init, "skip_landlock"));
    json_int_t preloaded = json_integer_value(json_object_get(init, "preloaded"));
    if (preloaded < 0 || (size_t)preloaded > c->n_held || (preloaded && c->first.fd >= 0)) {
        snprintf(err, errlen, "the init frame names inputs this process does not hold");
        return -1;
    }
    c->preloaded = (size_t)preloaded;
    const char *alias = json_string_value(json_object_get(init, "first_alias"));
    snprintf(c->first_alias, sizeof c->first_alias, "%s", alias ? alias : "");
    c->frame_max = FRAME_MAX;
    return 0;
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
        python_error(err, errlen, what);
        return -1;
    }
    Py_DECREF(module);
    return 0;
}

static int preload_modules(char *err, size_t errlen)
{
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++)
        if (import_module(sandbox_allowed_modules[i], err, errlen))
            return -1;
    for (size_t i = 0; i < sizeof helper_modules / sizeof helper_modules[0]; i++)
        if (import_module(helper_modules[i], err, errlen))
            return -1;
    return 0;
}

/* The glue runs in a dict of its own that no module holds: model code
 * cannot reach it through sys.modules, its functions' code cannot be
 * replaced (the audit hook) and the dict is put back before every cell
 * (repl_restore). The import guard counts it as library code. */
static int load_glue(child *c, char *err, size_t errlen)
{
    PyObject *dict = PyDict_New();
    PyObject *name = PyUnicode_FromString("_rlm_glue");
    c->glue = dict;
    int ok = dict && name && PyDict_SetItemString(dict, "__builtins__", c->builtins) == 0 &&
             PyDict_SetItemString(dict, "__name__", name) == 0 &&
             repl_set_library_globals(dict) == 0;
    Py_XDECREF(name);
    if (!ok)
        goto fail;
    PyObject *code = Py_CompileString(glue_source, "<rlm-glue>", Py_file_input);
    if (!code)
        goto fail;
    PyObject *rc = PyEval_EvalCode(code, dict, dict);
    Py_DECREF(code);
    if (!rc)
        goto fail;
    Py_DECREF(rc);
    c->compile_cell = PyDict_GetItemString(dict, "compile_cell");
    c->format_exception = PyDict_GetItemString(dict, "format_exception");
    c->final_literal = PyDict_GetItemString(dict, "final_literal");
    c->parse_input = PyDict_GetItemString(dict, "parse_input");
    if (!c->compile_cell || !c->format_exception || !c->final_literal || !c->parse_input) {
        snprintf(err, errlen, "the REPL glue is incomplete");
        return -1;
    }
    Py_INCREF(c->compile_cell);
    Py_INCREF(c->format_exception);
    Py_INCREF(c->final_literal);
    Py_INCREF(c->parse_input);
    return 0;
fail:
    python_error(err, errlen, "cannot load the REPL glue");
    return -1;
}

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
    int input_error;            /* context_finish failed on the input itself (bad JSON) */
} context_load;

static void *copy_ascii_main(void *arg)
{
    context_load *cl = arg;
    unsigned char *dst = PyUnicode_1BYTE_DATA(cl->text);
    const size_t block = 64 * 1024;
    size_t released = 0;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t mask = page > 0 ? (uintptr_t)page - 1 : 4095;
    for (size_t done = 0; done < cl->len; done += block) {
        size_t n = cl->len - done < block ? cl->len - done : block;
        memcpy(dst + done, cl->src + done, n);
        unsigned char high = 0;
        for (size_t i = 0; i < n; i++)
            high |= dst[done + i];
        if (high & 0x80) {
            cl->non_ascii = 1;
            break;
        }
        if (cl->release && done + n - released >= RELEASE_BLOCK) {
            /* Unmodified pages of a read-only mapping: dropping them only
             * leaves our page tables; the page cache keeps the file. */
            uintptr_t from = ((uintptr_t)(cl->src + released) + mask) & ~mask;
            uintptr_t to = (uintptr_t)(cl->src + done + n) & ~mask;
            if (to > from)
                madvise((void *)from, to - from, MADV_DONTNEED);
            released = done + n;
        }
    }
    return NULL;
}

static void *map_fd(int fd, size_t len)
{
    int flags = MAP_PRIVATE | (len <= POPULATE_MAX ? MAP_POPULATE : 0);
    void *map = mmap(NULL, len, PROT_READ, flags, fd, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (len > POPULATE_MAX)
        madvise(map, len, MADV_SEQUENTIAL);
    return map;
}

/* The fd must hold at least len bytes: reading a mapping past the end of a
 * file would be SIGBUS. */
static int check_size(int fd, size_t len, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s fd: %s", what, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size < (unsigned long long)len) {
        snprintf(err, errlen, "the %s file holds %lld bytes, %zu were announced", what,
                 (long long)st.st_size, len);
        return -1;
    }
    return 0;
}

/* Maps the input (and its data) and, for a single str, starts filling it:
 * on a thread when `threaded`, else at once. */
static int context_begin(context_load *cl, const input_spec *in, int threaded, char *err,
                         size_t errlen)
{
    memset(cl, 0, sizeof *cl);
    cl->in = *in;
    cl->kind = INGEST_STR;
    if (in->fd < 0)
        return 0;
    if (check_size(in->fd, in->len, "context", err, errlen) != 0 ||
        (in->data_fd >= 0 && check_size(in->data_fd, in->data_len, "context data", err,
                                        errlen) != 0))
        return -1;
    cl->map_len = in->len;
    if (cl->map_len && !(cl->map = map_fd(in->fd, cl->map_len)) && in->pack) {
        snprintf(err, errlen, "cannot map the context pack: %s", strerror(errno));
        return -1;
    }
    if (in->data_fd >= 0 && in->data_len) {
        cl->data_map_len = in->data_len;
        if (!(cl->data_map = map_fd(in->data_fd, in->data_len))) {
            snprintf(err, errlen, "cannot map the context data: %s", strerror(errno));
            return -1;
        }
    }
    if (in->pack) {
        if (pack_read(cl->map, cl->map_len, cl->data_map, cl->data_map_len, &cl->kind,
                      &cl->docs, &cl->n_docs, err, errlen) != 0)
            return -1;
        cl->format = pack_format(cl->map, cl->map_len);
        if (cl->kind != INGEST_STR)
            return 0; /* several documents: decoded one by one in context_finish */
        if (cl->n_docs != 1) {
            snprintf(err, errlen, "a str context pack holds %zu documents", cl->n_docs);
            return -1;
        }
        cl->src = (const unsigned char *)cl->docs[0].data;
        cl->len = cl->docs[0].len;
        cl->release = 1;
    } else {
        cl->docs = calloc(1, sizeof *cl->docs);
        if (!cl->docs) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        cl->n_docs = 1;
        cl->docs[0].name = "context";
        cl->docs[0].data = cl->map;
        cl->docs[0].len = cl->map ? cl->map_len : 0;
        cl->src = cl->map;
        cl->len = cl->docs[0].len;
        cl->release = 1;
    }
    if (cl->len == 0 || !cl->src)
        return 0;
    cl->text = PyUnicode_New((Py_ssize_t)cl->len, 127);
    if (!cl->text) {
        PyErr_Clear();
        return 0; /* context_finish decodes it the slow way */
    }
    if (!threaded)
        copy_ascii_main(cl);
    else if (pthread_create(&cl->thread, NULL, copy_ascii_main, cl) == 0)
        cl->copying = 1;
    else
        Py_CLEAR(cl->text);
    return 0;
}

static PyObject *read_context(int fd, size_t len, char *err, size_t errlen)
{
    PyObject *text = NULL;
    char *bytes = PyMem_Malloc(len);
    if (!bytes)
        return PyErr_NoMemory();
    if (read_full(fd, bytes, len) == 0)
        text = PyUnicode_DecodeUTF8(bytes, (Py_ssize_t)len, "replace");
    else
        snprintf(err, errlen, "cannot read the context: %s",
                 errno ? strerror(errno) : "short read");
    PyMem_Free(bytes);
    return text;
}

/* One str: the ASCII copy, or a proper decode. */
static PyObject *finish_str(context_load *cl, char *err, size_t errlen)
{
    PyObject *text = NULL;
    if (cl->copying) {
        pthread_join(cl->thread, NULL);
        cl->copying = 0;
    }
    if (cl->text) {
        if (!cl->non_ascii)
            text = cl->text;
        else
            Py_DECREF(cl->text);
        cl->text = NULL;
    }
    if (!text && (cl->len == 0 || (!cl->src && cl->in.pack)))
        text = PyUnicode_New(0, 0);
    else if (!text && cl->src)
        text = PyUnicode_DecodeUTF8((const char *)cl->src, (Py_ssize_t)cl->len, "replace");
    else if (!text) {
        text = read_context(cl->in.fd, cl->in.len, err, errlen);
        /* Not mappable (a pipe): the helpers read the str's UTF-8 form. */
        Py_ssize_t n;
        const char *utf8 = text ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
        if (utf8) {
            cl->docs[0].data = utf8;
            cl->docs[0].len = (size_t)n;
        }
    }
    return text;
}

/* Several documents: a dict name → str, or a list of str, in pack order. */
static PyObject *finish_docs(context_load *cl)
{
    PyObject *result = cl->kind == INGEST_DICT ? PyDict_New() : PyList_New(0);
    for (size_t i = 0; result && i < cl->n_docs; i++) {
        const ingest_doc *d = &cl->docs[i];
        PyObject *text = PyUnicode_DecodeUTF8(d->data ? d->data : "", (Py_ssize_t)d->len, "replace");
        int rc = -1;
        if (text && cl->kind == INGEST_DICT) {
            PyObject *key = PyUnicode_DecodeUTF8(d->name, (Py_ssize_t)strlen(d->name), "replace");
            rc = key ? PyDict_SetItem(result, key, text) : -1;
            Py_XDECREF(key);
        } else if (text) {
            rc = PyList_Append(result, text);
        }
        Py_XDECREF(text);
        if (rc < 0)
            Py_CLEAR(result);
    }
    return result;
}

/* 1 when the input was a pack (its documents' names point into the mapping). */
static int c_is_pack(const context_load *cl)
{
    return cl->n_docs > 0 && cl->docs[0].name &&
           cl->docs[0].name >= (const char *)cl->map &&
           cl->docs[0].name < (const char *)cl->map + cl->map_len;
}

/* Marks the ASCII documents; with redirect, points them at their str (the
 * bytes are identical) and drops the mappings nothing reads any more. A
 * parsed input keeps its mappings: its strs go once the values are built. */
static void context_settle(context_load *cl, PyObject *context, int redirect)
{
    int all_ascii = 1;
    for (size_t i = 0; i < cl->n_docs; i++) {
        PyObject *text = NULL;
        if (cl->kind == INGEST_STR)
            text = context;
        else if (cl->kind == INGEST_LIST)
            text = PyList_GET_ITEM(context, (Py_ssize_t)i);
        else {
            PyObject *key = PyUnicode_DecodeUTF8(cl->docs[i].name,
                                                 (Py_ssize_t)strlen(cl->docs[i].name), "replace");
            text = key ? PyDict_GetItem(context, key) : NULL;
            Py_XDECREF(key);
        }
        PyErr_Clear();
        if (text && PyUnicode_IS_ASCII(text) &&
            (size_t)PyUnicode_GET_LENGTH(text) == cl->docs[i].len) {
            cl->ascii[i] = 1;
            if (redirect)
                cl->docs[i].data = cl->docs[i].len ? (const char *)PyUnicode_1BYTE_DATA(text) : NULL;
            cl->docs[i].chars = cl->docs[i].len;
        } else if (cl->docs[i].len) {
            all_ascii = 0;
        }
    }
    if (!all_ascii || !redirect)
        return;
    if (cl->data_map)
        munmap(cl->data_map, cl->data_map_len);
    cl->data_map = NULL;
    if (!cl->map)
        return;
    if (!c_is_pack(cl)) {
        munmap(cl->map, cl->map_len);   /* raw bytes: the str holds them all */
        cl->map = NULL;
        return;
    }
    /* A pack: the names stay (the helpers name documents); an inline pack's
     * bytes start at a page boundary after them and go. */
    long page = sysconf(_SC_PAGESIZE);
    size_t names_end = 0;
    for (size_t i = 0; i < cl->n_docs; i++) {
        size_t end = (size_t)(cl->docs[i].name - (const char *)cl->map) + strlen(cl->docs[i].name) + 1;
        if (end > names_end)
            names_end = end;
    }
    size_t from = page > 0 ? (names_end + (size_t)page - 1) / (size_t)page * (size_t)page : cl->map_len;
    if (from < cl->map_len)
        munmap((char *)cl->map + from, cl->map_len - from);
    cl->map_len = from;
}

static void close_input_fds(context_load *cl)
{
    if (cl->in.fd >= 0)
        close(cl->in.fd);
    if (cl->in.data_fd >= 0)
        close(cl->in.data_fd);
    cl->in.fd = cl->in.data_fd = -1;
}

/* Characters of an input's text over all its documents, for the host. */
static size_t context_chars(PyObject *context)
{
    if (PyUnicode_Check(context))
        return (size_t)PyUnicode_GET_LENGTH(context);
    size_t total = 0;
    PyObject *values = PyDict_Check(context) ? PyDict_Values(context) : Py_NewRef(context);
    Py_ssize_t n = values ? PyList_GET_SIZE(values) : 0;
    for (Py_ssize_t i = 0; i < n; i++)
        total += (size_t)PyUnicode_GET_LENGTH(PyList_GET_ITEM(values, i));
    Py_XDECREF(values);
    return total;
}

/* A JSON or JSON lines input: the glue's parse_input turns the text (one
 * str, or a dict name -> str) into the value and its summary. The text is
 * dropped afterwards: the helpers read the mapped bytes. A document that is
 * not JSON is an input error (cl->input_error), with the line and column. */
static PyObject *parse_structured(context_load *cl, PyObject *parse_input, PyObject *text,
                                  char *err, size_t errlen)
{
    const char *fmt = cl->format == INGEST_JSONL ? "jsonl" : "json";
    const char *name = cl->n_docs && cl->docs[0].name ? cl->docs[0].name : "the input";
    PyObject *pair = PyObject_CallFunction(parse_input, "Oss", text, fmt, name);
    PyObject *value = NULL;
    if (!pair) {
        PyObject *exc = take_exception();
        PyObject *type = exc ? PyObject_GetAttrString((PyObject *)Py_TYPE(exc), "__name__") : NULL;
        cl->input_error = type && PyUnicode_CompareWithASCIIString(type, "InputError") == 0;
        PyObject *msg = exc ? PyObject_Str(exc) : NULL;
        const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
        if (cl->input_error && m)
            snprintf(err, errlen, "%s", m);
        else
            snprintf(err, errlen, "cannot parse the input: %s: %s",
                     exc ? Py_TYPE(exc)->tp_name : "error", m ? m : "(no message)");
        Py_XDECREF(type);
        Py_XDECREF(msg);
        Py_XDECREF(exc);
        PyErr_Clear();
        return NULL;
    }
    if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
        value = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
        cl->summary = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    } else {
        snprintf(err, errlen, "cannot parse the input: the glue returned no value");
    }
    Py_DECREF(pair);
    return value;
}

/* Waits for the copy and builds the object; the documents then point at what
 * the helpers read (the str, or the mapping). A JSON or JSON lines input is
 * parsed with parse_input (the glue's). Returns the object, or NULL with err
 * set (cl->input_error when the input itself is at fault). The input's
 * descriptors are closed either way. */
static PyObject *context_finish(context_load *cl, PyObject *parse_input, char *err, size_t errlen)
{
    PyObject *context = cl->kind == INGEST_STR ? finish_str(cl, err, errlen) : finish_docs(cl);
    close_input_fds(cl);
    if (!context) {
        if (PyErr_Occurred())
            python_error(err, errlen, "cannot load the context");
        return NULL;
    }
    if (cl->n_docs && !(cl->ascii = calloc(cl->n_docs, 1))) {
        Py_DECREF(context);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cl->chars = context_chars(context);
    int parse = cl->format != INGEST_TEXT && parse_input;
    if (cl->n_docs)
        context_settle(cl, context, !parse);
    if (!parse)
        return context;
    if (!cl->map && cl->kind == INGEST_STR)
        cl->kept_text = Py_NewRef(context); /* the helpers read its UTF-8 form */
    PyObject *value = parse_structured(cl, parse_input, context, err, errlen);
    Py_DECREF(context);
    return value;
}

/* Gives back what a load that failed holds (an input the host adds later;
 * a failed first input ends the process). */
static void context_discard(context_load *cl)
{
    if (cl->copying)
        pthread_join(cl->thread, NULL);
    Py_CLEAR(cl->text);
    Py_CLEAR(cl->summary);
    Py_CLEAR(cl->kept_text);
    close_input_fds(cl);
    if (cl->map)
        munmap(cl->map, cl->map_len);
    if (cl->data_map)
        munmap(cl->data_map, cl->data_map_len);
    free(cl->docs);
    free(cl->ascii);
    memset(cl, 0, sizeof *cl);
}

/* A parsed input's summary for the host (the glue's JSON text), or NULL. */
static json_t *summary_json(const context_load *cl)
{
    const char *text = cl->summary ? PyUnicode_AsUTF8(cl->summary) : NULL;
    json_t *summary = text ? json_loads(text, 0, NULL) : NULL;
    PyErr_Clear();
    return summary;
}

/* Binds name to value in the namespace and protects it: it is put back
 * before and after every cell. 0, or -1 with a Python error set. */
static int protect_name(child *c, const char *name, PyObject *value)
{
    PyObject *key = PyUnicode_FromString(name);
    int rc = key && repl_restore_protect(c->restore, key, value) == 0 &&
                     repl_restore_bind(c->restore, key, value) == 0
                 ? 0
                 : -1;
    Py_XDECREF(key);
    return rc;
}

/* The namespace, from the policy table: the REPL functions (put back after
 * every cell), the helpers (bound once: the model may rebind them), and the
 * first input as `context` and `context_0` (and the host's alias for it),
 * registered for the helpers' context= argument. The answer dict comes with
 * the first restore. */
static int setup_namespace(child *c, PyObject *context, const context_load *cl, char *err,
                           size_t errlen)
{
    if (repl_module_configure(c->fd, c->frame_max, c->output_limit, c->ns))
        goto fail;
    for (size_t i = 0; i < sandbox_repl_names_count; i++) {
        const sandbox_repl_name *n = &sandbox_repl_names[i];
        PyObject *fn = NULL, *helper = NULL;
        int rc = 0;
        if (n->kind == SANDBOX_NAME_FUNCTION) {
            fn = repl_api_function(n->name);
            rc = fn ? protect_name(c, n->name, fn) : -1;
        } else if (n->kind == SANDBOX_NAME_HELPER) {
            helper = repl_helpers_function(n->name);
            fn = helper ? repl_input_helper(n->name, helper) : NULL;
            rc = fn ? PyDict_SetItemString(c->ns, n->name, fn) : -1;
        }
        Py_XDECREF(fn);
        Py_XDECREF(helper);
        if (rc < 0)
            goto fail;
    }
    const char *names[3] = {"context", "context_0", c->first_alias};
    for (int i = 0; i < 3; i++)
        if (names[i][0] && protect_name(c, names[i], context) < 0)
            goto fail;
    if (repl_add_input(context, cl->kind, cl->docs, cl->n_docs, cl->ascii) != 0)
        goto fail;
    char timeout_text[96];
    snprintf(timeout_text, sizeof timeout_text, "TimeoutError: cell exceeded %g s wall time",
             c->cell_timeout);
    c->timeout_text = PyUnicode_FromString(timeout_text);
    c->cancel_text = PyUnicode_FromString("Cancelled: the cell was cancelled by the user");
    if (!c->timeout_text || !c->cancel_text)
        goto fail;
    return 0;
fail:
    python_error(err, errlen, "cannot set up the REPL namespace");
    return -1;
}

/* ---- cells ---- */

/* After a request that ran model code: everything back, or the end of this
 * child (the host starts a fresh one) when that cannot be done. */
static void end_request(child *c)
{
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
}

/* Writes exc (a traceback from the model's first frame; taken) to the
 * capture. Returns 1 if it was the host's SIGINT or SIGUSR1; the last
 * line then says the cell timed out, or that the user cancelled it. */
static int report_exception(child *c, PyObject *exc)
{
    int interrupted = exc && PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt);
    PyObject *why = cancel_requested ? c->cancel_text : c->timeout_text;
    PyObject *text = exc ? PyObject_CallFunctionObjArgs(c->format_exception, exc, why, NULL)
                         : NULL;
    if (!text) {
        PyErr_Clear();
        text = interrupted ? Py_NewRef(why)
                           : PyUnicode_FromFormat("%s (the traceback could not be formatted)\n",
                                                  exc ? Py_TYPE(exc)->tp_name : "Error");
    }
    if (text && repl_capture_write(text) < 0)
        PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(exc);
    PyErr_Clear();
    return interrupted;
}

/* The text of `FINAL(some words)` when exc is the NameError or SyntaxError
 * those words raised (the glue's final_literal); NULL otherwise. */
static PyObject *literal_final(child *c, PyObject *exc, PyObject *src)
{
    PyObject *words = PyObject_CallFunctionObjArgs(c->final_literal, exc, src, NULL);
    PyErr_Clear();
    if (words && !PyUnicode_Check(words))
        Py_CLEAR(words);
    return words;
}

/* Runs compiled code; shows the value of a trailing expression like a REPL. */
static int run_code(child *c, PyObject *pair)
{
    PyObject *body = PyTuple_GET_ITEM(pair, 0), *last = PyTuple_GET_ITEM(pair, 1);
    PyObject *rc = PyEval_EvalCode(body, c->ns, c->ns);
    if (!rc)
        return -1;
    Py_DECREF(rc);
    if (last == Py_None)
        return 0;
    PyObject *value = PyEval_EvalCode(last, c->ns, c->ns);
    if (!value)
        return -1;
    int status = 0;
    if (value != Py_None) {
        PyObject *repr = PyObject_Repr(value);
        status = repr && repl_capture_write(repr) == 0 && repl_capture_write_utf8("\n") == 0
                     ? 0
                     : -1;
        Py_XDECREF(repr);
    }
    Py_DECREF(value);
    return status;
}

/* The final answer of the cell: FINAL/FINAL_VAR first, else the answer dict
 * when ready is true (ready is then reset, so the next turn does not find a
 * stale answer). NULL without error when there is none. Runs while the cell
 * still counts as model code: __bool__ of `ready` and __str__ of `content`
 * are the model's. The lookups themselves run none: the namespace and the
 * dict are cleaned to exact-str keys first, and only an exact dict counts
 * (the restore replaces anything else). */
static PyObject *cell_final_answer(child *c)
{
    PyObject *final = repl_take_final();
    if (final || PyErr_Occurred())
        return final;
    if (repl_restore_clean_dict(c->restore, c->ns) < 0)
        return NULL;
    PyObject *answer = PyDict_GetItemString(c->ns, "answer");
    if (!answer || !PyDict_CheckExact(answer) ||
        repl_restore_clean_dict(c->restore, answer) < 0)
        return NULL;
    Py_INCREF(answer);
    PyObject *ready = PyDict_GetItemString(answer, "ready");
    Py_XINCREF(ready);
    int is_ready = ready ? PyObject_IsTrue(ready) : 0;
    if (is_ready > 0 && repl_restore_clean_dict(c->restore, answer) == 0) {
        PyObject *content = PyDict_GetItemString(answer, "content");
        Py_XINCREF(content);
        PyObject *text = content ? PyObject_Str(content) : PyUnicode_New(0, 0);
        final = text ? PyUnicode_FromObject(text) : NULL; /* an exact str */
        Py_XDECREF(text);
        Py_XDECREF(content);
        if (final && (repl_restore_clean_dict(c->restore, answer) < 0 ||
                      PyDict_SetItemString(answer, "ready", Py_False) < 0))
            Py_CLEAR(final);
    }
    Py_XDECREF(ready);
    Py_DECREF(answer);
    return final;
}

static json_t *result_frame(child *c, int raised, int interrupted, PyObject *final,
                            const char *how)
{
    unsigned long long total = 0;
    PyObject *output = repl_capture_text(&total);
    json_t *frame = json_object();
    json_t *out_json = output ? json_utf8(output) : json_string("[sandbox] output lost");
    json_t *final_json = final ? json_utf8(final) : json_null();
    Py_XDECREF(output);
    PyErr_Clear();
    if (!frame || !out_json || !final_json) {
        json_decref(frame);
        json_decref(out_json);
        json_decref(final_json);
        return NULL;
    }
    json_object_set_new(frame, "type", json_string("result"));
    json_object_set_new(frame, "output", out_json);
    json_object_set_new(frame, "output_chars", json_integer((json_int_t)total));
    json_object_set_new(frame, "raised", json_boolean(raised));
    json_object_set_new(frame, "interrupted", json_boolean(interrupted));
    json_object_set_new(frame, "cancelled", json_boolean(interrupted && cancel_requested));
    json_object_set_new(frame, "final_answer", final_json);
    if (how && final)
        json_object_set_new(frame, "final_how", json_string(how));
    PyObject *variables = repl_variables_line();
    json_t *variables_json = variables ? json_utf8(variables) : NULL;
    Py_XDECREF(variables);
    PyErr_Clear();
    if (variables_json)
        json_object_set_new(frame, "variables", variables_json);
    if (frame_encoded_size(frame) > c->frame_max) {
        /* Only a giant final answer can get here; the output is bounded. */
        char note[160];
        snprintf(note, sizeof note,
                 "\n[sandbox] the final answer is too large to return (%zu bytes)\n",
                 json_string_length(final_json));
        json_object_set_new(frame, "final_answer", json_null());
        json_object_set_new(frame, "raised", json_true());
        buf b;
        buf_init(&b, c->frame_max);
        json_t *old = json_object_get(frame, "output");
        if (buf_append(&b, json_string_value(old), json_string_length(old)) == 0 &&
            buf_puts(&b, note) == 0)
            json_object_set_new(frame, "output", json_stringn(b.data, b.len));
        buf_free(&b);
    }
    return frame;
}

/* One cell. The request boundaries (repl_restore) surround the model's
 * code: the state it may have left is released and put back first, the
 * collector is on only while model code runs, and everything is put back
 * before the result is sent. */
static json_t *run_cell(child *c, const char *code, size_t len)
{
    repl_capture_reset();
    Py_XDECREF(repl_take_final());
    PyErr_Clear();
    repl_restore_begin(c->restore);
    drain_signals();
    install_cancel_handler();
    c->cell_number++;
    int raised = 0, interrupted = 0;
    const char *how = NULL;
    PyObject *final = NULL, *pair = NULL, *exc = NULL, *final_error = NULL;
    PyObject *src = PyUnicode_DecodeUTF8(code, (Py_ssize_t)len, "replace");
    PyObject *filename = PyUnicode_FromFormat("<cell-%lu>", c->cell_number);
    if (src && filename)
        pair = PyObject_CallFunction(c->compile_cell, "OOk", src, filename, c->cell_number);
    if (pair && (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 3)) {
        Py_CLEAR(pair);
        PyErr_SetString(PyExc_SystemError, "the REPL glue returned something unexpected");
    }
    if (pair)
        repl_set_cell_literals(PyTuple_GET_ITEM(pair, 2));
    PyGC_Enable();
    if (!pair || run_code(c, pair) < 0) {
        raised = 1;
        exc = take_exception();
    }
    final = cell_final_answer(c);
    if (!final && PyErr_Occurred())
        final_error = take_exception();
    repl_restore_quiesce(c->restore);
    if (exc && !final && !final_error && src && (final = literal_final(c, exc, src))) {
        how = "final_literal";
        raised = 0;
        Py_CLEAR(exc);
        PyObject *note = PyUnicode_FromFormat("[rlm] FINAL(%U): these words are no variable; "
                                              "they are the final answer as written.\n", final);
        if (!note || repl_capture_write(note) < 0)
            PyErr_Clear();
        Py_XDECREF(note);
    }
    if (exc)
        interrupted = report_exception(c, exc);
    if (final_error) {
        raised = 1;
        interrupted |= report_exception(c, final_error);
    }
    repl_set_cell_literals(NULL);
    end_request(c);
    json_t *frame = result_frame(c, raised, interrupted, final, how);
    Py_XDECREF(final);
    Py_XDECREF(pair);
    Py_XDECREF(src);
    Py_XDECREF(filename);
    PyErr_Clear();
    return frame;
}

/* str() of a variable, for FINAL_VAR(name) written in the model's text: a
 * request that runs model code (the value's __str__), bounded like a cell. */
static json_t *get_var(child *c, const char *name, size_t len)
{
    repl_restore_begin(c->restore);
    drain_signals();
    int found = 0;
    PyObject *value = NULL, *text = NULL;
    PyObject *key = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "replace");
    PyObject *stripped = key ? PyObject_CallMethod(key, "strip", "s", " \t\r\n'\"`") : NULL;
    /* The namespace has exact-str keys only (the end of the last request
     * saw to it), and stripped is one: the lookup runs no model code. */
    PyObject *var = stripped ? PyDict_GetItemWithError(c->ns, stripped) : NULL;
    if (var) {
        Py_INCREF(var);
        PyGC_Enable();
        text = PyObject_Str(var);
        repl_restore_quiesce(c->restore);
        value = text ? PyUnicode_FromObject(text) : NULL;
        found = value != NULL;
        repl_restore_bury(c->restore, var);
        repl_restore_bury(c->restore, text);
        Py_DECREF(var);
        Py_XDECREF(text);
    }
    if (!value) {
        if (PyErr_Occurred()) {
            char err[512];
            python_error(err, sizeof err, "Error: str() of the variable failed");
            value = PyUnicode_FromString(err);
        } else {
            value = PyUnicode_FromFormat("Error: there is no variable named %R in the REPL",
                                         stripped ? stripped : key);
        }
    }
    json_t *value_json = value ? json_utf8(value) : NULL;
    PyErr_Clear();
    json_t *frame = json_pack("{s:s, s:b, s:o*}", "type", "var", "found", found, "value",
                              value_json);
    if (frame && frame_encoded_size(frame) > c->frame_max) {
        json_object_set_new(frame, "found", json_false());
        json_object_set_new(frame, "value",
                            json_string("Error: the value is too large to return"));
    }
    Py_XDECREF(value);
    Py_XDECREF(stripped);
    Py_XDECREF(key);
    end_request(c);
    return frame;
}

/* A name the host may bind (sandbox_add_input, sandbox_set_var): an
 * identifier of at most 64 characters that is no fixed name of the policy
 * table (context, answer, llm_query, grep, ...: numbered ones such as
 * context_1 or history_0 are the host's to bind), not bound already as an
 * input or a protected value (repl_restore's), and not a dunder. New
 * reference, or NULL with a message in err. */
static PyObject *bindable_name(child *c, json_t *name, char *err, size_t errlen)
{
    const char *text = json_string_value(name);
    size_t len = json_string_length(name);
    const sandbox_repl_name *entry = text ? sandbox_policy_find(text) : NULL;
    if (!text || len == 0 || len > 64 || (len >= 2 && text[0] == '_' && text[1] == '_') ||
        (entry && !entry->numbered)) {
        snprintf(err, errlen, "'%.64s' cannot be bound by the host", text ? text : "");
        return NULL;
    }
    PyObject *key = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
    int taken = key ? repl_restore_is_protected(c->restore, key) : -1;
    if (!key || taken != 0 || PyUnicode_IsIdentifier(key) != 1) {
        PyErr_Clear();
        snprintf(err, errlen, "'%.64s' %s", text,
                 taken > 0 ? "is already a name of the REPL or an input"
                           : "is not a Python identifier");
        Py_XDECREF(key);
        return NULL;
    }
    return key;
}

/* An input a zygote loaded for its children: each forked child binds the
 * first `preloaded` of them (sandbox-protocol.md, "Forked children"). */
struct held_input {
    PyObject *name;   /* the variable (an exact str) */
    PyObject *obj;
    context_load *cl; /* what the helpers read, for the process's life */
};

/* Loads the input an add_input request announces, from the descriptors in
 * the byte that follows it: on the main thread (no thread can be started
 * after the lockdown), under the memory limit set at start-up. Returns 0
 * with *key, *obj and *cl set (the caller owns them); -1 with err (and
 * *input_error when the input itself is at fault); -2 when the byte with
 * the descriptors did not come (out of step with the host). */
static int load_requested(child *c, json_t *request, PyObject **key, PyObject **obj,
                          context_load **cl, int *input_error, char *err, size_t errlen)
{
    int fds[2] = {-1, -1};
    int want = json_is_true(json_object_get(request, "has_context")) +
               json_is_true(json_object_get(request, "has_data"));
    int got = fd_recv(c->fd, NULL, fds, 2);
    if (got < 0)
        return -2;
    json_int_t len = json_integer_value(json_object_get(request, "context_len"));
    json_int_t data_len = json_integer_value(json_object_get(request, "data_len"));
    const char *format = json_string_value(json_object_get(request, "context_format"));
    input_spec in = {.fd = -1, .data_fd = -1};
    *key = bindable_name(c, json_object_get(request, "name"), err, errlen);
    *obj = NULL;
    *cl = NULL;
    int rc = -1;
    if (!*key)
        goto done;
    if (got != want || len < 0 || data_len < 0) {
        snprintf(err, errlen, "the input's descriptors did not arrive");
        goto done;
    }
    if (want > 0) {
        in.fd = fds[0];
        in.len = (size_t)len;
        in.pack = format && strcmp(format, "pack") == 0;
        fds[0] = -1;
        if (want > 1) {
            in.data_fd = fds[1];
            in.data_len = (size_t)data_len;
            fds[1] = -1;
        }
    }
    *cl = calloc(1, sizeof **cl); /* kept for the process's life: the helpers read it */
    if (!*cl) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (context_begin(*cl, &in, 0, err, errlen) != 0 ||
        !(*obj = context_finish(*cl, c->parse_input, err, errlen))) {
        *input_error = (*cl)->input_error;
        goto done;
    }
    rc = 0;
done:
    if (rc != 0 && *cl) {
        context_discard(*cl);
        free(*cl);
        *cl = NULL;
    } else if (rc != 0) {
        if (in.fd >= 0)
            close(in.fd);
        if (in.data_fd >= 0)
            close(in.data_fd);
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rc != 0)
        Py_CLEAR(*key);
    PyErr_Clear();
    return rc;
}

/* Binds an input under key, protected like `context` (put back after every
 * cell), and registers it for the helpers' context= argument. 0, or -1
 * with a Python error set. */
static int bind_input(child *c, PyObject *key, PyObject *obj, const context_load *cl)
{
    return repl_add_input(obj, cl->kind, cl->docs, cl->n_docs, cl->ascii) == 0 &&
                   repl_restore_protect(c->restore, key, obj) == 0 &&
                   repl_restore_bind(c->restore, key, obj) == 0
               ? 0
               : -1;
}

static json_t *input_reply(int ok, const char *err, const context_load *cl, int input_error)
{
    return json_pack("{s:s, s:b, s:s, s:I, s:b, s:o*}", "type", "input_added", "ok", ok,
                     "message", err, "chars", (json_int_t)(ok ? cl->chars : 0), "input_error",
                     input_error, "summary", ok ? summary_json(cl) : NULL);
}

/* A zygote keeps an input under its name, for every child it forks later
 * (their copy-on-write share of it); takes *key and *obj on success. 0, or
 * -1 with err (a name it holds already, out of memory). */
static int hold_input(child *c, PyObject **key, PyObject **obj, context_load *cl, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < c->n_held; i++)
        if (PyUnicode_Compare(c->held[i].name, *key) == 0) {
            snprintf(err, errlen, "'%s' is already an input", PyUnicode_AsUTF8(*key));
            return -1;
        }
    struct held_input *grown = realloc(c->held, (c->n_held + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->held = grown;
    c->held[c->n_held++] = (struct held_input){*key, *obj, cl};
    *key = *obj = NULL;
    /* Out of the collector's reach, like the rest of the zygote. */
    repl_restore_freeze(c->restore);
    return 0;
}

/* An add_input request: the input is loaded, then bound (a child:
 * sandbox_add_input) or kept for the children to come (a zygote:
 * sandbox_factory_add_input). */
static json_t *add_input(child *c, json_t *request, int zygote)
{
    char err[512] = "";
    PyObject *key, *obj;
    context_load *cl;
    int input_error = 0;
    int rc = load_requested(c, request, &key, &obj, &cl, &input_error, err, sizeof err);
    if (rc == -2)
        return NULL; /* out of step with the host */
    if (!zygote)
        drain_signals();
    if (rc == 0 && zygote)
        rc = hold_input(c, &key, &obj, cl, err, sizeof err);
    else if (rc == 0 && bind_input(c, key, obj, cl) < 0) {
        python_error(err, sizeof err, "cannot bind the input");
        rc = -1;
    }
    if (rc != 0 && cl) {
        context_discard(cl);
        free(cl);
        cl = NULL;
    }
    json_t *reply = input_reply(rc == 0, err, cl, input_error);
    Py_XDECREF(obj);
    Py_XDECREF(key);
    PyErr_Clear();
    return reply;
}

/* A JSON value as the Python object json.loads would make (the host's
 * values: a history's list of {"role", "content"} dicts). Depth is bounded
 * by the parser that built the value; strings are repaired UTF-8. */
static PyObject *json_to_py(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return PyUnicode_DecodeUTF8(json_string_value(v), (Py_ssize_t)json_string_length(v),
                                    "replace");
    case JSON_INTEGER:
        return PyLong_FromLongLong(json_integer_value(v));
    case JSON_REAL:
        return PyFloat_FromDouble(json_real_value(v));
    case JSON_TRUE:
        Py_RETURN_TRUE;
    case JSON_FALSE:
        Py_RETURN_FALSE;
    case JSON_ARRAY: {
        PyObject *list = PyList_New((Py_ssize_t)json_array_size(v));
        for (size_t i = 0; list && i < json_array_size(v); i++) {
            PyObject *item = json_to_py(json_array_get(v, i));
            if (!item)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
        return list;
    }
    case JSON_OBJECT: {
        PyObject *dict = PyDict_New();
        const char *k;
        json_t *item;
        json_object_foreach(v, k, item) {
            PyObject *value = dict ? json_to_py(item) : NULL;
            int rc = value ? PyDict_SetItemString(dict, k, value) : -1;
            Py_XDECREF(value);
            if (rc < 0) {
                Py_CLEAR(dict);
                break;
            }
        }
        return dict;
    }
    default:
        Py_RETURN_NONE;
    }
}

/* Binds a value the host gives: a str (a session's answer_1, ...; not
 * protected), or with "json" any JSON value, which "protected" puts back
 * after every cell like an input (a conversation's history_0, ...; binding
 * history_0 binds `history` too). */
static json_t *set_var(child *c, json_t *request)
{
    char err[256] = "";
    drain_signals();
    json_t *value = json_object_get(request, "value");
    int as_json = json_is_true(json_object_get(request, "json"));
    int protect = json_is_true(json_object_get(request, "protected"));
    PyObject *key = bindable_name(c, json_object_get(request, "name"), err, sizeof err);
    PyObject *obj = NULL;
    if (key && as_json)
        obj = json_to_py(value);
    else if (key && json_is_string(value))
        obj = PyUnicode_DecodeUTF8(json_string_value(value), (Py_ssize_t)json_string_length(value),
                                   "replace");
    int ok = obj && repl_restore_bind(c->restore, key, obj) == 0 &&
             (!protect || repl_restore_protect(c->restore, key, obj) == 0);
    /* The contract's alias: `history` is history_0, as `context` is context_0. */
    if (ok && protect && PyUnicode_CompareWithASCIIString(key, "history_0") == 0)
        ok = protect_name(c, "history", obj) == 0;
    if (!ok && key)
        python_error(err, sizeof err, "cannot set the variable");
    Py_XDECREF(obj);
    Py_XDECREF(key);
    PyErr_Clear();
    return json_pack("{s:s, s:b, s:s}", "type", "var_set", "ok", ok, "message", err);
}

/* ---- snapshots: what a question leaves for the next ---- */

/* Maps the descriptor in the byte after a snapshot request: at least len
 * bytes, shared and writable (the host's memfd, sized by it: no write()
 * is needed, RLIMIT_FSIZE is 0) or private and read-only. NULL with err. */
static void *map_snapshot_fd(int fd, size_t len, int writable, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (unsigned long long)st.st_size < (unsigned long long)len ||
        len == 0) {
        snprintf(err, errlen, "the snapshot's descriptor holds fewer bytes than announced");
        return NULL;
    }
    void *map = mmap(NULL, len, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                     writable ? MAP_SHARED : MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the snapshot: %s", strerror(errno));
        return NULL;
    }
    return map;
}

/* What was left out, for the host: [{"reason", "count", "names"}]. */
static json_t *not_carried_json(const repl_snapshot_stats *stats)
{
    static const char *const reasons[REPL_SNAPSHOT_REASONS] = {"not_data", "too_large",
                                                               "too_deep", "cycle"};
    json_t *list = json_array();
    for (int r = 0; list && r < REPL_SNAPSHOT_REASONS; r++) {
        if (!stats->not_carried[r])
            continue;
        json_t *names = json_array();
        PyObject *given = stats->names[r];
        for (Py_ssize_t i = 0; names && given && i < PyList_GET_SIZE(given); i++) {
            PyObject *bytes = repl_utf8_bytes(PyList_GET_ITEM(given, i));
            if (bytes)
                json_array_append_new(names, frame_string(PyBytes_AS_STRING(bytes),
                                                          (size_t)PyBytes_GET_SIZE(bytes)));
            Py_XDECREF(bytes);
            PyErr_Clear();
        }
        json_array_append_new(list, json_pack("{s:s, s:I, s:o*}", "reason", reasons[r], "count",
                                              (json_int_t)stats->not_carried[r], "names", names));
    }
    return list;
}

/* Writes the data variables into the host's memfd (the byte after the
 * frame carries it). No model code runs: the namespace is put back first,
 * and the encoder looks at exact types only. */
static json_t *take_snapshot(child *c, json_t *request)
{
    char err[256] = "";
    int fd = -1;
    if (fd_recv(c->fd, NULL, &fd, 1) != 1)
        return NULL;
    json_int_t max = json_integer_value(json_object_get(request, "max_bytes"));
    repl_snapshot_stats stats = {0};
    json_t *not_carried = NULL;
    int ok = 0;
    void *map = NULL;
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
    if (max <= 0 || (uint64_t)max > SIZE_MAX)
        snprintf(err, sizeof err, "a bad snapshot size");
    else if ((map = map_snapshot_fd(fd, (size_t)max, 1, err, sizeof err)) &&
             repl_snapshot_encode(c->ns, map, (size_t)max, 0, &stats, err, sizeof err) == 0)
        ok = 1;
    if (map)
        munmap(map, (size_t)max);
    close(fd);
    not_carried = ok ? not_carried_json(&stats) : NULL;
    json_t *reply = json_pack("{s:s, s:b, s:s, s:I, s:I, s:o*}", "type", "snapshot_taken", "ok", ok,
                              "message", err, "bytes", (json_int_t)stats.bytes, "carried",
                              (json_int_t)stats.carried, "not_carried", not_carried);
    repl_snapshot_stats_clear(&stats);
    PyErr_Clear();
    return reply;
}

/* The snapshot decoder's binding: a variable of the model's, not protected. */
static int bind_variable(void *userdata, PyObject *name, PyObject *value)
{
    child *c = userdata;
    return repl_restore_bind(c->restore, name, value);
}

/* Binds the variables of the snapshot in the memfd that follows the frame
 * (the data earlier questions left), after validating all of it. */
static json_t *load_snapshot(child *c, json_t *request)
{
    char err[256] = "";
    int fd = -1;
    if (fd_recv(c->fd, NULL, &fd, 1) != 1)
        return NULL;
    json_int_t len = json_integer_value(json_object_get(request, "bytes"));
    size_t bound = 0;
    int ok = 0;
    void *map = NULL;
    if (len <= 0 || (uint64_t)len > SIZE_MAX)
        snprintf(err, sizeof err, "a bad snapshot size");
    else if ((map = map_snapshot_fd(fd, (size_t)len, 0, err, sizeof err)) &&
             repl_snapshot_decode(map, (size_t)len, 0, bind_variable, c, &bound, err,
                                  sizeof err) == 0)
        ok = 1;
    if (map)
        munmap(map, (size_t)len);
    close(fd);
    if (repl_restore_end(c->restore) != 0)
        _exit(3);
    PyErr_Clear();
    return json_pack("{s:s, s:b, s:s, s:I}", "type", "snapshot_loaded", "ok", ok, "message", err,
                     "variables", (json_int_t)bound);
}

/* The report of sandbox_lockdown as [{"name", "label", "active", "detail"}]. */
static json_t *layer_details(const sandbox_lockdown_report *report)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < report->n; i++) {
        const sandbox_layer_state *l = &report->layers[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:b, s:s}", "name", l->name, "label",
                                              l->label[0] ? l->label : l->name, "active",
                                              l->active, "detail", l->detail));
    }
    return list;
}

static int serve(child *c)
{
    for (;;) {
        char err[256];
        json_t *request = NULL;
        int rc = frame_read(c->fd, c->frame_max, &request, err, sizeof err);
        if (rc == FRAME_EOF)
            return 0;
        if (rc != FRAME_READY)
            return 3;
        const char *type = json_string_value(json_object_get(request, "type"));
        json_t *reply = NULL;
        json_t *code = json_object_get(request, "code");
        json_t *name = json_object_get(request, "name");
        if (type && strcmp(type, "exec") == 0 && json_is_string(code))
            reply = run_cell(c, json_string_value(code), json_string_length(code));
        else if (type && strcmp(type, "get_var") == 0 && json_is_string(name))
            reply = get_var(c, json_string_value(name), json_string_length(name));
        else if (type && strcmp(type, "set_var") == 0)
            reply = set_var(c, request);
        else if (type && strcmp(type, "add_input") == 0)
            reply = add_input(c, request, 0);
        else if (type && strcmp(type, "snapshot") == 0)
            reply = take_snapshot(c, request);
        else if (type && strcmp(type, "load_snapshot") == 0)
            reply = load_snapshot(c, request);
        /* The host's request id comes back in the reply: a frame model code
         * forges on fd 3 cannot know it, so the host cannot be fooled into
         * taking it for the answer (and falling out of step). */
        json_t *id = json_object_get(request, "id");
        if (reply && json_is_integer(id))
            json_object_set_new(reply, "id", json_integer(json_integer_value(id)));
        json_decref(request);
        if (!reply)
            return 3; /* protocol violation or out of memory: the host restarts us */
        rc = frame_write(c->fd, reply, c->frame_max, err, sizeof err);
        json_decref(reply);
        if (rc != 0)
            return 3;
    }
}

/* ---- zygote ----
 *
 * Started with "--zygote" by a sandbox factory (src/sandbox/sandbox_spawn.c): does
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
static void zygote_serve(child *c)
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
            json_t *reply = add_input(c, request, 1);
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

/* Python up, ready for the modules: the interpreter, the cancel handler and
 * builtins. */
static int start_interpreter(child *c, char *err, size_t errlen)
{
    if (start_python(err, errlen) != 0)
        return -1;
    if (install_cancel_handler() != 0) {
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
static int arm_repl(child *c, char *err, size_t errlen)
{
    if (repl_install_import_guard() != 0) {
        python_error(err, errlen, "cannot install the import guard");
        return -1;
    }
    /* Armed first: the tables keep what arming replaced (_imp). */
    return repl_restore_arm(c->restore, err, errlen) == 0 && repl_restore_snapshot(c->restore, c->glue, err, errlen) == 0
               ? 0
               : -1;
}

/* What every child does before its lockdown whatever its input, done once:
 * Python, the modules, the glue, the seccomp program (for pid 1: each child
 * is the first process of its PID namespace), the import guard, the
 * restore tables every cell is put back to and the rest of arm_repl. */
static int zygote_prepare(child *c, char *err, size_t errlen)
{
    if (start_interpreter(c, err, errlen) != 0 || preload_modules(err, errlen) != 0 ||
        load_glue(c, err, errlen) != 0)
        return -1;
    /* Without the program (not expected), each child builds its own. */
    char ignored[256];
    sandbox_filter_build(1, &c->filter, ignored, sizeof ignored);
    freeze_heap();
    return arm_repl(c, err, errlen);
}

int main(int argc, char **argv)
{
    struct stat st;
    if (fstat(CHANNEL_FD, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "rlm-sandbox: this program is started by rlm (fd 3 must be its "
                        "socket); it is not meant to be run by hand\n");
        return 2;
    }
    child c = {.fd = CHANNEL_FD};
    char err[1024];
    int zygote = argc > 1 && strcmp(argv[1], "--zygote") == 0;
    if (zygote) {
        if (zygote_prepare(&c, err, sizeof err) != 0)
            send_error_and_exit(c.fd, err);
        json_t *ready = json_pack("{s:s, s:s, s:i}", "type", "zygote_ready", "python",
                                  Py_GetVersion(), "pid", (int)getpid());
        if (!ready || frame_write(c.fd, ready, INIT_FRAME_MAX, err, sizeof err) != 0)
            return 3;
        json_decref(ready);
        zygote_serve(&c); /* returns in a forked child */
    }
    json_t *init = NULL;
    if (frame_read(c.fd, INIT_FRAME_MAX, &init, err, sizeof err) != FRAME_READY)
        return 3;
    int rc = parse_init(&c, init, err, sizeof err);
    json_decref(init);
    if (rc != 0)
        send_error_and_exit(c.fd, err);
    if (!zygote && start_interpreter(&c, err, sizeof err) != 0)
        send_error_and_exit(c.fd, err);
    /* A spawned child imports the modules while a second thread copies the
     * context; a forked one has them already, and perhaps the inputs too
     * (a conversation's zygote loaded them once for all its questions). */
    context_load loaded; /* lives as long as the process: main never returns */
    context_load *first = c.preloaded ? c.held[0].cl : &loaded;
    PyObject *context = c.preloaded ? Py_NewRef(c.held[0].obj) : NULL;
    if (!c.preloaded && context_begin(&loaded, &c.first, !zygote, err, sizeof err) != 0)
        send_error_and_exit(c.fd, err);
    if (!zygote && (preload_modules(err, sizeof err) != 0 || load_glue(&c, err, sizeof err) != 0))
        send_error_and_exit(c.fd, err);
    if (!context && !(context = context_finish(&loaded, c.parse_input, err, sizeof err)))
        send_failure_and_exit(c.fd, err, loaded.input_error);
    if (repl_helpers_configure(first->kind, first->docs, first->n_docs, first->ascii,
                               c.has_search_cache ? CACHE_FD : -1) != 0) {
        python_error(err, sizeof err, "cannot set up the helpers");
        send_error_and_exit(c.fd, err);
    }
    c.context_chars = first->chars;
    rc = setup_namespace(&c, context, first, err, sizeof err);
    Py_DECREF(context); /* the namespace and the restore hold it */
    for (size_t i = 1; rc == 0 && i < c.preloaded; i++)
        if (bind_input(&c, c.held[i].name, c.held[i].obj, c.held[i].cl) < 0) {
            python_error(err, sizeof err, "cannot bind an input");
            rc = -1;
        }
    if (rc != 0 || (!zygote && arm_repl(&c, err, sizeof err) != 0))
        send_error_and_exit(c.fd, err);
    if (repl_restore_end(c.restore) != 0)
        send_error_and_exit(c.fd, "cannot set up the REPL namespace: out of memory");
    /* The threads come last (none can start after the lockdown), so that a
     * forked child's set-up runs single-threaded: with a second thread every
     * copy-on-write fault costs a TLB shoot-down too. A forked child has no
     * allocator helper yet (a spawned one keeps its own); without one it
     * populates arenas itself. */
    py_arena_start_thread();
    if (start_watchdog(c.fd) != 0)
        send_error_and_exit(c.fd, "cannot start the watchdog thread");

    sandbox_lockdown_options lock = {.memory_limit = c.memory_limit,
                                     .unsafe_no_sandbox = c.unsafe_no_sandbox,
                                     .skip_landlock = c.skip_landlock,
                                     .filter = &c.filter};
    if (sandbox_lockdown(&lock, &c.report, c.layers, sizeof c.layers, err, sizeof err) != 0) {
        char msg[1200];
        snprintf(msg, sizeof msg, "lockdown failed: %s", err);
        send_error_and_exit(c.fd, msg);
    }
    json_t *ready = json_pack("{s:s, s:s, s:s, s:I, s:i, s:o, s:o*}", "type", "ready", "layers",
                              c.layers, "python", Py_GetVersion(), "context_chars",
                              (json_int_t)c.context_chars, "pid", (int)getpid(),
                              "layer_details", layer_details(&c.report), "summary",
                              summary_json(first));
    if (!ready || frame_write(c.fd, ready, c.frame_max, err, sizeof err) != 0)
        return 3;
    json_decref(ready);
    /* No Py_Finalize: the host kills or disconnects us, and there is nothing
     * to flush; exiting at once keeps restarts cheap. */
    _exit(serve(&c));
}
