"""The shape of the reference library `rlms` (github alexzhang13/rlm): an RLM
class with completion(), RLMChatCompletion and UsageSummary results, and its
exceptions, so a program written for `rlms` runs here with no change but the
package installed. docs/python.md says precisely what maps and what does not;
in short:

  backend / backend_kwargs   openai, anthropic, vllm (base_url required),
                             openrouter, vercel; model_name, api_key, base_url
  other_backends[0] / ..kw   the sub-call model and endpoint (sub_model, ...)
  max_depth, max_iterations  the same meaning
  max_budget, max_timeout,   max_cost, max_time, max_tokens: the root is
  max_tokens                 asked for its best answer when one runs out; no
                             answer then raises the reference's exception
  custom_system_prompt       system_prompt
  persistent=True            a conversation: context_0, context_1, ...,
                             history_0, ... as in the reference
  compaction(_threshold_pct) compact_at (off unless asked, as there)
  max_concurrent_subcalls    max_children
  sampling_args              temperature, max_tokens -> max_output_tokens,
                             reasoning_effort
  verbose=True               the run's turns, code and output, sub-calls,
                             child RLMs and answer on stderr (from its events)
  logger=RLMLogger(log_dir)  result.metadata holds the reference's trajectory
                             (run_metadata, iterations, built from the events)
                             plus the trace file written in log_dir and the
                             run's report
  on_subcall_start/complete  called for each child RLM (any depth), as there
  on_iteration_start/complete called for each root turn of the top RLM
  environment                always rlm's own sandbox (a warning for any but
                             "local"); environment_kwargs are not used
  custom_tools, custom_sub_tools, max_errors, orchestrator,
  user_prologue, sub_sampling_args: not supported (a clear error for tools,
  whose functions cannot cross into the sandbox process; a warning for the
  others, which change no answer).
"""
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ._core import JSON, Event, Result, _Handle
from .errors import CancelledError, NoAnswerError

_OPENAI_COMPATIBLE = {"openai": None, "vllm": None, "openrouter": "https://openrouter.ai/api/v1",
                      "vercel": "https://ai-gateway.vercel.sh/v1"}
_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY",
                  "vercel": "AI_GATEWAY_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_UNSUPPORTED_BACKENDS = ("portkey", "azure_openai", "gemini")


# ---- the reference's exceptions -----------------------------------------------

class BudgetExceededError(NoAnswerError):
    """max_budget ran out and the root gave no answer after its last call."""

    def __init__(self, spent: float, budget: float, message: Optional[str] = None,
                 result: Optional[Result] = None):
        self.spent, self.budget = spent, budget
        super().__init__(message or "Budget exceeded: spent $%.6f of $%.6f budget" % (spent, budget),
                         result)


class TimeoutExceededError(NoAnswerError):
    def __init__(self, elapsed: float, timeout: float, partial_answer: Optional[str] = None,
                 message: Optional[str] = None, result: Optional[Result] = None):
        self.elapsed, self.timeout, self.partial_answer = elapsed, timeout, partial_answer
        super().__init__(message or "Timeout exceeded: %.1fs of %.1fs limit" % (elapsed, timeout),
                         result)


class TokenLimitExceededError(NoAnswerError):
    def __init__(self, tokens_used: int, token_limit: int, partial_answer: Optional[str] = None,
                 message: Optional[str] = None, result: Optional[Result] = None):
        self.tokens_used, self.token_limit, self.partial_answer = tokens_used, token_limit, partial_answer
        super().__init__(message or "Token limit exceeded: %d of %d tokens" % (tokens_used, token_limit),
                         result)


class ErrorThresholdExceededError(NoAnswerError):
    """Defined for imports; rlm has no consecutive-error limit, so it is never raised."""

    def __init__(self, error_count: int, threshold: int, last_error: Optional[str] = None,
                 partial_answer: Optional[str] = None, message: Optional[str] = None):
        self.error_count, self.threshold = error_count, threshold
        self.last_error, self.partial_answer = last_error, partial_answer
        super().__init__(message or "Error threshold exceeded: %d consecutive errors (limit: %d)"
                         % (error_count, threshold))


class CancellationError(CancelledError):
    def __init__(self, partial_answer: Optional[str] = None, message: Optional[str] = None,
                 result: Optional[Result] = None):
        self.partial_answer = partial_answer
        super().__init__(message or "Execution cancelled by user", result)


