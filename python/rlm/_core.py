"""The binding proper: options, contexts, runs, results and events over the
handles of include/rlm.h.

Design notes.
- Threads. Every foreign call releases the GIL (ctypes' CDLL), so runs on
  different handles go on in parallel; a handle is used by one thread at a
  time (rlm.h), which each _Handle enforces with a lock. The progress
  callback comes from the engine's thread and takes the GIL for the time of
  the Python call only.
- Ctrl-C. Python runs signal handlers in the main thread, between
  bytecodes: a foreign call blocks them. So a run started from the main
  thread goes on a worker thread while the main thread waits on an event;
  KeyboardInterrupt then calls rlm_cancel (the library stops the cell,
  abandons the requests in flight and returns), the main thread waits for
  the worker to end, and raises KeyboardInterrupt again. Runs from other
  threads call the library directly. A wait is only interrupted by a
  signal the kernel hands to the waiting thread, which may be any thread
  that does not block it: so the library's threads (the handle's I/O
  thread, the worker and all it starts) are started with SIGINT blocked
  (_no_sigint), leaving the main thread the only one to take it; one that
  comes while the worker starts waits until the wait loop unblocks it.
  The wait also wakes every 0.1 s, and a cancel is applied again until the
  run ends (rlm_ask clears one made before it began).
- Copies. A path is handed over as a path (the library maps the file); an
  open file by its descriptor (mapped); bytes and ASCII str by pointer to
  rlm_set_context_text, whose memfd is the one copy the CLI makes of stdin
  too; any other str is encoded in slices straight into a sealed memfd;
  a Buffer is filled by the caller in place (no copy at all); records and
  dict values go through memfds by name (rlm_add_context_fd).
"""
import ctypes
import fcntl
import json
import mmap
import os
import queue
import signal
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _native as N
from .errors import CancelledError, UsageError, for_status

_CHUNK_CHARS = 1 << 20
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


# ---- results and events ----------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """One model's share of a run (the report's usage entry)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Optional[float] = None
    cached_calls: int = 0
    errors: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    deduplicated: int = 0
    cost_no_cache_usd: Optional[float] = None

    @classmethod
    def from_report(cls, d: Mapping[str, Any]) -> "Usage":
        return cls(calls=d.get("calls", 0), prompt_tokens=d.get("prompt_tokens", 0),
                   completion_tokens=d.get("completion_tokens", 0), cost_usd=d.get("cost_usd"),
                   cached_calls=d.get("cached_calls", 0), errors=d.get("errors", 0),
                   cached_tokens=d.get("cached_tokens", 0),
                   cache_write_tokens=d.get("cache_write_tokens", 0),
                   deduplicated=d.get("deduplicated", 0),
                   cost_no_cache_usd=d.get("cost_no_cache_usd"))


@dataclass(frozen=True)
class Result:
    """What a run gave. `answer` is the final answer (None when there is
    none: only on exceptions' `result`); `status` the rlm_status name ("ok",
    "no answer", ...); `how` how the answer was given ("code",
    "final_literal", "FINAL in text", "last_reply", "direct", ...); `turns`
    the root turns; `sub_calls` the sub-model prompts; `usage` per model;
    `cost` the total in US dollars (None when a price is unknown);
    `stopped_by` the budget that ended the run, if any; `elapsed` seconds;
    `trace` the trace file, if one was asked for; `warnings` what did not
    stop the run but should be known; `report` the whole JSON report of
    rlm_report_json (docs/trace.md)."""

    answer: Optional[str]
    status: str
    how: Optional[str] = None
    turns: int = 0
    sub_calls: int = 0
    usage: Dict[str, Usage] = field(default_factory=dict)
    cost: Optional[float] = None
    stopped_by: Optional[str] = None
    elapsed: float = 0.0
    trace: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    report: Dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.answer if self.answer is not None else ""


