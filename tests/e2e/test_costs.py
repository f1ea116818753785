"""What a run costs, end to end against the fake server (which caches prompt
prefixes the way the providers do): the root conversation only grows at its
end (each root request begins with the one before, compaction's note
included), so its prefix is cached; cached and written tokens are counted and
priced apart in --json, the trace and the run log; Anthropic requests carry
cache_control unless --no-prompt-cache; identical sub-calls are sent once
(--no-dedupe, and a temperature above 0, send them all); `rlm cost` breaks a
run down."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import rich_run  # noqa: E402
from harness import RLM, FakeLM, RlmTestCase, isolated_env, main, repl  # noqa: E402

QUESTION = "How many records mention ERROR?"

# One turn's code: reads the context, prints something, makes sub-calls that
# repeat across turns (the same chunks are labelled again).
TURN = repl("""
parts = [context[i * 40:(i + 1) * 40] for i in range(4)]
labels = llm_query_batched(["Label this part: " + p for p in parts + parts[:2]])
print("turn done", len(labels), labels[0])
""")

PRICES = {"root-model": {"input": 2.0, "cached_input": 0.2, "cache_write": 2.5, "output": 8.0},
          "sub-model": {"input": 1.0, "cached_input": 0.1, "cache_write": 1.25, "output": 4.0},
          "claude-root": {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0},
          "claude-sub": {"input": 1.0, "cached_input": 0.1, "cache_write": 1.25, "output": 5.0}}


def script(turns):
    return [
        {"match": "^Label this part", "reply": "label-x"},
        {"match": "(?i)turn %d of" % turns, "reply": "FINAL(7 errors)"},
        {"match": "write a compact note", "reply": "Summary: labelled the parts, 7 errors so far."},
        {"match": "", "reply": TURN},
    ]


class Costs(RlmTestCase):
    def ctx(self):
        return self.write("ctx.txt", "".join("line %03d ERROR or fine\n" % i for i in range(200)))

    def prices(self):
        return self.write("prices.json", json.dumps(PRICES))

    def root_requests(self, record, model="root-model"):
        with open(record) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [ln["request"]["messages"] for ln in lines if ln["request"]["model"] == model]

    def assertPrefixChain(self, requests):
        """Each request's messages begin with the previous one's, byte for
        byte, and so does its serialized body."""
        for k in range(1, len(requests)):
            before, after = requests[k - 1], requests[k]
            self.assertEqual(after[:len(before)], before, "request %d rewrote history" % (k + 1))
            a = json.dumps(before, ensure_ascii=False)[:-1]
            b = json.dumps(after, ensure_ascii=False)
            self.assertTrue(b.startswith(a), "request %d's body does not begin with %d's" % (k + 1, k))

    def test_root_history_only_grows_and_is_cached(self):
        record = os.path.join(self.tmp, "record.jsonl")
        with FakeLM(script(6)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-iterations", "8", "--record", record,
                            "--prices", self.prices(), QUESTION], lm)
            counters = lm.counters()
        self.assertExit(res, 0)
        roots = self.root_requests(record)
        self.assertEqual(len(roots), 6)
        self.assertPrefixChain(roots)
        rep = res.report
        root = rep["usage"]["root-model"]
        # From turn 2 on, the resent prefix is cached (the system prompt alone
        # is over 1024 tokens), at the cached price.
        self.assertGreater(root["cached_tokens"], root["prompt_tokens"] // 2)
        self.assertEqual(root["cache_write_tokens"], 0)   # OpenAI bills no writes
        self.assertLess(root["cost_usd"], root["cost_no_cache_usd"])
        self.assertEqual(rep["cached_tokens"], counters["cached_tokens"])
        self.assertAlmostEqual(rep["cost_no_cache_usd"],
                               sum(u["cost_no_cache_usd"] for u in rep["usage"].values()))
        replies = res.events("root_reply")
        self.assertEqual(replies[0]["usage"]["cached_tokens"], 0)
        self.assertTrue(all(r["usage"]["cached_tokens"] > 0 for r in replies[1:]))
        self.assertLess(replies[-1]["cost_usd"], replies[-1]["cost_no_cache_usd"])
        end = res.events("run_end")[0]
        self.assertEqual(end["cached_tokens"], rep["cached_tokens"])

    def test_compaction_note_is_a_stable_prefix(self):
        record = os.path.join(self.tmp, "record.jsonl")
        with FakeLM(script(9)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--max-iterations", "10", "--record", record,
                            "--context-window", "3000", "--compact-at", "0.9", QUESTION], lm)
        self.assertExit(res, 0)
        self.assertGreaterEqual(len(res.events("compaction")), 1, res.stderr)
        roots = self.root_requests(record)
        # The requests after the last compaction (its own summary request
        # aside) form one growing chain that starts with the note.
        last_summary = max(i for i, r in enumerate(roots) if "write a compact note" in r[-1]["content"])
        after = roots[last_summary + 1:]
        self.assertGreaterEqual(len(after), 2)
        self.assertPrefixChain(after)
        self.assertIn("Summary: labelled the parts", after[0][1]["content"])

    def anthropic_run(self, extra):
        with FakeLM(script(5)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--provider", "anthropic", "--model",
                            "claude-root", "--sub-model", "claude-sub", "--prices", self.prices(),
                            QUESTION] + extra, lm)
        self.assertExit(res, 0)
        return res.report

    def test_anthropic_cache_control_and_no_prompt_cache(self):
        rep = self.anthropic_run([])
        root = rep["usage"]["claude-root"]
        # The first turn writes the system prompt and history; later turns read it.
        self.assertGreater(root["cache_write_tokens"], 0)
        self.assertGreater(root["cached_tokens"], root["prompt_tokens"] // 2)
        self.assertLess(root["cost_usd"], root["cost_no_cache_usd"])
        off = self.anthropic_run(["--no-prompt-cache"])
        root_off = off["usage"]["claude-root"]
        self.assertEqual(root_off["cached_tokens"], 0)
        self.assertEqual(root_off["cache_write_tokens"], 0)
        self.assertAlmostEqual(root_off["cost_usd"], root_off["cost_no_cache_usd"])
        self.assertEqual(root_off["prompt_tokens"], root["prompt_tokens"])

    def test_identical_subcalls_sent_once(self):
        with FakeLM(script(4)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), QUESTION], lm)
            sent = sum(1 for r in lm.requests() if r["last_user"].startswith("Label this part"))
        self.assertExit(res, 0)
        rep = res.report
        # Three turns of six prompts, four distinct: four sent, fourteen shared.
        self.assertEqual(rep["sub_calls"], 18)
        self.assertEqual(sent, 4)
        self.assertEqual(rep["sub_calls_deduplicated"], 14)
        self.assertEqual(rep["usage"]["sub-model"]["deduplicated"], 14)
        subs = res.events("sub_call")
        self.assertEqual(sum(1 for e in subs if e["deduplicated"]), 14)
        self.assertTrue(all(e["reply"] == "label-x" for e in subs))
        self.assertEqual(res.events("run_end")[0]["sub_calls_deduplicated"], 14)
        # The summary line says so too.
        with FakeLM(script(4)) as lm:
            cmd, env, _ = self.rlm_command(["--progress", "--context", self.ctx(), QUESTION], lm)
            cmd.remove("--quiet")
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"rlm: 4 turns · 18 sub-calls \(14 deduplicated\) · [\d,]+ tokens "
                                     r"\([\d,]+ cached\) · prices unknown · ")

    def test_no_dedupe_and_temperature(self):
        for extra, want in ((["--no-dedupe"], 18), (["--temperature", "0.7"], 18),
                            (["--temperature", "0.7", "--dedupe"], 4), (["--temperature", "0"], 4)):
            with FakeLM(script(4)) as lm:
                res = self.rlm(["--json", "--context", self.ctx(), QUESTION] + extra, lm)
                sent = sum(1 for r in lm.requests() if r["last_user"].startswith("Label this part"))
            self.assertExit(res, 0)
            self.assertEqual(sent, want, extra)
            self.assertEqual(res.report["sub_calls_deduplicated"], 18 - want, extra)

    def cost(self, *args):
        env = dict(os.environ)
        env.update(isolated_env(self.tmp))
        return subprocess.run([RLM, "cost"] + list(args), capture_output=True, text=True, timeout=60, env=env)

    def test_rlm_cost_from_trace_and_run_log(self):
        with FakeLM(script(5)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), "--prices", self.prices(), QUESTION], lm)
        self.assertExit(res, 0)
        rep = res.report
        out = self.cost("--json", res.trace_path)
        self.assertEqual(out.returncode, 0, out.stderr)
        b = json.loads(out.stdout)
        total = b["total"]
        self.assertEqual(total["calls"], rep["iterations"] + rep["sub_calls"])
        self.assertEqual(total["deduplicated"], rep["sub_calls_deduplicated"])
        self.assertAlmostEqual(total["cost_usd"], rep["cost_usd"])
        self.assertAlmostEqual(total["cost_no_cache_usd"], rep["cost_no_cache_usd"])
        self.assertEqual(total["cached_tokens"], rep["cached_tokens"])
        self.assertEqual(b["phases"]["root turns"]["calls"], rep["iterations"])
        self.assertEqual(b["phases"]["sub-calls"]["calls"], rep["sub_calls"])
        self.assertEqual(b["phases"]["child RLMs"]["calls"], 0)
        for model in ("root-model", "sub-model"):
            self.assertAlmostEqual(b["models"][model]["cost_usd"], rep["usage"][model]["cost_usd"])
            self.assertEqual(b["models"][model]["cached_tokens"], rep["usage"][model]["cached_tokens"])
        self.assertEqual(list(b["nodes"]), ["0"])
        self.assertAlmostEqual(b["saved_usd"], rep["cost_no_cache_usd"] - rep["cost_usd"])
        self.assertGreater(b["saved_share"], 0.3)
        # The run log holds the run: the same breakdown by its id, and its row
        # has the cached tokens and the counterfactual.
        by_id = self.cost("--json", str(rep["log_id"]))
        self.assertEqual(by_id.returncode, 0, by_id.stderr)
        self.assertEqual(json.loads(by_id.stdout)["total"], total)
        text = self.cost(res.trace_path)
        self.assertIn("prompt caching saved $", text.stdout)
        self.assertIn("root turns", text.stdout)
        env = dict(os.environ)
        env.update(isolated_env(self.tmp))
        row = json.loads(subprocess.run([RLM, "logs", "show", str(rep["log_id"]), "--json"], capture_output=True,
                                        text=True, env=env).stdout)
        self.assertEqual(row["cached_tokens"], rep["cached_tokens"])
        self.assertAlmostEqual(row["cost_no_cache_usd"], rep["cost_no_cache_usd"])
        self.assertEqual(row["sub_calls_deduplicated"], rep["sub_calls_deduplicated"])
        shown = subprocess.run([RLM, "logs", "show", str(rep["log_id"])], capture_output=True, text=True,
                               env=env).stdout
        self.assertRegex(shown, r"cached_tokens\s+%d\n" % rep["cached_tokens"])
        self.assertIn("cost_no_cache_usd", shown)
        # Errors: no such file, no such run, not a trace.
        self.assertEqual(self.cost(os.path.join(self.tmp, "missing.jsonl")).returncode, 2)
        self.assertEqual(self.cost("999").returncode, 2)
        self.assertEqual(self.cost(self.write("junk.txt", "not json\n")).returncode, 2)
        self.assertEqual(self.cost().returncode, 2)

    def test_rlm_cost_with_a_child_rlm(self):
        trace = rich_run.trace(self)
        out = self.cost("--json", trace)
        self.assertEqual(out.returncode, 0, out.stderr)
        b = json.loads(out.stdout)
        self.assertEqual(sorted(b["nodes"]), ["0", "0.1"])
        # The child's one root turn is the children's phase; the root's two
        # turns and twelve sub-calls are the top's.
        self.assertEqual(b["phases"]["child RLMs"]["calls"], 1)
        self.assertEqual(b["phases"]["root turns"]["calls"], 2)
        self.assertEqual(b["phases"]["sub-calls"]["calls"], 12)
        self.assertEqual(b["nodes"]["0.1"]["calls"], 1)
        self.assertIsNone(b["total"]["cost_usd"])      # no prices: unknown, never 0
        self.assertIn("the cost is unknown", self.cost(trace).stdout)

    def test_max_cost_counts_cached_tokens_at_their_price(self):
        """A budget between what the run costs with the provider's cache and
        without it: met with the cache, exhausted without."""
        cost = {}
        for cache_on in (True, False):
            with FakeLM(script(6), script_keys={"prompt_cache": cache_on}) as lm:
                res = self.rlm(["--json", "--context", self.ctx(), "--prices", self.prices(), QUESTION], lm)
            self.assertExit(res, 0)
            self.assertIsNone(res.report["stopped_by"])
            cost[cache_on] = res.report["cost_usd"]
        self.assertLess(cost[True], 0.6 * cost[False])
        limit = "%.6f" % ((cost[True] + cost[False]) / 2)
        # Stopped, the root's last reply here is code again: no answer, exit 1.
        for cache_on, stopped, code in ((True, None, 0), (False, "max_cost", 1)):
            with FakeLM(script(6), script_keys={"prompt_cache": cache_on}) as lm:
                res = self.rlm(["--json", "--context", self.ctx(), "--prices", self.prices(), "--max-cost", limit,
                                QUESTION], lm)
            self.assertExit(res, code)
            self.assertEqual(res.report["stopped_by"], stopped, res.report)
            if stopped is None:
                self.assertEqual(res.report["answer"], "7 errors")

    def test_run_log_written_by_an_older_rlm_gets_the_new_columns(self):
        import sqlite3
        db = os.path.join(self.tmp, "xdg-data", "rlm", "logs.db")
        os.makedirs(os.path.dirname(db))
        con = sqlite3.connect(db)
        con.executescript(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
            "INSERT INTO meta VALUES('schema', '1');"
            "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,"
            " command TEXT, question TEXT, inputs TEXT, model TEXT, sub_model TEXT,"
            " answer TEXT, status TEXT, how TEXT, error TEXT, session TEXT,"
            " turns INTEGER, sub_calls INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,"
            " cost_usd REAL, elapsed REAL, trace BLOB, trace_bytes INTEGER NOT NULL DEFAULT 0, trace_note TEXT);"
            "INSERT INTO runs(started, command, question, status) VALUES(1.0, 'ask', 'old question', 'ok');")
        con.commit()
        con.close()
        with FakeLM(script(3)) as lm:
            res = self.rlm(["--json", "--context", self.ctx(), QUESTION], lm)
        self.assertExit(res, 0)
        self.assertNotIn("run log", res.stderr)
        env = dict(os.environ)
        env.update(isolated_env(self.tmp))
        rows = json.loads(subprocess.run([RLM, "logs", "--json"], capture_output=True, text=True, env=env).stdout)
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["sub_calls_deduplicated"], res.report["sub_calls_deduplicated"])
        self.assertEqual(rows[0]["cached_tokens"], res.report["cached_tokens"])
        self.assertIsNone(rows[1]["cached_tokens"])      # the old row: not counted then
        self.assertEqual(rows[1]["question"], "old question")


if __name__ == "__main__":
    main()
