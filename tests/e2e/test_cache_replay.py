"""The response cache, record/replay and a second endpoint for sub-calls, end
to end: a second identical run with --cache sends no request and gives the
same answer at no cost; a recorded run replays with no server, the same answer
and the same trace content apart from times; a request missing from the
replay file exits 3 naming it; a corrupt cache file is a warning, never a
failure; --sub-base-url sends exactly the sub-calls to the second server."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

QUESTION = "How many chunks are fine?"

BATCH = repl("""
results = llm_query_batched(["Check chunk %d: %s" % (i, context[i * 7:i * 7 + 7]) for i in range(12)])
fine = sum(1 for r in results if r.endswith("fine"))
print("fine:", fine)
""")


def script():
    return [
        {"match": r"^Check chunk (\d+):", "reply": "chunk $1 fine"},
        {"match": "(?i)turn 2 of", "reply": repl('FINAL("%d fine" % fine)')},
        {"match": "How many chunks", "reply": BATCH},
    ]


# Fields that hold times, pids, paths of this run's files: they may differ
# (sent_seconds: a replayed request never goes on the wire, so it is null).
VOLATILE = {"t", "time", "seconds", "waited", "elapsed", "call_seconds", "pid", "config", "sent_seconds"}


def stable(events):
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]


class CacheReplay(RlmTestCase):
    def ctx(self):
        return self.write("ctx.txt", "0123456789" * 100)

    def test_second_run_is_served_from_the_cache(self):
        cache_dir = os.path.join(self.tmp, "cache")
        args = ["--json", "--cache", "--cache-dir", cache_dir, "--context", self.ctx(), QUESTION]
        with FakeLM(script()) as lm:
            first = self.rlm(args, lm)
            after_first = lm.counters()["requests"]
            second = self.rlm(args, lm)
            after_second = lm.counters()["requests"]
        self.assertExit(first, 0)
        self.assertExit(second, 0)
        self.assertEqual(after_first, 14)
        self.assertEqual(after_second, after_first, "the second run reached the server")
        self.assertEqual(first.report["answer"], "12 fine")
        self.assertEqual(second.report["answer"], first.report["answer"])
        self.assertTrue(os.path.exists(os.path.join(cache_dir, "cache.sqlite")))
        events = second.events("root_reply") + second.events("sub_call")
        self.assertEqual(len(events), 14)
        for e in events:
            self.assertTrue(e["cached"])
            self.assertEqual(e["cost_usd"], 0)
        self.assertEqual(second.report["cost_usd"], 0)
        self.assertEqual(second.report["usage"]["sub-model"]["cached_calls"], 12)
        # --no-cache after --cache: back to the server.
        with FakeLM(script()) as lm:
            third = self.rlm(args[:1] + ["--no-cache"] + args[1:], lm)
            self.assertEqual(lm.counters()["requests"], 14)
        self.assertExit(third, 0)

    def test_record_then_replay_offline(self):
        record = os.path.join(self.tmp, "run.jsonl")
        with FakeLM(script()) as lm:
            base_url = lm.base_url
            recorded = self.rlm(["--json", "--record", record, "--context", self.ctx(), QUESTION], lm)
        self.assertExit(recorded, 0)
        recorded_trace = recorded.trace
        with open(record) as f:
            lines = [line for line in f if line.strip()]
        self.assertEqual(len(lines), 14)
        # The server is gone: the replay needs no network.
        replayed = self.rlm(["--json", "--base-url", base_url, "--replay", record,
                             "--context", self.ctx(), QUESTION], None)
        self.assertExit(replayed, 0)
        self.assertEqual(replayed.stdout.count("\n"), 1)
        self.assertEqual(replayed.report["answer"], recorded.report["answer"])
        self.assertEqual(replayed.report["usage"], recorded.report["usage"])
        self.assertEqual(stable(replayed.trace), stable(recorded_trace))

    def test_replay_of_a_request_not_recorded_exits_3(self):
        record = os.path.join(self.tmp, "run.jsonl")
        with FakeLM(script()) as lm:
            base_url = lm.base_url
            self.assertExit(self.rlm(["--record", record, "--context", self.ctx(), QUESTION], lm), 0)
        res = self.rlm(["--base-url", base_url, "--replay", record, "--context", self.ctx(),
                        "How many chunks are broken?"], None)
        self.assertExit(res, 3)
        self.assertIn("not in the replay file", res.stderr)
        self.assertIn("root call to model 'root-model', key ", res.stderr)
        self.assertEqual(res.stderr.count("\n"), 1)

    def test_missing_replay_file_is_a_usage_error(self):
        res = self.rlm(["--replay", os.path.join(self.tmp, "nope.jsonl"), "q"], None, trace=False)
        self.assertExit(res, 2)
        self.assertIn("cannot open replay file", res.stderr)

    def test_corrupt_cache_file_is_only_a_warning(self):
        cache_dir = os.path.join(self.tmp, "cache")
        os.makedirs(cache_dir)
        self.write(os.path.join(cache_dir, "cache.sqlite"), b"\x00garbage, not SQLite\n" * 500)
        with FakeLM(script()) as lm:
            res = self.rlm(["--json", "--cache", "--cache-dir", cache_dir, "--context", self.ctx(),
                            QUESTION], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "12 fine")
        self.assertIn("warning: response cache disabled", res.stderr)
        self.assertEqual(len(res.events("warning")), 1)

    def test_cache_dir_from_xdg_cache_home(self):
        xdg = os.path.join(self.tmp, "xdg")
        with FakeLM(script()) as lm:
            res = self.rlm(["--cache", "--context", self.ctx(), QUESTION], lm,
                           env={"XDG_CACHE_HOME": xdg})
        self.assertExit(res, 0)
        self.assertTrue(os.path.exists(os.path.join(xdg, "rlm", "cache.sqlite")))

    def test_sub_base_url_gets_exactly_the_sub_calls(self):
        with FakeLM(script()) as root, FakeLM(script()) as sub:
            res = self.rlm(["--json", "--sub-base-url", sub.base_url, "--context", self.ctx(),
                            QUESTION], root)
            root_requests = root.requests()
            sub_requests = sub.requests()
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "12 fine")
        self.assertEqual(len(root_requests), 2)
        self.assertEqual(len(sub_requests), 12)
        self.assertEqual({r["model"] for r in root_requests}, {"root-model"})
        self.assertEqual({r["model"] for r in sub_requests}, {"sub-model"})


if __name__ == "__main__":
    main()
