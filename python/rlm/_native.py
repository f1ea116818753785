"""Loading librlm and declaring the C API of include/rlm.h for ctypes.

The package uses nothing but that header. ctypes (standard library) rather
than cffi: no build step and no third-party dependency, the C API is small
and plain (opaque handles, strings, two callbacks, one versioned struct), and every foreign call
already releases the GIL.

Where the library comes from, first found wins:
  1. $RLM_LIBRARY, a path to librlm.so.0 (tests, a build directory);
  2. the copy bundled in this package (a wheel: rlm/_native/), with its
     sandbox, the rlm command and fakelm beside it;
  3. the one recorded by `pip install` when it found an installed rlm
     (rlm/_install.py);
  4. librlm.so.0 from the dynamic loader's search path (an rlm installed
     system-wide).
The library finds its sandbox from its own place, so each of these brings
its own rlm-sandbox.
"""
import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
SONAME = "librlm.so.0"

# rlm_status
OK, NO_ANSWER, ERR_USAGE, ERR_INPUT, ERR_MODEL, ERR_SANDBOX, ERR_NOMEM, ERR_INTERNAL = range(8)


def _candidates():
    env = os.environ.get("RLM_LIBRARY")
    if env:
        return [("$RLM_LIBRARY", env)]
    found = []
    bundled = os.path.join(_HERE, "_native", SONAME)
    if os.path.exists(bundled):
        found.append(("the package's bundled copy", bundled))
    try:
        from . import _install  # written by setup.py when it linked to an installed rlm
        found.append(("the rlm found at install time", _install.LIBRARY))
    except ImportError:
        pass
    found.append(("the system's search path", SONAME))
    return found


def _load():
    errors = []
    for where, path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append("%s (%s): %s" % (path, where, e))
    raise ImportError(
        "rlm: cannot load librlm: " + "; ".join(errors) + ". Install rlm (`cmake --install "
        "build`), install a wheel that bundles it, or set RLM_LIBRARY=/path/to/librlm.so.0")


