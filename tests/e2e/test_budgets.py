"""Budgets end to end against the fake server: each of --max-subcalls,
--max-tokens, --max-cost and --max-time stops the run at the right point,
says which budget ended it (--json stopped_by, trace budget_exhausted), asks
the root once more, and exits 0 with that partial answer or 1 without one.
Costs per call and per run come from a prices file; unknown prices are null."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "Count the good chunks of the context."

BATCH = repl("""
results = llm_query_batched(["Rate chunk %d: %s" % (i, context[i * 10:i * 10 + 10]) for i in range(10)])
good = sum(1 for r in results if r == "good")
print("good so far", good)
""")

LAST_WITH_ANSWER = "From what I saw before the budget ran out:\nFINAL(partial 10 good)"

# 1000 USD per million tokens both ways: one token costs $0.001.
PRICES = {"root-model": {"input": 1000, "output": 1000},
          "sub-model": {"input": 1000, "output": 1000}}


def script(last_reply=LAST_WITH_ANSWER, sub_latency_ms=0):
    sub = {"match": r"^Rate chunk (\d+):", "reply": "good"}
    if sub_latency_ms:
        sub["latency_ms"] = sub_latency_ms
    return [
        sub,
        {"match": "budget is spent", "reply": last_reply},
        {"match": "(?i)turn 4 of", "reply": 'FINAL(all done)'},
        {"match": "(?i)turn [23] of", "reply": BATCH},
        {"match": "Count the good", "reply": BATCH},
    ]


class Budgets(RlmTestCase):
    def ctx(self):
        return self.write("ctx.txt", "abcdefghij" * 200)

    def prices(self):
        return self.write("prices.json", json.dumps(PRICES))

    def check_stopped(self, res, budget, code, answer):
        self.assertExit(res, code)
        report = res.report
        self.assertEqual(report["stopped_by"], budget)
        self.assertEqual(report["answer"], answer)
        ev = res.events("budget_exhausted")
        self.assertEqual(len(ev), 1, res.trace)
        self.assertEqual(ev[0]["budget"], budget)
        self.assertTrue(ev[0]["message"].startswith(budget + ":"))
        end = res.events("run_end")[0]
        self.assertEqual(end["stopped_by"], budget)
        # The last request said which budget ended the run, and ran no code.
        last = res.events("root_request")[-1]
        self.assertIn("budget is spent (" + budget + ":", last["last_message"])
        return report

    def test_max_subcalls_refuses_a_batch_that_does_not_fit(self):
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-subcalls", "15", QUESTION], lm)
            counters = lm.counters()
        report = self.check_stopped(res, "max_subcalls", 0, "partial 10 good")
        # Turn 1's batch of 10 fit; turn 2's batch of 10 (5 left) was refused whole.
        self.assertEqual(report["sub_calls"], 10)
        self.assertEqual(len(res.events("sub_call")), 10)
        self.assertEqual(report["iterations"], 3)
        self.assertEqual(counters["requests"], 13)
        ev = res.events("budget_exhausted")[0]
        self.assertEqual(ev["limit"], 15)
        self.assertEqual(ev["refused"], "a batch of 10 sub-calls")
        # The cell was interrupted at the refused batch.
        code = res.events("code")[-1]
        self.assertTrue(code["raised"])
        self.assertIn("stopped", code["output"])

    def test_no_answer_after_budget_exits_1(self):
        with FakeLM(script(last_reply=repl("print('one more look')"))) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-subcalls", "5", QUESTION], lm)
        report = self.check_stopped(res, "max_subcalls", 1, None)
        self.assertEqual(report["status"], "no answer")
        self.assertEqual(report["sub_calls"], 0)
        self.assertIn("budget exhausted: max_subcalls", res.stderr)

    def test_the_message_names_the_batch_that_was_refused(self):
        # Almost nothing spent: the batch alone would go past the limit, and
        # the message must say so rather than "$0.000003 spent of $0.01".
        prices = self.write("cheap-root.json", json.dumps(
            {"root-model": {"input": 0.001, "output": 0.001},
             "sub-model": {"input": 1000, "output": 1000}}))
        with FakeLM(script(last_reply=repl("print('one more look')"))) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--prices", prices,
                            "--max-cost", "0.01", QUESTION], lm)
        self.assertExit(res, 1)
        pattern = (r"max_cost: a batch of 10 sub-calls \(estimated \$[0-9.e-]+ of input\) "
                   r"would go past the limit: \$[0-9.e-]+ spent of \$0\.01")
        self.assertRegex(res.stderr, pattern)
        self.assertRegex(res.events("budget_exhausted")[0]["message"], pattern)
        with FakeLM(script(last_reply=repl("print('one more look')"))) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-subcalls", "15", QUESTION], lm)
        self.assertIn("max_subcalls: a batch of 10 sub-calls would go past the limit: "
                      "10 sub-calls made of 15", res.stderr)

    def test_last_reply_in_words_after_budget_is_the_answer(self):
        with FakeLM(script(last_reply="About 10 of the chunks are good.")) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-subcalls", "5", QUESTION], lm)
        report = self.check_stopped(res, "max_subcalls", 0, "About 10 of the chunks are good.")
        self.assertEqual(report["how"], "last_reply")

    def test_max_subcalls_zero_allows_root_only(self):
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-subcalls", "0", QUESTION], lm)
        self.check_stopped(res, "max_subcalls", 0, "partial 10 good")

    def unlimited(self, extra=()):
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx()] + list(extra) + [QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "all done")
        self.assertIsNone(res.report["stopped_by"])
        return res

    def test_max_tokens_stops_before_the_next_call(self):
        free = self.unlimited()
        first = free.events("root_reply")[0]["usage"]
        subs = sum(e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"]
                   for e in free.events("sub_call") if e["turn"] == 1)
        # Room for turn 1 (its input is estimated a little high before it is
        # sent) and its batch, not for turn 2's much longer request.
        budget = first["prompt_tokens"] * 5 // 4 + first["completion_tokens"] + 2 * subs + 50
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-tokens", str(budget), QUESTION], lm)
        report = self.check_stopped(res, "max_tokens", 0, "partial 10 good")
        # Turn 1 and its batch ran; turn 2's request could not fit and was not sent.
        self.assertEqual(report["sub_calls"], 10)
        self.assertEqual(report["iterations"], 2)
        self.assertEqual(res.events("budget_exhausted")[0]["refused"], "a root request")

    def test_max_cost_with_prices_and_costs_in_trace(self):
        prices = self.prices()
        free = self.unlimited(["--prices", prices])
        report = free.report
        # Every call is priced from its usage: tokens x $0.001; a sub-call
        # identical to an earlier one (turn 2's batch repeats turn 1's) is
        # not sent, and costs nothing.
        for e in free.events("root_reply") + free.events("sub_call"):
            u = e["usage"]
            if e.get("deduplicated"):
                self.assertEqual(e["cost_usd"], 0)
                continue
            self.assertAlmostEqual(e["cost_usd"], (u["prompt_tokens"] + u["completion_tokens"]) / 1000.0)
            self.assertFalse(e["cached"])
        total = sum(e["cost_usd"] for e in free.events("root_reply") + free.events("sub_call"))
        self.assertAlmostEqual(report["cost_usd"], total)
        self.assertAlmostEqual(report["usage"]["sub-model"]["cost_usd"],
                               sum(e["cost_usd"] for e in free.events("sub_call")))
        self.assertAlmostEqual(free.events("run_end")[0]["cost_usd"], total)

        spent_turn1 = sum(e["cost_usd"] for e in free.events("root_reply") + free.events("sub_call")
                          if e["turn"] == 1)
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--prices", prices,
                            "--max-cost", "%.6f" % (spent_turn1 * 1.25 + 0.05), QUESTION], lm)
        report = self.check_stopped(res, "max_cost", 0, "partial 10 good")
        self.assertEqual(report["iterations"], 2)
        # The last request may go over by itself, and is counted.
        self.assertGreater(report["cost_usd"], spent_turn1 * 1.25 + 0.05)

    def test_max_cost_needs_known_prices(self):
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-cost", "1", QUESTION], lm)
            counters = lm.counters()
        self.assertExit(res, 2)
        self.assertIn("--max-cost needs the price of model 'root-model'", res.stderr)
        self.assertEqual(counters["requests"], 0)

    def test_unknown_prices_are_null_not_zero(self):
        res = self.unlimited()
        self.assertIsNone(res.report["cost_usd"])
        self.assertIsNone(res.report["usage"]["root-model"]["cost_usd"])
        self.assertIsNone(res.events("root_reply")[0]["cost_usd"])
        self.assertIsNone(res.events("sub_call")[0]["cost_usd"])

    def test_max_time(self):
        # Generous margins: the first batch must leave within 4 s even in a
        # sanitizer build on a loaded machine, and end after the budget.
        with FakeLM(script(sub_latency_ms=6000)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-time", "4", QUESTION], lm)
        report = self.check_stopped(res, "max_time", 0, "partial 10 good")
        # The first batch was issued in time and finished; nothing after it was.
        self.assertEqual(report["sub_calls"], 10)
        self.assertEqual(report["iterations"], 2)

    def test_bad_budget_values(self):
        for flag, value in (("--max-cost", "-1"), ("--max-cost", "abc"), ("--max-tokens", "0"),
                            ("--max-time", "0"), ("--max-subcalls", "-2")):
            res = self.rlm([flag, value, "q"], None, trace=False)
            self.assertExit(res, 2)
            self.assertIn(flag + " must be", res.stderr)


if __name__ == "__main__":
    main()
