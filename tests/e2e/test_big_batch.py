"""One llm_query_batched of thousands of prompts (issue 20): the prompts
stream from the sandbox to the host and each request leaves as soon as its
prompt is in, but the batch keeps its meaning — every result in its place,
in order, a failed prompt's error string where its reply would be, identical
prompts sent once (a failure is not shared: its twin is sent again), every
prompt a sub-call of the budget — with deduplication, without it, and with a
record file (whose keys need every prompt before anything is sent)."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

N, UNIQUE = 3000, 2900
# Prompts of 2 KB, 6 MB in all: more than a socket buffer holds, so the
# host reads the batch while requests are already out. Items ending in 7
# are refused by the model (HTTP 400 on some prompts: the run goes on).
CODE = """
prompts = ['item %d ' % (i % 2900) + 'x' * 2000 for i in range(3000)]
replies = llm_query_batched(prompts)
def want(i):
    k = i % 2900
    return None if k % 10 == 7 else 'ans %d' % k
def ok(i, r):
    return r.startswith('Error: ') if want(i) is None else r == want(i)
bad = [i for i, r in enumerate(replies) if not ok(i, r)]
FINAL('%d %s' % (len(replies), bad[:5]))
"""
RULES = [
    {"model": "^sub-model$", "match": "^item (\\d*7) ", "status": 400,
     "error_code": "context_length_exceeded", "reply": "too long for this model"},
    {"model": "^sub-model$", "match": "^item (\\d+) ", "reply": "ans $1"},
    {"model": "^root-model$", "match": ".", "reply": repl(CODE)},
]
REFUSED = UNIQUE // 10 + (N - UNIQUE) // 10   # 290 distinct ones, and the 10 twins sent again


class BigBatch(RlmTestCase):
    def run_batch(self, extra, lm=None):
        if lm is None:
            with FakeLM(RULES) as own:
                return self.run_batch(extra, own)
        before = len(lm.requests())
        res = self.rlm(["--max-retries", "0", "--concurrency", "32", "--json",
                        "--context", self.write("c.txt", "some text"), *extra, "q"], lm)
        requests = [r for r in lm.requests()[before:] if r.get("model") == "sub-model"]
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "%d []" % N)
        self.assertEqual(res.report["sub_calls"], N)
        self.assertEqual(res.report["sub_call_errors"], REFUSED)
        calls = res.events("sub_call")
        self.assertEqual([e["index"] for e in calls], list(range(N)))
        self.assertTrue(all(e["prompt"].startswith("item %d " % (e["index"] % UNIQUE)) for e in calls))
        sent = [e for e in calls if e["sent_seconds"] is not None]
        self.assertEqual(len(sent), len(requests))
        self.assertTrue(all(e["sent_seconds"] >= 0 for e in sent))
        return res, requests

    def test_deduplicated(self):
        res, requests = self.run_batch([])
        # Every distinct prompt once; the twins of refused ones again.
        self.assertEqual(len(requests), UNIQUE + 10)
        self.assertEqual(res.report["sub_calls_deduplicated"], N - UNIQUE - 10)

    def test_not_deduplicated(self):
        res, requests = self.run_batch(["--no-dedupe"])
        self.assertEqual(len(requests), N)
        self.assertEqual(res.report["sub_calls_deduplicated"], 0)

    def test_recorded(self):
        record = os.path.join(self.tmp, "calls.jsonl")
        _, requests = self.run_batch(["--no-dedupe", "--record", record])
        self.assertEqual(len(requests), N)
        with open(record) as f:
            self.assertEqual(sum(1 for line in f if '"model":"sub-model"' in line), N)

    def test_cached(self):
        # Keys made and the cache asked as prompts arrive: a second run is
        # answered from the cache (refused prompts are not stored: sent again).
        cache = os.path.join(self.tmp, "cache")
        with FakeLM(RULES) as lm:   # one server: its URL is part of the cache's key
            _, first = self.run_batch(["--cache", "--cache-dir", cache], lm)
            res, second = self.run_batch(["--cache", "--cache-dir", cache], lm)
        self.assertEqual(len(first), UNIQUE + 10)
        self.assertEqual(len(second), REFUSED)
        self.assertTrue(all(r["last_user"].startswith("item ") for r in second))
        cached = [e for e in res.events("sub_call") if e["cached"]]
        self.assertEqual(len(cached), UNIQUE - UNIQUE // 10)

    def test_budget_refuses_the_whole_batch(self):
        # Admitted from the announced lengths before any prompt is read:
        # refused whole, nothing sent, the run stopped with its reason.
        with FakeLM(RULES) as lm:
            res = self.rlm(["--max-subcalls", str(N - 1), "--json",
                            "--context", self.write("c.txt", "some text"), "q"], lm)
            requests = [r for r in lm.requests() if r.get("model") == "sub-model"]
        self.assertEqual(requests, [])
        self.assertEqual(res.report["sub_calls"], 0)
        self.assertIn("max_subcalls", res.report["stopped_by"] or "")

    def test_cancel_mid_batch_then_another_batch(self):
        # Ctrl-C while a batch's prompts are still coming (slow replies hold
        # the first ones; the rest wait in the child): the question is
        # cancelled at once, the rest of its prompts are read and dropped,
        # and the next question's batch on the same sandbox is served whole.
        slow = repl("r = llm_query_batched(['slow %d ' % i + 'y' * 2000 for i in range(3000)])\n"
                    "FINAL('too late')")
        rules = [{"model": "^sub-model$", "match": "^slow ", "latency_ms": 30000, "reply": "late"},
                 RULES[0], RULES[1],
                 {"model": "^root-model$", "match": "BATCHQ2", "reply": repl(CODE)},
                 {"model": "^root-model$", "match": "CANCELQ1", "reply": slow}]
        with FakeLM(rules) as lm:
            proc, trace_path = self.rlm_start(["--max-retries", "0", "--concurrency", "32",
                                      "--context", self.write("c.txt", "some text")], lm,
                                     command="chat", stdin=subprocess.PIPE)
            try:
                proc.stdin.write("CANCELQ1 slow batch\n")
                proc.stdin.flush()
                lm.wait_in_flight(32)
                t0 = time.time()
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate("BATCHQ2 fast batch\n", timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
            elapsed = time.time() - t0
        self.assertEqual(proc.returncode, 1, err)   # the first question got no answer
        self.assertIn("cancelled", err)
        self.assertIn("%d []" % N, out)
        self.assertLess(elapsed, 60)
        events = self.trace_of(trace_path)
        ends = [e for e in events if e["type"] == "run_end"]
        self.assertEqual([e["status"] for e in ends], ["no answer", "ok"])
        # Of the cancelled batch only those on the wire (32) and a few queued
        # behind them went out; the rest were read and dropped, never sent.
        first = [e for e in events if e["type"] == "sub_call" and e["prompt"].startswith("slow ")]
        self.assertEqual(len(first), N)
        sent = [e for e in first if e["sent_seconds"] is not None]
        self.assertGreaterEqual(len(sent), 32)
        self.assertLessEqual(len(sent), 40)


if __name__ == "__main__":
    main()
