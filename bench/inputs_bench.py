#!/usr/bin/env python3
"""Input and helper benchmarks of issue 5, through the real `rlm ask` against
fakelm (as tests/e2e/harness.py runs them). Prints medians of --reps runs.

  load-40M   a 40 MB (10M-token) ASCII file: sandbox start + context load
             (trace sandbox_ready.seconds) and the time until the first root
             request (trace root_request.t).                   target < 0.3 s
  grep-400M  over a 400 MB ASCII file with 100,000 hits, inside the sandbox:
               grep(r"needle-\\w+", max_hits=100000)  -> list of dicts
                   {doc, line, offset, text}
             against what model code writes to get the same data:
               [(line, m.start(), m.group(), <the line>) for m in
                re.finditer(p, context)] with the line number counted
               incrementally (context.count("\\n", last, m.start())) and the
               line cut out with rfind/find.                    target >= 5x
             Also the plain `[(m.start(), m.group()) ...]` loop (no lines),
             for reference.
  search-400M  search() over the same file: first call (index build) and
             the median of later queries.           targets < 20 s, < 10 ms
  tree-50k   a directory of 50,000 small source files: time until the first
             root request (trace root_request.t) and wall.     target < 3 s
  load-1B    a 4 GB ASCII file (written under --big-dir, deleted after): time
             until the first root request, and the peak RSS of rlm plus its
             children (VmRSS sampled every 20 ms).
                      targets < 30 s, peak < 1.5 x input + 200 MB

usage: bench/inputs_bench.py [--build DIR] [--only a,b] [--reps N] [--big-dir DIR]
load-1B only runs when named in --only (it needs 4 GB of disk and ~10 GB RAM).
Standard library only.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from proctree import own_and_rest_kb  # noqa: E402

QUESTION = "Benchmark the input please"


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


def rules_for(code):
    return [
        {"match": r"(?i)turn 3 of", "reply": "FINAL(done)"},
        {"match": r"(?i)turn 2 of", "reply": "FINAL(done)"},
        {"match": QUESTION, "reply": repl(code) if code else "FINAL(done)"},
    ]


def run(build, contexts, code, extra=(), sample_rss=False, timeout=900):
    """One `rlm ask` run; returns (trace events, wall seconds, peak RSS KiB as
    (host + children, host alone, children alone))."""
    tmp = tempfile.mkdtemp(prefix="rlm-bench-")
    try:
        with harness.FakeLM(rules_for(code)) as lm:
            trace = os.path.join(tmp, "trace.jsonl")
            cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--no-log", "--model", "root",
                   "--base-url", lm.base_url, "--api-key", "x", "--mode", "rlm",
                   "--trace", trace]
            for c in contexts:
                cmd += ["--context", c]
            cmd += list(extra) + [QUESTION]
            # a fresh cache: search() builds its index rather than loading it
            env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"))
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            peak = (0, 0, 0)
            if sample_rss:
                while proc.poll() is None:
                    host, kids = own_and_rest_kb(proc.pid)
                    peak = (max(peak[0], host + kids), max(peak[1], host), max(peak[2], kids))
                    time.sleep(0.02)
            out, err = proc.communicate(timeout=timeout)
            wall = time.monotonic() - t0
            if proc.returncode != 0:
                raise RuntimeError("rlm exited %d: %s" % (proc.returncode, err.decode()[-2000:]))
            with open(trace) as f:
                events = [json.loads(l) for l in f if l.strip()]
            return events, wall, peak
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def first(events, kind):
    return next(e for e in events if e["type"] == kind)


def outputs(events):
    return "".join(e.get("output") or "" for e in events if e["type"] == "code")


def write_ascii(path, total_bytes, hits=0):
    """Log-like ASCII lines; `hits` lines (spread evenly) hold needle-<n>."""
    line = b"2024-01-01 12:00:00 INFO server%d handled request user%d in %dms ok\n"
    block = b"".join(line % (i % 97, i % 1013, i % 500) for i in range(4096))
    n_blocks = max(1, total_bytes // len(block))
    every = max(1, (n_blocks * 4096) // hits) if hits else 0
    written = 0
    with open(path, "wb") as f:
        lines = block.split(b"\n")[:-1]
        n = 0
        for b in range(n_blocks):
            if every:
                out = []
                for ln in lines:
                    if n % every == 0 and written < hits:
                        ln = ln + b" needle-%d" % n
                        written += 1
                    out.append(ln)
                    n += 1
                f.write(b"\n".join(out) + b"\n")
            else:
                f.write(block)
    return written


def med(xs):
    return statistics.median(xs)


def bench_load(build, tmp, reps):
    path = os.path.join(tmp, "40M.txt")
    write_ascii(path, 40 * 1000 * 1000)
    ready, first_req = [], []
    for _ in range(reps):
        ev, _, _ = run(build, [path], None)
        ready.append(first(ev, "sandbox_ready")["seconds"])
        first_req.append(first(ev, "root_request")["t"])
    print("load-40M    sandbox start+load median %.3f s; first root request at %.3f s "
          "(target < 0.3 s)" % (med(ready), med(first_req)), flush=True)


GREP_CODE = r'''
import re, datetime
def now():
    return datetime.datetime.now().timestamp()
P = r"needle-\w+"
def lines_loop():
    hits, line, last = [], 1, 0
    for m in re.finditer(P, context):
        s = m.start()
        line += context.count("\n", last, s)
        last = s
        a = context.rfind("\n", 0, s) + 1
        b = context.find("\n", s)
        hits.append((line, s, m.group(), context[a:b if b >= 0 else len(context)]))
    return hits
def plain_loop():
    return [(m.start(), m.group()) for m in re.finditer(P, context)]
# cold: the first calls of the sandbox, in memory never touched before
t0 = now(); g = grep(P, max_hits=100000); cg = now() - t0
t0 = now(); hits = lines_loop(); cr = now() - t0
assert len(g) == len(hits), (len(g), len(hits))
assert all(h["line"] == x[0] and h["offset"] == x[1] and h["text"] == x[3] for h, x in zip(g, hits))
n = len(g)
del g, hits
# warm: each result is dropped before the next call, so every call reuses freed memory
tg, tr, tp = [], [], []
for _ in range(REPS):
    t0 = now(); g = grep(P, max_hits=100000); tg.append(now() - t0); del g
    t0 = now(); h = lines_loop(); tr.append(now() - t0); del h
    t0 = now(); p = plain_loop(); tp.append(now() - t0); del p
tg.sort(); tr.sort(); tp.sort()
print("GREP %d %.4f %.4f %.4f %.4f %.4f" % (n, tg[len(tg)//2], tr[len(tr)//2], tp[len(tp)//2], cg, cr))
'''

SEARCH_CODE = r'''
import datetime
def now():
    return datetime.datetime.now().timestamp()
t0 = now(); r = search("needle-5 server3", k=10); build = now() - t0
qs = ["needle-77 request", "user12 handled", "server9 ok", "needle-100", "request user1000"]
ts = []
for _ in range(REPS):
    for q in qs:
        t0 = now(); search(q, k=10); ts.append(now() - t0)
ts.sort()
print("SEARCH %.3f %.5f %.5f" % (build, ts[len(ts)//2], ts[-1]))
'''


def bench_grep(build, tmp, reps, path):
    ev, _, _ = run(build, [path], GREP_CODE.replace("REPS", str(reps)))
    out = outputs(ev)
    words = next(l for l in out.splitlines() if l.startswith("GREP")).split()
    n, tg, tr, tp, cg, cr = int(words[1]), *map(float, words[2:7])
    print("grep-400M   %d hits, warm medians: grep() %.3f s; re.finditer loop with lines %.3f s "
          "(%.1fx); plain [(start, group)] loop %.3f s (%.1fx) (target >= 5x)\n"
          "            cold first calls: grep() %.3f s; loop with lines %.3f s (%.1fx)"
          % (n, tg, tr, tr / tg, tp, tp / tg, cg, cr, cr / cg), flush=True)


def bench_search(build, tmp, reps, path):
    ev, _, _ = run(build, [path], SEARCH_CODE.replace("REPS", str(reps)))
    out = outputs(ev)
    words = next(l for l in out.splitlines() if l.startswith("SEARCH")).split()
    print("search-400M first search (build) %.2f s (target < 20 s); query median %.2f ms, "
          "max %.2f ms (target < 10 ms)" % (float(words[1]), float(words[2]) * 1e3,
                                            float(words[3]) * 1e3), flush=True)


def bench_tree(build, tmp, reps):
    root = os.path.join(tmp, "tree")
    body = "".join("int f%d(int x) { return x * %d; }\n" % (i, i) for i in range(40))
    for i in range(50000):
        d = os.path.join(root, "pkg%02d" % (i % 50), "mod%03d" % (i // 50 % 100))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "file%05d.c" % i), "w") as f:
            f.write(body)
    first_req, walls = [], []
    for _ in range(reps):
        ev, wall, _ = run(build, [root], None)
        first_req.append(first(ev, "root_request")["t"])
        walls.append(wall)
    print("tree-50k    first root request at %.3f s median (target < 3 s); whole run %.3f s"
          % (med(first_req), med(walls)), flush=True)


def bench_big(build, big_dir):
    path = os.path.join(big_dir, "rlm-bench-1B.txt")
    try:
        write_ascii(path, 4 * 10**9, hits=1000)
        size = os.path.getsize(path)
        ev, wall, peak = run(build, [path], "print(len(context))", sample_rss=True)
        limit = 1.5 * size / 1024 + 200 * 1024
        print("load-1B     %.2f GB: sandbox start+load %.2f s, ready at %.2f s, first root request at %.2f s "
              "(target < 30 s), whole run %.2f s;\n            peak RSS rlm+children %.0f MB "
              "= %.2fx input (target < %.0f MB); rlm alone %.0f MB, children alone %.0f MB"
              % (size / 1e9, first(ev, "sandbox_ready")["seconds"], first(ev, "sandbox_ready")["t"],
                 first(ev, "root_request")["t"],
                 wall, peak[0] / 1024, peak[0] * 1024 / size, limit / 1024, peak[1] / 1024,
                 peak[2] / 1024), flush=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--only", default="load-40M,grep-400M,search-400M,tree-50k")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-dir", default="/tmp")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    harness.FAKELM = os.path.join(build, "fakelm")
    only = set(a.only.split(","))
    tmp = tempfile.mkdtemp(prefix="rlm-inputs-bench-")
    try:
        if "load-40M" in only:
            bench_load(build, tmp, a.reps)
        if only & {"grep-400M", "search-400M"}:
            path = os.path.join(tmp, "400M.txt")
            write_ascii(path, 400 * 1000 * 1000, hits=100000)
            if "grep-400M" in only:
                bench_grep(build, tmp, a.reps, path)
            if "search-400M" in only:
                bench_search(build, tmp, a.reps, path)
            os.unlink(path)
        if "tree-50k" in only:
            bench_tree(build, tmp, a.reps)
        if "load-1B" in only:
            bench_big(build, a.big_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
