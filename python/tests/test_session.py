"""rlm.Session: a conversation keeps the sandbox's variables and takes new
inputs as context_1, ...; one saved on disk is continued by another Session;
one question at a time; cancel() from another thread."""
import threading

import pytest

import rlm
from common import opts, repl
from harness import FakeLM


def test_conversation_keeps_variables_and_takes_new_inputs():
    rules = [
        {"match": "first question", "reply": repl("kept = len(context)\nFINAL(kept)")},
        {"match": "second question",
         "reply": repl("FINAL('%s %s %s' % (kept, answer_1, context_1))")},
    ]
    with FakeLM(rules) as lm:
        with rlm.Session("abcd", **opts(lm)) as s:
            assert s.ask("first question").answer == "4"
            res = s.ask("second question", context={"n.txt": "new input"})
            assert s.report["question"] == 2
    assert res.answer == "4 4 {'n.txt': 'new input'}"


def test_session_on_disk_is_continued(tmp_path):
    db = tmp_path / "s.db"
    rules = [
        {"match": "remember", "reply": repl("secret = 'xyzzy'\nFINAL('ok')")},
        {"match": "recall", "reply": repl("FINAL(secret + ' ' + answer_1)")},
    ]
    ctx = tmp_path / "c.txt"
    ctx.write_text("context text")
    with FakeLM(rules) as lm:
        with rlm.Session(ctx, session="py", session_db=db, **opts(lm)) as s:
            assert s.ask("remember").answer == "ok"
        with rlm.Session(session="py", session_db=db, **opts(lm)) as s:
            assert s.ask("recall").answer == "xyzzy ok"
    listed = rlm.sessions(session_db=db)
    assert [x["name"] for x in listed] == ["py"] and listed[0]["questions"] == 2
    assert rlm.remove_session("py", session_db=db)["removed"] == "py"
    assert rlm.sessions(session_db=db) == []


def test_saved_session_refuses_in_memory_json(tmp_path):
    with FakeLM([{"match": "", "reply": repl("FINAL(1)")}]) as lm:
        with rlm.Session(session="j", session_db=tmp_path / "s.db", **opts(lm)) as s:
            with pytest.raises(rlm.UsageError, match="saved session"):
                s.ask("q", context=[{"a": 1}])


def test_one_question_at_a_time_and_cancel_from_another_thread():
    rules = [{"match": "slow", "reply": repl("x = 1"), "latency_ms": 30000},
             {"match": "fast", "reply": repl("FINAL('fine')")}]
    with FakeLM(rules) as lm:
        with rlm.Session("ctx", **opts(lm)) as s:
            errors = []
            t = threading.Thread(target=lambda: errors.append(_catch(lambda: s.ask("slow"))))
            t.start()
            lm.wait_in_flight(1)
            with pytest.raises(RuntimeError, match="one question at a time"):
                s.ask("fast")
            s.cancel()
            t.join(60)
            assert not t.is_alive()
            assert isinstance(errors[0], rlm.CancelledError)
            assert errors[0].result.status == "no answer"
            # The conversation goes on.
            assert s.ask("fast").answer == "fine"


def _catch(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None
