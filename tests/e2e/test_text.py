"""Text end to end: a NUL byte is carried with its length everywhere a text
goes — FINAL values (--json, stdout to a pipe, the trace), sub-call prompts
and replies, a child RLM's context and answer, the response cache — and cell
output shown to the root keeps what follows it (as U+FFFD). On a terminal,
answers, warnings and errors have their control characters and escape
sequences escaped; pipes and --json get them exactly."""
import errno
import json
import os
import pty
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


def run_on_terminal(cmd, env):
    """Runs cmd with stdout and stderr on a pseudo-terminal; returns
    (exit code, what the terminal received)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    return proc.wait(timeout=120), got


# Clipboard write (OSC 52), window title, clear screen, a C1 CSI, a
# bidirectional override.
HOSTILE = "\\x1b]52;c;cm0gLXJm\\x07\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eok"


class TerminalEscapes(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.context = self.write("input.txt", "the quick brown fox\n")

    def test_answer_on_a_terminal_a_pipe_and_json(self):
        rules = [{"match": "What is in", "reply": repl('FINAL("' + HOSTILE + '")')}]
        with FakeLM(rules) as lm:
            cmd, env, _ = self.rlm_command(["--context", self.context, QUESTION], lm)
            code, shown = run_on_terminal(cmd, env)
            self.assertEqual(code, 0, shown)
            self.assertNotIn(b"\x1b", shown)
            self.assertNotIn("\u202e".encode(), shown)
            self.assertIn(b"\\x1b]52;c;cm0gLXJm\\x07\\x1b]0;owned\\x07\\x1b[2J", shown)
            self.assertIn(b"\\u009b31m\\u202eok", shown)
            proc = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
            self.assertEqual(proc.stdout, b"\x1b]52;c;cm0gLXJm\x07\x1b]0;owned\x07\x1b[2J"
                                          b"\xc2\x9b31m\xe2\x80\xaeok\n")
            code, shown = run_on_terminal(cmd[:2] + ["--json"] + cmd[2:], env)
        self.assertEqual(code, 0)
        self.assertNotIn(b"\x1b", shown)
        self.assertNotIn(b"\xc2\x9b", shown)
        self.assertIn(b"\\u009B31m\\u202Eok", shown)
        report = json.loads(shown.decode().strip().splitlines()[-1])
        self.assertEqual(report["answer"],
                         "\x1b]52;c;cm0gLXJm\x07\x1b]0;owned\x07\x1b[2J\x9b31m\u202eok")

    def test_warnings_and_errors_on_a_terminal(self):
        tree = os.path.join(self.tmp, "tree")
        os.makedirs(tree)
        with open(os.path.join(tree, "ok.txt"), "w") as f:
            f.write("some text\n")
        with open(os.path.join(tree, "bad\x1b]0;owned\x07.bin"), "wb") as f:
            f.write(b"\x00\x01\x02binary" * 100)
        rules = [{"match": "What is in", "reply": "FINAL(done)"}]
        with FakeLM(rules) as lm:
            cmd, env, _ = self.rlm_command(["--context", tree, QUESTION], lm)
            code, shown = run_on_terminal(cmd, env)
            self.assertEqual(code, 0, shown)
            self.assertIn(b"bad\\x1b]0;owned\\x07.bin", shown)
            self.assertNotIn(b"\x1b", shown)
            missing = os.path.join(self.tmp, "gone\x1b[2J.txt")
            cmd, env, _ = self.rlm_command(["--context", missing, QUESTION], lm)
            code, shown = run_on_terminal(cmd, env)
        self.assertEqual(code, 2, shown)
        self.assertIn(b"gone\\x1b[2J.txt", shown)
        self.assertNotIn(b"\x1b", shown)


if __name__ == "__main__":
    main()
