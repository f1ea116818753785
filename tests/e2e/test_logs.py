"""The run log: every rlm ask is recorded (question, inputs, models, answer,
status, how, turns, sub-calls, tokens, time, trace) and read back with rlm
logs (filters, --json, show, rm) and rlm view ID; --no-log and RLM_LOG=0
record nothing; two runs finishing at once are both recorded; a damaged or
locked log file is a warning and the run still answers; the traces' cap drops
the oldest traces and keeps their rows, against a total the log keeps itself
(an older log gets it, from its rows, when first opened)."""
import json
import os
import sqlite3
import subprocess
import sys
import threading
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, FakeLM, RlmTestCase, main, repl  # noqa: E402

RULES = [
    {"match": r"^sub (\d+)$", "reply": "sub answer $1"},
    {"match": r"sub answer (\d+)", "reply": "FINAL(answer $1)"},
    {"match": r"Q(\d+): what", "reply": repl('print(llm_query("sub $1"))')},
]


class Logs(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "xdg-data", "rlm", "logs.db")
        self.input = self.write("input.txt", "some input text\n" * 10)

    def ask(self, lm, n, extra=(), env=None):
        return self.rlm(list(extra) + ["--context", self.input, "Q%d: what is it?" % n], lm, env=env)

    def logs(self, args, env=None):
        _, run_env, _ = self.rlm_command([], None, env=env)
        return subprocess.run([RLM, "logs"] + args, capture_output=True, text=True, env=run_env,
                              timeout=60)

    def runs(self, args=()):
        p = self.logs(["--json"] + list(args))
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def assertTotal(self):
        """The traces' total the log keeps is the sum of its traces."""
        with sqlite3.connect(self.db) as c:
            kept = c.execute("SELECT traces FROM totals WHERE id = 1").fetchone()[0]
            summed = c.execute("SELECT COALESCE(SUM(length(trace)), 0) FROM runs").fetchone()[0]
        self.assertEqual(kept, summed)
        return kept

    def test_recorded_and_read_back(self):
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1), 0)
            self.assertExit(self.ask(lm, 2, ["--model", "other-model"]), 0)
        runs = self.runs()
        self.assertEqual([r["id"] for r in runs], [2, 1])   # newest first
        r = runs[1]
        self.assertEqual(r["command"], "ask")
        self.assertEqual(r["question"], "Q1: what is it?")
        self.assertEqual(r["inputs"], [{"name": self.input, "bytes": 160}])
        self.assertEqual((r["model"], r["sub_model"]), ("root-model", "sub-model"))
        self.assertEqual((r["answer"], r["status"], r["how"]), ("answer 1", "ok", "FINAL in text"))
        self.assertEqual((r["turns"], r["sub_calls"]), (2, 1))
        self.assertGreater(r["prompt_tokens"], 0)
        self.assertGreater(r["elapsed"], 0)
        self.assertGreater(r["trace_bytes"], 0)
        # Filters.
        self.assertEqual([x["id"] for x in self.runs(["--model", "other-model"])], [2])
        self.assertEqual([x["id"] for x in self.runs(["--search", "ANSWER 1"])], [1])
        self.assertEqual([x["id"] for x in self.runs(["--status", "no answer"])], [])
        self.assertEqual([x["id"] for x in self.runs(["--since", "2000-01-01", "--until", "2999-01-01"])], [2, 1])
        self.assertEqual([x["id"] for x in self.runs(["--until", "2000-01-01"])], [])
        self.assertEqual([x["id"] for x in self.runs(["-n", "1"])], [2])
        table = self.logs([])
        self.assertIn("Q1: what is it? → answer 1", table.stdout)
        show = self.logs(["show", "1"])
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("answer:\nanswer 1\n", show.stdout)
        self.assertIn("how                FINAL in text", show.stdout)
        # The trace kept in the log is the run's whole trace: a page from it.
        page = os.path.join(self.tmp, "run1.html")
        _, env, _ = self.rlm_command([], None)
        p = subprocess.run([RLM, "view", "1", "-o", page], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(page) as f:
            html = f.read()
        self.assertIn("answer 1", html)
        self.assertIn('"type":"run_end"', html)
        self.assertIn("run 1 of the run log", html)
        # Removal.
        self.assertEqual(self.logs(["rm", "1"]).stdout, "removed 1 run\n")
        self.assertEqual([x["id"] for x in self.runs()], [2])
        missing = self.logs(["show", "1"])
        self.assertEqual(missing.returncode, 2)
        self.assertIn("no run 1", missing.stderr)
        p = subprocess.run([RLM, "view", "1"], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no run 1", p.stderr)
        self.assertEqual(self.logs(["rm", "--all"]).stdout, "removed 1 run\n")
        self.assertEqual(self.runs(), [])

    def test_each_chat_question(self):
        with FakeLM(RULES) as lm:
            res = self.rlm(["--context", self.input], lm, command="chat",
                           stdin="Q1: what is it?\nQ2: what is it?\n")
        self.assertExit(res, 0)
        runs = self.runs()
        self.assertEqual([(r["command"], r["question"], r["answer"]) for r in runs],
                         [("chat", "Q2: what is it?", "answer 2"), ("chat", "Q1: what is it?", "answer 1")])
        # Each question's row keeps that question's trace only.
        _, env, _ = self.rlm_command([], None)
        page = os.path.join(self.tmp, "q2.html")
        p = subprocess.run([RLM, "view", str(runs[0]["id"]), "-o", page], capture_output=True, text=True,
                           env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(page) as f:
            html = f.read()
        self.assertIn("Q2: what is it?", html)
        self.assertNotIn('"question":"Q1: what is it?"', html)

    def test_bad_arguments(self):
        for args in (["rm"], ["show"], ["show", "x"], ["--since", "yesterday"], ["-n", "0"], ["--bogus"]):
            p = self.logs(args)
            self.assertEqual(p.returncode, 2, args)

    def test_off(self):
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1, ["--no-log"]), 0)
            self.assertExit(self.ask(lm, 2, env={"RLM_LOG": "0"}), 0)
        self.assertFalse(os.path.exists(self.db))

    def test_two_runs_at_once(self):
        with FakeLM(RULES, latency_ms=200) as lm:
            results = [None, None]

            def run(i):
                results[i] = self.ask(lm, i + 1)
            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for r in results:
            self.assertExit(r, 0)
            self.assertNotIn("run log", r.stderr)
        self.assertEqual(sorted(x["answer"] for x in self.runs()), ["answer 1", "answer 2"])

    def test_damaged_log_warns_and_the_run_answers(self):
        os.makedirs(os.path.dirname(self.db))
        with open(self.db, "wb") as f:
            f.write(b"this is no database" * 500)
        with FakeLM(RULES) as lm:
            res = self.ask(lm, 1)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "answer 1\n")
        self.assertIn("this run is not in the run log: run log '%s'" % self.db, res.stderr)
        self.assertIn("unusable", res.stderr)
        p = self.logs([])
        self.assertEqual(p.returncode, 2)
        self.assertIn("unusable", p.stderr)

    def test_locked_log_warns_and_the_run_answers(self):
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1), 0)
            holder = sqlite3.connect(self.db, isolation_level=None, timeout=1)
            holder.execute("PRAGMA journal_mode=DELETE")
            holder.execute("BEGIN EXCLUSIVE")
            try:
                res = self.ask(lm, 2)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "answer 2\n")
        self.assertIn("this run is not in the run log", res.stderr)
        self.assertIn("locked", res.stderr)

    def test_cap_drops_the_oldest_traces(self):
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1), 0)
            with sqlite3.connect(self.db) as c:
                size = c.execute("SELECT length(trace) FROM runs WHERE id = 1").fetchone()[0]
            # Room for about one trace: the second run's pushes out the first's.
            self.assertExit(self.ask(lm, 2, env={"RLM_LOG_MAX": str(size * 3 // 2)}), 0)
            runs = {r["id"]: r for r in self.runs()}
            self.assertLessEqual(self.assertTotal(), size * 3 // 2)
            self.assertEqual(runs[1]["trace_bytes"], 0)
            self.assertIn("size cap", runs[1]["trace_note"])
            self.assertEqual(runs[1]["answer"], "answer 1")   # the row is kept
            self.assertGreater(runs[2]["trace_bytes"], 0)
            # A cap of 0 keeps no trace at all.
            self.assertExit(self.ask(lm, 3, env={"RLM_LOG_MAX": "0"}), 0)
        runs = {r["id"]: r for r in self.runs()}
        self.assertEqual([runs[i]["trace_bytes"] for i in (1, 2, 3)], [0, 0, 0])
        self.assertEqual(self.assertTotal(), 0)
        self.assertEqual(runs[3]["answer"], "answer 3")
        _, env, _ = self.rlm_command([], None)
        p = subprocess.run([RLM, "view", "1"], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("run 1 keeps no trace (dropped: the log is over its size cap)", p.stderr)

    def test_damaged_trace_in_the_log(self):
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1), 0)
        with sqlite3.connect(self.db) as c:
            c.execute("UPDATE runs SET trace = x'00112233' WHERE id = 1")
        _, env, _ = self.rlm_command([], None)
        p = subprocess.run([RLM, "view", "1", "-o", os.path.join(self.tmp, "x.html")], capture_output=True,
                           text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("run 1: its trace in the log is damaged", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x.html")))

    def test_traces_are_zstd_and_old_deflated_ones_still_read(self):
        """Traces are stored as zstd frames; a log written before (its
        traces deflated with zlib) reads as it did: logs show, view ID."""
        trace = os.path.join(self.tmp, "t.jsonl")
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1, ["--trace", trace]), 0)
        with open(trace, "rb") as f:
            raw = f.read()
        with sqlite3.connect(self.db) as c:
            blob = c.execute("SELECT trace FROM runs WHERE id = 1").fetchone()[0]
            self.assertEqual(bytes(blob[:4]), b"\x28\xb5\x2f\xfd")   # zstd's magic number
            c.execute("UPDATE runs SET trace = ?, trace_bytes = ? WHERE id = 1", (zlib.compress(raw, 1), len(raw)))
        show = self.logs(["show", "1"])
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("answer:\nanswer 1\n", show.stdout)
        page = os.path.join(self.tmp, "old.html")
        _, env, _ = self.rlm_command([], None)
        p = subprocess.run([RLM, "view", "1", "-o", page], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(page) as f:
            html = f.read()
        self.assertIn("sub answer 1", html)
        self.assertIn('"type":"run_end"', html)
        # A zstd frame cut short is damaged, not half a trace.
        with sqlite3.connect(self.db) as c:
            c.execute("UPDATE runs SET trace = ? WHERE id = 1", (bytes(blob[:len(blob) // 2]),))
        p = subprocess.run([RLM, "view", "1", "-o", page + "2"], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("run 1: its trace in the log is damaged", p.stderr)

    def test_an_older_log_gets_its_total(self):
        """A log an older rlm wrote (no totals, user_version 0, traces in
        its rows) is set up when first opened: its total counts the traces
        it holds, and rm keeps it."""
        os.makedirs(os.path.dirname(self.db))
        with sqlite3.connect(self.db) as c:
            c.executescript(
                "PRAGMA journal_mode=WAL;"
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
                "INSERT INTO meta VALUES('schema', '1');"
                "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,"
                " command TEXT, question TEXT, inputs TEXT, model TEXT, sub_model TEXT, answer TEXT,"
                " status TEXT, how TEXT, error TEXT, session TEXT, turns INTEGER, sub_calls INTEGER,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, elapsed REAL,"
                " trace BLOB, trace_bytes INTEGER NOT NULL DEFAULT 0, trace_note TEXT);")
            for i, n in enumerate((1000, 2500)):
                c.execute("INSERT INTO runs(started, command, question, trace, trace_bytes) VALUES(?,?,?,?,?)",
                          (1.0 + i, "ask", "old %d" % i, zlib.compress(b"x" * n) + os.urandom(n), n))
        with FakeLM(RULES) as lm:
            self.assertExit(self.ask(lm, 1), 0)
        with sqlite3.connect(self.db) as c:
            self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], 2)
            self.assertEqual(c.execute("SELECT count(*) FROM runs").fetchone()[0], 3)
            self.assertIsNotNone(c.execute("SELECT cached_tokens FROM runs WHERE id = 3").fetchone())
        before = self.assertTotal()
        self.assertGreater(before, 3500)
        p = self.logs(["rm", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertLess(self.assertTotal(), before - 1000)


if __name__ == "__main__":
    main()
