#!/usr/bin/env python3
"""view_bench — the costs of seeing a run (issue 15's targets), as medians:
  1. `rlm view` on the demo's trace (10M tokens, 4,935 sub-calls, ~17 MB):
     wall seconds to write the page                         target < 1 s
  2. that page in headless Chromium: ms from navigation to the viewer being
     interactive (its tree, answer and first node drawn)    target < 2 s
  3. the run log: a small `rlm ask` against fakelm with and without it, and
     the whole demo with and without it                     targets < 5 ms a
     run, < 2% of the demo's wall time
Usage: bench/view_bench.py [build-dir] [runs]   (default build/, 5 runs)
Everything it writes goes to a temporary directory (its own XDG homes too)."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


def timed(cmd, env, **kw):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))
    return time.monotonic() - t0, p


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    os.environ["RLM_BUILD_DIR"] = build
    rlm = os.path.join(build, "rlm")
    tmp = tempfile.mkdtemp(prefix="rlm-view-bench-")
    try:
        env = dict(os.environ, XDG_DATA_HOME=os.path.join(tmp, "data"),
                   XDG_CACHE_HOME=os.path.join(tmp, "cache"), XDG_CONFIG_HOME=os.path.join(tmp, "config"))
        off = dict(env, RLM_LOG="0")
        trace = os.path.join(tmp, "demo.jsonl")
        timed([rlm, "demo", "--trace", trace], off, timeout=900)
        print("demo trace: %.1f MB" % (os.path.getsize(trace) / 1e6))

        # 1. rlm view
        page = os.path.join(tmp, "demo.html")
        view = [timed([rlm, "view", trace, "-o", page], env)[0] for _ in range(runs)]
        print("rlm view on the demo's trace: median %.3f s (runs: %s)  target < 1 s" %
              (statistics.median(view), ", ".join("%.3f" % v for v in view)))

        # 2. interactive in Chromium
        import browser
        why = browser.chromium_or_reason()
        if why:
            print("page interactive: not measured: " + why)
        else:
            ready = []
            for _ in range(runs):
                b = browser.Page()
                try:
                    ready.append(b.open_viewer(page, timeout=60))
                finally:
                    b.close()
            print("page interactive in headless Chromium: median %.0f ms (runs: %s)  target < 2000 ms" %
                  (statistics.median(ready), ", ".join("%.0f" % r for r in ready)))

        # 3. the run log: a small ask, then the demo, alternately on and off
        from harness import FakeLM, repl
        rules = [{"match": r"^sub$", "reply": "ok"},
                 {"match": r"REPL", "reply": "FINAL(done)"},
                 {"match": r"go", "reply": repl('print(llm_query("sub"))')}]
        ctx = os.path.join(tmp, "input.txt")
        with open(ctx, "w") as f:
            f.write("a line of input\n" * 1000)
        small = {"on": [], "off": []}
        with FakeLM(rules) as lm:
            cmd = [rlm, "ask", "--quiet", "--mode", "rlm", "--model", "m", "--base-url", lm.base_url,
                   "--api-key", "x", "--context", ctx, "go"]
            for i in range(3 * runs):
                for mode in ("on", "off"):
                    small[mode].append(timed(cmd, env if mode == "on" else off)[0])
        on, offm = statistics.median(small["on"]), statistics.median(small["off"])
        print("small rlm ask: median %.1f ms with the log, %.1f ms without: +%.1f ms  target < 5 ms" %
              (on * 1e3, offm * 1e3, (on - offm) * 1e3))
        # The demo: with the log (its default), with neither log nor trace,
        # and with a trace file and no log (what every demo did before the log).
        demo = {"log": [], "nothing": [], "trace file": []}
        spare = os.path.join(tmp, "spare.jsonl")
        for i in range(runs):
            demo["log"].append(timed([rlm, "demo"], env, timeout=900)[0])
            demo["nothing"].append(timed([rlm, "demo"], off, timeout=900)[0])
            demo["trace file"].append(timed([rlm, "demo", "--trace", spare], off, timeout=900)[0])
        med = {k: statistics.median(v) for k, v in demo.items()}
        print("rlm demo (whole process): median %.2f s with the log, %.2f s with neither log nor trace "
              "(%+.1f%%), %.2f s with a trace file and no log (%+.1f%%)  target < 2%%" % (
                  med["log"], med["nothing"], 100 * (med["log"] - med["nothing"]) / med["nothing"],
                  med["trace file"], 100 * (med["log"] - med["trace file"]) / med["trace file"]))
        for k, v in demo.items():
            print("  %s: %s" % (k, ", ".join("%.2f" % x for x in v)))
        print("log file after %d demos and %d asks: %.1f MB" % (
            runs, 3 * runs, os.path.getsize(os.path.join(tmp, "data", "rlm", "logs.db")) / 1e6))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
