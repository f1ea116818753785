"""The run's events (rlm_set_event_callback) through on_event= and
rlm.stream(), against the fake model server: a real run's events in order
with their texts and counts, a child RLM at depth 2, the struct read as the
header lays it out (and as an older library would fill it), an exception in
the callback, and streams that end cleanly on errors and on cancel."""
import ctypes
import os
import shutil
import subprocess
import threading

import pytest

import rich_run
import rlm
from common import opts, repl
from harness import FakeLM
from rlm import _native as N
from rlm._core import _event_of

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(HERE, "..", "..", "include")

# Kinds that tick with time (how many come depends on the machine's speed)
# or that the C side may add to: left out where an exact order is asserted.
TICKS = {"progress", "root_wait", "batch_progress", "other"}


def rich_events(**more):
    """The events of tests/e2e/rich_run.py's run (a batch of 12 sub-calls,
    one failing after its retries and one retried once; a child RLM; a
    block that raises), through on_event; and the Result."""
    seen = []
    with FakeLM(rich_run.RULES) as lm:
        res = rlm.ask(rich_run.QUESTION, "".join("record %d\n" % i for i in range(200)),
                      on_event=seen.append, **opts(lm, max_depth=2, max_retries=2, **more))
    return seen, res


def steps(events, node):
    return [e.kind for e in events if e.node == node and e.kind not in TICKS]


def one(events, node, kind, n=0):
    return [e for e in events if e.node == node and e.kind == kind][n]


def test_a_runs_events_in_order_with_their_content():
    events, res = rich_events()
    assert res.answer.startswith("12 parts, the child said 42")
    assert steps(events, "0") == (
        ["run_start", "root_request", "root_reply", "code_start", "batch_start", "batch_end"]
        + ["sub_call"] * 12
        # (the child RLM's events, child_start first, carry its node "0.1")
        + ["code", "code_start", "code", "root_request", "root_reply",
           "final_answer", "run_end", "warning"])
    # Every event is also the trace's record, whole.
    for e in events:
        if e.kind != "progress":
            assert e.data["type"] == e.type and e.data["node"] == e.node
    start = one(events, "0", "run_start")
    assert (start.text, start.type, start.depth, start.parent) == (
        rich_run.QUESTION, "question", 1, None)
    assert one(events, "0", "root_request").model == "root-model"
    reply = one(events, "0", "root_reply")
    assert reply.text.startswith("I will split the work") and reply.turn == 1
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.cost_usd is None  # no price for a fake model

    first = one(events, "0", "code_start")
    assert (first.block, first.blocks) == (1, 2)
    block = one(events, "0", "code")
    assert block.text == first.text and "llm_query_batched" in block.text
    assert block.output == "12 1\nROOT-GOT:child says 42\n"
    assert not block.raised and block.data["output"] == block.output
    second = one(events, "0", "code", 1)
    assert second.raised and "ZeroDivisionError" in second.output and second.block == 2

    final = one(events, "0", "final_answer")
    assert (final.text, final.how) == (res.answer, "FINAL in text")
    end = one(events, "0", "run_end")
    assert (end.status, end.how, end.text) == ("ok", "FINAL in text", res.answer)
    assert (end.turn, end.sub_calls, end.failed) == (res.turns, res.sub_calls, 1)
    assert "1 of 13 sub-calls failed" in one(events, "0", "warning").text
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all(e.text and not e.data and not e.type for e in progress)


def test_batch_counts_and_sub_calls():
    events, _ = rich_events()
    start, end = one(events, "0", "batch_start"), one(events, "0", "batch_end")
    assert start.batch_size == 12 and start.model == "sub-model"
    # PART 3 fails after its 2 retries; PART 5 is retried once.
    assert (end.batch_size, end.done, end.failed, end.retried, end.in_flight) == (12, 12, 1, 3, 0)
    calls = [e for e in events if e.kind == "sub_call"]
    assert [e.text for e in calls] == ["PART %d: count the records" % i for i in range(12)]
    assert calls[4].output == "part 4 done" and calls[4].error is None
    assert calls[3].error and calls[3].output.startswith("Error:")
    assert calls[5].output == "part 5 done" and calls[5].data["attempts"] == 2
    for e in [e for e in events if e.kind == "batch_progress"]:
        assert e.batch_size == 12 and e.done + e.in_flight <= 12