def _loaded_path(fallback):
    """Where the dynamic loader found librlm (a soname alone says nothing)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "/librlm.so" in line:
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    return fallback


lib, path = _load()
path = os.path.realpath(_loaded_path(path)) if os.path.sep not in path else os.path.realpath(path)

_c = ctypes
_p = _c.c_void_p
_s = _c.c_char_p

PROGRESS_FN = _c.CFUNCTYPE(None, _p, _s)


class Event(_c.Structure):
    """struct rlm_event (RLM_EVENT_VERSION 1). Fields are only ever added at
    the end: a library's `size` says how many of these it filled, so read a
    field only when fields_within(size) lists it. Texts are pointers with a
    length (they may hold NUL bytes), copied out with string_at."""

    _fields_ = [
        ("version", _c.c_int),
        ("size", _c.c_size_t),
        ("kind", _c.c_int),
        ("type", _s),
        ("node", _s),
        ("parent", _s),
        ("depth", _c.c_int),
        ("turn", _c.c_int),
        ("elapsed", _c.c_double),
        ("text", _p),
        ("text_len", _c.c_size_t),
        ("output", _p),
        ("output_len", _c.c_size_t),
        ("model", _s),
        ("status", _s),
        ("how", _s),
        ("budget", _s),
        ("error", _s),
        ("block", _c.c_int),
        ("blocks", _c.c_int),
        ("raised", _c.c_int),
        ("batch_size", _c.c_size_t),
        ("done", _c.c_size_t),
        ("in_flight", _c.c_size_t),
        ("failed", _c.c_size_t),
        ("retried", _c.c_size_t),
        ("sub_calls", _c.c_size_t),
        ("prompt_tokens", _c.c_long),
        ("completion_tokens", _c.c_long),
        ("cost_usd", _c.c_double),
        ("seconds", _c.c_double),
        ("internal_", _p),
        ("cached_tokens", _c.c_long),
        ("cache_write_tokens", _c.c_long),
        ("deduplicated", _c.c_size_t),
    ]


EVENT_VERSION = 1
# rlm_event_kind, in the header's order: the names the package gives them.
EVENT_KINDS = ("other", "run_start", "run_end", "root_request", "root_wait", "root_reply",
               "code_start", "code", "batch_start", "batch_progress", "batch_end", "sub_call",
               "child_start", "child_end", "warning", "final_answer", "budget_stop")

_within: dict = {}


def fields_within(size):
    """The names of the rlm_event fields that a struct of `size` bytes holds
    (all of ours for a newer library; the first ones for an older)."""
    names = _within.get(size)
    if names is None:
        names = _within[size] = frozenset(
            name for name, _ in Event._fields_
            if getattr(Event, name).offset + getattr(Event, name).size <= size)
    return names


EVENT_FN = _c.CFUNCTYPE(None, _p, _c.POINTER(Event))

_PROTOTYPES = {
    "rlm_version": (_s, []),
    "rlm_status_name": (_s, [_c.c_int]),
    "rlm_config_new": (_p, []),
    "rlm_config_free": (None, [_p]),
    "rlm_config_set": (_c.c_int, [_p, _s, _s]),
    "rlm_config_get": (_s, [_p, _s]),
    "rlm_config_url_within": (_c.c_int, [_p, _s, _s]),
    "rlm_config_errmsg": (_s, [_p]),
    "rlm_new": (_c.c_int, [_p, _c.POINTER(_p)]),
    "rlm_free": (None, [_p]),
    "rlm_errmsg": (_s, [_p]),
    "rlm_set_context_file": (_c.c_int, [_p, _s]),
    # text as a raw pointer: bytes pass their buffer, str its UTF-8 (no copy).
    "rlm_set_context_text": (_c.c_int, [_p, _p, _c.c_size_t]),
    "rlm_add_context": (_c.c_int, [_p, _s]),
    "rlm_add_context_fd": (_c.c_int, [_p, _s, _c.c_int]),
    "rlm_set_progress": (None, [_p, PROGRESS_FN, _p]),
    "rlm_set_event_callback": (None, [_p, EVENT_FN, _p]),
    # a char * to free (rlm_string_free), hence no automatic conversion
    "rlm_event_json": (_p, [_c.POINTER(Event)]),
    "rlm_ask_len": (_c.c_int, [_p, _s, _c.POINTER(_p), _c.POINTER(_c.c_size_t)]),
    "rlm_cancel": (None, [_p]),
    "rlm_begin_conversation": (_c.c_int, [_p]),
    "rlm_sessions_list": (_c.c_int, [_p, _c.POINTER(_p)]),
    "rlm_session_remove": (_c.c_int, [_p, _s, _c.POINTER(_p)]),
    "rlm_report_json": (_s, [_p]),
    "rlm_warnings": (_s, [_p]),
    "rlm_trace_error": (_s, [_p]),
    "rlm_string_free": (None, [_p]),
    "rlm_system_prompt": (_c.c_int, [_p, _c.c_int, _c.POINTER(_p)]),
    "rlm_doctor": (_c.c_int, [_p, _c.POINTER(_p)]),
}

for _name, (_res, _args) in _PROTOTYPES.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

# The UTF-8 of a str without a copy when it is ASCII (CPython keeps such a
# str's bytes as they are); pythonapi holds the GIL, as this call needs.
utf8_of = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
utf8_of.restype = _p
utf8_of.argtypes = [ctypes.py_object, ctypes.POINTER(ctypes.c_ssize_t)]


def text(ptr):
    """A borrowed C string (const char *) as str ("" for NULL)."""
    return ptr.decode("utf-8", "replace") if ptr else ""


def take_string(ptr, length=None):
    """A string the library handed over (char **), as bytes; freed here."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr, length) if length is not None else ctypes.string_at(ptr)
    finally:
        lib.rlm_string_free(ptr)


def helper_path(name):
    """A program installed beside the library: rlm (bin/) or rlm-sandbox and
    fakelm (libexec/rlm/), or None."""
    libdir = os.path.dirname(path)
    for rel in ("../bin", "../../bin", "../libexec/rlm", "../../libexec/rlm", "."):
        cand = os.path.normpath(os.path.join(libdir, rel, name))
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    return None
