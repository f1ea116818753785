#!/usr/bin/env python3
"""rlm ask benchmarks against the fake server (issue 2's targets). Prints
measured figures; asserts nothing. Run after building:

    python3 bench/ask_bench.py [--build build] [--repeat 3]

1. batch:    one llm_query_batched of 1,000 prompts at 200 ms latency with
             concurrency 64, against the ideal ceil(1000/64) x 0.2 s.
2. context:  a 10M-token (40 MB) context: start to first model request,
             engine overhead per turn (fake latency 0, trivial cells), and peak
             memory of host + sandbox together against the context size.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
from proctree import PeakMemory  # noqa: E402


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


def run_rlm(build, lm, args):
    trace = tempfile.mktemp(suffix=".jsonl")
    cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--json", "--no-log", "--model", "root",
           "--sub-model", "sub", "--base-url", lm.base_url, "--trace", trace,
           "--mode", "rlm"] + args
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = PeakMemory(proc.pid)
    mem.start()
    out, err = proc.communicate()
    wall = time.monotonic() - start
    mem.stop()
    if proc.returncode != 0:
        raise SystemExit("rlm failed (%d): %s" % (proc.returncode, err))
    with open(trace) as f:
        events = [json.loads(line) for line in f]
    os.unlink(trace)
    return json.loads(out), events, wall, mem.peak_kb


def bench_batch(build, repeat):
    from harness import FakeLM
    n, conc, latency = 1000, 64, 0.2
    rules = [
        {"match": r"^item (\d+)$", "reply": "r$1", "latency_ms": int(latency * 1000)},
        {"match": "(?i)turn 2 of", "reply": "FINAL(done)"},
        {"match": ".", "reply": repl(
            "res = llm_query_batched(['item %d' % i for i in range(1000)])\n"
            "assert res == ['r%d' % i for i in range(1000)], res[:3]\nprint('ok')")},
    ]
    ideal = math.ceil(n / conc) * latency
    times = []
    with tempfile.TemporaryDirectory() as d:
        ctx = os.path.join(d, "c.txt")
        with open(ctx, "w") as f:
            f.write("x")
        for _ in range(repeat):
            with FakeLM(rules) as lm:
                # Latency applies to the sub-calls only (a per-rule latency).
                report, events, wall, _ = run_rlm(build, lm, [
                    "--concurrency", str(conc), "--context", ctx, "q"])
            code = [e for e in events if e["type"] == "code"][0]
            times.append(code["call_seconds"])
            assert report["sub_calls"] == n, report
    med = statistics.median(times)
    print("batch: %d prompts, latency %.0f ms, concurrency %d" % (n, latency * 1000, conc))
    print("  batch wall (median of %d): %.3f s   ideal %.3f s   ratio %.2fx   (target <= 1.30x)"
          % (repeat, med, ideal, med / ideal))
    print("  runs: %s" % ", ".join("%.3f" % t for t in times))


def bench_context(build, repeat):
    from harness import FakeLM
    size = 40 * 1024 * 1024
    turns = 10
    rules = [{"match": "(?i)turn %d of" % (turns + 1), "reply": "FINAL(done)"},
             {"match": ".", "reply": repl("print(len(context))")}]
    firsts, overheads, peaks = [], [], []
    with tempfile.TemporaryDirectory() as d:
        ctx = os.path.join(d, "big.txt")
        line = "lorem ipsum dolor sit amet, consectetur adipiscing elit 0123\n"
        with open(ctx, "w") as f:
            f.write(line * (size // len(line)))
        size = os.path.getsize(ctx)
        for _ in range(repeat):
            with FakeLM(rules) as lm:
                report, events, wall, peak = run_rlm(build, lm, [
                    "--max-iterations", str(turns + 5), "--context", ctx, "q"])
            first_request = [e for e in events if e["type"] == "root_request"][0]["t"]
            replies = [e for e in events if e["type"] == "root_reply"]
            requests = [e for e in events if e["type"] == "root_request"]
            # Engine time between a reply arriving and the next request leaving:
            # parse, run the cell, build feedback, build the next request.
            gaps = [requests[i + 1]["t"] - replies[i]["t"] for i in range(len(replies) - 1)]
            firsts.append(first_request)
            overheads.append(statistics.median(gaps))
            peaks.append(peak * 1024)
    print("context: %.1f MB (%.1fM tokens est.), %d turns, fake latency 0" % (
        size / 1e6, size / 3.5 / 1e6, turns + 1))
    print("  start to first model request (median): %.3f s   (target < 0.5 s)" % statistics.median(firsts))
    print("  engine overhead per turn (median): %.2f ms   (target < 20 ms)" % (statistics.median(overheads) * 1000))
    pk = statistics.median(peaks)
    print("  peak RSS host + sandbox (median): %.1f MB = %.2fx context   (target < 3x)" % (pk / 1e6, pk / size))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["batch", "context"])
    args = ap.parse_args()
    os.environ["RLM_BUILD_DIR"] = os.path.abspath(args.build)
    import harness
    harness.FAKELM = os.path.join(os.environ["RLM_BUILD_DIR"], "fakelm")
    print("machine: %d cores, %s" % (os.cpu_count(), os.uname().machine))
    if args.only in (None, "batch"):
        bench_batch(args.build, args.repeat)
    if args.only in (None, "context"):
        bench_context(args.build, args.repeat)


if __name__ == "__main__":
    main()
