#!/usr/bin/env python3
"""log_bench — what the run log costs (issue 15: under 2% of the demo's wall
time, under 5 ms a run), as medians of alternating runs with the log (the
default) and with RLM_LOG=0:
  demo  `rlm demo`: each run's wall seconds and the CPU seconds of the whole
        process tree (user + system, from wait4's rusage: rlm, its sandbox
        and fakelm)
  ask   a small `rlm ask` (2 turns over 10 KB, fakelm at 20 ms a reply), 4
        runs a round: its wall milliseconds, the log's row written into a
        log that already holds the demo's runs
Alternating on/off runs spread the machine's load over both; the paired
difference (each round's runs with the log minus those without) is the
steadier figure.
Usage: bench/log_bench.py [--only demo|ask] [build-dir ...] [runs]   (default
build/, 7 runs; several build dirs are run in turn, round by round, to
compare them)
Everything it writes goes to a temporary directory (its own XDG homes too)."""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

ASK_RULES = [{"match": "(?i)turn 2 of", "reply": "FINAL_VAR(result)"},
             {"match": "LOG-BENCH", "reply": "```repl\nresult = str(len(context))\n```"},
             {"match": "", "reply": "ok"}]
ASK_PER_ROUND = 4


def run(cmd, env):
    """(wall s, cpu s) of one run of cmd; exits on a failure."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read()
    p.stderr.close()
    if p.returncode != 0:
        sys.exit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), err.decode()[-2000:]))
    return wall, ru.ru_utime + ru.ru_stime


def mean_line(pairs, base):
    """The mean of the paired differences with its standard error: on a
    noisy machine, what says how far a median of them can be trusted."""
    mean = statistics.mean(pairs)
    se = statistics.stdev(pairs) / len(pairs) ** 0.5 if len(pairs) > 1 else float("nan")
    return "mean of the %d paired differences: %+.1f ms (standard error %.1f ms) = %+.2f%% (%.2f%%)" % (
        len(pairs), mean * 1e3, se * 1e3, 100 * mean / base, 100 * se / base)


def ask_rounds(builds, runs, on, off, tmp):
    """The small `rlm ask` of each build with and without the log."""
    from harness import FakeLM
    context = os.path.join(tmp, "small.txt")
    with open(context, "w") as f:
        f.write("a line of the small input\n" * 400)
    got = {(b, mode): [] for b in builds for mode in ("log", "no log")}
    with FakeLM(ASK_RULES, latency_ms=20) as fake:
        for i in range(runs * ASK_PER_ROUND):
            for b in builds:
                cmd = [os.path.join(b, "rlm"), "ask", "--quiet", "--model", "fakelm", "--api-key", "fakelm",
                       "--base-url", fake.base_url, "--mode", "rlm", "--context", context,
                       "LOG-BENCH: how long is it? (%d)" % i]
                order = (("log", on), ("no log", off)) if i % 2 == 0 else (("no log", off), ("log", on))
                for mode, env in order:
                    got[(b, mode)].append(run(cmd, env)[0] * 1000)
    for b in builds:
        med = {m: statistics.median(got[(b, m)]) for m in ("log", "no log")}
        pairs = [a - n for a, n in zip(got[(b, "log")], got[(b, "no log")])]
        print("%s\n  rlm ask, small, medians of %d alternating runs: %.1f ms with the log, %.1f ms without "
              "(%+.1f ms; paired %+.1f ms; target < 5 ms)" % (b, len(pairs), med["log"], med["no log"],
                                                               med["log"] - med["no log"],
                                                               statistics.median(pairs)))
        print("  %s" % mean_line([p / 1000 for p in pairs], med["no log"] / 1000))


def main():
    args = sys.argv[1:]
    only = None
    if len(args) >= 2 and args[0] == "--only" and args[1] in ("demo", "ask"):
        only = args[1]
        args = args[2:]
    if any(a.startswith("-") for a in args):
        print(__doc__)
        sys.exit(0 if all(a in ("-h", "--help") for a in args) else 2)
    runs = int(args.pop()) if args and args[-1].isdigit() else 7
    builds = [os.path.abspath(a) for a in args] or [os.path.join(ROOT, "build")]
    for b in builds:
        if not os.access(os.path.join(b, "rlm"), os.X_OK):
            sys.exit("log_bench: no rlm binary in %s (give build directories, then a run count)" % b)
    tmp = tempfile.mkdtemp(prefix="rlm-log-bench-")
    try:
        on = dict(os.environ, XDG_DATA_HOME=os.path.join(tmp, "data"),
                  XDG_CACHE_HOME=os.path.join(tmp, "cache"), XDG_CONFIG_HOME=os.path.join(tmp, "config"))
        on.pop("RLM_LOG", None)
        off = dict(on, RLM_LOG="0")
        if only != "ask":
            run([os.path.join(builds[0], "rlm"), "demo"], off)   # warms the page cache
            got = {(b, mode): [] for b in builds for mode in ("log", "no log")}
            for i in range(runs):
                for b in builds:
                    rlm = os.path.join(b, "rlm")
                    order = (("log", on), ("no log", off)) if i % 2 == 0 else (("no log", off), ("log", on))
                    for mode, env in order:
                        got[(b, mode)].append(run([rlm, "demo"], env))
            for b in builds:
                print(b)
                for mode in ("log", "no log"):
                    v = got[(b, mode)]
                    print("  %-6s wall: %s" % (mode, ", ".join("%.2f" % w for w, _ in v)))
                    print("  %-6s cpu:  %s" % (mode, ", ".join("%.2f" % c for _, c in v)))
                wall = {m: statistics.median(w for w, _ in got[(b, m)]) for m in ("log", "no log")}
                cpu = {m: statistics.median(c for _, c in got[(b, m)]) for m in ("log", "no log")}
                # The paired difference of each round (log minus no log, run
                # back to back) is steadier than the difference of the medians.
                pairs = [a[0] - n[0] for a, n in zip(got[(b, "log")], got[(b, "no log")])]
                cpairs = [a[1] - n[1] for a, n in zip(got[(b, "log")], got[(b, "no log")])]
                print("  rlm demo, medians of %d alternating runs: wall %.2f s with the log, %.2f s without "
                      "(%+.1f%%; paired %+.1f%%; target < 2%%); CPU %.2f s with, %.2f s without (%+.2f s; "
                      "paired %+.2f s)" % (
                          runs, wall["log"], wall["no log"], 100 * (wall["log"] - wall["no log"]) / wall["no log"],
                          100 * statistics.median(pairs) / wall["no log"], cpu["log"], cpu["no log"],
                          cpu["log"] - cpu["no log"], statistics.median(cpairs)))
                print("  %s" % mean_line(pairs, wall["no log"]))
        if only != "demo":
            ask_rounds(builds, runs, on, off, tmp)
        db = os.path.join(tmp, "data", "rlm", "logs.db")
        if os.path.exists(db):
            print("log file at the end: %.1f MB" % (os.path.getsize(db) / 1e6))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
