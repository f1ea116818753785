"""Child RLMs end to end against the fake server: rlm_query three levels deep
(the deepest level degrading to a plain sub-call), rlm_query_batched bounded by
--max-children, a child whose model fails, a child that spends its share of
the budget, the run's budget counted over the whole tree, time waiting on a
child not counted against the parent's cell timeout, and --max-depth 1
keeping rlm_query a plain sub-call.

How the fake server tells the levels apart: a child's root sees the prompt it
was given as its context and as its question, so a rule matching a word that
only that prompt holds answers that child's first turn; later turns are
matched on what the level's own code printed (ROOT-GOT:, CHILD-GOT:, ...)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

BUDGET_SPENT = r"^The run's budget is spent"


def tree_of(trace):
    """node id -> parent id over every event of a trace."""
    nodes = {}
    for e in trace:
        node, parent = e.get("node"), e.get("parent")
        if node is not None:
            nodes.setdefault(node, parent)
    return nodes


class Recursion(RlmTestCase):
    def context(self, text="ROOTCTX: the input of the top RLM\n"):
        return self.write("input.txt", text)

    def test_depth_three(self):
        rules = [
            # Turn 2 of each level: it saw what its child returned and adds its mark.
            {"match": r"GRAND-GOT:", "reply": repl('FINAL(v + "+grand")')},
            {"match": r"CHILD-GOT:", "reply": repl('FINAL(g + "+child")')},
            {"match": r"ROOT-GOT:", "reply": repl('FINAL(r + "+root")')},
            # The leaf: the grandchild's rlm_query, a plain sub-call at the last level.
            {"match": r"^LEAFQ", "model": "^sub-model$", "reply": "leaf-7431"},
            # Turn 1 of each level.
            {"match": r"GRANDQ", "reply": repl(
                'v = rlm_query("LEAFQ: give the leaf value")\nprint("GRAND-GOT:" + v)')},
            {"match": r"CHILDQ", "reply": repl(
                'g = rlm_query("GRANDQ: ask the level below")\nprint("CHILD-GOT:" + g)')},
            {"match": r"Find the leaf", "reply": repl(
                'r = rlm_query("CHILDQ: ask your child")\nprint("ROOT-GOT:" + r)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "3", "--context", self.context(),
                            "Find the leaf value"], lm)
            counters = lm.counters()
            log = lm.requests()
        self.assertExit(res, 0)
        report = res.report
        # Only the grandchild's sub-call produced "leaf-7431"; every level added its mark.
        self.assertEqual(report["answer"], "leaf-7431+grand+child+root")
        self.assertEqual(report["children"], 2)
        self.assertEqual(report["depth_reached"], 3)
        self.assertEqual(report["sandboxes"], 3)
        self.assertEqual(counters["unmatched"], 0)
        # 2 root turns per level (3 levels) + the leaf's plain sub-call.
        self.assertEqual(counters["requests"], 7)
        leaf = [r for r in log if r["last_user"].startswith("LEAFQ")]
        self.assertEqual(len(leaf), 1)
        self.assertEqual(leaf[0]["model"], "sub-model")

        trace = res.trace
        for e in trace:
            self.assertIn("node", e, e)
            self.assertIn("parent", e, e)
        tree = tree_of(trace)
        self.assertEqual(tree, {"0": None, "0.1": "0", "0.1.1": "0.1"})
        for node, parent in tree.items():
            if node != "0":
                self.assertIn(parent, tree, "parent of %s is missing" % node)
        starts = {e["node"]: e for e in res.events("child_start")}
        self.assertEqual(set(starts), {"0.1", "0.1.1"})
        self.assertEqual(starts["0.1"]["depth"], 2)
        self.assertEqual(starts["0.1.1"]["depth"], 3)
        self.assertEqual(starts["0.1.1"]["parent"], "0.1")
        self.assertIn("GRANDQ", starts["0.1.1"]["prompt"])
        ends = {e["node"]: e for e in res.events("child_end")}
        self.assertEqual(ends["0.1.1"]["answer"], "leaf-7431+grand")
        self.assertEqual(ends["0.1"]["answer"], "leaf-7431+grand+child")
        self.assertEqual(ends["0.1"]["status"], "ok")
        # At the last level rlm_query is a sub-call, made by the grandchild.
        subs = [e for e in res.events("sub_call") if e.get("kind") == "rlm_query"]
        self.assertEqual([(e["node"], e["reply"]) for e in subs], [("0.1.1", "leaf-7431")])
        # Each level's sandbox, and each level's final answer, in its own node.
        self.assertEqual(sorted(e["node"] for e in res.events("sandbox_ready")), ["0", "0.1", "0.1.1"])
        finals = {e["node"]: e["answer"] for e in res.events("final_answer")}
        self.assertEqual(finals["0"], "leaf-7431+grand+child+root")

    def test_batched_children_bounded(self):
        rules = [
            {"match": r"ROOT-GOT:(.*)", "reply": "FINAL($1)"},
            # Each child's first turn; slow enough that children would overlap.
            {"match": r"BATCHQ (\d)", "latency_ms": 400,
             "reply": repl('FINAL("child-$1-done")')},
            {"match": r"Run the batch", "reply": repl(
                'rs = rlm_query_batched(["BATCHQ 1", "BATCHQ 2", "BATCHQ 3", "BATCHQ 4"])\n'
                'print("ROOT-GOT:" + "|".join(rs))')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-children", "2",
                            "--context", self.context(), "Run the batch"], lm)
            counters = lm.counters()
        self.assertExit(res, 0)
        # Every answer, in the order of the prompts.
        self.assertEqual(res.report["answer"],
                         "child-1-done|child-2-done|child-3-done|child-4-done")
        self.assertEqual(res.report["children"], 4)
        self.assertEqual(counters["requests"], 6)
        # Only children's requests overlap (the root waits in its cell), at most 2.
        self.assertLessEqual(counters["max_in_flight"], 2)
        self.assertEqual(counters["max_in_flight"], 2)
        starts = res.events("child_start")
        self.assertEqual(sorted(e["node"] for e in starts), ["0.1", "0.2", "0.3", "0.4"])
        self.assertTrue(all(e["parent"] == "0" for e in starts))

    def test_failed_child_gives_error_string(self):
        rules = [
            {"match": r"ROOT-GOT:Error: ", "reply": repl(
                'FINAL("went on after: " + r.split(":")[0])')},
            {"match": r"FAILCHILD", "status": 400, "reply": "this child request is refused"},
            {"match": r"Ask a failing child", "reply": repl(
                'r = rlm_query("FAILCHILD please")\nprint("ROOT-GOT:" + r)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-retries", "0",
                            "--context", self.context(), "Ask a failing child"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "went on after: Error")
        outputs = self.code_outputs(res)
        self.assertIn("ROOT-GOT:Error: child RLM failed", outputs[0])
        self.assertIn("this child request is refused", outputs[0])
        end = res.events("child_end")
        self.assertEqual(len(end), 1)
        self.assertEqual(end[0]["status"], "model error")
        self.assertTrue(end[0]["answer"].startswith("Error: "))

    def test_child_spends_its_share(self):
        # --max-subcalls 100 with --child-share 0.05: the child may make 5
        # sub-calls; its second batch of 3 does not fit, so it is asked for its
        # best answer, which goes back to the root. The run itself is not
        # stopped: the root finishes normally.
        rules = [
            {"match": BUDGET_SPENT, "model": "^child-model$",
             "reply": "FINAL(partial from the child: 3 leaves)"},
            {"match": r"^LEAF", "model": "^sub-model$", "reply": "leaf"},
            {"match": r"ROOT-GOT:", "model": "^root-model$",
             "reply": repl('FINAL("root got: " + r)')},
            {"match": r"", "model": "^child-model$", "reply": repl(
                'xs = llm_query_batched(["LEAF a", "LEAF b", "LEAF c"])\nprint("CH", len(xs))')},
            {"match": r"Ask a greedy child", "reply": repl(
                'r = rlm_query("SHAREQ count the leaves", model="child-model")\n'
                'print("ROOT-GOT:" + r)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-subcalls", "100",
                            "--child-share", "0.05", "--context", self.context(),
                            "Ask a greedy child"], lm)
            log = lm.requests()
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "root got: partial from the child: 3 leaves")
        self.assertIsNone(res.report["stopped_by"])
        # The child's one batch that fitted; the second was refused whole.
        self.assertEqual(len([r for r in log if r["last_user"].startswith("LEAF")]), 3)
        end = res.events("child_end")
        self.assertEqual(len(end), 1)
        self.assertEqual(end[0]["status"], "ok")
        self.assertEqual(end[0]["stopped_by"], "max_subcalls")
        self.assertEqual(end[0]["answer"], "partial from the child: 3 leaves")
        child_budget = [e for e in res.events("budget_exhausted") if e["node"] == "0.1"]
        self.assertEqual(len(child_budget), 1)
        self.assertFalse([e for e in res.events("budget_exhausted") if e["node"] == "0"])

    def test_budget_counts_the_whole_tree(self):
        # Two children that never stop on their own, each making sub-calls
        # every turn: the run's 8 sub-calls (children's root turns count as
        # sub-calls of the run) run out, every level is asked once for its
        # best answer, and the root answers with what its children returned.
        limit = 8
        rules = [
            {"match": BUDGET_SPENT, "model": "^child-model$", "reply": "FINAL(child best)"},
            {"match": BUDGET_SPENT, "model": "^root-model$", "reply": "FINAL_VAR(summary)"},
            {"match": r"^LEAF", "model": "^sub-model$", "reply": "leaf"},
            {"match": r"ROOT-GOT:", "model": "^root-model$", "reply": "FINAL_VAR(summary)"},
            {"match": r"", "model": "^child-model$", "reply": repl(
                'xs = llm_query_batched(["LEAF x", "LEAF y"])\nprint("CH", len(xs))')},
            {"match": r"Spend it all", "reply": repl(
                'rs = rlm_query_batched(["TREEQ 1", "TREEQ 2"], model="child-model")\n'
                'summary = "|".join(rs)\nprint("ROOT-GOT:" + summary)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--max-subcalls", str(limit),
                            "--context", self.context(), "Spend it all"], lm)
            log = lm.requests()
            counters = lm.counters()
        self.assertExit(res, 0)
        report = res.report
        self.assertEqual(report["stopped_by"], "max_subcalls")
        self.assertIn("child best", report["answer"])
        self.assertEqual(counters["unmatched"], 0)
        last = [r for r in log if r["last_user"].startswith("The run's budget is spent")]
        below_root = [r for r in log if r["model"] != "root-model"
                      and not r["last_user"].startswith("The run's budget is spent")]
        self.assertLessEqual(len(below_root), limit)
        # The last requests: at most one per node of the tree.
        self.assertLessEqual(len(last), 3)
        self.assertGreaterEqual(len(last), 1)
        exhausted = res.events("budget_exhausted")
        self.assertTrue(exhausted)
        self.assertTrue(all(e["budget"] == "max_subcalls" for e in exhausted))

    def test_waiting_on_children_is_not_cell_time(self):
        # The parent's cell waits 2.5 s on its child (two slow child turns)
        # with a 1 s cell timeout: that wait is not the cell's own time.
        rules = [
            {"match": r"ROOT-GOT:", "reply": "FINAL(done)"},
            {"match": r"SLOW-GOT:", "reply": repl('FINAL("slow-ok")'), "latency_ms": 1200},
            {"match": r"SLOWQ", "reply": repl('print("SLOW-GOT:" + "x")'), "latency_ms": 1300},
            {"match": r"Wait for", "reply": repl(
                'r = rlm_query("SLOWQ: take your time")\nprint("ROOT-GOT:" + r)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-depth", "2", "--cell-timeout", "1",
                            "--context", self.context(), "Wait for the child"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "done")
        root_cells = [e for e in res.events("code") if e["node"] == "0"]
        self.assertEqual(len(root_cells), 1)
        self.assertFalse(root_cells[0]["timed_out"])
        self.assertIn("ROOT-GOT:slow-ok", root_cells[0]["output"])
        self.assertGreater(root_cells[0]["call_seconds"], 2.0)

    def test_depth_one_is_a_plain_subcall(self):
        rules = [
            {"match": r"^PLAINQ", "model": "^sub-model$", "reply": "plain-answer"},
            {"match": r"ROOT-GOT:(\S+)", "reply": "FINAL($1)"},
            {"match": r"Use rlm_query", "reply": repl(
                'r = rlm_query("PLAINQ what is it?", context="some context")\n'
                'print("ROOT-GOT:" + r)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--context", self.context(), "Use rlm_query"], lm)
            log = lm.requests()
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "plain-answer")
        self.assertEqual(res.report["children"], 0)
        self.assertEqual(res.report["depth_reached"], 1)
        self.assertEqual(res.report["sandboxes"], 1)
        self.assertFalse(res.events("child_start"))
        plain = [r for r in log if r["last_user"].startswith("PLAINQ")]
        self.assertEqual(len(plain), 1)
        # prompt + context, in one plain call to the sub-model.
        self.assertIn("some context", plain[0]["last_user"])
        self.assertEqual(plain[0]["model"], "sub-model")
        subs = res.events("sub_call")
        self.assertEqual([(e["kind"], e["node"]) for e in subs], [("rlm_query", "0")])

    def test_bad_values_are_usage_errors(self):
        cases = [
            (["--max-depth", "0"], "--max-depth must be a whole number from 1 to 16"),
            (["--max-depth", "17"], "--max-depth must be a whole number from 1 to 16"),
            (["--max-children", "0"], "--max-children must be a whole number from 1 to 256"),
            (["--child-share", "0"], "--child-share must be a number above 0 and at most 1"),
            (["--child-share", "1.5"], "--child-share must be a number above 0 and at most 1"),
            (["--compact-at", "0"], "--compact-at must be a number above 0"),
            (["--context-window", "10"], "--context-window must be a whole number from 1000"),
        ]
        for flags, message in cases:
            res = self.rlm(flags + ["a question"], None, trace=False)
            self.assertExit(res, 2)
            self.assertIn(message, res.stderr)


if __name__ == "__main__":
    main()
