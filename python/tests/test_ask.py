"""rlm.ask and rlm.stream against the fake model server: every form of
context reaches the sandbox as the type the docs promise, the Result holds
the report's figures, options and events work."""
import json
import os
import subprocess

import pytest

import rlm
from common import answer_with, opts, repl
from harness import FakeLM

DESCRIBE = answer_with('FINAL(type(context).__name__ + ":" + repr(context)[:200])')


def ask_describe(context, **more):
    with FakeLM([DESCRIBE]) as lm:
        return rlm.ask("What is the context?", context, **opts(lm, **more))


def test_str_context_and_result_fields(tmp_path):
    trace = tmp_path / "t.jsonl"
    res = ask_describe("alpha\nbeta", trace=trace)
    assert res.answer == "str:'alpha\\nbeta'"
    assert str(res) == res.answer
    assert res.status == "ok" and res.how == "code" and res.turns == 1
    assert res.sub_calls == 0 and res.stopped_by is None and res.elapsed > 0
    assert res.usage["root-model"].calls == 1
    assert res.usage["root-model"].prompt_tokens > 0
    assert res.trace == str(trace)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events[0]["type"] == "run_start" and events[-1]["type"] == "run_end"
    assert res.report["answer"] == res.answer


def test_non_ascii_str_bytes_bytearray_memoryview():
    text = "héllo wörld ✓ " * 3
    assert ask_describe(text).answer == "str:" + repr(text)[:200]
    assert ask_describe(text.encode()).answer == "str:" + repr(text)[:200]
    assert ask_describe(bytearray(b"abc")).answer == "str:'abc'"
    assert ask_describe(memoryview(b"xyz")).answer == "str:'xyz'"


def test_path_dir_list_of_paths_and_open_file(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second")
    assert ask_describe(tmp_path / "a.txt").answer == "str:'first'"
    res = ask_describe([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert res.answer.startswith("dict:{")
    assert "'first'" in res.answer and "'second'" in res.answer
    assert ask_describe(tmp_path).answer.startswith("dict:")
    with open(tmp_path / "b.txt", "rb") as f:
        assert ask_describe(f).answer == "str:'second'"


def test_pipe_from_a_process():
    proc = subprocess.Popen(["printf", "from a pipe"], stdout=subprocess.PIPE)
    try:
        assert ask_describe(proc.stdout).answer == "str:'from a pipe'"
    finally:
        proc.stdout.close()
        proc.wait()


def test_dict_records_and_json_value():
    res = ask_describe({"one.txt": "uno", "two.txt": b"dos"})
    assert res.answer == "dict:{'one.txt': 'uno', 'two.txt': 'dos'}"
    records = [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]
    assert ask_describe(records).answer == "list:" + repr(records)
    assert ask_describe(["doc1", "doc2"]).answer == "list:['doc1', 'doc2']"
    value = {"documents": ["x", "y"], "query": "q"}
    assert ask_describe(rlm.JSON(value)).answer == "dict:" + repr(value)


def test_buffer_filled_in_place():
    buf = rlm.Buffer(1 << 20)
    buf.write("line one\n")
    buf.write(b"line two\n")
    with pytest.raises(ValueError, match="Buffer full"):
        buf.write(b"x" * (2 << 20))
    assert ask_describe(buf).answer == "str:'line one\\nline two\\n'"
    with pytest.raises(ValueError, match="sealed"):
        buf.write(b"more")
    buf.close()
    whole = rlm.Buffer(5)
    whole.view[:] = b"HELLO"
    assert ask_describe(whole).answer == "str:'HELLO'"


def test_sub_calls_options_and_usage():
    rules = [{"match": "^Label: (\\w+)", "reply": "label-$1"},
             answer_with('r = llm_query_batched(["Label: a", "Label: b"])\nFINAL(",".join(r))')]
    with FakeLM(rules) as lm:
        res = rlm.ask("Label them", "ab", **opts(lm, max_iterations=3, concurrency=2, cache=False))
    assert res.answer == "label-a,label-b"
    assert res.sub_calls == 2
    assert res.usage["sub-model"].calls == 2


def test_on_event_and_stream():
    rules = [{"match": "", "reply": repl("x = 1"), "times": 1},
             {"match": "", "reply": repl("FINAL('done')")}]
    seen = []
    with FakeLM(rules) as lm:
        res = rlm.ask("Go", "ctx", on_event=seen.append, **opts(lm))
    assert res.answer == "done"
    # The progress line, as before, among the run's events (test_events.py).
    progress = [e for e in seen if e.kind == "progress"]
    assert progress and all(e.text for e in progress)
    assert [e.turn for e in seen if e.kind == "root_request"] == [1, 2]
    with FakeLM(rules) as lm:
        s = rlm.stream("Go", "ctx", **opts(lm))
        events = list(s)
    assert s.result.answer == "done"
    assert events and all(isinstance(e, rlm.Event) for e in events)
    assert [e.kind for e in events if e.kind not in ("progress", "root_wait", "other")] == [
        e.kind for e in seen if e.kind not in ("progress", "root_wait", "other")]


def test_help_is_useful():
    doc = rlm.ask.__doc__
    for word in ("context", "pathlib.Path", "NoAnswerError", "KeyboardInterrupt", "max_cost"):
        assert word in doc
    assert "Session" in rlm.__doc__ and rlm.Session.__doc__


def test_python_m_rlm_runs_the_cli():
    proc = subprocess.run(["/usr/bin/python3", "-m", "rlm", "--version"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(
                              os.path.dirname(rlm.__file__))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "rlm " + rlm.__version__


def test_system_prompt_and_doctor():
    assert "{max_iterations}" in rlm.system_prompt(template=True)
    assert "7" in rlm.system_prompt(max_iterations=7)
    report = rlm.doctor()
    assert report["sandbox_exe"].endswith("rlm-sandbox")


def test_dedupe_and_prompt_cache_options_and_usage():
    """The cost options pass as keywords like every option; the Usage and
    the events carry the deduplicated sub-calls and cached tokens."""
    batch = answer_with('r = llm_query_batched(["same"] * 4)\nFINAL(",".join(r))')
    rules = [{"match": "^same$", "reply": "one"}, batch]
    seen = []
    for dedupe, sent in ((True, 1), (False, 4)):
        with FakeLM(rules) as lm:
            res = rlm.ask("Ask four times.", "ctx", on_event=seen.append,
                          **opts(lm, dedupe=dedupe, prompt_cache=False))
            assert lm.counters()["rules"][0] == sent
        assert res.answer == "one,one,one,one"
        assert res.usage["sub-model"].deduplicated == 4 - sent
        assert res.report["sub_calls_deduplicated"] == 4 - sent
        assert res.usage["root-model"].cached_tokens == 0
    subs = [e for e in seen if e.kind == "sub_call"]
    assert sum(e.deduplicated for e in subs) == 3
    with pytest.raises(rlm.UsageError, match="dedupe"):
        rlm.ask("x", "ctx", dedupe="maybe")
