"""`rlm demo` offline: a small demo (hidden --tokens) answers right, says the
model is simulated, shows the root's code as it runs, and leaves nothing
behind but the trace it was asked to keep and its row in the run log."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import RLM, isolated_env


class Demo(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="rlm-demo-home-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.env = dict(os.environ, **isolated_env(self.home))

    def test_small_demo_answers_right(self):
        proc = subprocess.run([RLM, "demo", "--tokens", "64K"], capture_output=True, text=True,
                              timeout=300, env=self.env)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("SIMULATED MODEL", proc.stdout)
        answer = re.search(r"^answer: +(.*)$", proc.stdout, re.M).group(1)
        gold = re.search(r"^gold: +(.*)$", proc.stdout, re.M).group(1)
        self.assertEqual(answer, gold)
        self.assertIn("score:    1.000", proc.stdout)
        # Nothing generated is left behind.
        where = re.search(r"task in (\S+) \.\.\.", proc.stdout).group(1)
        self.assertFalse(os.path.exists(where), os.listdir(where) if os.path.isdir(where) else "")
        # The root model's code is shown as it runs (on stderr: stdout is the demo's report).
        self.assertIn("llm_query_batched", proc.stderr)
        # Its trace stays in the run log, and the demo says how to see it.
        self.assertIn("trace:    in the run log (rlm view 1 --open", proc.stdout)
        logs = subprocess.run([RLM, "logs", "--json"], capture_output=True, text=True, env=self.env,
                              timeout=60)
        runs = json.loads(logs.stdout)
        self.assertEqual([(r["id"], r["command"], r["answer"]) for r in runs], [(1, "demo", answer)])
        proc = subprocess.run([RLM, "demo", "--tokens", "64K"], capture_output=True, text=True,
                              timeout=300, env=dict(self.env, RLM_LOG="0"))
        self.assertIn("not kept", proc.stdout)

    def test_trace_kept_where_asked(self):
        out = tempfile.mkdtemp(prefix="rlm-demo-test-")
        self.addCleanup(shutil.rmtree, out, True)
        trace = os.path.join(out, "demo.jsonl")
        proc = subprocess.run([RLM, "demo", "--tokens", "64K", "--trace", trace],
                              capture_output=True, text=True, timeout=300, env=self.env)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("trace:    " + trace, proc.stdout)
        with open(trace) as f:
            events = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(events[-1]["type"], "run_end")
        where = re.search(r"task in (\S+) \.\.\.", proc.stdout).group(1)
        self.assertFalse(os.path.exists(where))

if __name__ == "__main__":
    unittest.main()
