"""Helpers shared by the package's tests: scripted root replies and the
options every run against the fake server takes."""
from harness import repl  # noqa: F401  (re-exported)


def opts(lm, **more):
    """Options for a run against FakeLM lm: its URL, fixed model names, the
    RLM loop even on small inputs (auto mode would answer them directly)."""
    o = dict(base_url=lm.base_url, model="root-model", sub_model="sub-model", mode="rlm")
    o.update(more)
    return o


def answer_with(code):
    """A rule answering every root request with one repl block."""
    return {"match": "", "reply": repl(code)}
