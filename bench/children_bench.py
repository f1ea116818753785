#!/usr/bin/env python3
"""Child-RLM benchmarks against the fake server (issue 6's targets). Prints
measured figures; asserts nothing but correctness. Run after building:

    python3 bench/children_bench.py [--build build] [--repeat 3] [--children 64]

The root starts N children in one rlm_query_batched (--max-depth 2,
--max-children N); each child is a 2-turn RLM (one cell, then FINAL). Every
model reply takes 200 ms, so the model alone needs 4 x 0.2 s on the critical
path (root turn 1, child turns 1 and 2, root turn 2). Reported:

  - engine time beyond model latency: wall - 0.8 s     (target < 3 s for 64)
  - child sandbox ready time: the children's sandbox_ready events, for one
    child alone (target < 100 ms) and for N starting at once (they queue for
    the CPU: median and max)
  - memory: peak RSS of the whole process tree, and per child sandbox
    (peak - the same run with one child) / (N - 1)      (target < 30 MB + context)
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
from ask_bench import run_rlm  # noqa: E402

LATENCY_MS = 200


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


def rules(n):
    child_q = r"asked\):\s+child task (\d+)\s"
    return [
        # A child's second turn: its question is in its first user message.
        {"match": "(?s)" + child_q + ".*Turn 2 of", "on": "any", "reply": "FINAL(c$1)"},
        # A child's first turn: one small cell.
        {"match": "(?s)" + child_q, "on": "any",
         "reply": repl("v = 'c$1'\nprint(len(context), v)")},
        {"match": "Turn 2 of", "reply": "FINAL_VAR(res)"},
        {"match": ".", "reply": repl(
            "res = rlm_query_batched(['child task %%d' %% i for i in range(%d)])\n"
            "assert res == ['c%%d' %% i for i in range(%d)], res[:3]\n"
            "res = ','.join(res)\nprint(len(res))" % (n, n))},
    ]


def run(build, n):
    from harness import FakeLM
    with tempfile.TemporaryDirectory() as d:
        ctx = os.path.join(d, "c.txt")
        with open(ctx, "w") as f:
            f.write("root input\n")
        with FakeLM(rules(n), latency_ms=LATENCY_MS) as lm:
            report, events, wall, peak_kb = run_rlm(build, lm, [
                "--max-depth", "2", "--max-children", str(n), "--concurrency", str(max(64, n)),
                "--context", ctx, "go"])
    want = ",".join("c%d" % i for i in range(n))
    if report["answer"] != want or report["children"] != n:
        raise SystemExit("wrong result: %s" % json.dumps(report)[:500])
    ready = [e["seconds"] for e in events if e["type"] == "sandbox_ready" and e["node"] != "0"]
    return wall, ready, peak_kb * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--children", type=int, default=64)
    args = ap.parse_args()
    os.environ["RLM_BUILD_DIR"] = os.path.abspath(args.build)
    import harness
    harness.FAKELM = os.path.join(os.environ["RLM_BUILD_DIR"], "fakelm")
    n = args.children
    ideal = 4 * LATENCY_MS / 1000.0
    print("machine: %d cores, %s; fake latency %d ms per reply" % (os.cpu_count(), os.uname().machine,
                                                                 LATENCY_MS))
    walls, readies, peaks, base_peaks, alone = [], [], [], [], []
    for _ in range(args.repeat):
        _, ready1, base = run(args.build, 1)
        base_peaks.append(base)
        alone.extend(ready1)
        wall, ready, peak = run(args.build, n)
        walls.append(wall)
        readies.extend(ready)
        peaks.append(peak)
    wall = statistics.median(walls)
    print("%d children, each a 2-turn RLM, all at once (median of %d runs)" % (n, args.repeat))
    print("  wall %.2f s   model latency on the critical path %.2f s   engine time beyond it %.2f s"
          "   (target < 3 s)" % (wall, ideal, wall - ideal))
    print("  runs: %s" % ", ".join("%.2f" % w for w in walls))
    print("  child sandbox ready, one child alone: median %.1f ms over %d starts   (target < 100 ms)"
          % (statistics.median(alone) * 1000, len(alone)))
    print("  child sandbox ready, %d starting at once: median %.1f ms, max %.1f ms over %d starts"
          % (n, statistics.median(readies) * 1000, max(readies) * 1000, len(readies)))
    peak, base = statistics.median(peaks), statistics.median(base_peaks)
    print("  peak RSS of the process tree: %.0f MB (1 child: %.0f MB); per extra child %.1f MB"
          "   (target < 30 MB + context)" % (peak / 1e6, base / 1e6, (peak - base) / (n - 1) / 1e6))


if __name__ == "__main__":
    main()
