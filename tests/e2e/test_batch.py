"""rlm batch end to end against the fake server: a batch answered and rerun
(nothing run twice), kill -9 midway and the crash window between the ledger
and the output, SIGTERM, a task file with bad lines, duplicate ids and
missing inputs, an endpoint that dies midway, a full disk under the ledger,
shards (flag, Slurm and Kubernetes environments) and rlm batch merge, and
every task in the run log."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, FakeLM, Result, RlmTestCase, main  # noqa: E402
from batch_common import count_lines, read_results, script_rules, task, write_tasks  # noqa: E402


class Batch(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.doc = self.write("doc.txt", "The code words are in the sub-model's head.\n" * 20)

    def tasks(self, n, start=0, **extra):
        return [task(i, ["doc.txt"], **extra) for i in range(start, start + n)]

    def batch_command(self, args, lm, env):
        cmd, run_env, _ = self.rlm_command(args, lm, env, False, "batch")
        # Its lines per task are what several tests read.
        return [c for c in cmd if c != "--quiet"], run_env

    def batch(self, args, lm, env=None, timeout=300):
        cmd, run_env = self.batch_command(args, lm, env)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env,
                              stdin=subprocess.DEVNULL)
        return Result(proc, None)

    def start_batch(self, args, lm, env=None):
        cmd, run_env = self.batch_command(args, lm, env)
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=run_env)

    def plain(self, args):
        """rlm ARGS as typed, in the test's own XDG homes."""
        _, run_env, _ = self.rlm_command([], None, None, False, "batch")
        proc = subprocess.run([RLM] + args, capture_output=True, text=True, timeout=120, env=run_env,
                              stdin=subprocess.DEVNULL)
        return Result(proc, None)

    def wait_lines(self, path, n, proc, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if count_lines(path) >= n:
                return
            if proc.poll() is not None:
                self.fail("rlm batch ended early (%s): %s" % (proc.returncode, proc.stderr.read()))
            time.sleep(0.05)
        self.fail("fewer than %d results within %d s" % (n, timeout))

    def assert_all_once(self, results, ids, status="answered"):
        got = [r["id"] for r in results]
        self.assertEqual(len(got), len(set(got)), "a task written twice")
        self.assertEqual(sorted(got), sorted(ids))
        for r in results:
            self.assertEqual(r["status"], status, r)
            if status == "answered":
                self.assertEqual(r["answer"], "answer-" + r["id"][1:])

    # ---- a batch, and a rerun that runs nothing ---------------------------

    def test_answers_and_rerun_skips_done(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(12))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "4", "--json"], lm)
            self.assertExit(res, 0)
            results = read_results(out)
            self.assert_all_once(results, ["t%d" % i for i in range(12)])
            for r in results:
                self.assertEqual(r["iterations"], 2)
                self.assertEqual(r["sub_calls"], 1)
                self.assertEqual(r["attempts"], 1)
                self.assertGreater(r["prompt_tokens"], 0)
                self.assertEqual(r["shard"], "0/1")
            # The one input all the tasks read was loaded once, by the pool.
            self.assertIn("1 input shared by 12 tasks, each loaded once", res.stderr)
            summary = json.loads(res.stdout)
            self.assertEqual(summary["answered"], 12)
            self.assertEqual(summary["exit_code"], 0)
            self.assertTrue(os.path.exists(out + ".ledger"))
            before = lm.counters()["requests"]
            self.assertEqual(before, 12 * 3)

            with open(out) as f:
                text = f.read()
            again = self.batch([tasks_path, "--out", out], lm)
            self.assertExit(again, 0)
            self.assertIn("12 tasks already done", again.stderr)
            self.assertEqual(lm.counters()["requests"], before)
            with open(out) as f:
                self.assertEqual(f.read(), text)

    def test_failed_tasks_retried_up_to_the_limit(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(5))
        out = os.path.join(self.tmp, "results.jsonl")
        rules = [{"match": r"Question 3: what", "status": 400, "reply": "this model refuses task 3"}]
        rules += script_rules()
        with FakeLM(rules) as lm:
            args = [tasks_path, "--out", out, "--max-attempts", "2"]
            res = self.batch(args, lm)
            self.assertExit(res, 3)
            self.assertIn("t3: failed (a rerun retries it)", res.stderr)
            self.assertEqual(sorted(r["id"] for r in read_results(out)), ["t0", "t1", "t2", "t4"])
            res = self.batch(args, lm)
            self.assertExit(res, 1)
            results = {r["id"]: r for r in read_results(out)}
            self.assertEqual(results["t3"]["status"], "error")
            self.assertEqual(results["t3"]["error_kind"], "model error")
            self.assertEqual(results["t3"]["attempts"], 2)
            self.assertIn("refuses task 3", results["t3"]["error"])
            requests = lm.counters()["requests"]
            # Nothing left to run; the shard still has a task without an answer.
            res = self.batch(args, lm)
            self.assertExit(res, 1)
            self.assertEqual(lm.counters()["requests"], requests)
        self.assertEqual(len(read_results(out)), 5)

    def test_every_task_in_the_run_log(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(5))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            res = self.batch([tasks_path, "--out", out], lm)
        self.assertExit(res, 0)
        logs = self.plain(["logs", "list", "--json", "-n", "100"])
        self.assertExit(logs, 0)
        rows = [r for r in json.loads(logs.stdout) if r["command"] == "batch"]
        self.assertEqual(sorted(r["question"] for r in rows),
                         sorted("Question %d: what is the code word?" % i for i in range(5)))
        ids = {r["log_id"] for r in read_results(out)}
        self.assertEqual(ids, {r["id"] for r in rows})

    # ---- crashes ----------------------------------------------------------

    def test_kill9_midway_then_rerun(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(40))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules(), latency_ms=100) as lm:
            proc = self.start_batch([tasks_path, "--out", out, "--tasks-in-flight", "4"], lm)
            try:
                self.wait_lines(out, 8, proc)
                proc.kill()
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
            done_before = read_results(out)
            self.assertGreaterEqual(len(done_before), 8)
            self.assertLess(len(done_before), 40)
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "4"], lm)
            self.assertExit(res, 0)
        results = read_results(out)
        self.assert_all_once(results, ["t%d" % i for i in range(40)])
        # What was done before the kill was kept, not run again.
        self.assertEqual(results[:len(done_before)], done_before)
        self.assertIn("%d tasks already done" % len(done_before), res.stderr)

    def test_output_mended_from_the_ledger(self):
        """Whatever moment a crash hits — after the ledger's commit but
        before the append, or in the middle of the append — the next run
        writes each done task exactly once, without running it again."""
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(6))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            self.assertExit(self.batch([tasks_path, "--out", out], lm), 0)
            with open(out) as f:
                good = f.read()
            lines = good.splitlines(True)
            requests = lm.counters()["requests"]
            damages = {
                "commit without append": "".join(lines[:-1]),
                "torn append": "".join(lines[:-1]) + lines[-1][:17],
                "appended twice": good + lines[-1],
                "two missing": "".join(lines[:2]) + "".join(lines[4:]),
                "empty": "",
            }
            for name, text in damages.items():
                with open(out, "w") as f:
                    f.write(text)
                res = self.batch([tasks_path, "--out", out], lm)
                self.assertExit(res, 0)
                with open(out) as f:
                    self.assertEqual(f.read(), good, name)
            self.assertEqual(lm.counters()["requests"], requests)

    def test_sigterm_stops_within_seconds_and_resumes(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(30))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules(), latency_ms=400) as lm:
            proc = self.start_batch([tasks_path, "--out", out, "--tasks-in-flight", "4"], lm)
            try:
                self.wait_lines(out, 2, proc)
                lm.wait_in_flight(1)
                t0 = time.time()
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=60)
                took = time.time() - t0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            self.assertEqual(proc.returncode, 5, err)
            self.assertLess(took, 10, err)
            self.assertIn("rerun the same command to resume", err)
            partial = read_results(out)
            self.assertLess(len(partial), 30)
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "8"], lm)
            self.assertExit(res, 0)
        self.assert_all_once(read_results(out), ["t%d" % i for i in range(30)])

    # ---- bad task files ----------------------------------------------------

    def test_bad_lines_reported_good_tasks_run(self):
        lines = [
            task(0, ["doc.txt"]),
            '{"id": "t1", "question": "Question 1: what is the code word?", "inputs": ["doc.txt"]',
            {"id": "t2", "inputs": ["doc.txt"]},
            task(0, ["doc.txt"]),
            task(3, ["missing.txt"]),
            task(4, ["doc.txt"], extra_key=1),
            task(5, ["doc.txt"], options={"base_url": "http://elsewhere"}),
            "",
            task(6, ["doc.txt"], options={"max_iterations": "many"}),
            task(7, ["*.nothing"]),
            task(8, [{"text": "inline words"}], options={"max-iterations": 5}),
            task(9, ["doc.txt"]),
        ]
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), lines)
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            res = self.batch([tasks_path, "--out", out], lm)
            self.assertExit(res, 2)
            err = res.stderr
            for lineno, what in [(2, "not JSON"), (3, '"question" must be'), (4, 'duplicate id "t0" (first on line 1'),
                                 (6, 'unknown key "extra_key"'), (7, '"base_url" is the whole batch'),
                                 (9, "max_iterations")]:
                self.assertRegex(err, r"tasks\.jsonl:%d: [^\n]*%s" % (lineno, _re(what)))
            self.assertIn("missing.txt", err)
            results = {r["id"]: r for r in read_results(out)}
            self.assertEqual(sorted(results), ["t0", "t3", "t7", "t8", "t9"])
            for good in ("t0", "t8", "t9"):
                self.assertEqual(results[good]["status"], "answered")
            for bad in ("t3", "t7"):
                self.assertEqual(results[bad]["status"], "error")
                self.assertEqual(results[bad]["attempts"], 0)
            self.assertIn("missing.txt", results["t3"]["error"])
            requests = lm.counters()["requests"]

            # The missing input appears: the rerun runs that task, and only it.
            self.write("missing.txt", "now here\n")
            again = self.batch([tasks_path, "--out", out], lm)
            self.assertExit(again, 2)
            results = {r["id"]: r for r in read_results(out)}
            self.assertEqual(results["t3"]["status"], "answered")
            self.assertEqual(results["t7"]["status"], "error")
            self.assertEqual(lm.counters()["requests"], requests + 3)
            self.assertEqual(len(read_results(out)), 5)

    def test_usage_errors(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(2))
        out = os.path.join(self.tmp, "results.jsonl")
        for args, needle in [([tasks_path], "no --out"), (["--out", out], "no task file"),
                             ([tasks_path, "--out", out, "--shard", "4/4"], "index must be"),
                             ([tasks_path, "--out", out, "--shard", "1/2"], "{shard}"),
                             ([tasks_path, "--out", out, "--tasks-in-flight", "0"], "--tasks-in-flight"),
                             ([tasks_path, "--out", out, "--trace", "t.jsonl"], "run log (rlm view ID)"),
                             (["/nonexistent/tasks.jsonl", "--out", out], "cannot open the task file")]:
            res = self.batch(args, None)
            self.assertExit(res, 2)
            self.assertIn(needle, res.stderr)
        for args, needle in [(["batch", "--help"], "Exit codes:"), (["batch", "merge", "--help"], "Exit codes:")]:
            res = self.plain(args)
            self.assertExit(res, 0)
            self.assertIn(needle, res.stdout)
        self.assertIn("5  stopped by SIGTERM", self.plain(["batch", "--help"]).stdout)
        # An output that is not a batch's is never overwritten.
        self.write("results.jsonl", "precious\n")
        res = self.batch([tasks_path, "--out", out], None)
        self.assertExit(res, 2)
        self.assertIn("without its ledger", res.stderr)
        with open(out) as f:
            self.assertEqual(f.read(), "precious\n")

    # ---- endpoints ---------------------------------------------------------

    def test_endpoint_dies_midway(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(40))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules(), latency_ms=50) as a, FakeLM(script_rules(), latency_ms=50) as b:
            proc = self.start_batch([tasks_path, "--out", out, "--tasks-in-flight", "4",
                                     "--base-url", a.base_url + "," + b.base_url], None)
            try:
                self.wait_lines(out, 8, proc)
                b.proc.kill()
                b.proc.wait()
                _, err = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            self.assertEqual(proc.returncode, 0, err)
            served_by_a = a.counters()["requests"]
        self.assert_all_once(read_results(out), ["t%d" % i for i in range(40)])
        # Both served until b died; a served everything after.
        self.assertGreater(served_by_a, 0)
        self.assertLess(served_by_a, 40 * 3 + 40)

    def test_rate_limit_holds_across_tasks(self):
        """--rpm is the process's: 20 tasks of 3 requests at 600 a minute
        take at least (60 - the 1 s burst of 10) / 10 per second = 5 s,
        however many tasks run at once (each with its own limit, they
        would take a fraction of a second)."""
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(20))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            t0 = time.time()
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "20", "--rpm", "600"], lm)
            took = time.time() - t0
            self.assertExit(res, 0)
            self.assertEqual(lm.counters()["requests"], 60)
        self.assertGreaterEqual(took, 4.5)
        self.assert_all_once(read_results(out), ["t%d" % i for i in range(20)])

    # ---- a full disk --------------------------------------------------------

    def test_disk_full_under_the_ledger(self):
        small = os.path.join(self.tmp, "small")
        os.mkdir(small)
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", small],
                                               capture_output=True).returncode != 0:
            self.skipTest("cannot mount a small tmpfs here (needs root)")
        self.addCleanup(subprocess.run, ["umount", "-l", small], capture_output=True)
        # Long answers fill the little file system after a few tasks.
        rules = script_rules()
        rules[0] = {"match": r"^echo (\d+)$", "reply": "answer-$1 " + "x" * 6000}
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(40))
        out = os.path.join(small, "results.jsonl")
        with FakeLM(rules) as lm:
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "2"], lm)
            self.assertExit(res, 4)
            self.assertRegex(res.stderr, r"(?i)full|no space")
            self.assertIn("rerun the same command", res.stderr)
            kept = read_results(out)
            self.assertGreater(len(kept), 0)
            self.assertLess(len(kept), 40)
            # Room again: the rerun finishes, every task exactly once.
            subprocess.run(["mount", "-o", "remount,size=16m", small], check=True)
            res = self.batch([tasks_path, "--out", out, "--tasks-in-flight", "4"], lm)
            self.assertExit(res, 0)
        results = read_results(out)
        self.assertEqual(sorted(r["id"] for r in results), sorted("t%d" % i for i in range(40)))
        self.assertEqual(len(results), 40)

    # ---- shards and merge ------------------------------------------------------

    def test_shards_and_merge(self):
        tasks = [task(i, ["doc.txt"], gold="answer-%d" % (i if i % 5 else i + 1)) for i in range(30)]
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), tasks)
        out = os.path.join(self.tmp, "res.{shard}.jsonl")
        ways = [
            (["--shard", "0/3"], {}),
            ([], {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"}),
            (["--shards", "3"], {"JOB_COMPLETION_INDEX": "2"}),
        ]
        with FakeLM(script_rules()) as lm:
            for args, env in ways:
                res = self.batch([tasks_path, "--out", out] + args, lm, env=env)
                self.assertExit(res, 0)   # answered, whether or not as the gold says
        files = [os.path.join(self.tmp, "res.%d.jsonl" % i) for i in range(3)]
        for i, path in enumerate(files):
            results = read_results(path)
            self.assertEqual(sorted(r["id"] for r in results), sorted("t%d" % k for k in range(i, 30, 3)))
            self.assertTrue(all(r["shard"] == "%d/3" % i for r in results))
        merged = os.path.join(self.tmp, "merged.jsonl")
        res = self.plain(["batch", "merge", "--tasks", tasks_path, "-o", merged, "--json"] + files)
        self.assertExit(res, 0)
        summary = json.loads(res.stdout)
        self.assertEqual(summary["results"], 30)
        self.assertEqual(summary["answered"], 30)
        self.assertEqual(summary["gold"], 30)
        self.assertEqual(summary["correct"], 24)
        self.assertAlmostEqual(summary["score"], 0.8)
        self.assertGreater(summary["prompt_tokens"], 0)
        self.assertIn("score 24/30", res.stderr)
        self.assertEqual([r["id"] for r in read_results(merged)], ["t%d" % i for i in range(30)])

        # A shard missing, or given twice: said, exit 1.
        res = self.plain(["batch", "merge", "--tasks", tasks_path] + files[:2])
        self.assertExit(res, 1)
        self.assertIn("10 missing", res.stderr)
        res = self.plain(["batch", "merge"] + files + files[:1])
        self.assertExit(res, 1)
        self.assertIn("10 duplicated", res.stderr)

    def test_a_shard_keeps_its_ledger(self):
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"), self.tasks(4))
        out = os.path.join(self.tmp, "results.jsonl")
        with FakeLM(script_rules()) as lm:
            self.assertExit(self.batch([tasks_path, "--out", out], lm), 0)
            res = self.batch([tasks_path, "--out", os.path.join(self.tmp, "results.jsonl"),
                              "--shard", "0/1"], lm)
            self.assertExit(res, 0)
        con = sqlite3.connect(out + ".ledger")
        self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(con.execute("SELECT count(*) FROM tasks WHERE state = 'done'").fetchone()[0], 4)
        con.close()


def _re(text):
    import re
    return re.escape(text)


if __name__ == "__main__":
    main()
