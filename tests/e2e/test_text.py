"""Text end to end: a NUL byte is carried with its length everywhere a text
goes — FINAL values (--json, stdout to a pipe, the trace), sub-call prompts
and replies, a child RLM's context and answer, the response cache — and cell
output shown to the root keeps what follows it (as U+FFFD)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "What is in the input?"


def two_turns(code, final="FINAL(done)"):
    return [{"match": r"(?i)turn 2 of", "reply": final},
            {"match": "What is in", "reply": repl(code)}]


class NulBytes(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.context = self.write("input.txt", "the quick brown fox\n")

    def test_final_keeps_every_byte(self):
        rules = [{"match": "What is in", "reply": repl('FINAL("surv\\x00ived")')}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--context", self.context, QUESTION], lm)
            self.assertExit(res, 0)
            self.assertEqual(res.report["answer"], "surv\x00ived")
            self.assertEqual(len(res.report["answer"]), 9)
            self.assertEqual(res.events("final_answer")[0]["answer"], "surv\x00ived")
            self.assertEqual(res.events("run_end")[0]["answer"], "surv\x00ived")
            # stdout to a pipe: the bytes exactly
            cmd, env, _ = self.rlm_command(["--context", self.context, QUESTION], lm,
                                           trace_name="plain.jsonl")
            proc = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, b"surv\x00ived\n")

    def test_final_var_and_answer_dict(self):
        for code, final in (('x = "a\\x00b\\x00"', "FINAL_VAR(x)"),
                            ('answer["content"] = "\\x00lead"\nanswer["ready"] = True', None)):
            rules = two_turns(code, final) if final else [
                {"match": "What is in", "reply": repl(code)}]
            with FakeLM(rules) as lm:
                res = self.rlm(["--json", "--context", self.context, QUESTION], lm)
            self.assertExit(res, 0)
            self.assertEqual(res.report["answer"], "a\x00b\x00" if final else "\x00lead")

    def test_sub_calls_and_the_cache(self):
        rules = [{"match": "(?s)^echo:(.*)$", "model": "^sub-model$", "reply": "[$1]"},
                 {"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
                 {"match": "Q-A", "reply": repl('r = llm_query("echo:a\\x00b")\n'
                                                'print(repr(r), len(r))')},
                 # differs from Q-A's prompt only after the NUL
                 {"match": "Q-B", "reply": repl('print(repr(llm_query("echo:a\\x00c")))')}]
        cache = os.path.join(self.tmp, "cache")
        with FakeLM(rules) as lm:   # one server: its URL is part of the cache key
            runs = [self.rlm(["--cache", "--cache-dir", cache, "--context", self.context, q], lm,
                             trace_name="trace-%d.jsonl" % i)
                    for i, q in enumerate(("Q-A", "Q-A", "Q-B"))]
            log = lm.requests()
        for res in runs:
            self.assertExit(res, 0)
        for res in runs[:2]:
            self.assertIn("'[a\\x00b]' 5", self.code_outputs(res)[0])
            call = res.events("sub_call")[0]
            self.assertEqual(call["prompt"], "echo:a\x00b")
            self.assertEqual(call["reply"], "[a\x00b]")
        self.assertEqual([r["last_user"] for r in log if r["model"] == "sub-model"],
                         ["echo:a\x00b", "echo:a\x00c"])
        self.assertFalse(runs[0].events("sub_call")[0]["cached"])
        self.assertTrue(runs[1].events("sub_call")[0]["cached"])   # NUL and all
        self.assertIn("'[a\\x00c]'", self.code_outputs(runs[2])[0])
        self.assertFalse(runs[2].events("sub_call")[0]["cached"])

    def test_child_context_and_answer(self):
        rules = [
            {"match": r"CHILD-GOT:", "reply": "FINAL(done)"},
            {"match": r"CHILDQ", "reply": repl(
                'print(len(context), repr(context))\nFINAL(context + "\\x00!")')},
            {"match": "What is in", "reply": repl(
                'r = rlm_query("CHILDQ: read it", context="c\\x00d")\n'
                'print("CHILD-GOT:" + repr(r), len(r))')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-depth", "2", "--context", self.context, QUESTION], lm)
        self.assertExit(res, 0)
        outputs = self.code_outputs(res)
        self.assertIn("3 'c\\x00d'", "\n".join(outputs))
        self.assertIn("CHILD-GOT:'c\\x00d\\x00!' 5", "\n".join(outputs))

    def test_output_after_a_nul_reaches_the_root(self):
        rules = two_turns('print("before\\x00after")')
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.context, QUESTION], lm)
            log = lm.requests()
        self.assertExit(res, 0)
        self.assertEqual(res.events("code")[0]["output"], "before\x00after\n")
        second = [r for r in log if "Turn 2 of" in r["last_user"]]
        self.assertIn("before\ufffdafter", second[0]["last_user"])


if __name__ == "__main__":
    main()
