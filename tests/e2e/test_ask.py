"""rlm ask end to end against the fake server: a 3-turn run that explores the
context, sends 50 prompts through llm_query_batched and finishes, once through
each final-answer convention; and a run over a 40 MB context."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "How many chunks of the log mention an error?"

EXPLORE = repl("""
print(type(context).__name__, len(context))
print(context[:80])
""")

BATCH = repl("""
pieces = [context[i:i + 1000] for i in range(0, 50000, 1000)]
prompts = ["Summarise chunk %d: %s" % (i, p[:40]) for i, p in enumerate(pieces)]
results = llm_query_batched(prompts)
ok = sum(1 for r in results if r.startswith("chunk-") and r.endswith("-ok"))
print(len(results), results[0], results[-1], ok)
""")

FINISHES = {
    "final_in_code": repl('FINAL("%d chunks ok" % ok)'),
    "answer_dict": repl('answer["content"] = "%d chunks ok" % ok\nanswer["ready"] = True'),
    "final_in_text": "All fifty sub-calls came back well.\n\nFINAL(50 chunks ok)",
    "final_var_in_text": repl('summary = "%d chunks ok" % ok') + "\nFINAL_VAR(summary)",
}


def script(finish):
    return [
        {"match": r"^Summarise chunk (\d+):", "reply": "chunk-$1-ok"},
        {"match": r"(?i)turn 3 of", "reply": finish},
        {"match": r"(?i)turn 2 of", "reply": BATCH},
        {"match": "How many chunks", "reply": EXPLORE},
    ]


def log_text(lines):
    return "".join("2025-01-%02d 12:00:%02d worker-%d %s\n" % (
        1 + i % 28, i % 60, i % 7, "ERROR disk full" if i % 13 == 0 else "ok")
        for i in range(lines))


class AskConventions(RlmTestCase):
    def run_convention(self, name):
        ctx = self.write("log.txt", log_text(2000))
        with FakeLM(script(FINISHES[name])) as lm:
            res = self.rlm(["--json", "--context", ctx, QUESTION], lm)
            counters = lm.counters()
        self.assertExit(res, 0)
        report = res.report
        self.assertEqual(report["answer"], "50 chunks ok")
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["iterations"], 3)
        self.assertEqual(report["sub_calls"], 50)
        self.assertEqual(report["sub_call_errors"], 0)
        self.assertEqual(report["usage"]["sub-model"]["calls"], 50)
        self.assertEqual(report["usage"]["root-model"]["calls"], 3)
        self.assertGreater(report["usage"]["root-model"]["prompt_tokens"], 0)
        self.assertEqual(counters["requests"], 53)
        self.assertEqual(counters["unmatched"], 0)

        # The trace holds every step, in order.
        kinds = [e["type"] for e in res.trace]
        self.assertEqual(kinds[0], "run_start")
        self.assertEqual(kinds[-1], "run_end")
        self.assertEqual(len(res.events("root_reply")), 3)
        self.assertEqual(len(res.events("sub_call")), 50)
        self.assertEqual(res.events("final_answer")[0]["answer"], "50 chunks ok")
        code = res.events("code")
        self.assertIn("str %d" % os.path.getsize(ctx), code[0]["output"])
        self.assertIn("50 chunk-0-ok chunk-49-ok 50", code[1]["output"])
        replies = sorted(e["reply"] for e in res.events("sub_call"))
        self.assertEqual(replies, sorted("chunk-%d-ok" % i for i in range(50)))

        # The root saw the context description, never the context itself.
        first = res.events("root_request")[0]["last_message"]
        self.assertIn(QUESTION, first)
        self.assertIn(str(os.path.getsize(ctx)), first.replace(",", ""))
        self.assertLess(len(first), 20000)
        return res

    def test_final_in_code(self):
        res = self.run_convention("final_in_code")
        self.assertEqual(res.events("final_answer")[0]["how"], "code")

    def test_answer_dict(self):
        res = self.run_convention("answer_dict")
        self.assertEqual(res.events("final_answer")[0]["how"], "code")

    def test_final_in_text(self):
        res = self.run_convention("final_in_text")
        self.assertEqual(res.events("final_answer")[0]["how"], "FINAL in text")

    def test_final_var_in_text(self):
        res = self.run_convention("final_var_in_text")
        self.assertEqual(res.events("final_answer")[0]["how"], "FINAL_VAR in text")

    def test_plain_output_is_the_answer_alone(self):
        ctx = self.write("log.txt", log_text(2000))
        with FakeLM(script(FINISHES["final_in_code"])) as lm:
            res = self.rlm(["--context", ctx, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "50 chunks ok\n")


class Streaming(RlmTestCase):
    def test_streamed_root_turns_give_the_same_run(self):
        ctx = self.write("log.txt", log_text(2000))
        with FakeLM(script(FINISHES["final_in_code"])) as lm:
            res = self.rlm(["--stream", "--json", "--context", ctx, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "50 chunks ok")
        self.assertEqual(res.report["iterations"], 3)
        self.assertEqual([e["stream"] for e in res.events("root_request")], [True] * 3)
        # Usage arrives in the stream's last chunk (stream_options.include_usage).
        self.assertGreater(res.report["usage"]["root-model"]["completion_tokens"], 0)
        self.assertIn("print(type(context)", res.events("root_reply")[0]["content"])

    def test_not_streamed_without_a_progress_line(self):
        ctx = self.write("log.txt", log_text(2000))
        with FakeLM(script(FINISHES["final_in_code"])) as lm:
            res = self.rlm(["--json", "--context", ctx, QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual([e["stream"] for e in res.events("root_request")], [False] * 3)


class Blocks(RlmTestCase):
    def test_code_events_number_the_blocks_of_a_reply(self):
        reply = repl("x = 6") + "\nthen\n" + repl("print(x * 7)")
        rules = [{"match": ".", "times": 1, "reply": reply},
                 {"match": ".", "reply": "FINAL(done)"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "text"), "q"], lm)
        self.assertExit(res, 0)
        code = res.events("code")
        self.assertEqual([(c["block"], c["blocks"]) for c in code], [(1, 2), (2, 2)])
        self.assertIn("42", code[1]["output"])


class SandboxStart(RlmTestCase):
    def test_the_sandbox_starts_while_the_root_model_thinks(self):
        # A lone run spawns its sandbox on a thread while the first root
        # request is out: the request does not wait for it, the first code
        # block does.
        rules = [{"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
                 {"match": ".", "reply": repl("print(len(context))"), "latency_ms": 300}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--context", self.write("c.txt", "text"), "q"], lm)
        self.assertExit(res, 0)
        order = [e["type"] for e in res.trace if e["type"] in ("root_request", "root_reply", "sandbox_ready", "code")]
        self.assertEqual(order[:4], ["root_request", "root_reply", "sandbox_ready", "code"])
        ready = res.events("sandbox_ready")[0]
        self.assertGreater(ready["seconds"], 0)
        self.assertLessEqual(ready["waited"], ready["seconds"])


class LargeContext(RlmTestCase):
    def test_40mb_context(self):
        line = "the quick brown fox jumps over the lazy dog 0123456789\n"
        body = line * (40 * 1024 * 1024 // len(line))
        needle_at = len(body) // 2
        body = body[:needle_at] + "MAGIC=7341\n" + body[needle_at:]
        ctx = self.write("big.txt", body)
        rules = [
            {"match": r"(?i)turn 2 of", "reply": "FINAL(7341)"},
            {"match": "magic", "reply": repl("""
import re
m = re.search(r"MAGIC=(\\d+)", context)
print(len(context), m.group(1), context.count("\\n"))
""")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--context", ctx, "What is the magic number?"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "7341")
        out = res.events("code")[0]["output"]
        self.assertIn("%d 7341 %d" % (len(body), body.count("\n")), out)


if __name__ == "__main__":
    main()
