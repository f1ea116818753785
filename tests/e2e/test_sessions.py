"""Conversations end to end against the fake server: a session of three
questions across processes (`rlm ask --session`, then `rlm chat --session`)
whose later questions use the data variables and answers of earlier ones,
loaded from the store with nothing re-run; a new --context becoming context_1, earlier
questions' messages history_0, ...; a session recorded by an older rlm (the
second input named context_2) continuing with its names and its history,
not its variables; a process
killed mid-question losing nothing of the questions before; compaction of a
long history; `rlm chat` from a pipe with /context; Ctrl-C cancelling one
question; and the errors a session can meet (bad name, an input gone, stdin
too large to save)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, FakeLM, RlmTestCase, main, repl  # noqa: E402

WORDS = "alpha beta gamma delta\n"   # 4 words, 23 characters

# Question 1 counts the words and asks a sub-model for a token; later
# questions use both variables and answer_1.
SESSION_RULES = [
    {"match": r"^SESSLEAF", "model": "^sub-model$", "reply": "tok-93"},
    {"match": r"Q1-OUT (\d+) (\S+)", "reply": repl('FINAL("q1:%d:%s" % (n_words, token))')},
    {"match": r"SESSQ1", "reply": repl(
        'words = context.split()\nn_words = len(words)\n'
        'token = llm_query("SESSLEAF give me a token")\nprint("Q1-OUT", n_words, token)')},
    {"match": r"Q2-OUT (\S+) (\S+) (\S+)", "reply": "FINAL(q2:$1:$2:$3)"},
    {"match": r"SESSQ2", "reply": repl('print("Q2-OUT", n_words * 2, token, answer_1)')},
    {"match": r"Q3-OUT (\S+) (\d+)", "reply": "FINAL(q3:$1:$2)"},
    {"match": r"SESSQ3", "reply": repl('print("Q3-OUT", answer_2, len(context))')},
    {"match": r"K3-OUT (\S+) (\d+)", "reply": "FINAL(k3:$1:$2)"},
    {"match": r"KILLQ3", "reply": repl('print("K3-OUT", answer_1, n_words)')},
    {"match": r"KILLQ2", "latency_ms": 30000, "reply": "FINAL(never seen)"},
]


class Output:
    """A finished Popen, shaped like harness.Result for assertExit."""

    def __init__(self, proc, stdout, stderr):
        self.code = proc.returncode
        self.stdout = stdout
        self.stderr = stderr


class Sessions(RlmTestCase):
    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "sessions", "s.db")   # the directory is created

    def session(self, name="S1"):
        return ["--session", name, "--session-db", self.db]

    def test_three_questions_two_processes(self):
        words = self.write("words.txt", WORDS)
        with FakeLM(SESSION_RULES) as lm:
            first = self.rlm(self.session() + ["--json", "--context", words, "SESSQ1 count the words"],
                             lm, trace_name="t1.jsonl")
            self.assertExit(first, 0)
            self.assertEqual(first.report["answer"], "q1:4:tok-93")
            self.assertEqual(first.report["question"], 1)
            self.assertEqual(first.report["session"], "S1")
            before = len(lm.requests())
            self.assertEqual(before, 3)   # 2 root turns + 1 sub-call

            kept = first.events("data_kept")
            self.assertEqual([(k["ok"], k["variables"]) for k in kept], [(True, 3)])

            # A second process: no --context (the session knows its input),
            # and question 1's data comes back from the store: no cell runs
            # again, no model is called for it.
            second = self.rlm(self.session() + ["--json", "SESSQ2 reuse the variables"], lm,
                              trace_name="t2.jsonl")
            self.assertExit(second, 0)
            self.assertEqual(second.report["answer"], "q2:8:tok-93:q1:4:tok-93")
            self.assertEqual(second.report["question"], 2)
            log = lm.requests()
            self.assertEqual(len(log) - before, 2)   # its own 2 root turns only
            self.assertEqual(len([r for r in log if r["last_user"].startswith("SESSLEAF")]), 1)
            loaded = second.events("data_loaded")
            self.assertEqual([(d["ok"], d["variables"], d["from_question"]) for d in loaded],
                             [(True, 3, 1)])
            self.assertEqual(len(second.events("code")), 1)   # its own cell only
            # The root was not shown question 1's input again as a new one.
            q2_requests = second.events("root_request")
            self.assertNotIn("A new input came", q2_requests[0]["last_message"])

            # A third process, through rlm chat: one question on stdin.
            third = self.rlm(self.session() + ["--json"], lm, command="chat",
                             stdin="SESSQ3 final check\n", trace_name="t3.jsonl")
            self.assertExit(third, 0)
            lines = [line for line in third.stdout.splitlines() if line.strip()]
            self.assertEqual(len(lines), 1)
            report = json.loads(lines[0])
            self.assertEqual(report["answer"], "q3:q2:8:tok-93:q1:4:tok-93:23")
            self.assertEqual(report["question"], 3)
            self.assertEqual(report["session"], "S1")
            self.assertEqual(lm.counters()["unmatched"], 0)

    def test_new_context_is_context_1(self):
        first_file = self.write("first.txt", WORDS)
        second_file = self.write("second.txt", "gfile-content\n")
        rules = [
            {"match": r"C1-OUT (\d+)", "reply": "FINAL(c1:$1)"},
            {"match": r"CTXQ1", "reply": repl('first_len = len(context)\nprint("C1-OUT", first_len)')},
            {"match": r"C2-OUT (\S+) (\d+) (\S+)", "reply": "FINAL(c2:$1:$2:$3)"},
            {"match": r"CTXQ2", "reply": repl(
                'print("C2-OUT", context_1.strip(), first_len, context_0 is context)')},
            {"match": r"C3-OUT (.*)", "reply": "FINAL(c3:$1)"},
            {"match": r"CTXQ3", "reply": repl(
                'try:\n    context_2\n    print("C3-OUT has-context_2")\n'
                'except NameError:\n    print("C3-OUT no-context_2", context_1.strip(), '
                'len(history), history_1[0]["role"], "CTXQ2" in history_1[0]["content"])')},
        ]
        with FakeLM(rules) as lm:
            one = self.rlm(self.session("ctx") + ["--context", first_file, "CTXQ1 first"], lm,
                           trace_name="t1.jsonl")
            self.assertExit(one, 0)
            self.assertEqual(one.stdout.strip(), "c1:23")
            two = self.rlm(self.session("ctx") + ["--context", second_file, "CTXQ2 second"], lm,
                           trace_name="t2.jsonl")
            self.assertExit(two, 0)
            self.assertEqual(two.stdout.strip(), "c2:gfile-content:23:True")
            opening = two.events("root_request")[0]["last_message"]
            self.assertIn("`context_1`", opening)
            self.assertIn("history_0", opening)
            # The same --context again is not a new input; a new model is a warning.
            three = self.rlm(self.session("ctx") + ["--model", "other-root", "--context",
                                                    second_file, "CTXQ3 third"], lm,
                             trace_name="t3.jsonl")
            self.assertExit(three, 0)
            # history_1 is question 2's messages, rebuilt in this process from the store.
            self.assertEqual(three.stdout.strip(), "c3:no-context_2 gfile-content 4 user True")
            self.assertNotIn("A new input came", three.events("root_request")[0]["last_message"])
            self.assertIn("session 'ctx' was last run with model 'root-model'", three.stderr)

    def test_killed_process_loses_nothing_before(self):
        words = self.write("words.txt", WORDS)
        with FakeLM(SESSION_RULES) as lm:
            first = self.rlm(self.session("kill") + ["--context", words, "SESSQ1 count the words"],
                             lm, trace_name="t1.jsonl")
            self.assertExit(first, 0)
            self.assertEqual(first.stdout.strip(), "q1:4:tok-93")
            # Question 2 hangs at the model; the process is killed outright.
            proc, _ = self.rlm_start(self.session("kill") + ["KILLQ2 this one hangs"], lm,
                                     trace_name="t2.jsonl")
            try:
                lm.wait_in_flight(1)
            finally:
                proc.kill()
                proc.communicate(timeout=30)
            self.assertEqual(proc.returncode, -signal.SIGKILL)
            # A later process goes on from question 1's answer and variables.
            third = self.rlm(self.session("kill") + ["--json", "KILLQ3 after the crash"], lm,
                             trace_name="t3.jsonl")
            self.assertExit(third, 0)
            self.assertEqual(third.report["answer"], "k3:q1:4:tok-93:4")
            self.assertEqual(third.report["question"], 3)
            self.assertEqual(len([r for r in lm.requests()
                                  if r["last_user"].startswith("SESSLEAF")]), 1)

    def test_session_from_an_older_version(self):
        """A session written by rlm before context_0 existed: its first input
        was also context_1 and its second context_2, in its recorded code and
        history. It continues with those names (and context_0 as well)."""
        first = self.write("first.txt", WORDS)
        second = self.write("second.txt", "second-input\n")
        os.makedirs(os.path.dirname(self.db))
        db = sqlite3.connect(self.db)
        # The tables and rows exactly as the older rlm wrote them (schema 1).
        db.executescript("""
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE sessions(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
              created REAL NOT NULL, config TEXT);
            CREATE TABLE questions(session INTEGER NOT NULL, number INTEGER NOT NULL,
              question TEXT NOT NULL, answer TEXT, started REAL, ended REAL,
              PRIMARY KEY(session, number));
            CREATE TABLE messages(session INTEGER NOT NULL, seq INTEGER NOT NULL,
              role TEXT NOT NULL, content TEXT NOT NULL, hidden INTEGER NOT NULL DEFAULT 0,
              PRIMARY KEY(session, seq));
            CREATE TABLE cells(session INTEGER NOT NULL, seq INTEGER NOT NULL,
              code TEXT NOT NULL, replies TEXT, PRIMARY KEY(session, seq));
            INSERT INTO meta VALUES('version', '1');""")
        record = {"args": None, "cwd": self.tmp, "include": None, "exclude": None,
                  "jsonl_field": None}
        config = {"inputs": [dict(record, args=[first]), dict(record, args=[second])],
                  "model": "root-model", "sub_model": "sub-model"}
        db.execute("INSERT INTO sessions VALUES(1, 'old', 0, ?)", (json.dumps(config),))
        db.executemany("INSERT INTO questions VALUES(1, ?, ?, ?, 0, 0)",
                       [(1, "OLDQ1", "a1"), (2, "OLDQ2", "a2")])
        messages = [("system", "old system prompt"), ("user", "OLDQ1 question one"),
                    ("assistant", "```repl\nfirst_len = len(context_1)\n```"),
                    ("user", "[block 1 of 1 output]\n(no output)"), ("assistant", "FINAL(a1)"),
                    ("user", "A new question... It is the variable `context_2`"),
                    ("assistant", "```repl\nsecond_text = context_2.strip()\n```"),
                    ("user", "[block 1 of 1 output]\n(no output)"), ("assistant", "FINAL(a2)")]
        db.executemany("INSERT INTO messages(session, seq, role, content) VALUES(1, ?, ?, ?)",
                       [(i + 1, r, c) for i, (r, c) in enumerate(messages)])
        db.executemany("INSERT INTO cells VALUES(1, ?, ?, '[]')",
                       [(1, "first_len = len(context_1)"), (2, "second_text = context_2.strip()")])
        db.commit()
        db.close()
        rules = [
            {"match": r"OLD-OUT (.*)", "reply": "FINAL($1)"},
            {"match": r"OLDQ3", "reply": repl(
                'print("OLD-OUT", "first_len" in globals(), "second_text" in globals(), '
                'context_1 is context, context_0 is context, context_2.strip(), answer_1, '
                'answer_2)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(self.session("old") + ["--json", "OLDQ3 go on"], lm)
            self.assertEqual(lm.counters()["unmatched"], 0)
        self.assertExit(res, 0)
        # Its history and answers load; its variables, which the older rlm
        # rebuilt by running its cells again, do not (once said, on stderr).
        self.assertEqual(res.report["answer"], "False False True True second-input a1 a2")
        self.assertEqual(res.report["question"], 3)
        self.assertEqual(res.stderr.count("recorded by an earlier rlm"), 1, res.stderr)
        self.assertEqual(len(res.events("code")), 1)   # nothing re-run
        opening = res.events("root_request")[0]["last_message"]
        self.assertIn("recorded by an earlier version of rlm", opening)
        db = sqlite3.connect(self.db)
        saved = json.loads(db.execute("SELECT config FROM sessions").fetchone()[0])
        histories = db.execute("SELECT number FROM histories").fetchall()
        db.close()
        self.assertEqual(saved["names"], "context_1")   # still the older names
        self.assertEqual(histories, [(3,)])

    def test_compaction(self):
        ctx = self.write("words.txt", WORDS)
        rules = [
            {"match": r"^Your conversation history is about to be cut",
             "reply": "NOTE: `marker` holds question 1's value; padding was printed."},
            {"match": r"^Earlier turns were removed", "reply": repl(
                'FINAL("after compaction: " + marker + " " + answer_1)')},
            {"match": r"^\[block 1 of 1 output\]\nPAD", "reply": repl('print("PAD" + "x" * 4000)')},
            {"match": r"COMPQ2 keep going", "reply": repl('print("PAD" + "x" * 4000)')},
            {"match": r"Q1MARK", "reply": repl('FINAL("q1-done")')},
            {"match": r"COMPQ1 set a marker", "reply": repl(
                'marker = "mk-" + str(6 * 7)\nprint("Q1MARK", marker, "y" * 1500)')},
        ]
        window = 4000
        with FakeLM(rules) as lm:
            res = self.rlm(["--context-window", str(window), "--context", ctx], lm, command="chat",
                           stdin="COMPQ1 set a marker\nCOMPQ2 keep going\n")
            log = lm.requests()
            counters = lm.counters()
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "q1-done\n\nafter compaction: mk-42 q1-done\n\n")
        self.assertEqual(counters["unmatched"], 0)
        summary_requests = [r for r in log if r["last_user"].startswith(
            "Your conversation history is about to be cut")]
        self.assertEqual(len(summary_requests), 1)
        compactions = res.events("compaction")
        self.assertEqual(len(compactions), 1)
        c = compactions[0]
        self.assertEqual(c["node"], "0")
        self.assertGreaterEqual(c["tokens_before"], 0.85 * window)
        self.assertLess(c["tokens_after"], c["tokens_before"])
        self.assertGreater(c["messages"], 2)
        # After compaction the root was sent the system prompt and the note only.
        after = [e for e in res.events("root_request")
                 if e["last_message"].startswith("Earlier turns were removed")]
        self.assertEqual(len(after), 1)
        self.assertEqual(after[0]["messages"], 2)
        self.assertIn("NOTE: `marker` holds", after[0]["last_message"])

    def test_chat_from_a_pipe(self):
        first = self.write("words.txt", WORDS)
        second = self.write("g.txt", "gfile\n")
        rules = [
            {"match": r"P1-OUT (\d+)", "reply": "FINAL(p1:$1)"},
            {"match": r"PIPEQ1", "reply": repl('print("P1-OUT", len(context))')},
            {"match": r"P2-OUT (\S+) (\S+)", "reply": "FINAL(p2:$1:$2)"},
            {"match": r"PIPEQ2", "reply": repl('print("P2-OUT", context_1.strip(), answer_1)')},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", first], lm, command="chat",
                           stdin="PIPEQ1 first\n\n/context %s\nPIPEQ2 second\n/quit\nnever asked\n"
                           % second)
            self.assertEqual(lm.counters()["requests"], 4)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "p1:23\n\np2:gfile:p1:23\n\n")
        # A fresh sandbox per question, forked from the conversation's
        # zygote, which loaded each input once.
        ready = res.events("sandbox_ready")
        self.assertEqual([r["forked"] for r in ready], [True, True])

    def test_chat_unknown_command_and_no_answer(self):
        # Code to the last request too: no answer (a reply in words would be one).
        rules = [{"match": r"NOANS|used all your turns", "reply": repl("print('thinking')")}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-iterations", "1"], lm, command="chat",
                           stdin="/bogus\nNOANS question\n")
        # The unknown command is a usage error, which outranks "no answer".
        self.assertExit(res, 2)
        self.assertIn("unknown command '/bogus'", res.stderr)
        self.assertIn("no answer", res.stderr)

    def test_ctrl_c_cancels_one_question(self):
        rules = [
            {"match": r"CANCELQ1", "latency_ms": 30000, "reply": "FINAL(too late)"},
            {"match": r"F2-OUT", "reply": "FINAL(second answered)"},
            {"match": r"CANCELQ2", "reply": repl('print("F2-OUT")')},
        ]
        with FakeLM(rules) as lm:
            proc, trace_path = self.rlm_start([], lm, command="chat", stdin=subprocess.PIPE)
            try:
                proc.stdin.write("CANCELQ1 slow\n")
                proc.stdin.flush()
                lm.wait_in_flight(1)
                t0 = time.time()
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate("CANCELQ2 fast\n", timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
            elapsed = time.time() - t0
        res = Output(proc, out, err)
        self.assertExit(res, 1)   # one question got no answer
        self.assertEqual(out, "\nsecond answered\n\n")
        self.assertIn("cancelled", err)
        self.assertLess(elapsed, 20)   # not the 30 s the fake server held the request
        ends = [e for e in self.trace_of(trace_path) if e["type"] == "run_end"]
        self.assertEqual([e["status"] for e in ends], ["no answer", "ok"])
        self.assertEqual(ends[0]["error"], "cancelled")

    def test_ctrl_c_cancels_ask(self):
        rules = [{"match": r"SLOWQ", "latency_ms": 30000, "reply": "FINAL(too late)"}]
        with FakeLM(rules) as lm:
            proc, _ = self.rlm_start(["SLOWQ wait for it"], lm)
            out, err, _ = self.signal_in_flight(proc, lm, signal.SIGINT)
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("cancelling", err)
        self.assertIn("no answer: cancelled", err)

    def test_sigterm_cancels_ask_cleanly(self):
        rules = [{"match": r"SLOWQ", "latency_ms": 30000, "reply": "FINAL(too late)"}]
        with FakeLM(rules) as lm:
            proc, trace_path = self.rlm_start(["SLOWQ wait for it"], lm)
            out, err, elapsed = self.signal_in_flight(proc, lm, signal.SIGTERM)
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("terminated", err)
        self.assertIn("no answer: cancelled", err)
        self.assertLess(elapsed, 20)
        ends = [e for e in self.trace_of(trace_path) if e["type"] == "run_end"]
        self.assertEqual([e["error"] for e in ends], ["cancelled"])

    def test_sigterm_ends_chat_cleanly(self):
        rules = [{"match": r"SLOWQ", "latency_ms": 30000, "reply": "FINAL(too late)"},
                 {"match": r"NEXTQ", "reply": "FINAL(never asked)"}]
        with FakeLM(rules) as lm:
            proc, trace_path = self.rlm_start([], lm, command="chat", stdin=subprocess.PIPE)
            out, err, _ = self.signal_in_flight(proc, lm, signal.SIGTERM,
                                                feed="SLOWQ wait\nNEXTQ after\n")
            requests = lm.requests()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("terminated", err)
        self.assertNotIn("never asked", out)
        self.assertFalse(any("NEXTQ" in (r.get("last_user") or "") for r in requests))
        ends = [e for e in self.trace_of(trace_path) if e["type"] == "run_end"]
        self.assertEqual([e["error"] for e in ends], ["cancelled"])

    def test_bad_session_name(self):
        for command, stdin in (("ask", None), ("chat", "")):
            args = ["--session", "bad name!", "--session-db", self.db]
            if command == "ask":
                args.append("a question")
            res = self.rlm(args, None, command=command, stdin=stdin, trace=False)
            self.assertExit(res, 2)
            self.assertIn("--session: bad name 'bad name!'", res.stderr)
        self.assertFalse(os.path.exists(self.db))

    def test_unwritable_session_db(self):
        blocker = self.write("not-a-dir", "a file where a directory should be\n")
        res = self.rlm(["--session", "s", "--session-db", os.path.join(blocker, "s.db"), "q"],
                       None, trace=False)
        self.assertExit(res, 2)
        self.assertIn("session 's'", res.stderr)

    def test_input_gone_on_resume(self):
        words = self.write("words.txt", WORDS)
        with FakeLM(SESSION_RULES) as lm:
            first = self.rlm(self.session("gone") + ["--context", words, "SESSQ1 count"], lm)
            self.assertExit(first, 0)
            os.unlink(words)
            before = lm.counters()["requests"]
            second = self.rlm(self.session("gone") + ["SESSQ2 again"], lm)
            self.assertEqual(lm.counters()["requests"], before)
        self.assertExit(second, 2)
        self.assertIn("session 'gone': input 1 (%s) cannot be read again" % words, second.stderr)

    def test_stdin_too_large_to_save(self):
        with FakeLM([]) as lm:
            res = self.rlm(self.session("big") + ["--context", "-", "a question"], lm,
                           stdin="z" * (1100 * 1024))
            self.assertEqual(lm.counters()["requests"], 0)
        self.assertExit(res, 2)
        self.assertIn("cannot be saved", res.stderr)


class SessionSafety(RlmTestCase):
    """Issue 13: a bad /context loses nothing else, a new session is said, sessions are
    listed and removed, two processes cannot share one, a damaged file is recovered and
    unreadable recorded replies never replay silently."""

    SHOW = [
        {"match": r"SHOWN (.*)", "reply": "FINAL($1)"},
        {"match": r"SHOWQ", "reply": repl('print("SHOWN", repr(context.strip()))')},
    ]

    def setUp(self):
        super().setUp()
        self.db = os.path.join(self.tmp, "sessions.db")

    def session(self, name):
        return ["--session", name, "--session-db", self.db]

    def sessions(self, *args):
        return subprocess.run([RLM, "sessions", "--session-db", self.db] + list(args),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def run_twice(self, words):
        with FakeLM(self.SHOW) as lm:
            for name in ("keep", "also"):
                self.assertExit(self.rlm(self.session(name) + ["--context", words, "SHOWQ x"], lm), 0)
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

    def test_bad_context_command_loses_nothing(self):
        good = self.write("good.txt", "the good input\n")
        missing = os.path.join(self.tmp, "missing.txt")
        with FakeLM(self.SHOW) as lm:
            res = self.rlm(self.session("c") + ["--context", good], lm, command="chat",
                           stdin="/context %s\nSHOWQ what is there\n" % missing)
        self.assertIn("missing.txt", res.stderr)
        self.assertEqual(res.stdout, "the good input\n\n")
        self.assertExit(res, 2)   # the bad /context is an input error of the conversation
        db = sqlite3.connect(self.db)
        config = json.loads(db.execute("SELECT config FROM sessions WHERE name='c'").fetchone()[0])
        db.close()
        self.assertEqual([rec["args"] for rec in config["inputs"]], [[good]])

    def test_an_input_that_fails_to_load_loses_nothing_else(self):
        import socket
        good = self.write("good.txt", "the good input\n")
        sock_path = os.path.join(self.tmp, "a.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(sock_path)   # exists, but no input can be read from it
        try:
            with FakeLM(self.SHOW) as lm:
                res = self.rlm(["--context", good], lm, command="chat",
                               stdin="/context %s\nSHOWQ first\nSHOWQ second\n" % sock_path)
        finally:
            sock.close()
        # The first question fails on the socket, naming it; the input given
        # with it is kept, and the next question sees it.
        self.assertIn("a.sock", res.stderr)
        self.assertIn("kept for the next question", res.stderr)
        self.assertEqual(res.stdout, "\nthe good input\n\n")
        self.assertExit(res, 2)

    def test_new_session_is_said(self):
        words = self.write("w.txt", WORDS)
        with FakeLM(self.SHOW) as lm:
            first = self.rlm(self.session("typo") + ["--context", words, "SHOWQ a"], lm)
            again = self.rlm(self.session("typo") + ["SHOWQ b"], lm)
        self.assertExit(first, 0)
        self.assertIn("new session 'typo'", first.stderr)
        self.assertExit(again, 0)
        self.assertNotIn("new session", again.stderr)

    def test_sessions_listed_and_removed(self):
        self.run_twice(self.write("w.txt", WORDS))
        res = self.sessions("--json")
        self.assertEqual(res.returncode, 0, res.stderr)
        listed = json.loads(res.stdout)
        self.assertEqual(sorted(s["name"] for s in listed), ["also", "keep"])
        self.assertEqual(listed[0]["questions"], 1)
        self.assertEqual(listed[0]["model"], "root-model")
        res = self.sessions()
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("keep", res.stdout)
        self.assertIn("also", res.stdout)
        res = self.sessions("rm", "keep")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual([s["name"] for s in json.loads(self.sessions("--json").stdout)], ["also"])
        res = self.sessions("rm", "nosuch")
        self.assertEqual(res.returncode, 2)
        self.assertIn("no session 'nosuch'", res.stderr)

    def test_a_session_in_use_is_refused(self):
        words = self.write("w.txt", WORDS)
        with FakeLM(self.SHOW) as lm:
            proc, _ = self.rlm_start(self.session("busy") + ["--context", words], lm,
                                     command="chat", stdin=subprocess.PIPE,
                                     trace_name="chat-trace.jsonl")
            try:
                deadline = time.time() + 30
                listed = []
                while time.time() < deadline:
                    res = self.sessions("--json")
                    listed = json.loads(res.stdout) if res.returncode == 0 else []
                    # true (held, holder not yet recorded) until the row is written
                    if listed and type(listed[0].get("in_use_by")) is int:
                        break
                    time.sleep(0.05)
                self.assertEqual(listed[0]["in_use_by"], proc.pid)
                res = self.rlm(self.session("busy") + ["SHOWQ q"], lm)
                self.assertExit(res, 2)
                self.assertIn("session 'busy' is in use by pid %d" % proc.pid, res.stderr)
                rm = self.sessions("rm", "busy")
                self.assertEqual(rm.returncode, 2)
                self.assertIn("in use", rm.stderr)
            finally:
                proc.communicate("", timeout=60)
            # Once it has ended, the session is free again.
            res = self.rlm(self.session("busy") + ["SHOWQ q"], lm)
        self.assertExit(res, 0)

    def test_damaged_header_is_said_and_kept(self):
        self.run_twice(self.write("w.txt", WORDS))
        with open(self.db, "r+b") as f:
            f.write(b"this is not a SQLite header!")
        with FakeLM(self.SHOW) as lm:
            res = self.rlm(self.session("keep") + ["SHOWQ y"], lm)
        self.assertExit(res, 2)
        self.assertIn("damaged", res.stderr)
        self.assertIn("rlm sessions recover", res.stderr)
        res = self.sessions("recover")
        self.assertEqual(res.returncode, 2)
        self.assertIn("cannot", res.stderr)
        self.assertTrue(os.path.exists(self.db))   # never removed, whatever happens

    def test_damaged_pages_are_recovered(self):
        self.run_twice(self.write("w.txt", WORDS))
        # Break the page holding the data the questions left: the other
        # tables stay readable.
        db = sqlite3.connect(self.db)
        page = db.execute("SELECT rootpage FROM sqlite_master WHERE name='snapshots'").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        db.close()
        with open(self.db, "r+b") as f:
            f.seek((page - 1) * size)
            f.write(b"\xff" * size)
        with FakeLM(self.SHOW) as lm:
            res = self.rlm(self.session("keep") + ["SHOWQ y"], lm)
        self.assertExit(res, 2)
        self.assertIn("damaged", res.stderr)
        res = self.sessions("recover")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("2 sessions", res.stdout)
        self.assertIn("the data its last question left", res.stdout)
        backups = [n for n in os.listdir(self.tmp)
                   if n.startswith("sessions.db.damaged-") and not n.endswith(("-wal", "-shm"))]
        self.assertEqual(len(backups), 1, os.listdir(self.tmp))
        listed = json.loads(self.sessions("--json").stdout)
        self.assertEqual(sorted(s["name"] for s in listed), ["also", "keep"])
        # The data was lost: the session goes on, and says its variables are not restored.
        with FakeLM(self.SHOW) as lm:
            res = self.rlm(self.session("keep") + ["SHOWQ y"], lm)
        self.assertExit(res, 0)
        self.assertIn("variables are not restored", res.stderr)

    def test_old_session_runs_nothing_again(self):
        """A session recorded by an earlier rlm (cells with their sub-call
        replies, no data): its recorded cells are never re-run, whatever
        their replies hold; history and answers load, variables do not."""
        words = self.write("w.txt", WORDS)
        with FakeLM(SESSION_RULES) as lm:
            self.assertExit(self.rlm(self.session("r") + ["--context", words, "SESSQ1 count"], lm), 0)
        db = sqlite3.connect(self.db)
        db.execute("DELETE FROM snapshots")
        db.execute("UPDATE cells SET replies = '[\"tok-93\", broken'")
        db.commit()
        db.close()
        rules = [{"match": r"OLDR-OUT (.*)", "reply": "FINAL($1)"},
                 {"match": r"SESSQ2", "reply": repl('print("OLDR-OUT", "n_words" in globals(), '
                                                     'answer_1)')}]
        with FakeLM(rules) as lm:
            res = self.rlm(self.session("r") + ["SESSQ2 again"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "False q1:4:tok-93\n")
        self.assertIn("recorded by an earlier rlm", res.stderr)
        self.assertEqual(len(res.events("code")), 1)


if __name__ == "__main__":
    main()
