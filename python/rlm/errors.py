"""The exceptions rlm raises: one class per rlm_status of include/rlm.h.

Every one is an RLMError with the library's message, the status' name
(`status`, e.g. "model error") and code (`code`), and `result`: the Result
of the run when it got as far as a report (turns, usage, cost...), else None.
Wrong argument types raise TypeError and bad values ValueError before any
run starts; KeyboardInterrupt cancels a run and is raised again once the run
has stopped."""


class RLMError(Exception):
    """A run or a call that failed; see the subclasses."""

    status = "error"
    code = -1

    def __init__(self, message, result=None):
        super().__init__(message)
        self.message = message
        self.result = result


class NoAnswerError(RLMError):
    """RLM_NO_ANSWER: the run ended without an answer (the turns or a budget
    ran out, or it was cancelled). `result.stopped_by` names the budget."""

    status, code = "no answer", 1


class CancelledError(NoAnswerError):
    """The run was cancelled by Session.cancel() (from another thread) or by
    closing a stream before its end."""


class UsageError(RLMError, ValueError):
    """RLM_ERR_USAGE: a bad option value or call sequence."""

    status, code = "usage error", 2


class InputError(RLMError):
    """RLM_ERR_INPUT: the context could not be read (a missing file, an empty
    input, a .json that does not parse, a session file that cannot be opened)."""

    status, code = "input error", 3


class ModelError(RLMError):
    """RLM_ERR_MODEL: the model endpoint failed (unreachable, HTTP error,
    unusable replies)."""

    status, code = "model error", 4


class SandboxError(RLMError):
    """RLM_ERR_SANDBOX: the sandbox could not be started or broke beyond repair."""

    status, code = "sandbox error", 5


class InternalError(RLMError):
    """RLM_ERR_INTERNAL (and RLM_ERR_NOMEM, also a MemoryError)."""

    status, code = "internal error", 7


class OutOfMemoryError(InternalError, MemoryError):
    """RLM_ERR_NOMEM."""

    status, code = "out of memory", 6


BY_CODE = {cls.code: cls for cls in (NoAnswerError, UsageError, InputError, ModelError,
                                     SandboxError, OutOfMemoryError, InternalError)}


def for_status(code, message, result=None):
    """The exception for an rlm_status that is not RLM_OK."""
    return BY_CODE.get(code, InternalError)(message or "rlm error %d" % code, result)