# ---- the reference's result types -----------------------------------------------

@dataclass
class ModelUsageSummary:
    total_calls: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {"total_calls": self.total_calls, "total_input_tokens": self.total_input_tokens,
             "total_output_tokens": self.total_output_tokens}
        if self.total_cost is not None:
            d["total_cost"] = self.total_cost
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelUsageSummary":
        return cls(d.get("total_calls", 0), d.get("total_input_tokens", 0),
                   d.get("total_output_tokens", 0), d.get("total_cost"))


@dataclass
class UsageSummary:
    model_usage_summaries: Dict[str, ModelUsageSummary]

    @property
    def total_cost(self) -> Optional[float]:
        costs = [u.total_cost for u in self.model_usage_summaries.values() if u.total_cost is not None]
        return sum(costs) if costs else None

    @property
    def total_input_tokens(self) -> int:
        return sum(u.total_input_tokens for u in self.model_usage_summaries.values())

    @property
    def total_output_tokens(self) -> int:
        return sum(u.total_output_tokens for u in self.model_usage_summaries.values())

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"model_usage_summaries": {m: u.to_dict() for m, u in
                                                        self.model_usage_summaries.items()}}
        if self.total_cost is not None:
            d["total_cost"] = self.total_cost
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "UsageSummary":
        return cls({m: ModelUsageSummary.from_dict(u)
                    for m, u in (d.get("model_usage_summaries") or {}).items()})

    @classmethod
    def from_result(cls, result: Result) -> "UsageSummary":
        return cls({m: ModelUsageSummary(u.calls, u.prompt_tokens, u.completion_tokens, u.cost_usd)
                    for m, u in result.usage.items()})


@dataclass
class RLMChatCompletion:
    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: Optional[Dict[str, Any]] = None
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {"root_model": self.root_model, "prompt": self.prompt, "response": self.response,
             "usage_summary": self.usage_summary.to_dict(), "execution_time": self.execution_time}
        if self.metadata is not None:
            d["metadata"] = self.metadata
        if self.error is not None:
            d["error"] = self.error
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RLMChatCompletion":
        return cls(d.get("root_model"), d.get("prompt"), d.get("response"),
                   UsageSummary.from_dict(d.get("usage_summary") or {}), d.get("execution_time"),
                   d.get("metadata"), d.get("error"))


# ---- the reference's callbacks, logger and verbose output, from the events --------

