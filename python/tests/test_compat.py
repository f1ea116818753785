"""The reference library's shape: a script written for `rlms` (from rlm
import RLM; RLM(...).completion(...)) runs unchanged, its result types and
exceptions are there, and what does not map says so."""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import rlm
from rlm import RLM
from common import repl
from harness import FakeLM

# Written as a user of `rlms` writes it (after its quickstart): nothing in it
# knows about this package.
REFERENCE_STYLE = textwrap.dedent('''
    import os
    import random
    import string

    from rlm import RLM
    from rlm.logger import RLMLogger

    secret_number = random.randint(100_000_000, 999_999_999)
    filler = ["".join(random.choices(string.ascii_lowercase + " ", k=120)) for _ in range(20_000)]
    filler.insert(len(filler) // 2, f"SECRET_NUMBER={secret_number}")
    haystack = "\\n".join(filler)

    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "gpt-5-nano", "api_key": os.getenv("OPENAI_API_KEY")},
        environment="local",
        max_iterations=10,
        logger=RLMLogger(log_dir=os.environ["LOG_DIR"]),
    )
    result = rlm.completion(
        "The context contains ~20k lines of random text with a single line matching the "
        f"pattern SECRET_NUMBER=<digits>. Find and return ONLY the numeric value.\\n\\n{haystack}"
    )
    print(f"Model found: {result.response}")
    print(f"Correct: {str(secret_number) in result.response}")
    print(result.usage_summary.to_dict()["model_usage_summaries"]["gpt-5-nano"]["total_calls"])
''')

FIND = repl('import re\nFINAL(re.search(r"SECRET_NUMBER=(\\d+)", context).group(1))')


def test_reference_style_script_runs_unchanged(tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(REFERENCE_STYLE)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(rlm.__file__)))
    with FakeLM([{"match": "", "reply": FIND}], require_key="sk-test") as lm:
        env = dict(os.environ, PYTHONPATH=pkg, OPENAI_API_KEY="sk-test",
                   OPENAI_BASE_URL=lm.base_url, LOG_DIR=str(tmp_path / "logs"))
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Model found: ") and lines[1] == "Correct: True", proc.stdout
    assert lines[2] == "1"
    assert len(os.listdir(tmp_path / "logs")) == 1   # the logger's directory got the trace


def compat(lm, **kw):
    return RLM(backend="openai", backend_kwargs={"model_name": "root", "base_url": lm.base_url},
               **kw)


def test_completion_result_types_and_root_prompt():
    rules = [{"match": "(?i)what is the theme", "reply": repl("FINAL(context.upper())")}]
    with FakeLM(rules) as lm:
        result = compat(lm).completion("a story", root_prompt="What is the theme?")
    assert isinstance(result, rlm.RLMChatCompletion)
    assert result.response == "A STORY" and result.root_model == "root"
    assert result.prompt == "a story" and result.execution_time > 0 and result.metadata is None
    usage = result.usage_summary
    assert usage.model_usage_summaries["root"].total_calls == 1
    assert usage.total_input_tokens > 0
    assert set(result.to_dict()) == {"root_model", "prompt", "response", "usage_summary",
                                     "execution_time"}
    from rlm.core.types import RLMChatCompletion, UsageSummary
    assert RLMChatCompletion is rlm.RLMChatCompletion and UsageSummary is rlm.UsageSummary


def test_structured_prompts():
    rules = [{"match": "", "reply": repl("FINAL(type(context).__name__ + repr(context))")}]
    with FakeLM(rules) as lm:
        r = compat(lm)
        assert r.completion({"documents": ["x"], "query": "q"}).response == \
            "dict{'documents': ['x'], 'query': 'q'}"
        assert r.completion(["doc1", "doc2"]).response == "list['doc1', 'doc2']"


def test_persistent_conversation_versions_contexts():
    rules = [{"match": "", "reply": repl("FINAL('%s|%s' % (context_0, globals().get('context_1')))")}]
    with FakeLM(rules) as lm:
        with compat(lm, persistent=True) as r:
            assert r.completion("first").response == "first|None"
            assert r.completion("second").response == "first|second"


