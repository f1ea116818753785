"""The fault matrix through the real engine: the fake server turns a share of
its answers into each provider failure (429 with Retry-After, 500, 503, a
connection reset mid-body, a truncated body, malformed JSON, empty content
with only reasoning, a stall), alone and all mixed at 20%. Every run must
still answer correctly, the trace's attempt counts must match the requests
the server saw, and usage and cost must count each logical call once."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main  # noqa: E402
from test_ask import FINISHES, QUESTION, log_text, script  # noqa: E402

PRICES = {"root-model": {"input": 2.0, "output": 8.0},
          "sub-model": {"input": 0.5, "output": 1.0}}


class FaultyLM(FakeLM):
    """FakeLM whose script carries a seeded fault mix."""

    def __init__(self, rules, faults):
        super().__init__(rules)
        with open(self.script) as f:
            doc = json.load(f)
        doc["faults"] = faults
        with open(self.script, "w") as f:
            json.dump(doc, f)


class FaultMatrix(RlmTestCase):
    def run_with(self, faults):
        ctx = self.write("log.txt", log_text(2000))
        prices = self.write("prices.json", json.dumps(PRICES))
        with FaultyLM(script(FINISHES["final_in_code"]), faults) as lm:
            res = self.rlm(["--json", "--prices", prices, "--max-retries", "6",
                            "--request-timeout", "3", "--context", ctx, QUESTION], lm, timeout=600)
            counters = lm.counters()
        self.assertExit(res, 0)
        report = res.report
        self.assertEqual(report["answer"], "50 chunks ok")
        self.assertEqual(report["sub_calls"], 50)
        self.assertEqual(report["sub_call_errors"], 0)

        roots, subs = res.events("root_reply"), res.events("sub_call")
        self.assertEqual(len(roots), 3)
        self.assertEqual(len(subs), 50)
        # Each HTTP attempt is one request the server saw; a retry is never lost
        # or double-counted.
        attempts = sum(e["attempts"] for e in roots + subs)
        self.assertEqual(attempts, counters["requests"])
        injected = sum(counters["faults"].values())
        self.assertEqual(attempts - 53, injected)
        self.assertGreater(injected, 0)

        # Usage: one call per logical request, tokens as the successful replies
        # reported them, cost the sum of the per-call costs.
        usage = report["usage"]
        self.assertEqual(usage["root-model"]["calls"], 3)
        self.assertEqual(usage["sub-model"]["calls"], 50)
        for model, events in (("root-model", roots), ("sub-model", subs)):
            self.assertEqual(usage[model]["completion_tokens"],
                             sum(e["usage"]["completion_tokens"] for e in events))
        total = sum(e["cost_usd"] for e in roots + subs)
        self.assertAlmostEqual(report["cost_usd"], total, places=9)
        self.assertGreater(total, 0)
        return counters

    def test_each_fault_alone(self):
        for kind in ("429", "500", "503", "reset", "truncated", "malformed", "empty_reasoning",
                     "stall"):
            with self.subTest(kind=kind):
                counters = self.run_with({"rate": 0.3, "kinds": [kind], "seed": 7,
                                          "retry_after": "0", "stall_ms": 5000})
                self.assertEqual([k for k, n in counters["faults"].items() if n], [kind])

    def test_all_faults_mixed_at_20_percent(self):
        counters = self.run_with({"rate": 0.2, "seed": 3, "retry_after": "0", "stall_ms": 5000})
        self.assertGreaterEqual(len([k for k, n in counters["faults"].items() if n]), 3)



class KeepAlives(RlmTestCase):
    """A stream that sends only SSE comments is stalled: only data events
    count as progress (issue 13, item 19)."""

    def test_keep_alive_only_stream_is_stalled(self):
        import time
        rules = [{"match": ".", "times": 1, "stall_ms": 60000, "keepalive_ms": 200,
                  "reply": "FINAL(late)"},
                 {"match": ".", "reply": "FINAL(on the retry)"}]
        with FakeLM(rules) as lm:
            t0 = time.time()
            res = self.rlm(["--stream", "--stall-timeout", "2", "--max-retries", "1",
                            "--context", self.write("c.txt", "x"), "q"], lm, timeout=120)
            elapsed = time.time() - t0
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "on the retry\n")
        self.assertLess(elapsed, 30)   # not the 60 s of keep-alives
        reply = res.events("root_reply")[0]
        self.assertEqual(reply["attempts"], 2)

    def test_keep_alive_only_stream_fails_with_a_message(self):
        rules = [{"match": ".", "stall_ms": 60000, "keepalive_ms": 200, "reply": "FINAL(late)"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--stream", "--stall-timeout", "2", "--max-retries", "0",
                            "--context", self.write("c.txt", "x"), "q"], lm, timeout=120)
        self.assertExit(res, 3)
        self.assertIn("stalled", res.stderr)
        self.assertIn("keep-alive", res.stderr)


if __name__ == "__main__":
    main()