@dataclass(frozen=True)
class Event:
    """Something the run did, as it happens: one rlm_event of the C library
    (include/rlm.h), or a line of the progress line.

    `kind` names it: "run_start" (an RLM starts on a question: text; depth 1
    for the top one, 2+ for child RLMs), "root_request" (a root turn is asked
    for: turn, model), "root_wait" (still waiting, about 4 a second: seconds,
    done = characters streamed), "root_reply" (text = the reply, output = its
    reasoning, tokens, cost_usd, seconds, error), "code_start" (text = the
    code, block of blocks), "code" (a block ran: text = the code, output =
    its output as the model sees it, raised, seconds), "batch_start" /
    "batch_progress" / "batch_end" (a batch of sub-calls: batch_size, done,
    in_flight, failed, retried, seconds), "sub_call" (one of them: text = its
    prompt, output = its reply, excerpts; error, tokens, cost_usd),
    "child_start" / "child_end" (a child RLM: node, depth, text = its prompt,
    then status and text = what rlm_query returned), "warning" (text),
    "final_answer" (text, how), "budget_stop" (budget, text = what was spent),
    "run_end" (status, how, text = the answer, turn = turns, sub_calls,
    failed, cost_usd, seconds), "other" (any other trace event: see `type`
    and `data`), and "progress" (text = the one-line summary the CLI's
    progress line shows; no other field).

    `type` is the trace's event type (docs/trace.md), `data` the whole event
    as the trace file holds it (every field of docs/trace.md, by its name
    there). `node` is the call-tree node ("0" the top RLM, "0.1" its first
    child), `parent` its parent's. Texts are "" and other fields 0, None or
    False when the kind has none; tokens and cost_usd are None when unknown."""

    kind: str
    text: str = ""
    data: Dict[str, Any] = field(default_factory=dict)
    type: str = ""
    node: str = ""
    parent: Optional[str] = None
    depth: int = 0
    turn: int = 0
    elapsed: float = 0.0
    output: str = ""
    model: Optional[str] = None
    status: Optional[str] = None
    how: Optional[str] = None
    budget: Optional[str] = None
    error: Optional[str] = None
    block: int = 0
    blocks: int = 0
    raised: bool = False
    batch_size: int = 0
    done: int = 0
    in_flight: int = 0
    failed: int = 0
    retried: int = 0
    sub_calls: int = 0
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    cost_usd: Optional[float] = None
    seconds: float = 0.0
    cached_tokens: Optional[int] = None
    cache_write_tokens: Optional[int] = None
    deduplicated: int = 0


# rlm_event fields copied as they are, and those read as optional strings.
_PLAIN_FIELDS = ("depth", "turn", "elapsed", "block", "blocks", "batch_size", "done", "in_flight",
                 "failed", "retried", "sub_calls", "seconds", "deduplicated")
_NAME_FIELDS = ("model", "status", "how", "budget", "error")


def _bytes_text(ptr: Optional[int], length: int) -> str:
    return ctypes.string_at(ptr, length).decode("utf-8", "replace") if ptr else ""


def _event_of(ptr: "ctypes._Pointer[N.Event]") -> Event:
    """An Event holding a copy of everything in *ptr, which is valid only
    during the callback; fields past the library's `size` are left at their
    defaults (an older library filled fewer)."""
    ev = ptr.contents
    have = N.fields_within(ev.size)
    kw: Dict[str, Any] = {name: getattr(ev, name) for name in _PLAIN_FIELDS if name in have}
    for name in _NAME_FIELDS:
        value = getattr(ev, name) if name in have else None
        if value is not None:
            kw[name] = N.text(value)
    kind = ev.kind if "kind" in have else 0
    kw["kind"] = N.EVENT_KINDS[kind] if 0 <= kind < len(N.EVENT_KINDS) else "other"
    if "type" in have:
        kw["type"] = N.text(ev.type)
    if "node" in have:
        kw["node"] = N.text(ev.node)
        kw["parent"] = N.text(ev.parent) if ev.parent is not None else None
    if "text_len" in have:
        kw["text"] = _bytes_text(ev.text, ev.text_len)
    if "output_len" in have:
        kw["output"] = _bytes_text(ev.output, ev.output_len)
    if "raised" in have:
        kw["raised"] = bool(ev.raised)
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"):
        if name in have and getattr(ev, name) >= 0:
            kw[name] = getattr(ev, name)
    if "cost_usd" in have and ev.cost_usd >= 0:
        kw["cost_usd"] = ev.cost_usd
    if "internal_" in have:
        raw = N.take_string(N.lib.rlm_event_json(ptr))
        kw["data"] = json.loads(raw.decode("utf-8", "replace")) if raw else {}
    return Event(**kw)