def test_budget_with_no_answer_raises_the_reference_exception():
    with FakeLM([{"match": "", "reply": repl("x = 1")}]) as lm:
        with pytest.raises(rlm.TokenLimitExceededError) as e:
            compat(lm, max_tokens=1).completion("ctx")
    assert e.value.token_limit == 1 and e.value.tokens_used > 1
    assert isinstance(e.value, rlm.NoAnswerError)


def test_what_does_not_map_says_so():
    with pytest.raises(ValueError, match="custom_tools is not supported"):
        RLM(custom_tools={"f": print})
    with pytest.raises(ValueError, match="not supported by rlm"):
        RLM(backend="gemini")
    with pytest.raises(ValueError, match="base_url is required"):
        RLM(backend="vllm", backend_kwargs={"model_name": "m"})
    with pytest.raises(ValueError, match="Unknown backend"):
        RLM(backend="nope")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RLM(environment="docker", max_errors=3, backend_kwargs={"model_name": "m", "seed": 1})
    text = " ".join(str(w.message) for w in caught)
    assert "max_errors" in text and "docker" in text and "seed" in text


def test_callbacks_logger_and_verbose_from_the_events(capsys):
    """on_subcall_* (every child RLM), on_iteration_* (the top RLM's turns),
    the RLMLogger trajectory and verbose output, on a run with a child."""
    from rlm.logger import RLMLogger
    rules = [{"match": "CHILDQ", "reply": repl('FINAL("child says 42")')},
             {"match": "ROOT-GOT", "reply": "FINAL(got it)"},
             {"match": "", "reply": "Asking a child.\n" + repl(
                 'print("ROOT-GOT:" + rlm_query("CHILDQ: look"))')}]
    calls = []
    logger = RLMLogger()
    with FakeLM(rules) as lm:
        result = compat(
            lm, max_depth=2, logger=logger, verbose=True,
            on_subcall_start=lambda *a: calls.append(("subcall_start",) + a),
            on_subcall_complete=lambda *a: calls.append(("subcall_complete",) + a),
            on_iteration_start=lambda *a: calls.append(("iteration_start",) + a),
            on_iteration_complete=lambda *a: calls.append(("iteration_complete",) + a),
        ).completion("ctx", root_prompt="Go")
    assert result.response == "got it"
    names = [c[:3] if c[0].startswith("iteration") else c[:2] for c in calls]
    assert names == [("iteration_start", 0, 1), ("subcall_start", 1),
                     ("subcall_complete", 1), ("iteration_complete", 0, 1),
                     ("iteration_start", 0, 2), ("iteration_complete", 0, 2)]
    start, end = calls[1], calls[2]
    assert start[2:] == ("root", "CHILDQ: look")        # (depth, model, prompt_preview)
    assert end[2] == "root" and end[3] >= 0 and end[4] is None
    assert all(c[3] >= 0 for c in calls if c[0] == "iteration_complete")

    traj = result.metadata
    assert traj is logger.get_trajectory() and logger.iteration_count == 2
    assert traj["run_metadata"]["root_model"] == "root"
    assert traj["run_metadata"]["max_depth"] == 2 and traj["run_metadata"]["backend"] == "openai"
    first, second = traj["iterations"]
    assert first["iteration"] == 1 and first["response"].startswith("Asking a child.")
    block = first["code_blocks"][0]
    assert "rlm_query" in block["code"]
    assert block["result"]["stdout"] == "ROOT-GOT:child says 42\n"
    assert second["response"] == "FINAL(got it)" and second["final_answer"] == "got it"
    assert second["code_blocks"] == [] and second["iteration_time"] >= 0
    assert traj["report"]["answer"] == "got it" and traj["trace"] is None

    err = capsys.readouterr().err
    for shown in ("turn 1", "Asking a child.", "rlm_query", "ROOT-GOT:child says 42",
                  "child RLM 0.1", "child says 42", "final answer (FINAL in text): got it"):
        assert shown in err, err


def test_a_failing_reference_callback_is_ignored_as_there():
    rules = [{"match": "", "reply": repl("FINAL('ok')")}]

    def broken(*args):
        raise RuntimeError("callback bug")

    with FakeLM(rules) as lm:
        with pytest.warns(RuntimeWarning, match="on_iteration_start raised RuntimeError"):
            result = compat(lm, on_iteration_start=broken).completion("ctx")
    assert result.response == "ok"
