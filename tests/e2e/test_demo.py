"""`rlm demo` offline: a small demo (hidden --tokens) answers right, says the
model is simulated, and leaves a trace."""
import json
import os
import re
import shutil
import subprocess
import unittest

from harness import RLM


class Demo(unittest.TestCase):
    def test_small_demo_answers_right(self):
        proc = subprocess.run([RLM, "demo", "--tokens", "64K"], capture_output=True, text=True,
                              timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("SIMULATED MODEL", proc.stdout)
        answer = re.search(r"^answer: +(.*)$", proc.stdout, re.M).group(1)
        gold = re.search(r"^gold: +(.*)$", proc.stdout, re.M).group(1)
        self.assertEqual(answer, gold)
        self.assertIn("score:    1.000", proc.stdout)
        trace = re.search(r"^trace: +(.*)$", proc.stdout, re.M).group(1)
        with open(trace) as f:
            events = [json.loads(line) for line in f if line.strip()]
        self.assertTrue(events)
        # The big input is removed afterwards; the trace stays.
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(trace), "context.txt")))
        shutil.rmtree(os.path.dirname(trace), ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
