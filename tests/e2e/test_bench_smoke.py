"""`rlm bench run --suite smoke --fake`: the smallest task of every family, run
end to end against fakelm in oracle mode, must all score 1.0; `rlm bench
report` renders the same results and an SVG chart."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import RLM, isolated_env


class BenchSmoke(unittest.TestCase):
    def test_smoke_suite_scores_perfect(self):
        out = tempfile.mkdtemp(prefix="rlm-bench-")
        self.addCleanup(shutil.rmtree, out, True)
        home = tempfile.mkdtemp(prefix="rlm-bench-home-")
        self.addCleanup(shutil.rmtree, home, True)
        proc = subprocess.run([RLM, "bench", "run", "--suite", "smoke", "--fake", "--out", out],
                              capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, **isolated_env(home)))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(out, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        families = {r["family"] for r in rows}
        self.assertEqual(families, {"sniah", "oolong", "pairs", "docqa"})
        for r in rows:
            self.assertEqual(r["score"], 1.0, r)
            self.assertEqual(r["status"], "ok", r)
            self.assertGreaterEqual(r["calls"], 2, r)
            self.assertIsNone(r["cost_usd"], r)  # a simulated model has no price
        self.assertTrue(any(r["subcalls"] for r in rows))
        self.assertIn("mean score:", proc.stdout)
        # The task files are removed unless --keep-tasks.
        self.assertEqual(sorted(os.listdir(out)), ["results.jsonl"])

        svg = os.path.join(out, "chart.svg")
        report = subprocess.run([RLM, "bench", "report", os.path.join(out, "results.jsonl"),
                                 "--svg", svg], capture_output=True, text=True, timeout=60)
        self.assertEqual(report.returncode, 0, report.stderr)
        self.assertIn("docqa", report.stdout)
        with open(svg) as f:
            text = f.read()
        self.assertTrue(text.startswith("<svg"))
        self.assertIn("score against input length", text)
        self.assertEqual(text.count("<circle"), 2 * len(rows))

    def test_unreachable_endpoint_fails_every_task_visibly(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()   # nothing listens there
        out = tempfile.mkdtemp(prefix="rlm-bench-")
        self.addCleanup(shutil.rmtree, out, True)
        proc = subprocess.run([RLM, "bench", "run", "--suite", "smoke", "--out", out,
                               "--base-url", "http://127.0.0.1:%d/v1" % port, "--max-retries", "0",
                               "--model", "m"], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        with open(os.path.join(out, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        self.assertEqual(len(rows), 5)
        for r in rows:
            self.assertIn("cannot reach", r["error"])
        self.assertEqual(proc.stderr.count("cannot reach"), 5)
        self.assertEqual(proc.stdout.count("ERROR"), 5)
        self.assertIn("5 of 5 tasks failed", proc.stdout)
        svg = os.path.join(out, "chart.svg")
        report = subprocess.run([RLM, "bench", "report", os.path.join(out, "results.jsonl"),
                                 "--svg", svg], capture_output=True, text=True, timeout=60)
        self.assertEqual(report.returncode, 1, report.stderr)
        self.assertIn("5 of 5 tasks failed", report.stdout)
        with open(svg) as f:
            text = f.read()
        self.assertEqual(text.count("<circle"), 0)
        self.assertEqual(text.count("class='failed'"), 2 * 5)
        self.assertIn("failed", text)

    def test_usage_errors(self):
        proc = subprocess.run([RLM, "bench", "run", "--suite", "nope", "--fake"],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2)
        proc = subprocess.run([RLM, "bench", "frobnicate"], capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2)


if __name__ == "__main__":
    unittest.main()
