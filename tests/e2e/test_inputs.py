"""Inputs of every shape through `rlm ask --context`: a directory with nested
.gitignore files, binary and unreadable entries, --include/--exclude, a glob,
stdin, JSON and JSONL parsed into values (broken lines skipped and said, a
bad .json refused with its line and column), several --context arguments; what model code
sees of them; the C helpers (grep, chunks, search, count_tokens) on real
inputs, including a bad and a catastrophic regex; direct mode; bad inputs."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "Describe the input please"

SHOW = repl("""
import json
c = context
if isinstance(c, dict):
    print("TYPE dict", json.dumps(sorted(c.keys())), json.dumps({k: len(v) for k, v in c.items()}))
elif isinstance(c, list):
    print("TYPE list", len(c), json.dumps(c))
else:
    print("TYPE str", len(c), json.dumps(c[:200]))
""")


def two_turns(first, second='FINAL(done)'):
    return [
        {"match": r"(?i)turn 3 of", "reply": "FINAL(done)"},
        {"match": r"(?i)turn 2 of", "reply": second},
        {"match": QUESTION, "reply": first},
    ]


class Inputs(RlmTestCase):
    def tree(self):
        root = os.path.join(self.tmp, "tree")
        os.makedirs(os.path.join(root, "src", "gen"))
        os.makedirs(os.path.join(root, ".git"))
        files = {
            "README.md": "# Project\nhello\n",
            "src/main.c": "int main(void) { return 0; }\n",
            "src/util.py": "def f():\n    return 42\n",
            "src/.gitignore": "gen/\n*.tmp\n",
            "src/gen/out.c": "generated\n",
            "src/x.tmp": "temporary\n",
            ".git/config": "[core]\n",
            "notes.log": "a log line\n",
        }
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        with open(os.path.join(root, "blob.bin"), "wb") as f:
            f.write(b"\x00\x01\x02binary\x00" * 100)
        os.symlink("/nonexistent/target", os.path.join(root, "dangling.txt"))
        return root

    def seen(self, res):
        outs = [o for o in self.code_outputs(res) if "TYPE" in o]
        self.assertTrue(outs, "no code output\n" + res.stderr[-2000:])
        return outs[0]

    def run_show(self, args, stdin=None):
        with FakeLM(two_turns(SHOW)) as lm:
            res = self.rlm(args + [QUESTION], lm, stdin=stdin)
        self.assertExit(res, 0)
        return res, self.seen(res)

    def test_directory(self):
        root = self.tree()
        res, out = self.run_show(["--context", root])
        keys = json.loads(out.split(" ", 2)[2].split(" {")[0])
        self.assertEqual(keys, ["README.md", "notes.log", "src/.gitignore", "src/main.c",
                                "src/util.py"])
        self.assertIn("blob.bin", res.stderr)       # binary: skipped and said
        self.assertIn("dangling.txt", res.stderr)   # unreadable: skipped and said
        warnings = [e["message"] for e in res.events("warning")]
        self.assertTrue(any("dangling.txt" in w for w in warnings), warnings)

    def test_include_exclude(self):
        root = self.tree()
        _, out = self.run_show(["--context", root, "--include", "*.c", "--include", "*.py",
                                "--exclude", "util.py"])
        self.assertIn('["src/main.c"]', out)

    def test_glob_and_several(self):
        root = self.tree()
        _, out = self.run_show(["--context", os.path.join(root, "src", "*.c"),
                                "--context", os.path.join(root, "README.md")])
        self.assertIn("TYPE dict", out)
        self.assertIn("main.c", out)
        self.assertIn("README.md", out)

    def test_single_file_and_stdin(self):
        path = self.write("one.txt", "just one file\n")
        _, out = self.run_show(["--context", path])
        self.assertIn('TYPE str 14 "just one file\\n"', out)
        _, out = self.run_show(["--context", "-"], stdin="from stdin\n")
        self.assertIn('TYPE str 11 "from stdin\\n"', out)

    def test_jsonl_broken_lines(self):
        # A .jsonl record is its whole value: a dict with all its fields (a
        # record without "text" too), a str stays a str. A line that is not
        # JSON is skipped with a warning naming it.
        path = self.write("t.jsonl", '{"text": "one"}\nnot json\n{"text": "two"}\n{"x": 1}\n'
                          '\n"a str"\n[1, 2')
        res, out = self.run_show(["--context", path])
        self.assertIn('TYPE list 4 [{"text": "one"}, {"text": "two"}, {"x": 1}, "a str"]', out)
        warnings = [e["message"] for e in res.events("warning")]
        for line in (2, 7):
            needle = "t.jsonl line %d: not valid JSON" % line
            self.assertIn(needle, res.stderr)
            self.assertTrue(any(needle in w for w in warnings), warnings)
        opening = res.events("root_request")[0]["last_message"]
        self.assertIn("The context is a list of 4 records, parsed from the JSON lines of", opening)
        self.assertIn("The first item is a dict with the keys: text.", opening)
        self.assertIn("2 lines that are not JSON were skipped", opening)
        # --jsonl-field keeps its meaning: that field of each record, as a str.
        body = self.write("b.txt", '{"body": "alpha"}\n{"body": "beta"}\n')
        _, out = self.run_show(["--context", body, "--jsonl-field", "body"])
        self.assertIn('TYPE list 2 ["alpha", "beta"]', out)
        _, out = self.run_show(["--context", path, "--jsonl-field", "text"])
        self.assertIn('TYPE list 3 ["one", "two", "a str"]', out)

    def test_json_file_is_parsed(self):
        doc = {"users": [{"name": "ann", "age": 31}, {"name": "bob", "age": 40}],
               "meta": {"version": 2}}
        path = self.write("data.json", json.dumps(doc, indent=2))
        code = repl('print("SEEN", type(context).__name__, sorted(context), '
                    'context["users"][1]["age"], context is context_0)\n'
                    'h = grep("bob")\nprint("GREP", len(h), h[0]["line"], h[0]["text"].strip())')
        with FakeLM(two_turns(code)) as lm:
            res = self.rlm(["--json", "--context", path, QUESTION], lm)
        self.assertExit(res, 0)
        out = "\n".join(self.code_outputs(res))
        self.assertIn("SEEN dict ['meta', 'users'] 40 True", out)
        self.assertIn('GREP 1 8 "name": "bob",', out)   # the helpers search the JSON text
        opening = res.events("root_request")[0]["last_message"]
        self.assertIn("The context is a dict of 2 keys, parsed from the JSON of", opening)
        self.assertIn("Keys, in order: users, meta.", opening)
        self.assertIn("{'users': [{'name': 'ann'", opening)
        # Other values: a list, a str, a number; --json-input for any name, stdin too.
        for text, seen in (('[1, "two", null]', "list [1, 'two', None]"),
                           ('"just a string"', "str 'just a string'"), ("42.5", "float 42.5")):
            other = self.write("value.txt", text)
            show = repl('print("VALUE", type(context).__name__, repr(context))')
            with FakeLM(two_turns(show)) as lm:
                res = self.rlm(["--json-input", "--context", other, QUESTION], lm)
            self.assertExit(res, 0)
            self.assertIn("VALUE " + seen, "\n".join(self.code_outputs(res)))
        with FakeLM(two_turns(show)) as lm:
            res = self.rlm(["--json-input", "--context", "-", QUESTION], lm, stdin='{"k": [true]}')
        self.assertIn("VALUE dict {'k': [True]}", "\n".join(self.code_outputs(res)))

    def test_several_json_files(self):
        a = self.write("a.json", '{"n": 1}')
        b = self.write("b.json", '[1, 2, 3]')
        show = repl('print("MANY", sorted((k[-6:], type(v).__name__) for k, v in context.items()))')
        with FakeLM(two_turns(show)) as lm:
            res = self.rlm(["--context", a, "--context", b, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertIn("MANY [('a.json', 'dict'), ('b.json', 'list')]",
                      "\n".join(self.code_outputs(res)))
        # A .json beside a text file: the set is read as text (one reading per set).
        t = self.write("c.txt", "text")
        with FakeLM(two_turns(show)) as lm:
            res = self.rlm(["--context", a, "--context", t, QUESTION], lm)
        self.assertIn("MANY [('/c.txt', 'str'), ('a.json', 'str')]",
                      "\n".join(self.code_outputs(res)))

    def test_bad_json_is_an_input_error(self):
        path = self.write("bad.json", '{"a": 1,\n "b": [1, 2,\n }')
        for mode in ("rlm", "direct"):
            with FakeLM([{"match": ".", "reply": "FINAL(no)"}]) as lm:
                res = self.rlm(["--json", "--mode", mode, "--context", path, QUESTION], lm)
                self.assertEqual(lm.counters()["requests"], 0)
            self.assertExit(res, 2)
            self.assertIn("bad.json is not valid JSON", res.stderr)
            self.assertIn("line 3, column 2", res.stderr)
            self.assertEqual(res.report["status"], "input error")
        # JSON lines none of which is JSON: nothing to answer from.
        lines = self.write("none.jsonl", "not json\nnor this\n")
        with FakeLM([{"match": ".", "reply": "FINAL(no)"}]) as lm:
            res = self.rlm(["--context", lines, QUESTION], lm)
        self.assertExit(res, 2)
        self.assertIn("no line of the JSON lines input is valid JSON", res.stderr)
        self.assertIn("none.jsonl line 1", res.stderr)

    def test_invalid_utf8_replaced(self):
        # UTF-8 with a stray byte: the byte is replaced, the UTF-8 kept.
        path = self.write("bad.txt", b"caf\xc3\xa9 \xff end\n")
        res, out = self.run_show(["--context", path])
        self.assertIn("\\ufffd", out)
        self.assertIn("\\u00e9", out)
        # No UTF-8 at all among the high bytes: Windows-1252, decoded and said.
        path = self.write("latin1.txt", b"caf\xe9 cr\xe8me \x80\n")
        res, out = self.run_show(["--context", path])
        self.assertIn("caf\\u00e9 cr\\u00e8me \\u20ac", out)
        self.assertIn("read as Windows-1252", res.stderr)

    def test_helpers(self):
        lines = "".join("line %d %s\n" % (i, "ERROR disk full" if i % 10 == 0 else "ok")
                        for i in range(1000))
        a = self.write("a.log", lines)
        b = self.write("b.txt", "the refund policy is thirty days\nnothing else\n")
        code = repl("""
