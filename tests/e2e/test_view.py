"""rlm view without a browser: the page is written from a real trace with
the model's HTML kept inside the data block as text; a trace cut short or
holding broken lines still gives a page that says so; what is no trace is a
clear error; and an RLMLogger file of the rlms library is read with its
iterations, code, sub-calls and child trajectories mapped to rlm's events."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, RlmTestCase, main  # noqa: E402
import rich_run  # noqa: E402


def page_data(html):
    """The events block of a page, as the page's script reads it."""
    start = html.index('id="trace-data">') + len('id="trace-data">')
    end = html.index("</script>", start)
    return json.loads(html[start:end])


class View(RlmTestCase):
    def view(self, args):
        return subprocess.run([RLM, "view"] + args, capture_output=True, text=True, timeout=120)

    def rich_trace(self):
        return rich_run.trace(self)

    def test_page_from_a_trace(self):
        trace = self.rich_trace()
        p = self.view([trace])
        self.assertEqual(p.returncode, 0, p.stderr)
        page = os.path.splitext(trace)[0] + ".html"   # the default: beside the trace
        self.assertEqual(p.stdout, page + "\n")
        with open(page) as f:
            html = f.read()
        # Self-contained: no link, no source from elsewhere, a policy that forbids any.
        self.assertIn("default-src 'none'", html)
        self.assertNotRegex(html, r"(src|href)=\"(https?:)?//")
        # The model's <script> is data, escaped: the page holds only its own two blocks.
        self.assertEqual(html.count("<script"), 2)
        self.assertEqual(html.count("</script>"), 2)
        data = page_data(html)
        self.assertEqual(data["format"], "rlm")
        self.assertEqual(data["notes"], [])
        types = [e["type"] for e in data["events"]]
        for t in ("run_start", "question", "root_reply", "code", "batch_start", "sub_call", "batch_end",
                  "child_start", "child_end", "final_answer", "run_end"):
            self.assertIn(t, types)
        self.assertIn(rich_run.HOSTILE, [e for e in data["events"] if e["type"] == "run_end" and e["node"] == "0"][0]["answer"])
        out = os.path.join(self.tmp, "elsewhere.html")
        p = self.view([trace, "-o", out])
        self.assertEqual((p.returncode, p.stdout), (0, out + "\n"), p.stderr)

    def test_truncated_and_broken_traces_still_give_a_page(self):
        trace = self.rich_trace()
        with open(trace) as f:
            lines = f.readlines()
        # Killed mid-write: half the events and half a line.
        cut = self.write("cut.jsonl", "".join(lines[:len(lines) // 2]) + lines[len(lines) // 2][:40])
        p = self.view([cut, "-o", os.path.join(self.tmp, "cut.html")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("cut short", p.stderr)
        with open(os.path.join(self.tmp, "cut.html")) as f:
            data = page_data(f.read())
        self.assertEqual(len(data["events"]), len(lines) // 2)
        self.assertNotIn("run_end", [e["type"] for e in data["events"]])
        # A line that is not JSON in the middle: left out, and said.
        broken = self.write("broken.jsonl", "".join(lines[:3]) + "{not json\n" + "".join(lines[3:]))
        p = self.view([broken, "-o", os.path.join(self.tmp, "broken.html")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 line is not JSON and left out (the first: line 4)", p.stderr)

    def test_no_trace_is_a_clear_error(self):
        for name, content in (("empty.jsonl", ""), ("junk.jsonl", "hello\nworld\n"),
                              ("binary.jsonl", b"\x00\xff\xfe" * 100)):
            path = self.write(name, content)
            p = self.view([path, "-o", os.path.join(self.tmp, "x.html")])
            self.assertEqual(p.returncode, 2, name)
            self.assertIn("no event in it", p.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "x.html")))
        p = self.view([os.path.join(self.tmp, "missing.jsonl")])
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot read", p.stderr)
        p = self.view([])
        self.assertEqual(p.returncode, 2)
        p = self.view(["--bogus", "x"])
        self.assertEqual(p.returncode, 2)
        p = self.view([self.write("ok.jsonl", '{"v":1,"type":"question","question":"q"}\n'), "-o",
                       "/nonexistent-dir/page.html"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot write", p.stderr)

    def test_open_runs_a_browser_and_says_when_none_opens_it(self):
        trace = self.write("t.jsonl", '{"v":1,"type":"question","question":"q"}\n')
        page = os.path.join(self.tmp, "t.html")
        seen = os.path.join(self.tmp, "seen")
        opener = self.write("opener.sh", "#!/bin/sh\necho \"$@\" >> %s\n" % seen)
        failing = self.write("failing.sh", "#!/bin/sh\nexit 3\n")
        os.chmod(opener, 0o755)
        os.chmod(failing, 0o755)
        def view_with(browser, path):
            env = dict(os.environ, PATH=path)
            env.pop("BROWSER", None)
            if browser is not None:
                env["BROWSER"] = browser
            return subprocess.run([RLM, "view", trace, "--open"], capture_output=True, text=True,
                                  timeout=60, env=env, cwd=self.tmp)
        # $BROWSER's programs in turn: the failing one, then the one that opens it,
        # given the page's absolute path (the browser's working directory is not ours).
        p = view_with(failing + ":" + opener, "/usr/bin:/bin")
        self.assertEqual((p.returncode, p.stdout), (0, page + "\n"), p.stderr)
        self.assertEqual(p.stderr, "")
        with open(seen) as f:
            self.assertEqual(f.read(), page + "\n")
        # Nothing opens it (the browser fails, no xdg-open on PATH): the page is
        # written, exit 0, and a warning says what was tried.
        empty = os.path.join(self.tmp, "empty-path")
        os.mkdir(empty)
        p = view_with(failing, empty)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.exists(page))
        self.assertIn("could not be opened in a browser", p.stderr)
        self.assertIn("failing.sh exited with status 3", p.stderr)
        self.assertIn("cannot run xdg-open", p.stderr)
        self.assertIn("open %s yourself" % page, p.stderr)

    def test_rlms_logger_file(self):
        child = {"run_metadata": {"root_model": "gpt-child"}, "iterations": [
            {"type": "iteration", "iteration": 1, "prompt": [{"role": "user", "content": "child task"}],
             "response": "```repl\nanswer['content'] = 'c1'\n```", "code_blocks": [
                 {"code": "answer['content'] = 'c1'", "result": {"stdout": "", "stderr": "", "locals": {},
                                                                "execution_time": 0.1, "rlm_calls": [],
                                                                "final_answer": "c1"}}],
             "final_answer": "c1", "iteration_time": 0.5}]}
        lines = [
            {"type": "metadata", "timestamp": "2026-01-01T00:00:00", "root_model": "gpt-5-mini",
             "max_depth": 2, "max_iterations": 30, "backend": "openai", "backend_kwargs": {},
             "environment_type": "local", "environment_kwargs": {}, "other_backends": None},
            {"type": "iteration", "iteration": 1, "timestamp": "2026-01-01T00:00:01",
             "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "How many cats?"}],
             "response": "Let me look.\n```repl\nprint(llm_query('count cats'))\n```",
             "code_blocks": [{"code": "print(llm_query('count cats'))", "result": {
                 "stdout": "7\n", "stderr": "", "locals": {}, "execution_time": 1.5,
                 "rlm_calls": [
                     {"root_model": "gpt-5-nano", "prompt": "count cats", "response": "7",
                      "usage_summary": {"model_usage_summaries": {"gpt-5-nano": {
                          "total_calls": 1, "total_input_tokens": 10, "total_output_tokens": 2}}},
                      "execution_time": 1.2},
                     {"root_model": "gpt-5-mini", "prompt": "child task", "response": "c1",
                      "usage_summary": {"model_usage_summaries": {}}, "execution_time": 0.6,
                      "metadata": child}],
                 "final_answer": None}}],
             "final_answer": None, "iteration_time": 3.0},
            {"type": "iteration", "iteration": 2, "timestamp": "2026-01-01T00:00:04",
             "prompt": [{"role": "user", "content": "go on"}], "response": "FINAL(7)", "code_blocks": [],
             "final_answer": ["FINAL", "7"], "iteration_time": 1.0},
        ]
        path = self.write("rlm_2026-01-01_00-00-00_abcd1234.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
        p = self.view([path, "-o", os.path.join(self.tmp, "rlms.html")])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.tmp, "rlms.html")) as f:
            data = page_data(f.read())
        self.assertEqual(data["format"], "rlms")
        ev = data["events"]
        by = lambda t: [e for e in ev if e["type"] == t]  # noqa: E731
        self.assertEqual(by("run_start")[0]["config"]["root_model"], "gpt-5-mini")
        self.assertEqual(by("question")[0]["question"], "How many cats?")
        self.assertEqual([e["turn"] for e in by("root_reply") if e["node"] == "0"], [1, 2])
        sub = by("sub_call")
        self.assertEqual(len(sub), 1)
        self.assertEqual((sub[0]["prompt"], sub[0]["reply"], sub[0]["usage"]["prompt_tokens"]), ("count cats", "7", 10))
        self.assertEqual(by("child_start")[0]["node"], "0.1")
        self.assertEqual(by("child_end")[0]["answer"], "c1")
        self.assertTrue(any(e["node"] == "0.1" and e["type"] == "code" for e in ev))
        code = [e for e in by("code") if e["node"] == "0"][0]
        self.assertEqual(code["output"], "7\n")
        ends = {e["node"]: e for e in by("run_end")}
        self.assertEqual(ends["0"]["answer"], "7")
        self.assertEqual(ends["0.1"]["answer"], "c1")


if __name__ == "__main__":
    main()
