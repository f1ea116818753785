"""Sub-calls that fail are never silent (issue 13, item 2): an error no retry
can fix (401, 403, 404, a 400 on every prompt of a batch of several) stops the run at
once with the provider's message and exit 3; failures that remain after the
retries are counted, said on stderr and in --json; --strict makes any failed
sub-call fatal."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

BATCH = repl('r = llm_query_batched(["alpha", "beta", "gamma"])\nprint(r)')


def script(sub_rules, root_first=BATCH):
    """The root runs one batch of three sub-calls, then answers."""
    return sub_rules + [
        {"model": "^root-model$", "match": ".", "times": 1, "reply": root_first},
        {"model": "^root-model$", "match": ".", "reply": "FINAL(done)"},
    ]


class SubcallFailures(RlmTestCase):
    def run_script(self, sub_rules, extra=()):
        with FakeLM(script(sub_rules)) as lm:
            res = self.rlm(["--max-retries", "1", "--context", self.write("c.txt", "some text"),
                            *extra, "q"], lm)
            requests = lm.requests()
        return res, requests

    def root_requests(self, requests):
        return [r for r in requests if r.get("model") == "root-model"]

    def test_unknown_sub_model_stops_the_run(self):
        res, requests = self.run_script([
            {"model": "^sub-model$", "status": 404, "error_code": "model_not_found",
             "reply": "The model `sub-model` does not exist or you do not have access to it."}])
        self.assertExit(res, 3)
        self.assertIn("The model `sub-model` does not exist", res.stderr)
        self.assertIn("HTTP 404", res.stderr)
        self.assertEqual(res.stdout, "")
        # Stopped at once: no second root turn after the failed batch.
        self.assertEqual(len(self.root_requests(requests)), 1)
        end = res.events("run_end")[0]
        self.assertEqual(end["status"], "model error")

    def test_bad_key_on_sub_calls_stops_the_run(self):
        for status in (401, 403):
            res, _ = self.run_script([
                {"model": "^sub-model$", "status": status, "reply": "Incorrect API key provided"}])
            self.assertExit(res, 3)
            self.assertIn("Incorrect API key provided", res.stderr)

    def test_400_on_every_prompt_stops_the_run(self):
        res, _ = self.run_script([
            {"model": "^sub-model$", "status": 400, "error_code": "context_length_exceeded",
             "reply": "This model's maximum context length is 8192 tokens."}])
        self.assertExit(res, 3)
        self.assertIn("maximum context length", res.stderr)

    def test_400_on_a_single_llm_query_goes_back_to_the_model(self):
        # A slice too long for the sub-model is the model's to cut smaller:
        # the error is the call's result, and the run goes on.
        rules = [
            {"model": "^sub-model$", "match": "too long", "status": 400,
             "error_code": "context_length_exceeded",
             "reply": "This model's maximum context length is 8192 tokens."},
            {"model": "^sub-model$", "reply": "fine"}]
        first = repl('r = llm_query("too long")\nprint(r)')
        second = repl('FINAL(llm_query("short"))')
        with FakeLM(rules + [
                {"model": "^root-model$", "match": ".", "times": 1, "reply": first},
                {"model": "^root-model$", "match": ".", "times": 1, "reply": second}]) as lm:
            res = self.rlm(["--max-retries", "1", "--context", self.write("c.txt", "text"),
                            "--json", "q"], lm)
            roots = self.root_requests(lm.requests())
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "fine")
        self.assertEqual(res.report["sub_call_errors"], 1)
        self.assertEqual(len(roots), 2)
        first_cell = res.events("code")[0]
        self.assertIn("maximum context length", first_cell["output"])

    def test_400_on_one_prompt_is_counted_not_fatal(self):
        res, _ = self.run_script([
            {"model": "^sub-model$", "match": "beta", "status": 400,
             "error_code": "context_length_exceeded",
             "reply": "This model's maximum context length is 8192 tokens."},
            {"model": "^sub-model$", "reply": "fine"}], extra=["--json"])
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "done")
        self.assertEqual(res.report["sub_call_errors"], 1)
        self.assertIn("maximum context length", res.report["sub_call_error"])
        self.assertIn("1 of 3 sub-calls failed", res.stderr)
        self.assertIn("maximum context length", res.stderr)

    def test_transient_failures_left_after_retries_are_reported(self):
        res, _ = self.run_script([
            {"model": "^sub-model$", "match": "alpha|beta", "status": 500, "reply": "upstream broke"},
            {"model": "^sub-model$", "reply": "fine"}], extra=["--json"])
        self.assertExit(res, 0)
        self.assertEqual(res.report["sub_call_errors"], 2)
        self.assertIn("2 of 3 sub-calls failed", res.stderr)
        self.assertIn("upstream broke", res.stderr)

    def test_strict_makes_any_failed_sub_call_fatal(self):
        res, _ = self.run_script([
            {"model": "^sub-model$", "match": "beta", "status": 500, "reply": "upstream broke"},
            {"model": "^sub-model$", "reply": "fine"}], extra=["--strict"])
        self.assertExit(res, 3)
        self.assertIn("upstream broke", res.stderr)
        self.assertIn("strict", res.stderr)

    def test_a_child_that_meets_an_unknown_model_stops_every_level(self):
        rules = [
            {"model": "^sub-model$", "status": 404, "error_code": "model_not_found",
             "reply": "The model `sub-model` does not exist."},
            {"model": "^root-model$", "match": "child task", "times": 1,
             "reply": repl("print(llm_query('x'))")},
            {"model": "^root-model$", "match": "top question", "times": 1,
             "reply": repl("print(rlm_query('child task'))")},
            {"model": "^root-model$", "reply": "FINAL(done)"},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--max-depth", "2", "--context", self.write("c.txt", "text"),
                            "top question"], lm)
            roots = self.root_requests(lm.requests())
        self.assertExit(res, 3)
        self.assertIn("does not exist", res.stderr)
        self.assertEqual(len(roots), 2)   # the top's first turn and the child's

    def test_all_good_says_nothing(self):
        res, _ = self.run_script([{"model": "^sub-model$", "reply": "fine"}])
        self.assertExit(res, 0)
        self.assertNotIn("sub-calls failed", res.stderr)


if __name__ == "__main__":
    main()
