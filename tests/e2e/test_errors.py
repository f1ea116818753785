"""Bad input and hostile or broken endpoints, end to end: each case gets a
clear message, the documented exit code, and a trace that keeps everything
that happened before the failure."""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, FakeLM, RlmTestCase, main, repl  # noqa: E402

import subprocess  # noqa: E402


def free_port():
    """A loopback port with nothing listening on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Usage(RlmTestCase):
    def run_plain(self, args):
        return subprocess.run([RLM] + args, capture_output=True, text=True, timeout=60)

    def test_help_and_version(self):
        res = self.run_plain(["--help"])
        self.assertEqual(res.returncode, 0)
        for word in ("--context", "--max-iterations", "--trace", "--json", "Exit codes", "OPENAI_API_KEY"):
            self.assertIn(word, res.stdout)
        res = self.run_plain(["--version"])
        self.assertEqual(res.returncode, 0)
        self.assertRegex(res.stdout, r"^rlm \d+\.\d+\.\d+\n$")
        res = self.run_plain(["ask", "--help"])
        self.assertEqual(res.returncode, 0)

    def test_help_per_command(self):
        for args in (["ask", "-h"], ["ask", "--help"], ["ask", "--model", "x", "-h"]):
            res = self.run_plain(args)
            self.assertEqual(res.returncode, 0, (args, res.stderr))
            self.assertIn("usage: rlm ask", res.stdout)
        res = self.run_plain(["chat", "--help"])
        self.assertEqual(res.returncode, 0)
        self.assertIn("usage: rlm chat", res.stdout)
        self.assertIn("/context", res.stdout)
        self.assertNotIn("usage: rlm ask", res.stdout)
        for args in (["bench", "report", "--help"], ["bench", "run", "--help"], ["bench", "-h"],
                     ["doctor", "-h"], ["sessions", "-h"], ["demo", "--help"], ["help"], ["-h"]):
            res = self.run_plain(args)
            self.assertEqual(res.returncode, 0, (args, res.stderr))
            self.assertIn("usage:", res.stdout.lower())

    def test_no_command_is_a_short_usage(self):
        res = self.run_plain([])
        self.assertEqual(res.returncode, 2)
        self.assertLess(len(res.stderr.splitlines()), 20)
        self.assertIn("rlm --help", res.stderr)

    def test_short_flags(self):
        rules = [{"match": "colour", "model": "^short-model$", "reply": "FINAL(blue)"}]
        with FakeLM(rules) as lm:
            cmd, env, _ = self.rlm_command([], lm, trace=False)
            cmd = [c for c in cmd if c != "--quiet"]
            res = subprocess.run(cmd + ["-q", "-j", "-m", "short-model", "-c",
                                        self.write("c.txt", "sky"), "which colour?"],
                                 capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                                 timeout=120)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(json.loads(res.stdout)["answer"], "blue")

    def test_misspelt_flag_gets_a_suggestion(self):
        res = self.run_plain(["ask", "--contxt", "a.txt", "q"])
        self.assertEqual(res.returncode, 2)
        self.assertIn("did you mean --context?", res.stderr)
        self.assertIn("rlm ask --help", res.stderr)
        res = self.run_plain(["ask", "--max-iteratons", "3", "q"])
        self.assertIn("did you mean --max-iterations?", res.stderr)
        res = self.run_plain(["ask", "q", "--context"])
        self.assertEqual(res.returncode, 2)
        self.assertIn("--context needs a value", res.stderr)

    def test_no_command_unknown_command_and_flag(self):
        self.assertEqual(self.run_plain([]).returncode, 2)
        res = self.run_plain(["frobnicate"])
        self.assertEqual(res.returncode, 2)
        self.assertIn("unknown command", res.stderr)
        res = self.run_plain(["ask", "--no-such-flag", "q"])
        self.assertEqual(res.returncode, 2)
        self.assertIn("--no-such-flag", res.stderr)

    def test_no_question_and_bad_values(self):
        res = self.rlm([])
        self.assertExit(res, 2)
        self.assertIn("no question", res.stderr)
        res = self.rlm(["--max-iterations", "zero", "q"])
        self.assertExit(res, 2)
        self.assertIn("--max-iterations must be", res.stderr)
        self.assertNotIn("max_iterations", res.stderr)
        res = self.rlm(["--base-url", "ftp://x", "q"])
        self.assertExit(res, 2)
        self.assertIn("--base-url", res.stderr)

    def test_port_out_of_range_is_a_usage_error(self):
        res = self.rlm(["--base-url", "http://127.0.0.1:99999/v1", "q"])
        self.assertExit(res, 2)
        self.assertIn("--base-url", res.stderr)
        self.assertIn("port", res.stderr)

    def test_bad_environment_url(self):
        env = {"OPENAI_BASE_URL": "localhost:8080"}
        # --help reads no environment; a flag makes the variable irrelevant.
        res = subprocess.run([RLM, "ask", "--help"], capture_output=True, text=True, env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        rules = [{"match": ".", "reply": "FINAL(fine)"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm, env=env)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout.strip(), "fine")
        # Alone, it is a usage error naming the variable.
        res = self.rlm(["q"], env=env)
        self.assertExit(res, 2)
        self.assertIn("$OPENAI_BASE_URL", res.stderr)
        self.assertNotIn("base_url", res.stderr)


class BadInput(RlmTestCase):
    def test_missing_context_file(self):
        res = self.rlm(["--context", os.path.join(self.tmp, "nope.txt"), "q"])
        self.assertExit(res, 2)
        self.assertIn("nope.txt", res.stderr)
        self.assertIn("No such file", res.stderr)

    def test_unreadable_context_is_a_directory(self):
        res = self.rlm(["--context", self.tmp, "q"])
        self.assertExit(res, 2)
        self.assertIn("directory", res.stderr)

    def test_empty_context(self):
        res = self.rlm(["--context", self.write("empty.txt", ""), "q"])
        self.assertExit(res, 2)
        self.assertIn("empty", res.stderr)

    def test_missing_question_file(self):
        res = self.rlm(["--question-file", os.path.join(self.tmp, "q.txt")])
        self.assertExit(res, 2)
        self.assertIn("q.txt", res.stderr)

    def test_question_file(self):
        rules = [{"match": "What colour", "reply": "FINAL(blue)"}]
        qf = self.write("q.txt", "What colour is the sky?\n")
        with FakeLM(rules) as lm:
            res = self.rlm(["--question-file", qf, "--context", self.write("c.txt", "sky: blue")], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "blue\n")

    def test_question_file_from_stdin(self):
        rules = [{"match": "What colour", "reply": "FINAL(blue)"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--question-file", "-", "--context", self.write("c.txt", "sky: blue")], lm,
                           stdin="What colour is the sky?\n")
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "blue\n")
        res = self.rlm(["--question-file", "-", "--context", "-"], None, stdin="q\n")
        self.assertExit(res, 2)
        self.assertIn("cannot both read stdin", res.stderr)


class Outputs(RlmTestCase):
    """Where the run's output goes cannot be written: said, and exit 2."""

    RULES = [{"match": ".", "reply": "FINAL(forty-two)"}]

    def test_trace_that_cannot_be_written(self):
        with FakeLM(self.RULES) as lm:
            cmd, env, _ = self.rlm_command(["--context", self.write("c.txt", "x"), "q"], lm,
                                           trace=False)
            proc = subprocess.run(cmd + ["--trace", "/dev/full"], capture_output=True, text=True,
                                  env=env, stdin=subprocess.DEVNULL, timeout=120)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(proc.stdout, "forty-two\n")   # the answer is not lost
        self.assertIn("/dev/full", proc.stderr)
        self.assertIn("No space left on device", proc.stderr)

    def test_trace_on_a_full_disk_keeps_whole_lines(self):
        if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
            self.skipTest("cannot make a mount namespace for a small tmpfs")
        disk = os.path.join(self.tmp, "disk")
        kept = os.path.join(self.tmp, "kept.jsonl")
        os.makedirs(disk)
        # A 4 KB tmpfs in a mount namespace of its own is the full disk; what
        # rlm wrote there is copied out before the namespace goes.
        script = ('mount -t tmpfs -o size=4k tmpfs "$1" || exit 99; d=$1; k=$2; shift 2; '
                  '"$@"; rc=$?; cp "$d/trace.jsonl" "$k"; exit $rc')
        with FakeLM(self.RULES) as lm:
            # A long question: the first root request's event alone fills the 4 KB.
            question = "What is written here? " * 400
            cmd, env, _ = self.rlm_command(["--context", self.write("c.txt", "some text"), question],
                                           lm, trace=False)
            proc = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", disk, kept] + cmd +
                                  ["--trace", os.path.join(disk, "trace.jsonl")],
                                  capture_output=True, text=True, env=env,
                                  stdin=subprocess.DEVNULL, timeout=120)
        if proc.returncode == 99:
            self.skipTest("cannot mount a tmpfs: " + proc.stderr)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(proc.stdout, "forty-two\n")
        self.assertIn("trace", proc.stderr)
        self.assertIn("No space left on device", proc.stderr)
        with open(kept, "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(b"\n"), data[-200:])
        lines = data.decode().splitlines()
        self.assertGreater(len(lines), 1)
        for line in lines:
            json.loads(line)   # every line whole

    def test_stdout_that_cannot_be_written(self):
        with FakeLM(self.RULES) as lm:
            cmd, env, _ = self.rlm_command(["--context", self.write("c.txt", "x"), "q"], lm)
            with open("/dev/full", "w") as full:
                proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                                      stdin=subprocess.DEVNULL, timeout=120)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("stdout", proc.stderr)
        self.assertIn("No space left on device", proc.stderr)

    def test_json_on_an_input_error(self):
        res = self.rlm(["--json", "--context", os.path.join(self.tmp, "missing.txt"), "q"])
        self.assertExit(res, 2)
        report = json.loads(res.stdout)
        self.assertEqual(report["status"], "input error")
        self.assertIn("missing.txt", report["error"])
        self.assertIsNone(report["answer"])
        res = self.rlm(["--json", "--question-file", os.path.join(self.tmp, "nope.txt")])
        self.assertExit(res, 2)
        self.assertIn("nope.txt", json.loads(res.stdout)["error"])