hits = grep(r"ERROR \\w+", max_hits=5)
print("GREP", len(hits), sorted(hits[0].keys()), hits[0]["line"], hits[0]["text"])
h = hits[1]
print("SLICE", context[h["doc"]][h["offset"]:h["offset"] + 5])
print("ONE", len(grep("refund", doc=h["doc"])), len(grep("refund")))
print("CHUNKS", len(chunks(max_chars=1000)), len(chunks(by="docs")), len(chunks(500, by="chars")))
r = search("refund policy", k=3)
print("SEARCH", r[0]["doc"], r[0]["score"] > 0, r[0]["text"][:10])
print("TOKENS", count_tokens("x" * 35))
try:
    grep("(unclosed")
except ValueError as e:
    print("BAD", e)
try:
    grep(r"^(?:x+x+)+[ab]", flags="m", max_hits=1)
    print("CATASTROPHIC none")
except RuntimeError as e:
    print("CATASTROPHIC", e)
""")
        after = repl('print("NEXT", len(grep("ok")), type(grep).__name__)\ngrep = 1')
        # The helpers are the model's to rebind (the contract's names are not).
        third = repl('print("REBOUND", grep)')
        rules = [
            {"match": r"(?i)turn 4 of", "reply": "FINAL(done)"},
            {"match": r"(?i)turn 3 of", "reply": third},
            {"match": r"(?i)turn 2 of", "reply": after},
            {"match": QUESTION, "reply": code},
        ]
        big = self.write("x.txt", "x" * 30000 + "\n")
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", a, "--context", b, "--context", big, QUESTION], lm)
        self.assertExit(res, 0)
        out = "\n".join(self.code_outputs(res))
        self.assertIn("GREP 5 ['doc', 'line', 'offset', 'text'] 1 line 0 ERROR disk full", out)
        self.assertIn("SLICE ERROR", out)
        self.assertIn("ONE 0 1", out)
        self.assertIn("SEARCH %s True the refund" % b, out)
        self.assertIn("TOKENS 10", out)
        self.assertIn("BAD grep:", out)
        self.assertIn("CATASTROPHIC grep:", out)
        self.assertIn("NEXT 900 builtin_function_or_method", out)
        self.assertIn("REBOUND 1", out)

    def test_helpers_on_one_str(self):
        path = self.write("one.log", "alpha beta\ngamma delta\n" * 50)
        code = repl('r = search("gamma", k=2)\nprint("S", len(r), r[0]["doc"], r[0]["offset"])\n'
                    'print("G", len(grep("delta")), grep("delta")[1]["offset"])')
        with FakeLM(two_turns(code)) as lm:
            res = self.rlm(["--context", path, QUESTION], lm)
        self.assertExit(res, 0)
        out = "\n".join(self.code_outputs(res))
        self.assertIn("S 1 None 0", out)
        self.assertIn("G 50 40", out)

    def test_grep_agrees_with_re(self):
        # Every hit's line, character offset and line text equal what a
        # re.finditer loop computes, in an ASCII document and in one with
        # multi-byte characters and long hit-free stretches (the C walk
        # counts lines and characters in blocks between hits); calling it
        # again after dropping the result (memory reused) gives the same.
        ascii_text = "".join("row %d %s\n" % (i, "hit" if i % 7 == 0 else "-") for i in range(5000))
        wide = "".join(("\u00e9\u20ac\n" * 900 if i % 3 else "caf\u00e9 hit \u20ac\n")
                       for i in range(60))
        a = self.write("a.txt", ascii_text)
        w = self.write("w.txt", wide)
        code = repl("""