def test_a_child_rlm_at_depth_2():
    events, _ = rich_events()
    child = [e for e in events if e.node == "0.1"]
    assert child and all(e.depth == 2 and e.parent == "0" for e in child)
    assert steps(events, "0.1") == ["child_start", "run_start", "root_request", "root_reply",
                                    "code_start", "code", "final_answer", "run_end", "child_end"]
    start = child[0]
    assert start.text == "CHILDQ: what does the child find?" and start.model == "root-model"
    assert one(events, "0.1", "code").text == 'FINAL("child says 42")'
    end = child[-1]
    assert (end.status, end.text) == ("ok", "child says 42")
    # The parent's block that called rlm_query ends after its child.
    order = [(e.node, e.kind) for e in events]
    assert order.index(("0.1", "child_end")) < order.index(("0", "code"))


def test_stream_yields_the_same_events_and_ticks_while_waiting():
    with FakeLM(rich_run.RULES) as lm:
        s = rlm.stream(rich_run.QUESTION, "records", **opts(lm, max_depth=2, max_retries=2))
        events = list(s)
    assert s.result.answer.startswith("12 parts")
    assert steps(events, "0")[:6] == ["run_start", "root_request", "root_reply", "code_start",
                                      "batch_start", "batch_end"]
    assert steps(events, "0.1")[-1] == "child_end"
    # A root reply that takes a second to come is waited on visibly.
    rules = [{"match": "", "reply": repl("FINAL('late')"), "latency_ms": 1500}]
    with FakeLM(rules) as lm:
        events = list(rlm.stream("Go", "ctx", **opts(lm)))
    waits = [e for e in events if e.kind == "root_wait"]
    assert waits and waits[-1].seconds > waits[0].seconds >= 0
    assert steps(events, "0")[-1] == "run_end"