class Doctor(RlmTestCase):
    """rlm doctor checks the chosen endpoint and the files, not only the sandbox."""

    def doctor(self, args, extra_env=None):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "ANTHROPIC_", "RLM_", "XDG_"))}
        for kind in ("CACHE", "DATA", "CONFIG"):
            env["XDG_%s_HOME" % kind] = os.path.join(self.tmp, kind.lower())
        env.update(extra_env or {})
        res = subprocess.run([RLM, "doctor", "--json"] + args, capture_output=True, text=True,
                             env=env, timeout=120, stdin=subprocess.DEVNULL)
        return res, json.loads(res.stdout)

    def test_endpoint_answers_with_the_key(self):
        with FakeLM([], require_key="sk-right") as lm:
            res, report = self.doctor(["--base-url", lm.base_url, "--api-key", "sk-right",
                                       "--model", "fakelm"])
            wrong, wrong_report = self.doctor(["--base-url", lm.base_url, "--api-key", "sk-wrong"])
        self.assertEqual(res.returncode, 0, res.stdout)
        self.assertTrue(report["endpoint"]["ok"])
        self.assertEqual(report["endpoint"]["status"], 200)
        self.assertTrue(report["endpoint"]["model_listed"])
        self.assertIsNone(report["sub_endpoint"])
        self.assertEqual(wrong.returncode, 3)
        self.assertFalse(wrong_report["endpoint"]["ok"])
        self.assertEqual(wrong_report["endpoint"]["status"], 401)

    def test_unreachable_endpoint_and_missing_key(self):
        res, report = self.doctor(["--base-url", "http://127.0.0.1:%d/v1" % free_port()])
        self.assertEqual(res.returncode, 3)
        self.assertIn("cannot reach", report["endpoint"]["detail"])
        # A hosted API with no key fails without contacting it.
        res, report = self.doctor(["--offline", "--model", "claude-sonnet-4-5"])
        self.assertEqual(res.returncode, 3)
        self.assertEqual(report["endpoint"]["provider"], "anthropic")
        self.assertIn("no API key", report["endpoint"]["detail"])
        table = subprocess.run([RLM, "doctor", "--offline"], capture_output=True, text=True,
                               env={"HOME": self.tmp, "PATH": os.environ.get("PATH", "")},
                               timeout=120, stdin=subprocess.DEVNULL)
        self.assertIn("$OPENAI_API_KEY", table.stdout)
        # The variable is the provider's own, named after it (no table of names in the CLI).
        table = subprocess.run([RLM, "doctor", "--offline", "--provider", "anthropic"],
                               capture_output=True, text=True,
                               env={"HOME": self.tmp, "PATH": os.environ.get("PATH", "")},
                               timeout=120, stdin=subprocess.DEVNULL)
        self.assertIn("set $ANTHROPIC_API_KEY", table.stdout)

    def test_damaged_session_file_and_bad_prices(self):
        local = ["--offline", "--base-url", "http://127.0.0.1:9/v1"]
        res, report = self.doctor(local)
        self.assertEqual(res.returncode, 0, res.stdout)
        self.assertTrue(all(f["ok"] for f in report["files"]))
        garbage = self.write("sessions.db", "not a database " * 500)
        res, report = self.doctor(local + ["--session-db", garbage])
        self.assertEqual(res.returncode, 2)
        sessions = [f for f in report["files"] if f["name"] == "sessions"][0]
        self.assertIn("damaged", sessions["detail"])
        res, report = self.doctor(local + ["--prices", self.write("p.json", "{bad")])
        self.assertEqual(res.returncode, 2)
        prices = [f for f in report["files"] if f["name"] == "prices"][0]
        self.assertFalse(prices["ok"])


