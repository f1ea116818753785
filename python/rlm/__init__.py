"""rlm — Recursive Language Models from Python, over the C library librlm.

A root language model answers a question about an input far larger than its
context window without reading it: it sees a description of the input and
writes Python, run in a locked-down sandbox where the input is the variable
`context`, calling sub-models on pieces of it until it can answer.

    import rlm
    result = rlm.ask("How many users reported a crash?", context=pathlib.Path("app.log"),
                     model="gpt-5-mini")
    print(result.answer, result.cost)

    with rlm.Session(context=pathlib.Path("app.log")) as s:     # a conversation
        s.ask("How many users reported a crash?")
        s.ask("Of those, how many were on version 2?")

    for event in rlm.stream("Summarise it", context=text):     # the run's events
        if event.kind == "code":
            print(event.text, "->", event.output)

    from rlm import RLM                                         # the `rlms` shape
    RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"}).completion(text).response

Options are the keys of the C library's rlm_config_set (include/rlm.h;
docs/python.md lists them): model, sub_model, base_url, api_key, max_cost,
max_iterations, max_depth, mode, trace, session, ... The API keys and base
URLs of the environment are used as the CLI uses them ($OPENAI_API_KEY,
$ANTHROPIC_API_KEY, $RLM_MODEL, ...: a key goes only to its own endpoint).

Runs release the GIL, so threads run questions in parallel (one question at
a time per Session). Ctrl-C cancels the run in progress: the sandbox is
stopped and KeyboardInterrupt raised once it has. Failures raise the
exceptions of rlm.errors, one per rlm_status.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from . import _native
from ._compat import (RLM, BudgetExceededError, CancellationError, ErrorThresholdExceededError,
                      ModelUsageSummary, RLMChatCompletion, TimeoutExceededError,
                      TokenLimitExceededError, UsageSummary)
from ._core import JSON, Buffer, Context, Event, Result, Stream, Usage, _Handle
from .errors import (CancelledError, InputError, InternalError, ModelError, NoAnswerError,
                     OutOfMemoryError, RLMError, SandboxError, UsageError)

__version__ = _native.text(_native.lib.rlm_version())

__all__ = [
    "ask", "stream", "Session", "Result", "Usage", "Event", "Stream", "Buffer", "JSON",
    "RLMError", "NoAnswerError", "CancelledError", "UsageError", "InputError", "ModelError",
    "SandboxError", "InternalError", "OutOfMemoryError",
    "RLM", "RLMChatCompletion", "UsageSummary", "ModelUsageSummary", "BudgetExceededError",
    "TimeoutExceededError", "TokenLimitExceededError", "ErrorThresholdExceededError",
    "CancellationError", "library_path", "system_prompt", "sessions", "remove_session", "doctor",
]


def ask(question: str, context: Context = None, *, model: Optional[str] = None,
        on_event: Optional[Callable[[Event], None]] = None, **options: Any) -> Result:
    """Answers `question` about `context` with a Recursive Language Model.

    context, handed over without a copy where the form allows:
      - str: the text (`context` is a str in the sandbox);
      - bytes, bytearray, memoryview: UTF-8 text;
      - pathlib.Path (any os.PathLike): a file (memory-mapped, any size), a
        directory (recursive; .git, binary and .gitignored files skipped), a
        glob, a .json file (parsed) or a .jsonl file (a list of records);
        a plain str is always text, never a path;
      - an open file (anything with fileno(), e.g. open(p, "rb") or a
        subprocess' stdout): mapped when it is a file, read when a pipe;
      - a list of paths: several inputs (`context` is a dict path -> text);
      - a list of records (dicts, lists, str, numbers): `context` is that
        list, as JSON values;
      - a dict name -> str or bytes: `context` is that dict of texts;
      - rlm.Buffer: memory you filled in place, read with no copy at all;
      - rlm.JSON(value): any JSON data, `context` being that value.
    model: the root model (default $RLM_MODEL, else gpt-5-mini).
    on_event: called with each Event as the run goes (rlm.Event: root turns,
      code blocks and their output, sub-call batches, child RLMs, warnings,
      the answer, and "progress" lines), from the run's threads, one call at
      a time; it holds up the run, so keep it quick. An exception it raises
      cancels the run and is raised by ask().
    options: any key of rlm_config_set (include/rlm.h): base_url, api_key,
      sub_model, max_cost, max_tokens, max_time, max_iterations, max_depth,
      mode ("auto", "rlm", "direct"), trace (a JSONL file), system_prompt,
      cache, include/exclude (globs, a list too), json_input, ...; bool
      values are "1"/"0". An unknown key is a TypeError, a bad value a
      UsageError (a ValueError).

    Returns a Result (answer, how, turns, sub_calls, usage per model, cost,
    stopped_by, elapsed, trace, warnings, report). Raises NoAnswerError when
    the run ended without an answer (result.stopped_by says which budget),
    InputError, ModelError, SandboxError, UsageError for the statuses of the
    same names (each carrying the library's message and, when the run got
    that far, its Result), TypeError / ValueError for bad arguments, and
    KeyboardInterrupt after Ctrl-C has cancelled the run."""
    handle = _Handle(dict(options, model=model))
    try:
        handle.set_context(context)
        return handle.run(question, on_event)
    finally:
        handle.close()


def stream(question: str, context: Context = None, *, model: Optional[str] = None,
           **options: Any) -> Stream:
    """ask(), as an iterator of Event objects while the run goes on (see
    rlm.Event for the kinds and their fields):

        s = rlm.stream("How many errors?", context=path)
        for event in s:
            if event.kind == "progress":
                print(event.text)
        print(s.result.answer)

    The run's threads copy each event onto a queue that the iteration reads.
    The iteration raises what ask() would raise, after the events that led
    to it, and is then over. Leaving it early (close(), a `with` block's end,
    a break that drops the Stream) cancels the run and waits for it to
    stop."""
    handle = _Handle(dict(options, model=model))
    try:
        handle.set_context(context)
        return Stream(handle, question, owns=True)
    except BaseException:
        handle.close()
        raise


class Session:
    """A conversation: questions one after another about the same inputs.
    The root model keeps its history and the sandbox its variables; earlier
    answers are the variables answer_1, answer_2, ... and a context given
    with a later question becomes context_1, context_2, ... (docs/sessions.md).

        with rlm.Session(context=pathlib.Path("app.log"), model="gpt-5-mini") as s:
            print(s.ask("How many users reported a crash?").answer)
            print(s.ask("Of those, how many were on version 2?").answer)

    session="NAME" keeps it on disk (SQLite, session_db option) as it
    happens: a later Session (or `rlm ask --session NAME`) with the same name
    continues it, variables rebuilt without model calls. A Session answers
    one question at a time (RuntimeError if another thread asks meanwhile);
    cancel() stops the question in progress from any thread."""

    def __init__(self, context: Context = None, *, model: Optional[str] = None,
                 session: Optional[str] = None, **options: Any):
        self._handle = _Handle(dict(options, model=model, session=session))
        try:
            self._handle.begin_conversation()
            self._handle.set_context(context)
        except BaseException:
            self._handle.close()
            raise

    def ask(self, question: str, context: Context = None, *,
            on_event: Optional[Callable[[Event], None]] = None) -> Result:
        """Asks the next question; context, if given, is a new input for it
        (context_1, context_2, ...). Returns and raises as rlm.ask()."""
        self._handle.set_context(context)
        return self._handle.run(question, on_event)

    def stream(self, question: str, context: Context = None) -> Stream:
        """ask() as an iterator of events (see rlm.stream)."""
        self._handle.set_context(context)
        return Stream(self._handle, question, owns=False)

    def cancel(self) -> None:
        """Cancels the question in progress (from any thread); its ask()
        raises CancelledError and the conversation goes on."""
        self._handle.cancel()

    @property
    def report(self) -> Optional[Dict[str, Any]]:
        """The last question's JSON report, as a dict (None before the first)."""
        return self._handle.report()

    @property
    def warnings(self) -> List[str]:
        return self._handle.warnings()

    def close(self) -> None:
        """Stops the sandbox and frees the conversation (a session on disk
        stays there)."""
        self._handle.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def library_path() -> str:
    """The librlm in use (see rlm._native for how it is found)."""
    return _native.path


def _json_call(fn, *args) -> Any:
    import ctypes
    import json
    out = ctypes.c_void_p()
    st = fn(*args, ctypes.byref(out))
    text = _native.take_string(out.value)
    text = text.decode("utf-8", "replace") if text is not None else ""
    if st != _native.OK:
        from .errors import for_status
        raise for_status(st, text)
    return json.loads(text)


def _with_config(options: Dict[str, Any], fn):
    from ._core import _Config
    cfg = _Config(options, environment=False)
    try:
        return fn(cfg.ptr)
    finally:
        cfg.free()


def sessions(session_db: Optional[os.PathLike] = None) -> List[Dict[str, Any]]:
    """The sessions on disk, as `rlm sessions --json` lists them."""
    return _with_config({"session_db": session_db},
                        lambda c: _json_call(_native.lib.rlm_sessions_list, c))


def remove_session(name: str, session_db: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """Removes session `name` and all it recorded (refused while in use)."""
    return _with_config({"session_db": session_db},
                        lambda c: _json_call(_native.lib.rlm_session_remove, c, name.encode()))


def system_prompt(template: bool = False, **options: Any) -> str:
    """The system prompt a run with these options would send the root model;
    template=True gives rlm's own with its placeholders unfilled."""
    import ctypes
    def call(c):
        out = ctypes.c_void_p()
        st = _native.lib.rlm_system_prompt(c, int(template), ctypes.byref(out))
        text = _native.take_string(out.value)
        if st != _native.OK:
            raise MemoryError("rlm: out of memory")
        return text.decode("utf-8", "replace")
    return _with_config(options, call)


def doctor(**options: Any) -> Dict[str, Any]:
    """What this machine allows the sandbox, as `rlm doctor --json` shows it."""
    import ctypes
    import json

    def call(c):
        out = ctypes.c_void_p()
        _native.lib.rlm_doctor(c, ctypes.byref(out))
        text = _native.take_string(out.value)
        return json.loads(text.decode("utf-8", "replace")) if text else {}
    return _with_config(options, call)