def test_struct_layout_is_the_headers(tmp_path):
    """ctypes' rlm_event against the compiler's: every offset and the size."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to check the struct's layout"
    names = [name for name, _ in N.Event._fields_]
    src = tmp_path / "layout.c"
    src.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "rlm.h"\nint main(void) {\n'
                   + "".join('printf("%s %%zu\\n", offsetof(rlm_event, %s));\n' % (n, n)
                             for n in names)
                   + 'printf("sizeof %zu\\n", sizeof(rlm_event));\n'
                   + 'printf("RLM_EVENT_VERSION %d\\n", RLM_EVENT_VERSION);\nreturn 0;\n}\n')
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", INCLUDE, str(src), "-o", str(exe)], check=True)
    got = dict(line.split() for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines())
    assert {n: int(got[n]) for n in names} == {n: getattr(N.Event, n).offset for n in names}
    assert int(got["sizeof"]) == ctypes.sizeof(N.Event)
    assert int(got["RLM_EVENT_VERSION"]) == N.EVENT_VERSION


def test_an_older_librarys_smaller_struct_is_read_as_far_as_it_goes():
    ev = N.Event(version=1, kind=7, type=b"code", node=b"0", depth=1, turn=2,
                 model=b"never read", block=3)
    ev.size = N.Event.model.offset  # an old library's struct ended before `model`
    text = b"print(1)"
    ev.text = ctypes.cast(ctypes.c_char_p(text), ctypes.c_void_p)
    ev.text_len = len(text)
    e = _event_of(ctypes.pointer(ev))
    assert (e.kind, e.type, e.node, e.turn, e.text) == ("code", "code", "0", 2, "print(1)")
    assert e.model is None and e.block == 0 and e.data == {}
    ev.size, ev.kind = ctypes.sizeof(N.Event), 99   # a kind added after this package
    assert _event_of(ctypes.pointer(ev)).kind == "other"


def test_an_exception_in_on_event_cancels_the_run_and_is_raised():
    rules = [{"match": "", "reply": repl("x = 1"), "times": 1},
             {"match": "", "reply": repl("FINAL('done')")}]
    seen = []

    class Stop(Exception):
        pass

    def on_event(e):
        seen.append(e.kind)
        if e.kind == "code_start":
            raise Stop("enough")

    with FakeLM(rules) as lm:
        with rlm.Session("ctx", **opts(lm)) as s:
            with pytest.raises(Stop, match="enough"):
                s.ask("Go", on_event=on_event)
            # Nothing more was delivered, the run stopped there...
            assert seen[-1] == "code_start" and "code" not in seen
            assert s.report["status"] == "no answer" and s.report["error"] == "cancelled"
            # ... and the conversation goes on.
            assert s.ask("Again").answer == "done"
    assert [t.name for t in threading.enumerate()] == [threading.current_thread().name]


def test_an_exception_in_on_event_from_a_child_rlms_thread():
    def on_event(e):
        if e.depth == 2 and e.kind == "run_start":
            raise LookupError("from the child's thread")

    with FakeLM(rich_run.RULES) as lm:
        with pytest.raises(LookupError, match="child's thread"):
            rlm.ask(rich_run.QUESTION, "records", on_event=on_event,
                    **opts(lm, max_depth=2, max_retries=0))


def test_stream_ends_cleanly_on_an_error():
    rules = [{"match": "", "status": 500, "reply": "the server broke"}]
    with FakeLM(rules) as lm:
        s = rlm.stream("Go", "ctx", **opts(lm, max_retries=0))
        events = []
        with pytest.raises(rlm.ModelError, match="500"):
            for e in s:
                events.append(e)
        assert list(s) == [] and s.result is None
    end = [e for e in events if e.kind == "run_end"][-1]
    assert end.status == "model error" and end.text == ""
    assert any(e.kind == "root_reply" and e.error for e in events)
    assert "rlm-stream" not in [t.name for t in threading.enumerate()]


def test_stream_ends_cleanly_on_cancel():
    slow = [{"match": "", "reply": repl("FINAL('late')"), "latency_ms": 60000}]
    # Session.cancel() from inside the loop: the iteration raises
    # CancelledError once the run has stopped, then ends.
    with FakeLM(slow) as lm:
        with rlm.Session("ctx", **opts(lm)) as session:
            kinds = []
            with pytest.raises(rlm.CancelledError):
                for e in session.stream("Go"):
                    kinds.append(e.kind)
                    if e.kind == "root_request":
                        session.cancel()
            assert kinds[-1] == "run_end" and "other" in kinds  # the "cancelled" record
    # close(): the loop ends with no error.
    with FakeLM(slow) as lm:
        s = rlm.stream("Go", "ctx", **opts(lm))
        for e in s:
            if e.kind == "root_request":
                s.close()
        assert s.result is None and list(s) == []
    # A Stream dropped in the middle (break) is cancelled and waited for: a
    # Session can ask its next question at once.
    with FakeLM([{"match": "Again", "reply": repl("FINAL('next')")}] + slow) as lm:
        for e in rlm.stream("Go", "ctx", **opts(lm)):
            if e.kind == "root_request":
                break
        assert "rlm-stream" not in [t.name for t in threading.enumerate()]
        with rlm.Session("ctx", **opts(lm)) as session:
            for e in session.stream("Go"):
                if e.kind == "root_request":
                    break
            assert session.ask("Again").answer == "next"
    assert [t.name for t in threading.enumerate()] == [threading.current_thread().name]


def test_event_keeps_its_old_shape():
    e = rlm.Event("progress", "turn 1 of 30", {"k": 1})
    assert (e.kind, e.text, e.data, e.output, e.depth) == ("progress", "turn 1 of 30", {"k": 1},
                                                           "", 0)