# ---- options -----------------------------------------------------------------

def _option_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)) and key in ("include", "exclude") and \
            all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise TypeError("option %s: expected str, int, float, bool or a path, not %s"
                    % (key, type(value).__name__))


class _Config:
    """An rlm_config built from keyword options (the keys of rlm.h's
    rlm_config_set), with the CLI's environment rules applied."""

    def __init__(self, options: Mapping[str, Any], environment: bool = True):
        self.ptr = N.lib.rlm_config_new()
        if not self.ptr:
            raise MemoryError("rlm: out of memory")
        try:
            given = {k: v for k, v in options.items() if v is not None}
            for key, value in given.items():
                self.set(key, value)
            if environment:
                _apply_environment(self, given)
        except BaseException:
            self.free()
            raise

    def set(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError("option names are str, not %s" % type(key).__name__)
        if N.lib.rlm_config_get(self.ptr, key.encode()) is None:
            raise TypeError("unknown option %r (the options are rlm_config_set's keys: "
                            "include/rlm.h, docs/python.md)" % key)
        text = _option_text(key, value)
        if "\0" in text:
            raise ValueError("option %s holds a NUL character" % key)
        if N.lib.rlm_config_set(self.ptr, key.encode(), text.encode()) != N.OK:
            raise UsageError(N.text(N.lib.rlm_config_errmsg(self.ptr)))

    def get(self, key: str) -> str:
        return N.text(N.lib.rlm_config_get(self.ptr, key.encode()))

    def within(self, key: str, url: str) -> bool:
        return bool(N.lib.rlm_config_url_within(self.ptr, key.encode(), url.encode()))

    def free(self) -> None:
        if self.ptr:
            N.lib.rlm_config_free(self.ptr)
            self.ptr = None


def _provider_home(provider: str) -> str:
    """Where $PROVIDER_API_KEY may be sent: $PROVIDER_BASE_URL, else the
    provider's own API."""
    env = os.environ.get(provider.upper() + "_BASE_URL")
    if env:
        return env
    c = _Config({"provider": provider}, environment=False)
    try:
        return c.get("base_url")
    finally:
        c.free()


def _apply_environment(cfg: _Config, given: Mapping[str, Any]) -> None:
    """The environment rules of the CLI (README, docs/providers.md), for the
    options not given: $RLM_MODEL, then $PROVIDER_BASE_URL and
    $PROVIDER_API_KEY of the root's and the sub-calls' providers, a key going
    only to the endpoint it is for."""
    env = os.environ.get
    if "model" not in given and env("RLM_MODEL"):
        cfg.set("model", env("RLM_MODEL"))
    provider = cfg.get("provider")
    if "base_url" not in given and env(provider.upper() + "_BASE_URL"):
        cfg.set("base_url", env(provider.upper() + "_BASE_URL"))
    provider = cfg.get("provider")
    key = env(provider.upper() + "_API_KEY")
    if "api_key" not in given and key and cfg.within("base_url", _provider_home(provider)):
        cfg.set("api_key", key)
    if cfg.within("sub_base_url", cfg.get("base_url")):
        return
    sub = cfg.get("sub_provider")
    if "sub_base_url" not in given and sub != provider and env(sub.upper() + "_BASE_URL"):
        cfg.set("sub_base_url", env(sub.upper() + "_BASE_URL"))
    key = env(sub.upper() + "_API_KEY")
    if "sub_api_key" not in given and key and cfg.within("sub_base_url", _provider_home(sub)):
        cfg.set("sub_api_key", key)


# ---- contexts ----------------------------------------------------------------

class Buffer:
    """Memory for a context that the sandbox reads with no copy at all: fill
    it in place (`buf.view[:n] = ...`, `f.readinto(buf.view)`,
    `buf.write(data)`), then pass it as `context`. It is a memory file
    (memfd); once handed to a run it is sealed and can no longer change.

        buf = rlm.Buffer(size)
        with open("big.log", "rb") as f:
            f.readinto(buf.view)
        rlm.ask("How many errors?", context=buf)
    """

    def __init__(self, size: int, name: str = "context"):
        if not isinstance(size, int) or size <= 0:
            raise ValueError("Buffer size must be a positive int")
        self.name = name
        self._fd = os.memfd_create("rlm-buffer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self.view = memoryview(self._map)
        self._used = 0

    def write(self, data) -> int:
        """Appends data (bytes-like, or str as UTF-8) after what was written."""
        if self._map is None:
            raise ValueError("this Buffer is sealed: it was handed to a run, nothing can change it")
        if isinstance(data, str):
            data = data.encode("utf-8")
        n = len(memoryview(data).cast("B"))
        if self._used + n > len(self._map):
            raise ValueError("Buffer full: %d of %d bytes used" % (self._used, len(self._map)))
        self.view[self._used:self._used + n] = memoryview(data).cast("B")
        self._used += n
        return n

    def seal(self, length: Optional[int] = None) -> int:
        """Ends writing (length: the bytes to keep; default all that write()
        added, or the whole buffer when only `view` was used) and returns a
        descriptor of the sealed memory file, which stays the buffer's."""
        if self._map is not None:
            keep = length if length is not None else (self._used or len(self._map))
            self.view.release()
            self._map.close()
            self._map = None
            os.ftruncate(self._fd, keep)
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, _SEALS)
        return self._fd

    def close(self) -> None:
        if self._map is not None:
            self.view.release()
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _memfd(fill: Callable[[int], None]) -> int:
    fd = os.memfd_create("rlm-context", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        fill(fd)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_str(fd: int, text: str) -> None:
    """A str's UTF-8 into fd, a slice at a time: never a whole second copy."""
    for i in range(0, len(text), _CHUNK_CHARS):
        _write_all(fd, text[i:i + _CHUNK_CHARS].encode("utf-8", "surrogatepass"))


def _write_records(fd: int, records: Sequence[Any]) -> None:
    lines = []
    size = 0
    for i, rec in enumerate(records):
        try:
            line = json.dumps(rec, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise TypeError("context record %d is not JSON data (%s): a list context is a list "
                            "of records (dict, list, str, numbers), or of paths "
                            "(pathlib.Path)" % (i, e)) from None
        lines.append(line)
        size += len(line)
        if size >= _CHUNK_CHARS:
            _write_all(fd, ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
            lines, size = [], 0
    if lines:
        _write_all(fd, ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


class JSON:
    """Any JSON data (dict, list, str, numbers, None) as the context's value:
    `context` is that value in the sandbox, e.g. rlm.JSON({"documents": [...],
    "query": "..."}). It is encoded once into a memory file the sandbox
    parses."""

    def __init__(self, value: Any, name: str = "context.json"):
        self.value, self.name = value, name


Context = Union[None, str, bytes, bytearray, memoryview, "os.PathLike[str]", IO[Any], Buffer,
                    Sequence[Any], Mapping[str, Union[str, bytes]], JSON]


# ---- a handle ----------------------------------------------------------------


def _block_sigint() -> Any:
    """Blocks SIGINT in the calling thread if it is the main thread (threads
    it starts inherit the mask); returns the mask to restore, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _restore_sigmask(old: Any) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Handle:
    """One rlm handle, used by one thread at a time."""

    def __init__(self, options: Mapping[str, Any]):
        self._lock = threading.Lock()
        self._callback_error: Optional[BaseException] = None
        self.trace = options.get("trace")
        cfg = _Config(options)
        try:
            ptr = ctypes.c_void_p()
            old = _block_sigint()   # the handle's I/O thread never takes Ctrl-C (design notes)
            try:
                st = N.lib.rlm_new(cfg.ptr, ctypes.byref(ptr))
                self.ptr = ptr.value
            finally:
                _restore_sigmask(old)
            if st != N.OK:
                msg = N.text(N.lib.rlm_errmsg(self.ptr)) if self.ptr else "out of memory"
                self.close()
                raise for_status(st, msg)
        finally:
            cfg.free()

    def _check(self, st: int) -> None:
        if st != N.OK:
            raise for_status(st, N.text(N.lib.rlm_errmsg(self.ptr)))

    def _opened(self) -> int:
        if not self.ptr:
            raise ValueError("this rlm handle is closed")
        return self.ptr

    def begin_conversation(self) -> None:
        self._check(N.lib.rlm_begin_conversation(self._opened()))

    def add_fd(self, name: str, fd: int) -> None:
        self._check(N.lib.rlm_add_context_fd(self._opened(), name.encode(), fd))

    def add_memfd(self, name: str, fill: Callable[[int], None]) -> None:
        """An input named `name` that fill(fd) writes into a sealed memfd."""
        fd = _memfd(fill)
        try:
            self.add_fd(name, fd)
        finally:
            os.close(fd)

    def set_context(self, context: Context) -> None:
        """Hands context over (see ask() for the forms it takes)."""
        h = self._opened()
        if context is None:
            return
        if isinstance(context, str):
            if context.isascii():
                size = ctypes.c_ssize_t()
                ptr = N.utf8_of(context, ctypes.byref(size))
                self._check(N.lib.rlm_set_context_text(h, ptr, size.value))
            else:
                self.add_memfd("context", lambda f: _write_str(f, context))
        elif isinstance(context, bytes):
            self._check(N.lib.rlm_set_context_text(h, context, len(context)))
        elif isinstance(context, (bytearray, memoryview)):
            view = memoryview(context)
            if not view.contiguous:
                raise TypeError("context: a memoryview must be contiguous")
            if view.readonly:
                self.add_memfd("context", lambda f: _write_all(f, view))
            else:
                raw = (ctypes.c_char * view.nbytes).from_buffer(view.cast("B"))
                self._check(N.lib.rlm_set_context_text(h, ctypes.addressof(raw), view.nbytes))
                del raw
        elif isinstance(context, JSON):
            def fill(f):
                try:
                    text = json.dumps(context.value, ensure_ascii=False)
                except (TypeError, ValueError) as e:
                    raise TypeError("rlm.JSON: the value is not JSON data (%s)" % e) from None
                _write_str(f, text)
            self.add_memfd(context.name, fill)
        elif isinstance(context, Buffer):
            self.add_fd(context.name, context.seal())
        elif isinstance(context, os.PathLike):
            self._check(N.lib.rlm_add_context(h, os.fsencode(context)))
        elif hasattr(context, "fileno") and hasattr(context, "read"):
            name = getattr(context, "name", None)
            name = os.path.basename(name) if isinstance(name, str) and name else "context"
            self.add_fd(name, context.fileno())
        elif isinstance(context, Mapping):
            if not context:
                raise ValueError("context is an empty dict")
            if len(context) == 1:
                # One input alone is a str for the library (like one file):
                # a one-entry dict goes as JSON to stay a dict.
                (name, value), = context.items()
                if isinstance(name, str) and isinstance(value, (str, bytes)):
                    self.set_context(JSON({name: value if isinstance(value, str)
                                           else value.decode("utf-8", "replace")}))
                    return
            for name, value in context.items():
                if not isinstance(name, str) or not name:
                    raise TypeError("context dict keys are non-empty str (document names), "
                                    "not %r" % (name,))
                if isinstance(value, str):
                    self.add_memfd(name, lambda f, v=value: _write_str(f, v))
                elif isinstance(value, (bytes, bytearray, memoryview)):
                    self.add_memfd(name, lambda f, v=value: _write_all(f, v))
                else:
                    raise TypeError("context[%r]: a dict context maps names to str or bytes, "
                                    "not %s" % (name, type(value).__name__))
        elif isinstance(context, (list, tuple)):
            if not context:
                raise ValueError("context is an empty list")
            if all(isinstance(c, os.PathLike) for c in context):
                for c in context:
                    self._check(N.lib.rlm_add_context(h, os.fsencode(c)))
            else:
                self.add_memfd("records.jsonl", lambda f: _write_records(f, context))
        else:
            raise TypeError("context: expected str, bytes, a path (os.PathLike), an open file, "
                            "a list of paths or of records, a dict name -> text, or "
                            "rlm.Buffer, not %s" % type(context).__name__)

    def cancel(self) -> None:
        if self.ptr:
            N.lib.rlm_cancel(self.ptr)

    def report(self) -> Optional[Dict[str, Any]]:
        raw = N.lib.rlm_report_json(self.ptr) if self.ptr else None
        return json.loads(raw.decode("utf-8", "replace")) if raw else None

    def warnings(self) -> List[str]:
        return [w for w in N.text(N.lib.rlm_warnings(self.ptr)).splitlines() if w] if self.ptr else []

    def _result(self, answer: Optional[str], status: str) -> Result:
        rep = self.report() or {}
        return Result(
            answer=answer, status=status, how=rep.get("how"), turns=rep.get("iterations", 0),
            sub_calls=rep.get("sub_calls", 0),
            usage={m: Usage.from_report(u) for m, u in (rep.get("usage") or {}).items()},
            cost=rep.get("cost_usd"), stopped_by=rep.get("stopped_by"),
            elapsed=rep.get("elapsed_seconds", 0.0),
            trace=os.fspath(self.trace) if self.trace else None,
            warnings=self.warnings(), report=rep)

    def _call(self, fn: Callable[[], int]) -> "tuple[int, bool]":
        """fn() with Ctrl-C turned into rlm_cancel (see the design notes);
        returns its status and whether it was interrupted."""
        if threading.current_thread() is not threading.main_thread():
            return fn(), False
        done = threading.Event()
        out: Dict[str, Any] = {}

        def worker():
            try:
                out["status"] = fn()
            except BaseException as e:  # noqa: BLE001 - carried to the caller
                out["error"] = e
            finally:
                done.set()

        t = threading.Thread(target=worker, name="rlm-run", daemon=True)
        old = _block_sigint()   # the worker and the threads it starts block SIGINT
        try:
            t.start()
        except BaseException:
            _restore_sigmask(old)
            raise
        interrupted = False
        while True:
            try:
                if old is not None:
                    # A Ctrl-C that came while the worker started is raised
                    # from here on, inside this try.
                    restore, old = old, None
                    _restore_sigmask(restore)
                if done.wait(0.1):
                    break
                if interrupted:
                    N.lib.rlm_cancel(self.ptr)
            except KeyboardInterrupt:
                interrupted = True
                N.lib.rlm_cancel(self.ptr)
        t.join()
        if "error" in out:
            raise out["error"]
        return out["status"], interrupted

    def _callbacks(self, h: int, sink: Optional[Callable[[Event], None]]) -> "tuple[Any, Any]":
        """The C callbacks (progress line, events) handing Events to sink.

        They run on the run's threads (rlm_ask's, a child RLM's; never the
        network I/O thread, rlm.h) and take the GIL for their call only.
        The event is copied before the call returns (its strings die with
        it). The progress line and the events come from different threads,
        so a lock keeps sink to one call at a time. The first exception sink
        raises cancels the run (rlm_cancel only sets a flag, safe from
        inside a callback) and run() raises it; nothing more is delivered."""
        if sink is None:
            return N.PROGRESS_FN(), N.EVENT_FN()
        one_at_a_time = threading.Lock()

        def deliver(make: Callable[[], Event]) -> None:
            with one_at_a_time:
                if self._callback_error is not None:
                    return
                try:
                    sink(make())
                except BaseException as e:  # noqa: BLE001 - re-raised after the run
                    self._callback_error = e
                    N.lib.rlm_cancel(h)

        return (N.PROGRESS_FN(lambda _u, line: deliver(lambda: Event("progress", N.text(line)))),
                N.EVENT_FN(lambda _u, ev: deliver(lambda: _event_of(ev))))

    def run(self, question: str, sink: Optional[Callable[[Event], None]] = None) -> Result:
        """Asks question; raises for any status but RLM_OK."""
        if not isinstance(question, str):
            raise TypeError("question must be str, not %s" % type(question).__name__)
        if "\0" in question:
            raise ValueError("question holds a NUL character")
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("this rlm session is answering another question in another "
                               "thread: one question at a time per Session (use one per thread)")
        try:
            h = self._opened()
            q = question.encode("utf-8", "surrogatepass")
            answer = ctypes.c_void_p()
            length = ctypes.c_size_t()
            self._callback_error = None
            on_progress, on_event = self._callbacks(h, sink)
            N.lib.rlm_set_progress(h, on_progress, None)
            N.lib.rlm_set_event_callback(h, on_event, None)
            try:
                st, interrupted = self._call(
                    lambda: N.lib.rlm_ask_len(h, q, ctypes.byref(answer), ctypes.byref(length)))
            finally:
                N.lib.rlm_set_progress(h, N.PROGRESS_FN(), None)
                N.lib.rlm_set_event_callback(h, N.EVENT_FN(), None)
            text = N.take_string(answer.value, length.value)
            if interrupted:
                raise KeyboardInterrupt
            if self._callback_error is not None:
                raise self._callback_error
            if st == N.OK:
                return self._result(text.decode("utf-8", "replace"), "ok")
            message = N.text(N.lib.rlm_errmsg(h))
            result = self._result(None, N.text(N.lib.rlm_status_name(st)))
            if st == N.NO_ANSWER and message == "cancelled":
                raise CancelledError(message, result)
            raise for_status(st, message or result.report.get("error") or "", result)
        finally:
            self._lock.release()

    def close(self) -> None:
        if getattr(self, "ptr", None):
            N.lib.rlm_free(self.ptr)
            self.ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---- streams -----------------------------------------------------------------

_END = object()


def _stream_work(handle: _Handle, question: str, events: "queue.Queue[Any]",
                 outcome: Dict[str, Any]) -> None:
    """A Stream's thread. It holds the handle and the queue, never the
    Stream, so that a Stream nobody holds any more is collected (and its run
    cancelled) while the run goes on."""
    try:
        outcome["result"] = handle.run(question, events.put)
    except BaseException as e:  # noqa: BLE001 - raised by the iteration
        outcome["error"] = e
    finally:
        events.put(_END)


class Stream:
    """The events of one run, as an iterator; see rlm.stream().

    Iterating yields Event objects as they happen and ends when the run does;
    `result` then holds the Result (an error of the run is raised by the
    iteration, as ask() would raise it, and the iteration ends there).
    Leaving early (close(), the end of a `with` block) cancels the run and
    waits for it to stop, after which the iteration ends with no error; a
    Stream dropped unfinished (a `break` out of `for e in rlm.stream(...)`)
    is closed the same way."""

    def __init__(self, handle: _Handle, question: str, owns: bool):
        if not isinstance(question, str):
            raise TypeError("question must be str, not %s" % type(question).__name__)
        self._handle, self._owns = handle, owns
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._outcome: Dict[str, Any] = {}
        self._finished = False
        # The C side copies nothing for us: the run's threads make each
        # Event (a copy) and queue it; this iterator's thread takes them.
        self._thread = threading.Thread(target=_stream_work,
                                        args=(handle, question, self._queue, self._outcome),
                                        name="rlm-stream", daemon=True)
        old = _block_sigint()   # Ctrl-C is the iterating thread's (design notes)
        try:
            self._thread.start()
        finally:
            _restore_sigmask(old)

    def _take(self, cancelling: bool) -> Any:
        """The next item of the queue, waking every 0.1 s so that Python runs
        a signal handler in time; cancelling applies the cancel again at each
        wake (rlm_ask clears one made before it began)."""
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if cancelling:
                    self._handle.cancel()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._finished:
            raise StopIteration
        try:
            item = self._take(False)
        except KeyboardInterrupt:
            self.close()
            raise
        if item is _END:
            self._finish()
            if "error" in self._outcome:
                raise self._outcome["error"]
            raise StopIteration
        return item

    def _finish(self) -> None:
        self._finished = True
        self._thread.join()
        if self._owns:
            self._handle.close()

    @property
    def result(self) -> Optional[Result]:
        """The run's Result once the iteration has ended (None before, or
        when the run failed)."""
        return self._outcome.get("result")

    def close(self) -> None:
        """Cancels the run if it is still going and waits for it to stop."""
        if self._finished:
            return
        self._handle.cancel()
        while True:
            try:
                while self._take(True) is not _END:
                    pass
                break
            except KeyboardInterrupt:
                self._handle.cancel()
        self._finish()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # Unfinished and unreachable: stop the run and wait for it (quick
        # once cancelled), so that a Session can ask its next question.
        if getattr(self, "_finished", True):
            return
        try:
            if threading.current_thread() is self._thread:
                self._handle.cancel()
            else:
                self.close()
        except Exception:
            pass