def _excerpt(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _indented(text: str, prefix: str, max_lines: int = 20) -> str:
    lines = text.rstrip("\n").split("\n")
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["… (%d more lines)" % (len(lines) - max_lines)]
    return "\n".join(prefix + line for line in lines)


def _verbose_line(e: Event) -> Optional[str]:
    """What verbose=True prints for an event (plain text; the reference uses
    rich panels), or None: the run's steps, not its ticks."""
    pad = "  " * (e.depth - 1)
    if e.kind == "root_request":
        return "%s── turn %d · %s (node %s)" % (pad, e.turn, e.model or "", e.node)
    if e.kind == "root_reply":
        if e.error:
            return "%s◇ reply failed: %s" % (pad, e.data.get("error_message") or e.error)
        return "%s◇ reply (%.2fs):\n%s" % (pad, e.seconds, _indented(_excerpt(e.text, 2000), pad + "  "))
    if e.kind == "code":
        of = " of %d" % e.blocks if e.blocks else ""
        out = "%s▸ code block %d%s (%.3fs%s):\n%s" % (
            pad, e.block, of, e.seconds, ", raised" if e.raised else "",
            _indented(e.text, pad + "  "))
        if e.output.strip():
            out += "\n%s  output:\n%s" % (pad, _indented(e.output, pad + "    "))
        return out
    if e.kind == "batch_end":
        return "%s↳ %d sub-call(s): %d done, %d failed, %d retried (%.2fs)" % (
            pad, e.batch_size, e.done, e.failed, e.retried, e.seconds)
    if e.kind == "child_start":
        return "%s↳ child RLM %s (depth %d, %s): %s" % (pad, e.node, e.depth, e.model or "",
                                                       _excerpt(e.text, 200))
    if e.kind == "child_end":
        return "%s↳ child RLM %s: %s — %s" % (pad, e.node, e.status, _excerpt(e.text, 200))
    if e.kind in ("warning", "budget_stop"):
        return "%s! %s" % (pad, e.text)
    if e.kind == "final_answer" and e.depth == 1:
        return "★ final answer (%s): %s" % (e.how, e.text)
    if e.kind == "run_end" and e.depth == 1:
        cost = " · $%.4f" % e.cost_usd if e.cost_usd is not None else ""
        return "done: %s · %d turns · %d sub-calls · %.1fs%s" % (e.status, e.turn, e.sub_calls,
                                                               e.seconds, cost)
    return None


class _Observer:
    """The events of one completion() turned into what the reference's users
    get: on_subcall_* for every child RLM, on_iteration_* for the top RLM's
    turns, the RLMLogger trajectory, and verbose output. Depths are the
    reference's: the RLM's own `depth` argument for the top (0 by default),
    one more per level below it."""

    def __init__(self, owner: "RLM"):
        self.owner = owner
        self.iterations: List[Dict[str, Any]] = []
        self._open: Optional[Dict[str, Any]] = None
        self._started = 0.0
        self._child_models: Dict[str, str] = {}

    def _call(self, name: str, *args: Any) -> None:
        fn = getattr(self.owner, name)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the reference lets no callback stop a run
            warnings.warn("rlm: %s raised %s: %s (ignored, as rlms does)" % (
                name, type(e).__name__, e), RuntimeWarning, stacklevel=2)

    def _close_iteration(self, elapsed: float) -> None:
        it, self._open = self._open, None
        if it is None:
            return
        it["iteration_time"] = elapsed - self._started
        self.iterations.append(it)
        self._call("on_iteration_complete", self.owner.depth, it["iteration"],
                   it["iteration_time"])

    def __call__(self, e: Event) -> None:
        if self.owner.verbose:
            line = _verbose_line(e)
            if line is not None:
                print(line, file=sys.stderr, flush=True)
        depth = self.owner.depth + e.depth - 1
        if e.kind == "child_start":
            self._child_models[e.node] = e.model or ""
            self._call("on_subcall_start", depth, e.model or "", _excerpt(e.text, 80))
        elif e.kind == "child_end":
            error = None if e.status == "ok" else (e.text or e.status)
            self._call("on_subcall_complete", depth, self._child_models.pop(e.node, ""),
                       e.seconds, error)
        if e.node != "0":
            return
        it = self._open
        if e.kind == "root_request":
            self._close_iteration(e.elapsed)
            self._started = e.elapsed
            self._open = {"type": "iteration", "iteration": len(self.iterations) + 1,
                          "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "prompt": e.text, "response": "", "code_blocks": [],
                          "final_answer": None, "iteration_time": None}
            self._call("on_iteration_start", self.owner.depth, self._open["iteration"])
        elif it is not None and e.kind == "root_reply":
            it["response"] = e.text
        elif it is not None and e.kind == "code":
            # rlm's sandbox gives the block's output as the model sees it
            # (stdout, then any traceback), as one text: it is `stdout`.
            it["code_blocks"].append({"code": e.text, "result": {
                "stdout": e.output, "stderr": "", "locals": {}, "execution_time": e.seconds,
                "rlm_calls": [], "final_answer": e.data.get("final_answer")}})
        elif it is not None and e.kind == "final_answer":
            it["final_answer"] = e.text
        if e.kind in ("final_answer", "run_end"):
            self._close_iteration(e.elapsed)

    def trajectory(self) -> Dict[str, Any]:
        o = self.owner
        kwargs = {k: ("(set)" if k == "api_key" and v else v)
                  for k, v in (o.backend_kwargs or {}).items()}
        return {"run_metadata": {
            "root_model": (o.backend_kwargs or {}).get("model_name") or o._options.get("model"),
            "max_depth": o.max_depth, "max_iterations": o.max_iterations, "backend": o.backend,
            "backend_kwargs": kwargs, "environment_type": o.environment,
            "environment_kwargs": {}, "other_backends": o.other_backends},
            "iterations": list(self.iterations)}


# ---- the class -------------------------------------------------------------------

# The question when completion() gets no root_prompt: in the reference the
# prompt itself (the context) holds the task.
_NO_ROOT_PROMPT = ("The task is in the variable `context`: read it there and do what it asks. "
                   "Answer with the result.")


def _backend_options(backend: str, kwargs: Optional[Dict[str, Any]], prefix: str) -> Dict[str, Any]:
    kwargs = dict(kwargs or {})
    if backend in _UNSUPPORTED_BACKENDS:
        raise ValueError("backend %r is not supported by rlm: use backend='openai' with its "
                         "OpenAI-compatible base_url, or 'anthropic'" % backend)
    if backend not in _OPENAI_COMPATIBLE and backend != "anthropic":
        raise ValueError("Unknown backend: %s. Supported backends: %s" % (
            backend, sorted(list(_OPENAI_COMPATIBLE) + ["anthropic"])))
    out: Dict[str, Any] = {prefix + "provider": "anthropic" if backend == "anthropic" else "openai"}
    if "model_name" in kwargs:
        out[prefix + "model" if prefix else "model"] = kwargs.pop("model_name")
    base_url = kwargs.pop("base_url", None) or _OPENAI_COMPATIBLE.get(backend)
    if backend == "vllm" and not base_url:
        raise ValueError("base_url is required to be set to local vLLM server address for vLLM")
    if base_url:
        out[prefix + "base_url"] = base_url
    key = kwargs.pop("api_key", None)
    if key is None and backend in ("openrouter", "vercel"):
        key = os.environ.get(_KEY_VARIABLES[backend])
    if key is not None:
        out[prefix + "api_key"] = key
    sampling = dict(kwargs.pop("sampling_args", None) or {})
    for name in ("temperature", "reasoning_effort"):
        if name in sampling and not prefix:
            out[name] = sampling.pop(name)
    if "max_tokens" in sampling and not prefix:
        out["max_output_tokens"] = sampling.pop("max_tokens")
    ignored = sorted(list(kwargs) + list(sampling))
    if ignored:
        warnings.warn("rlm: backend_kwargs %s are not used by rlm" % ", ".join(ignored), stacklevel=3)
    return out


class RLM:
    """A Recursive Language Model with the constructor and completion() of
    the reference library `rlms`; see the module's notes and docs/python.md
    for what each argument becomes here."""

    def __init__(self, backend: str = "openai", backend_kwargs: Optional[Dict[str, Any]] = None,
                 environment: str = "local", environment_kwargs: Optional[Dict[str, Any]] = None,
                 depth: int = 0, max_depth: int = 1, max_iterations: int = 30,
                 max_budget: Optional[float] = None, max_timeout: Optional[float] = None,
                 max_tokens: Optional[int] = None, max_errors: Optional[int] = None,
                 custom_system_prompt: Optional[str] = None,
                 other_backends: Optional[List[str]] = None,
                 other_backend_kwargs: Optional[List[Dict[str, Any]]] = None,
                 logger: Any = None, verbose: bool = False, persistent: bool = False,
                 custom_tools: Optional[Dict[str, Any]] = None,
                 custom_sub_tools: Optional[Dict[str, Any]] = None,
                 compaction: bool = False, compaction_threshold_pct: float = 0.85,
                 max_concurrent_subcalls: int = 4, on_subcall_start=None, on_subcall_complete=None,
                 on_iteration_start=None, on_iteration_complete=None,
                 sampling_args: Optional[Dict[str, Any]] = None,
                 sub_sampling_args: Optional[Dict[str, Any]] = None, orchestrator: bool = True,
                 user_prologue: Optional[str] = None, **rlm_options: Any):
        if custom_tools or custom_sub_tools:
            raise ValueError("custom_tools is not supported by rlm: model code runs in a separate, "
                             "sandboxed process, which host functions cannot enter")
        if other_backends is not None and len(other_backends) != 1:
            raise ValueError("We currently only support one additional backend for the recursive "
                             "sub-calls (other_backends takes one entry)")
        unused = [name for name, value in (
            ("environment_kwargs", environment_kwargs), ("max_errors", max_errors),
            ("sub_sampling_args", sub_sampling_args), ("user_prologue", user_prologue),
            ("orchestrator", None if orchestrator else False)) if value is not None]
        if environment != "local":
            unused.append("environment=%r (rlm's own sandbox runs the code)" % environment)
        if unused:
            warnings.warn("rlm: not supported, no effect: " + ", ".join(unused), stacklevel=2)
        options = _backend_options(backend, dict(backend_kwargs or {}, sampling_args=sampling_args)
                                   if sampling_args else backend_kwargs, "")
        if other_backends:
            sub = _backend_options(other_backends[0], (other_backend_kwargs or [{}])[0], "sub_")
            options.update(sub)
        levels = max_depth - depth
        options.update(max_iterations=max_iterations, max_children=max_concurrent_subcalls,
                       max_cost=max_budget, max_time=max_timeout, max_tokens=max_tokens,
                       system_prompt=custom_system_prompt,
                       compact_at=compaction_threshold_pct if compaction else 1)
        # The reference always runs the REPL loop, down to a plain call past its depth.
        if levels >= 1:
            options.update(max_depth=levels, mode="rlm")
        else:
            options.update(mode="direct")
        self.log_dir = getattr(logger, "log_dir", None)
        options.update(rlm_options)
        self.backend, self.backend_kwargs = backend, backend_kwargs
        self.max_depth, self.max_iterations, self.depth = max_depth, max_iterations, depth
        self.max_budget, self.max_timeout, self.max_tokens = max_budget, max_timeout, max_tokens
        self.persistent, self.verbose, self.logger = persistent, verbose, logger
        self.environment, self.other_backends = environment, other_backends
        self.on_subcall_start: Optional[Callable[[int, str, str], None]] = on_subcall_start
        self.on_subcall_complete: Optional[Callable[[int, str, float, Optional[str]], None]] = \
            on_subcall_complete
        self.on_iteration_start: Optional[Callable[[int, int], None]] = on_iteration_start
        self.on_iteration_complete: Optional[Callable[[int, int, float], None]] = \
            on_iteration_complete
        self._options = options
        self._session: Optional[_Handle] = None

    def _handle(self, trace: Optional[str]) -> _Handle:
        options = dict(self._options)
        if trace:
            options["trace"] = trace
        if self.persistent:
            if self._session is None:
                self._session = _Handle(options)
                self._session.begin_conversation()
            return self._session
        return _Handle(options)

    def completion(self, prompt: Any, root_prompt: Optional[str] = None) -> RLMChatCompletion:
        """Runs the RLM on prompt (the context: str, dict, list) and returns
        an RLMChatCompletion whose .response is the answer. root_prompt is the
        question the root model sees; without it the task is in the prompt."""
        start = time.perf_counter()
        trace = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            trace = os.path.join(self.log_dir, "rlm_%s_%d.jsonl" % (
                time.strftime("%Y-%m-%d_%H-%M-%S"), os.getpid()))
        handle = self._handle(trace if not self.persistent or self._session is None else None)
        observer = None
        if self.verbose or self.logger is not None or any(
                (self.on_subcall_start, self.on_subcall_complete, self.on_iteration_start,
                 self.on_iteration_complete)):
            observer = _Observer(self)
        try:
            handle.set_context(JSON(prompt) if isinstance(prompt, dict) else prompt)
            try:
                result = handle.run(root_prompt or _NO_ROOT_PROMPT, observer)
            except KeyboardInterrupt:
                raise CancellationError(message="Execution cancelled by user (Ctrl+C)") from None
            except CancelledError as e:
                raise CancellationError(message=e.message, result=e.result) from None
            except NoAnswerError as e:
                raise self._limit_error(e) from None
        finally:
            if not self.persistent:
                handle.close()
        metadata = None
        if self.logger is not None:
            metadata = dict(observer.trajectory(), trace=trace, report=result.report)
            if hasattr(self.logger, "_trajectory"):
                self.logger._trajectory = metadata
        return RLMChatCompletion(
            root_model=result.report.get("model") or (self.backend_kwargs or {}).get("model_name", "unknown"),
            prompt=prompt, response=result.answer or "",
            usage_summary=UsageSummary.from_result(result),
            execution_time=time.perf_counter() - start, metadata=metadata)

    def _limit_error(self, e: NoAnswerError) -> NoAnswerError:
        r = e.result
        by = r.stopped_by if r else None
        if by == "max_cost":
            return BudgetExceededError(r.cost or 0.0, self.max_budget or 0.0, e.message, r)
        if by == "max_time":
            return TimeoutExceededError(r.elapsed, self.max_timeout or 0.0, None, e.message, r)
        if by == "max_tokens":
            used = sum(u.prompt_tokens + u.completion_tokens for u in r.usage.values())
            return TokenLimitExceededError(used, self.max_tokens or 0, None, e.message, r)
        return e

    def close(self) -> None:
        """Ends a persistent conversation (stops its sandbox)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "RLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