import re
def expected(text):
    out = []
    for m in re.finditer(r"hit", text):
        s = m.start()
        a = text.rfind("\\n", 0, s) + 1
        b = text.find("\\n", s)
        out.append((text.count("\\n", 0, s) + 1, s, text[a:b if b >= 0 else len(text)]))
    return out
for round in range(2):
    g = grep(r"hit", max_hits=100000)
    got = {}
    for h in g:
        got.setdefault(h["doc"], []).append((h["line"], h["offset"], h["text"]))
    same = all(got.get(k, []) == expected(v) for k, v in context.items())
    print("AGREE", round, len(g), same)
    del g
""")
        with FakeLM(two_turns(code)) as lm:
            res = self.rlm(["--context", a, "--context", w, QUESTION], lm)
        self.assertExit(res, 0)
        out = "\n".join(self.code_outputs(res))
        n = ascii_text.count("hit") + wide.count("hit")
        self.assertIn("AGREE 0 %d True" % n, out)
        self.assertIn("AGREE 1 %d True" % n, out)

    def test_piped_stdin_is_the_input(self):
        # `cat log | rlm ask q`: a non-terminal stdin with no --context is read.
        rules = [{"match": "the secret is 42", "reply": "It is 42."},
                 {"match": ".", "reply": "I saw no data."}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--mode", "auto", QUESTION], lm, stdin="the secret is 42\n")
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "It is 42.")
        _, out = self.run_show([], stdin="piped in\n")
        self.assertIn('TYPE str 9 "piped in\\n"', out)

    def test_stdin_not_read_when_context_given_or_empty(self):
        path = self.write("one.txt", "from the file\n")
        _, out = self.run_show(["--context", path], stdin="from stdin\n")
        self.assertIn('"from the file', out)
        # /dev/null or an empty pipe: no input, as before (the harness's default is /dev/null).
        rules = [{"match": ".", "reply": "none"}]
        for stdin in (None, ""):
            with FakeLM(rules) as lm:
                res = self.rlm(["--mode", "direct", QUESTION], lm, stdin=stdin)
            self.assertExit(res, 0)
            self.assertEqual(res.stdout.strip(), "none")

    def test_fifo_and_process_substitution_are_read_like_stdin(self):
        fifo = os.path.join(self.tmp, "in.fifo")
        os.mkfifo(fifo)
        with FakeLM(two_turns(SHOW)) as lm:
            proc, trace = self.rlm_start(["--context", fifo, QUESTION], lm)
            with open(fifo, "w") as w:   # blocks until rlm opens it
                w.write("through a fifo\n")
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            outputs = [e.get("output") or "" for e in self.trace_of(trace) if e["type"] == "code"]
            self.assertIn('TYPE str 15 "through a fifo\\n"', "\n".join(outputs))
            # bash's <(cmd) is a pipe under /dev/fd.
            cmd, env, trace2 = self.rlm_command(["--context", "PLACEHOLDER", QUESTION], lm,
                                                trace_name="trace2.jsonl")
            line = " ".join("'%s'" % c if c != "PLACEHOLDER" else "<(printf 'from a pipe\\n')"
                            for c in cmd)
            res = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env,
                                 timeout=120, stdin=subprocess.DEVNULL)
            self.assertEqual(res.returncode, 0, res.stderr)
            outputs = [e.get("output") or "" for e in self.trace_of(trace2) if e["type"] == "code"]
            self.assertIn('TYPE str 12 "from a pipe\\n"', "\n".join(outputs))

    def test_ctrl_c_stops_a_fifo_with_no_writer(self):
        import signal
        import time
        fifo = os.path.join(self.tmp, "silent.fifo")
        os.mkfifo(fifo)
        proc, _ = self.rlm_start(["--context", fifo, QUESTION], None)
        try:
            time.sleep(1.0)
            self.assertIsNone(proc.poll())   # waiting for a writer, as cat would
            t0 = time.time()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("cancelled", err)

    def test_input_changed_while_in_use_is_said(self):
        import time
        # A cell that ignores the interrupt makes the sandbox restart, which
        # loads the input again: meanwhile the file is truncated (a log
        # rotated with copytruncate), or rewritten with other, longer text.
        stubborn = repl("while True:\n    try:\n        while True:\n            pass\n"
                        "    except BaseException:\n        pass")
        rules = [{"match": "count the log lines", "times": 1, "reply": stubborn},
                 {"match": ".", "times": 1, "reply": repl("print(len(context))")},
                 {"match": ".", "reply": "FINAL(done)"}]
        old = "".join("line %d of the log\n" % i for i in range(20000))
        new = "".join("LINE %d of a new log\n" % i for i in range(30000))
        for change in ("truncate", "rewrite"):
            path = self.write("app-%s.log" % change, old)
            with FakeLM(rules) as lm:
                proc, trace = self.rlm_start(["--cell-timeout", "1", "--context", path,
                                              "count the log lines"], lm,
                                             trace_name="trace-%s.jsonl" % change)
                try:
                    deadline = time.time() + 60
                    while not lm.requests() and time.time() < deadline:   # turn 1 answered
                        time.sleep(0.02)
                    with open(path, "w") as f:
                        f.write("" if change == "truncate" else new)
                    out, err = proc.communicate(timeout=120)
                finally:
                    if proc.poll() is None:
                        proc.kill()
            self.assertEqual(proc.returncode, 2, (change, err))
            self.assertIn("changed while rlm was using it", err)
            self.assertNotIn("done", out)

    def test_bus_error_ends_with_a_message(self):
        # The last net for a file cut short between the check and a read.
        import signal
        rules = [{"match": ".", "latency_ms": 30000, "reply": "FINAL(late)"}]
        with FakeLM(rules) as lm:
            proc, _ = self.rlm_start(["--context", self.write("c.txt", "text"), QUESTION], lm)
            out, err, _ = self.signal_in_flight(proc, lm, signal.SIGBUS)
        self.assertEqual(proc.returncode, 2, err)
        self.assertIn("cut short while rlm was reading it", err)

    def test_direct_mode(self):
        path = self.write("small.txt", "The answer is 42.\n")
        rules = [{"match": "The answer is 42", "reply": "It is 42."}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--mode", "auto", "--context", path, QUESTION], lm)
            counters = lm.counters()
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "It is 42.")
        self.assertEqual(res.report["mode"], "direct")
        self.assertEqual(res.events("sandbox_ready"), [])
        self.assertEqual([e["mode"] for e in res.events("mode")], ["direct"])
        self.assertEqual(res.events("run_end")[0]["mode"], "direct")
        self.assertEqual(counters.get("requests", counters.get("chat_requests", 1)), 1)

    def test_auto_chooses_rlm_above_threshold(self):
        path = self.write("small.txt", "word " * 2000)
        with FakeLM(two_turns(SHOW)) as lm:
            res = self.rlm(["--json", "--mode", "auto", "--direct-threshold", "100",
                            "--context", path, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["mode"], "rlm")
        self.assertEqual(len(res.events("sandbox_ready")), 1)

    def test_direct_refuses_huge(self):
        path = os.path.join(self.tmp, "huge.txt")
        with open(path, "w") as f:
            f.write("word " * 1000000)
        res = self.rlm(["--mode", "direct", "--direct-threshold", "10", "--context", path,
                        QUESTION], None)
        self.assertExit(res, 2)
        self.assertIn("--mode direct", res.stderr)

    def test_bad_inputs(self):
        empty_dir = os.path.join(self.tmp, "empty")
        os.makedirs(empty_dir)
        with open(os.path.join(empty_dir, "x.bin"), "wb") as f:
            f.write(b"\x00\x01\x02")
        loop = os.path.join(self.tmp, "loop")
        os.makedirs(loop)
        os.symlink(loop, os.path.join(loop, "self"))
        with open(os.path.join(loop, "ok.txt"), "w") as f:
            f.write("fine\n")
        zero = self.write("zero.txt", "")
        cases = [
            (["--context", os.path.join(self.tmp, "missing.txt")], 2, "missing.txt"),
            (["--context", empty_dir], 2, "text"),
            (["--context", os.path.join(self.tmp, "nomatch-*.txt")], 2, "nomatch"),
            (["--mode", "sideways"], 2, "mode"),
        ]
        for args, code, needle in cases:
            res = self.rlm(args + [QUESTION], None)
            self.assertExit(res, code)
            self.assertIn(needle, res.stderr)
        # A symlink loop inside a directory is skipped; the rest loads.
        _, out = self.run_show(["--context", loop])
        self.assertIn('"ok.txt"', out)
        # A 0-byte file: an error or an empty str, never a crash.
        res = self.rlm(["--context", zero, QUESTION], None)
        self.assertIn(res.code, (1, 2, 3))


if __name__ == "__main__":
    main()
