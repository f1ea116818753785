#!/usr/bin/env python3
"""Cost benchmark: what prompt caching and sub-call deduplication save,
against the fake server, whose prompt cache reports cached tokens the way the
providers do (docs/fakelm.md).

1. A 12-turn run (each turn runs code and a few sub-calls), three ways on the
   OpenAI-compatible endpoint: the fake server caching as OpenAI does, the
   same with its cache off; and on the Anthropic endpoint with rlm's
   cache_control breakpoints and with --no-prompt-cache. Printed: the root's
   prompt tokens, how many were billed at the full input price (fresh), read
   from the cache and written to it, and the input's price in dollars at the
   list prices of gpt-5-mini and claude-sonnet-4-5 ($0.25 / $0.025 and
   $3 / $0.30 / $3.75 write per million). Target: input billed at the full
   price 60% lower with caching.
2. An OOLONG-style task (taskgen oolong: 100-line labelling sub-calls) whose
   input repeats 10% of its 100-line groups, so 10% of the sub-call prompts
   are duplicates: sub-calls the server received with and without
   --no-dedupe, against the distinct prompts. Target: sent = distinct.

3. What looking for duplicates costs when there are none: one batch of
   4,300 distinct prompts of 8,400 characters (the 430K-line OOLONG's
   slices), the run's wall time with and without --no-dedupe, medians of
   --repeat runs.

usage: bench/cost_bench.py [--build DIR] [--turns N] [--groups N] [--repeat N]
Standard library only.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from harness import FakeLM, isolated_env  # noqa: E402

TURN = """```repl
part = context[(%d * 997) %% len(context):][:400]
notes = llm_query_batched(["Summarise: " + part, "Count the words of: " + part])
print("turn %d:", len(part), notes[0][:60])
```"""


def multi_turn_rules(turns):
    rules = [{"match": "^Summarise: ", "reply": "A summary of the part, in one line."},
             {"match": "^Count the words", "reply": "57"},
             {"match": "(?i)turn %d of" % turns, "reply": "FINAL(done after %d turns)" % turns}]
    for t in range(turns - 1, 0, -1):
        rules.append({"match": "(?i)turn %d of" % t, "reply": "Turn %d: looking further.\n%s" % (t, TURN % (t, t))})
    return rules


def run(build, lm, args, tmp):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and k != "RLM_MODEL"}
    env.update(isolated_env(tmp))
    cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--json", "--no-log", "--mode", "rlm",
           "--base-url", lm.base_url] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit("rlm failed (%d): %s" % (proc.returncode, proc.stderr[-2000:]))
    return json.loads(proc.stdout)


def twelve_turns(build, turns, tmp):
    ctx = os.path.join(tmp, "ctx.txt")
    with open(ctx, "w") as f:
        f.write("".join("record %05d: status=%s latency=%dms\n" % (i, "ok" if i % 7 else "ERROR", i % 900)
                        for i in range(4000)))
    question = "Look through the records over %d turns, then say you are done." % turns
    rows = []
    setups = [
        ("openai-compatible, prompt cache on", "gpt-5-mini", [], True, (0.25, 0.025, 0.25)),
        ("openai-compatible, prompt cache off", "gpt-5-mini", [], False, (0.25, 0.025, 0.25)),
        ("anthropic, cache_control (default)", "claude-sonnet-4-5", ["--provider", "anthropic"], True,
         (3.0, 0.30, 3.75)),
        ("anthropic, --no-prompt-cache", "claude-sonnet-4-5", ["--provider", "anthropic", "--no-prompt-cache"],
         True, (3.0, 0.30, 3.75)),
    ]
    for label, model, extra, cache_on, price in setups:
        # Cache off: the server as a provider without a prompt cache.
        with FakeLM(multi_turn_rules(turns), script_keys={"prompt_cache": cache_on}) as lm:
            rep = run(build, lm, ["--model", model, "--sub-model", model, "--context", ctx,
                                  "--max-iterations", str(turns + 2), question] + extra, tmp)
        u = rep["usage"][model]
        fresh = u["prompt_tokens"] - u["cached_tokens"] - u["cache_write_tokens"]
        dollars = (fresh * price[0] + u["cached_tokens"] * price[1] + u["cache_write_tokens"] * price[2]) / 1e6
        rows.append((label, rep["iterations"], u["prompt_tokens"], fresh, u["cached_tokens"],
                     u["cache_write_tokens"], dollars))
    print("1. %d-turn run: the input side of every call (root turns and sub-calls)" % turns)
    print("   %-38s %5s %9s %9s %9s %9s %12s" % ("", "turns", "prompt", "fresh", "cached", "written",
                                                 "input $"))
    for r in rows:
        print("   %-38s %5d %9d %9d %9d %9d %12.6f" % r)
    for on, off in ((rows[0], rows[1]), (rows[2], rows[3])):
        print("   %s: input billed at the full price %.0f%% lower, input dollars %.0f%% lower" % (
            on[0].split(",")[0], 100 * (1 - on[3] / off[3]), 100 * (1 - on[6] / off[6])))
    return rows


def oolong_duplicates(build, groups, tmp):
    task = os.path.join(tmp, "oolong")
    distinct = groups - groups // 10
    subprocess.run([os.path.join(build, "taskgen"), "oolong", "--out", task, "--lines", str(distinct * 100),
                    "--subcalls", "--seed", "7"], check=True, capture_output=True)
    with open(os.path.join(task, "context.txt")) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    assert len(lines) == distinct * 100, len(lines)
    # 10% of the prompts are copies: every 9th group again, at the end.
    copies = [lines[g * 100:(g + 1) * 100] for g in range(0, distinct, 9)][:groups - distinct]
    ctx = os.path.join(tmp, "oolong_dup.txt")
    with open(ctx, "w") as f:
        f.write("\n".join(lines + [ln for c in copies for ln in c]) + "\n")
    with open(os.path.join(task, "script.json")) as f:
        script = json.load(f)
    with open(os.path.join(task, "question.txt")) as f:
        question = f.read()
    out = []
    keys = {k: v for k, v in script.items() if k not in ("rules", "latency_ms")}
    for label, extra in (("dedupe (default)", []), ("--no-dedupe", ["--no-dedupe"])):
        with FakeLM(script["rules"], script_keys=keys) as lm:
            rep = run(build, lm, ["--model", "fake-root", "--sub-model", "fake-sub", "--context", ctx,
                                  "--max-iterations", "4", question] + extra, tmp)
            sent = lm.counters()["rules"][0]
        out.append((label, rep["sub_calls"], sent, rep["sub_calls_deduplicated"], rep["answer"]))
    print("2. OOLONG-style, %d labelling prompts of 100 lines, %d of them duplicates (%d distinct)" % (
        groups, groups - distinct, distinct))
    print("   %-18s %9s %6s %13s %s" % ("", "sub-calls", "sent", "deduplicated", "answer"))
    for r in out:
        print("   %-18s %9d %6d %13d %s" % r)
    print("   sent with dedupe = distinct prompts: %s; same answer both ways: %s" % (
        out[0][2] == distinct, out[0][4] == out[1][4]))
    return out


def dedupe_overhead(build, repeat, tmp):
    ctx = os.path.join(tmp, "slices.txt")
    with open(ctx, "w") as f:
        for i in range(4300):
            f.write(("slice %05d " % i + "lorem ipsum dolor sit amet " * 320)[:8399] + "\n")
    code = ("```repl\nparts = [context[i * 8400:(i + 1) * 8400] for i in range(4300)]\n"
            "r = llm_query_batched(parts)\nprint(len(r), r[0])\n```")
    rules = [{"match": "^slice ", "reply": "ok"}, {"match": "(?i)turn 2 of", "reply": "FINAL(done)"},
             {"match": "", "reply": code}]
    times = {"dedupe (default)": [], "--no-dedupe": []}
    cpu = {"dedupe (default)": [], "--no-dedupe": []}
    for _ in range(repeat):
        for label, extra in (("dedupe (default)", []), ("--no-dedupe", ["--no-dedupe"])):
            with FakeLM(rules) as lm:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                rep = run(build, lm, ["--model", "m", "--context", ctx, "--max-iterations", "3",
                                      "Label the slices."] + extra, tmp)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[label].append(rep["elapsed_seconds"])
            # CPU of rlm and its sandbox (the server is reaped later): steadier
            # than wall time on a shared machine.
            cpu[label].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print("3. one batch of 4,300 distinct 8,400-character prompts (no duplicates), median of %d" % repeat)
    print("   %-18s %8s %8s" % ("", "wall", "CPU"))
    for label in times:
        print("   %-18s %7.2fs %7.2fs" % (label, statistics.median(times[label]), statistics.median(cpu[label])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--groups", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlm-cost-bench-") as tmp:
        twelve_turns(a.build, a.turns, tmp)
        oolong_duplicates(a.build, a.groups, tmp)
        dedupe_overhead(a.build, a.repeat, tmp)


if __name__ == "__main__":
    main()
