"""Bad arguments give Python exceptions with clear messages, never a crash;
every failing rlm_status maps to its exception, with the library's message
and, when the run got that far, its Result."""
import socket

import pytest

import rlm
from common import answer_with, opts, repl
from harness import FakeLM


def test_wrong_types():
    with pytest.raises(TypeError, match="question must be str"):
        rlm.ask(b"bytes question", "ctx", mode="direct")
    with pytest.raises(TypeError, match="context: expected str, bytes, a path"):
        rlm.ask("q", 42)
    with pytest.raises(TypeError, match="dict context maps names to str or bytes"):
        rlm.ask("q", {"a": 1})
    with pytest.raises(TypeError, match="record 0 is not JSON data"):
        rlm.ask("q", [object()])
    with pytest.raises(TypeError, match="option max_iterations: expected str"):
        rlm.ask("q", "ctx", max_iterations=[3])
    with pytest.raises(TypeError, match="unknown option 'max_iteration'"):
        rlm.ask("q", "ctx", max_iteration=3)
    with pytest.raises(ValueError, match="empty list"):
        rlm.ask("q", [])
    with pytest.raises(ValueError, match="NUL"):
        rlm.ask("a\0b", "ctx")


def test_bad_values_are_usage_errors():
    with pytest.raises(rlm.UsageError, match="max_iterations") as e:
        rlm.ask("q", "ctx", max_iterations=0)
    assert isinstance(e.value, ValueError)
    assert e.value.status == "usage error" and e.value.code == 2
    with pytest.raises(rlm.UsageError, match="mode"):
        rlm.ask("q", "ctx", mode="sideways")
    with pytest.raises(rlm.UsageError, match="empty"):
        rlm.ask("", "ctx", base_url="http://127.0.0.1:9/v1")


def test_missing_files_and_empty_input(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(rlm.InputError, match="nope.txt") as e:
        rlm.ask("q", missing)
    assert e.value.code == 3
    with pytest.raises(rlm.InputError, match="no file matches"):
        rlm.ask("q", tmp_path / "*.nothing")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with FakeLM([answer_with("FINAL(1)")]) as lm:
        with pytest.raises(rlm.InputError, match="empty"):
            rlm.ask("q", empty, **opts(lm))


def test_unreachable_endpoint_is_a_model_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(rlm.ModelError) as e:
        rlm.ask("q", "ctx", base_url="http://127.0.0.1:%d/v1" % port, max_retries=0, mode="rlm")
    assert e.value.result is not None and e.value.result.status == "model error"
    assert "127.0.0.1" in str(e.value)


def test_http_error_is_a_model_error_with_the_provider_message():
    rules = [{"match": "", "status": 401, "reply": "Incorrect API key provided"}]
    with FakeLM(rules) as lm:
        with pytest.raises(rlm.ModelError, match="Incorrect API key"):
            rlm.ask("q", "ctx", **opts(lm))


def test_no_answer_carries_the_result():
    with FakeLM([{"match": "", "reply": repl("x = 1")}]) as lm:
        with pytest.raises(rlm.NoAnswerError) as e:
            rlm.ask("q", "ctx", **opts(lm, max_iterations=2))
    r = e.value.result
    assert r.answer is None and r.status == "no answer" and r.turns >= 2
    assert e.value.code == 1


def test_budget_stop_names_the_budget():
    with FakeLM([{"match": "", "reply": repl("x = 1")}]) as lm:
        with pytest.raises(rlm.NoAnswerError) as e:
            rlm.ask("q", "ctx", **opts(lm, max_tokens=1))
    assert e.value.result.stopped_by == "max_tokens"


def test_callback_error_cancels_and_is_raised():
    class Stop(Exception):
        pass

    def boom(event):
        raise Stop("from the callback")

    rules = [{"match": "", "reply": repl("x = 1"), "latency_ms": 200}]
    with FakeLM(rules) as lm:
        with pytest.raises(Stop, match="from the callback"):
            rlm.ask("q", "ctx", on_event=boom, **opts(lm, max_iterations=50))


def test_closed_handles_and_sessions():
    s = rlm.Session("ctx", mode="rlm", base_url="http://127.0.0.1:9/v1")
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s.ask("q")
    s.close()  # twice is fine


def test_a_sandbox_that_cannot_start(tmp_path):
    # A lone run's sandbox starts while the root model thinks; whether it
    # failed is known when the first code block needs it.
    broken = str(tmp_path / "no-such-sandbox")
    with FakeLM([answer_with("print(1)")]) as lm:
        with pytest.raises(rlm.SandboxError, match="cannot start the sandbox") as e:
            rlm.ask("q", "ctx", **opts(lm, sandbox_exe=broken))
    assert e.value.result.status == "sandbox error"
    # A run that answers before any code did not need it: answered, and the
    # failure still said (the warning and the trace's error event).
    events = []
    with FakeLM([{"match": "", "reply": "It is plain.\nFINAL(plain)"}]) as lm:
        r = rlm.ask("q", "ctx", on_event=events.append, **opts(lm, sandbox_exe=broken))
    assert r.answer == "plain" and r.status == "ok"
    errors = [ev for ev in events if ev.type == "error" or (ev.type == "other" and ev.data.get("type") == "error")]
    assert errors, [ev.type for ev in events]
