"""Bounds a cell cannot escape, with their defaults and flags: the wall limit
per cell that counts sub-calls and child RLMs (--cell-wall), the refusal of a
batch of child RLMs over --max-child-batch, the tree-wide cap on sandboxes
alive at once (--max-sandboxes: a child waits while another RLM can finish,
else fails), and the default cap on sub-calls per run (--max-subcalls)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "What is in the input?"


class Bounds(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.context = self.write("input.txt", "the quick brown fox\n")

    def test_cell_wall_counts_sub_calls(self):
        # Each sub-call is quick and the code's own time tiny, so the cell
        # timeout (sub-calls excluded) never fires: only the wall limit ends it.
        rules = [
            {"match": "^loop", "model": "^sub-model$", "reply": "again", "latency_ms": 100},
            {"match": "^slow", "model": "^sub-model$", "reply": "late", "latency_ms": 60000},
            {"match": r"(?i)turn 3 of", "reply": "FINAL(stopped)"},
            {"match": r"(?i)turn 2 of", "reply": repl(
                'print("batch", llm_query_batched(["slow 1", "slow 2"]))')},
            {"match": "What is in", "reply": repl(
                'n = 0\nwhile True:\n    llm_query("loop %d" % n)\n    n += 1')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--cell-wall", "1.5", "--cell-timeout", "60",
                            "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "stopped")
        loop, batch = self.code_outputs(res)[:2]
        for out in (loop, batch):
            self.assertIn("sub-calls were stopped by the host", out)
            self.assertIn("wall limit of 1.5 s, sub-calls included (--cell-wall)", out)
        # the batch in flight was ended at the limit, not after its 60 s
        self.assertLess(res.events("code")[1]["call_seconds"], 30)

    def test_cell_wall_none_and_defaults_in_help(self):
        rules = [{"match": "^ok", "model": "^sub-model$", "reply": "fine"},
                 {"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
                 {"match": "What is in", "reply": repl('print(llm_query("ok"))')}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--cell-wall", "none", "--max-subcalls", "none",
                            "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertIn("fine", self.code_outputs(res)[0])
        res = self.rlm(["--cell-wall", "0", QUESTION])
        self.assertExit(res, 2)
        self.assertIn("--cell-wall", res.stderr)
        res = self.rlm(["--help"], trace=False)
        for text in ("--cell-wall S", "default 1800", "--max-child-batch N", "default 256",
                     "--max-sandboxes N", "default 32", "default 10000"):
            self.assertIn(text, res.stdout)

    def test_default_sub_call_cap(self):
        rules = [{"match": r"(?i)budget", "reply": "FINAL(capped)"},
                 {"match": "What is in", "reply": repl(
                     'r = llm_query_batched(["p"] * 10001)\nprint(r[0])')}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--context", self.context, QUESTION], lm)
            counters = lm.counters()
        self.assertExit(res, 0)
        self.assertEqual(res.report["stopped_by"], "max_subcalls")
        self.assertEqual(res.report["sub_calls"], 0)
        self.assertIn("max_subcalls", self.code_outputs(res)[0])
        self.assertEqual(counters["requests"], 2)   # the two root turns, no sub-call sent

    def test_child_batch_over_the_limit_is_refused(self):
        rules = [
            {"match": r"CHILD", "reply": "FINAL(child-ok)"},
            {"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
            {"match": "What is in", "reply": repl(
                'print(rlm_query_batched(["CHILD %d" % i for i in range(5)])[0])\n'
                'print(rlm_query_batched(["CHILD %d" % i for i in range(3)]))')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-child-batch", "3",
                            "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        out = self.code_outputs(res)[0]
        self.assertIn("Error: rlm_query_batched refused: a batch of 5 child RLMs is more than "
                      "one batch may start (--max-child-batch 3)", out)
        self.assertIn("['child-ok', 'child-ok', 'child-ok']", out)
        self.assertEqual(res.report["children"], 3)
        self.assertEqual(len(res.events("child_batch_refused")), 1)

    def test_sandboxes_wait_for_a_slot(self):
        # At most 2 sandboxes: the root's and one child's at a time; the
        # other children wait for it to finish rather than fail.
        rules = [
            {"match": r"CHILD", "reply": "FINAL(child-ok)", "latency_ms": 200},
            {"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
            {"match": "What is in", "reply": repl(
                'print(rlm_query_batched(["CHILD %d" % i for i in range(3)]))')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-children", "3",
                            "--max-sandboxes", "2", "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        root = [e["output"] for e in res.events("code") if e["node"] == "0"]
        self.assertIn("['child-ok', 'child-ok', 'child-ok']", root[0])
        self.assertEqual(res.report["sandboxes"], 4)
        # child sandboxes' lifetimes never overlap: [ready - start-up, run_end]
        ready = {e["node"]: e["t"] - e["seconds"] for e in res.events("sandbox_ready")}
        ends = {e["node"]: e["t"] for e in res.events("run_end")}
        spans = sorted((ready[n], ends[n]) for n in ready if n != "0")
        self.assertEqual(len(spans), 3)
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            self.assertLessEqual(a1, b0)

    def test_sandboxes_refused_when_waiting_could_deadlock(self):
        # The root and its child fill --max-sandboxes 2; the child then waits
        # for a grandchild nobody could make room for: it fails, clearly.
        rules = [
            {"match": r"GRAND", "reply": "FINAL(grand-ok)"},
            {"match": r"CHILD-GOT:", "reply": "FINAL(child-done)"},
            {"match": r"CHILD", "reply": repl('print("CHILD-GOT:", rlm_query("GRAND a"))')},
            {"match": r"ROOT-GOT:", "reply": "FINAL(done)"},
            {"match": "What is in", "reply": repl('print("ROOT-GOT:", rlm_query("CHILD 1"))')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "3", "--max-sandboxes", "2",
                            "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["sandboxes"], 2)
        grand = [e for e in res.events("run_end") if e["node"] == "0.1.1"]
        self.assertEqual(len(grand), 1)
        self.assertEqual(grand[0]["status"], "sandbox error")
        self.assertIn("--max-sandboxes", grand[0]["error"])
        child = [e["output"] for e in res.events("code") if e["node"] == "0.1"]
        self.assertIn("Error: child RLM failed (sandbox error): no sandbox for this child RLM: "
                      "2 sandboxes are alive in this run", child[0])
        root = [e["output"] for e in res.events("code") if e["node"] == "0"]
        self.assertIn("ROOT-GOT: child-done", root[0])


if __name__ == "__main__":
    main()