class BrokenEndpoint(RlmTestCase):
    def test_connection_refused(self):
        port = free_port()
        res = self.rlm(["--base-url", "http://127.0.0.1:%d/v1" % port, "--max-retries", "1",
                        "--context", self.write("c.txt", "x"), "q"])
        self.assertExit(res, 3)
        self.assertIn("connect", res.stderr)
        self.assertEqual(res.events("run_end")[0]["status"], "model error")

    def http_error(self, status, message):
        rules = [{"match": ".", "status": status, "reply": message}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-retries", "1", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 3)
        self.assertIn(message, res.stderr)
        self.assertIn("HTTP %d" % status, res.stderr)
        return res

    def test_401_shows_the_provider_message(self):
        self.http_error(401, "Incorrect API key provided: sk-abc")

    def test_404_unknown_model(self):
        self.http_error(404, "The model `root-model` does not exist")

    def test_500_after_retries(self):
        res = self.http_error(500, "The server had an error while processing your request")
        self.assertEqual(res.events("root_reply")[0]["attempts"], 2)

    def test_wrong_api_key(self):
        # $OPENAI_API_KEY is the key for $OPENAI_BASE_URL.
        rules = [{"match": ".", "reply": "FINAL(x)"}]
        with FakeLM(rules, require_key="sk-right") as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"],
                           env={"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": lm.base_url})
            ok = self.rlm(["--context", self.write("c.txt", "x"), "q"],
                          env={"OPENAI_API_KEY": "sk-right", "OPENAI_BASE_URL": lm.base_url})
            flag = self.rlm(["--context", self.write("c.txt", "x"), "--api-key", "sk-right", "q"], lm)
        self.assertExit(res, 3)
        self.assertIn("Incorrect API key", res.stderr)
        self.assertExit(ok, 0)
        self.assertExit(flag, 0)

    def test_environment_key_kept_from_another_endpoint_is_explained(self):
        rules = [{"match": ".", "reply": "FINAL(x)"}]
        with FakeLM(rules, require_key="sk-right") as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm,
                           env={"OPENAI_API_KEY": "sk-right"})
        self.assertExit(res, 3)
        self.assertIn("no API key was sent to this endpoint", res.stderr)
        self.assertIn("$OPENAI_API_KEY was not sent to " + lm.base_url, res.stderr)
        self.assertIn("--api-key", res.stderr)
        self.assertNotIn("sk-right", res.stderr)

    def test_reply_not_json(self):
        rules = [{"match": ".", "status": 200, "body": "<html>gateway hiccup</html>"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 3)
        self.assertIn("parse", res.stderr)

    def test_trace_keeps_what_happened_before_a_failure(self):
        # Turn 1 runs code; turn 2 the endpoint fails for good.
        rules = [
            {"match": "(?i)turn 2 of", "status": 500, "reply": "overloaded"},
            {"match": ".", "reply": repl("x = 6 * 7\nprint(x)")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-retries", "1", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 3)
        code = res.events("code")
        self.assertEqual(len(code), 1)
        self.assertIn("42", code[0]["output"])
        self.assertEqual(res.events("run_end")[0]["status"], "model error")


class HostileOrConfusedModel(RlmTestCase):
    def test_reply_without_code_or_answer_is_nudged(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": "FINAL(done)"},
            {"match": ".", "reply": "I think I should look at the data first."},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "done\n")
        self.assertEqual(len(res.events("root_reply")), 2)

    def test_empty_content_with_reasoning_is_not_a_crash(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": "FINAL(ok)"},
            {"match": ".", "content_null": True, "reasoning": "thinking...", "reply": ""},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "ok\n")
        self.assertEqual(res.events("root_reply")[0]["reasoning"], "thinking...")

    def test_code_that_raises(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": "FINAL(recovered)"},
            {"match": ".", "reply": repl("y = {}['missing']")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        code = res.events("code")[0]
        self.assertTrue(code["raised"])
        self.assertIn("KeyError", code["output"])
        # The model was shown the traceback.
        self.assertIn("KeyError", res.events("root_request")[1]["last_message"])

    def test_code_that_loops_forever(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": repl("print('still here', len(context))")},
            {"match": "(?i)turn 3 of", "reply": "FINAL(survived)"},
            {"match": ".", "reply": repl("while True:\n    pass")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--cell-timeout", "1", "--context", self.write("c.txt", "abc"), "q"], lm)
        self.assertExit(res, 0)
        code = res.events("code")
        self.assertTrue(code[0]["timed_out"])
        self.assertIn("still here 3", code[1]["output"])

    def test_code_that_prints_50mb(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": "FINAL(fine)"},
            {"match": ".", "reply": repl("for i in range(50 * 1024):\n    print('y' * 1023)")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--output-limit", "20000", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        code = res.events("code")[0]
        self.assertGreaterEqual(code["output_chars"], 50 * 1024 * 1024)
        self.assertLess(len(code["output"]), 25000)
        shown = res.events("root_request")[1]["last_message"]
        self.assertLess(len(shown), 30000)

    def test_final_var_missing_is_reported_not_accepted(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": repl("result = 'computed'") + "\nFINAL_VAR(result)"},
            {"match": ".", "reply": "FINAL_VAR(nonexistent)"},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "computed\n")
        self.assertIn("nonexistent", res.events("root_request")[1]["last_message"])

    def test_text_final_next_to_code_waits_for_the_output(self):
        rules = [
            {"match": "(?i)turn 2 of", "reply": "FINAL(checked)"},
            {"match": ".", "reply": repl("print(21 * 2)") + "\nThe output will be 41.\nFINAL(41)"},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "checked\n")
        self.assertIn("not accepted", res.events("root_request")[1]["last_message"])

    def test_failed_sub_call_is_an_error_string_in_its_slot(self):
        rules = [
            {"match": r"^item 3$", "status": 400, "reply": "prompt rejected by policy"},
            {"match": r"^item 5$", "reply": ""},
            {"match": r"^item (\d+)$", "reply": "r$1"},
            {"match": "(?i)turn 2 of", "reply": "FINAL(done)"},
            {"match": ".", "reply": repl(
                "res = llm_query_batched(['item %d' % i for i in range(8)])\n"
                "for r in res:\n    print(repr(r))")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        lines = res.events("code")[0]["output"].splitlines()
        self.assertEqual(len(lines), 8)
        self.assertEqual(lines[2], "'r2'")
        self.assertIn("Error: sub-call failed (http)", lines[3])
        self.assertIn("prompt rejected by policy", lines[3])
        self.assertIn("Error: sub-call failed (empty)", lines[5])
        self.assertEqual(lines[7], "'r7'")
        self.assertEqual(res.report["sub_calls"], 8)
        self.assertEqual(res.report["sub_call_errors"], 2)

    def test_turn_limit_then_last_request(self):
        # The last reply is more code, not an answer: no code runs any more.
        rules = [
            {"match": "(?i)used all your turns", "reply": repl("print('still looking')")},
            {"match": ".", "reply": repl("print('looking')")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-iterations", "3", "--json", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 1)
        self.assertEqual(res.report["status"], "no answer")
        self.assertEqual(res.report["iterations"], 4)
        self.assertIsNone(res.report["answer"])
        self.assertIsNone(res.report["how"])
        self.assertEqual(len(res.events("turns_exhausted")), 1)
        self.assertEqual(len(res.events("code")), 3)

    def test_turn_limit_last_reply_in_words_is_the_answer(self):
        # As the reference library does: the reply to the last request, with
        # neither code nor FINAL, is the answer.
        rules = [
            {"match": "(?i)used all your turns", "reply": "\n  Probably 42 users.\n"},
            {"match": ".", "reply": repl("print('looking')")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-iterations", "2", "--json", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "Probably 42 users.")
        self.assertEqual(res.report["how"], "last_reply")
        self.assertEqual(res.events("final_answer")[0]["how"], "last_reply")
        self.assertEqual(res.events("run_end")[0]["how"], "last_reply")
        self.assertEqual(len(res.events("turns_exhausted")), 1)

    def test_turn_limit_last_request_answers(self):
        rules = [
            {"match": "(?i)used all your turns", "reply": "FINAL(best guess)"},
            {"match": ".", "reply": repl("print('looking')")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-iterations", "2", "--context", self.write("c.txt", "x"), "q"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "best guess\n")


if __name__ == "__main__":
    main()
