#!/usr/bin/env python3
"""The Python side of helpers_bench, in two modes.

  helpers_bench.py CORPUS
      The grep patterns of helpers_bench.c run as re.finditer loops over the
      same corpus in this interpreter, collecting what grep_run gives (line
      number, offset, match, the line), and SQLite FTS5 index builds and
      queries for the search comparison.

  helpers_bench.py --sandbox BUILD [--sandbox BUILD2] [--runs 10] [--reps 5] [CORPUS]
      grep() from model code against the equivalent re.finditer loop, both
      inside the sandbox of the real `rlm ask` (fakelm answers), over a
      400 MB ASCII log with 100,000 hit lines (bench/inputs_bench.py's
      corpus, written to a temp dir unless CORPUS is such a file). Each run
      is a fresh sandbox:
        cold  the first call of each in that sandbox, building its result
              in memory the process never touched (the input itself was
              touched while loading); odd runs call grep first, even runs
              the loop first;
        warm  --reps calls of each per pattern, every result dropped before
              the next call, so memory is reused.
      Printed: medians over all runs; with two builds (before and after),
      runs alternate between them so both share the machine's load. The
      loop is what a competent user writes for the same data: line numbers
      counted incrementally with str.count between matches, the line cut
      out with rfind/find, stopping at max_hits; grep's hits are checked
      equal to it, field by field (the loop builds tuples, grep dicts).
Standard library only.
"""
import argparse
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# pattern, grep flags, max_hits: 100,000 hits (building them dominates); one
# hit (the scan alone); none, case-insensitive (the scan alone).
SANDBOX_PATTERNS = [(r"needle-\w+", "", 100000), (r"needle-2394000\b", "", 1000), (r"TIMEOUT", "i", 1000)]

SANDBOX_CODE = r'''
import re, datetime, json
def now():
    return datetime.datetime.now().timestamp()
PATTERNS = PATTERNS_HERE
def loop(p, flags, max_hits):
    hits, line, last = [], 1, 0
    for m in re.finditer(p, context, re.I if "i" in flags else 0):
        if len(hits) == max_hits:
            break
        s = m.start()
        line += context.count("\n", last, s)
        last = s
        a = context.rfind("\n", 0, s) + 1
        b = context.find("\n", s)
        hits.append((line, s, m.group(), context[a:b if b >= 0 else len(context)]))
    return hits
def timed(f, *args):
    t0 = now()
    r = f(*args)
    return now() - t0, r
out = {"cold": {}, "warm": {}}
p, fl, mh = PATTERNS[0]
if GREP_FIRST:
    out["cold"]["grep"], g = timed(grep, p, fl, mh)
    out["cold"]["loop"], h = timed(loop, p, fl, mh)
else:
    out["cold"]["loop"], h = timed(loop, p, fl, mh)
    out["cold"]["grep"], g = timed(grep, p, fl, mh)
assert len(g) == len(h), (len(g), len(h))
assert all(x["line"] == y[0] and x["offset"] == y[1] and x["text"] == y[3] for x, y in zip(g, h))
del g, h
for p, fl, mh in PATTERNS:
    tg, tl = [], []
    for _ in range(REPS):
        t, g = timed(grep, p, fl, mh)
        tg.append(t)
        n = len(g)
        del g
        t, h = timed(loop, p, fl, mh)
        tl.append(t)
        assert len(h) == n, (p, len(h), n)
        del h
    out["warm"][p] = [n, tg, tl]
print("BENCH " + json.dumps(out))
'''


def sandbox_bench(builds, runs, reps, corpus):
    """Runs alternate between the builds, so a before/after pair shares the
    machine's load; each build's figures are printed apart."""
    sys.path.insert(0, HERE)
    import inputs_bench  # noqa: E402  (its harness runs `rlm ask` against fakelm)
    tmp = None
    if not corpus:
        tmp = tempfile.mkdtemp(prefix="rlm-grep-bench-")
        corpus = os.path.join(tmp, "400M.txt")
        inputs_bench.write_ascii(corpus, 400 * 1000 * 1000, hits=100000)
    results = {}
    for build in builds:
        results[build] = {
            "cold": {True: {"grep": [], "loop": []}, False: {"grep": [], "loop": []}},
            "warm": {p: {"grep": [], "loop": [], "hits": 0} for p, _, _ in SANDBOX_PATTERNS}}
    try:
        for r in range(runs):
            grep_first = r % 2 == 0
            code = (SANDBOX_CODE.replace("PATTERNS_HERE", repr(SANDBOX_PATTERNS))
                    .replace("GREP_FIRST", str(grep_first)).replace("REPS", str(reps)))
            for build in builds:
                inputs_bench.harness.FAKELM = os.path.join(build, "fakelm")
                events, _, _ = inputs_bench.run(build, [corpus], code)
                out = inputs_bench.outputs(events)
                line = next((l for l in out.splitlines() if l.startswith("BENCH ")), None)
                if not line:
                    raise RuntimeError("no result from the sandbox:\n" + out[-3000:])
                res = json.loads(line[6:])
                cold, warm = results[build]["cold"], results[build]["warm"]
                for k in ("grep", "loop"):
                    cold[grep_first][k].append(res["cold"][k])
                for p, (n, tg, tl) in res["warm"].items():
                    warm[p]["grep"] += tg
                    warm[p]["loop"] += tl
                    warm[p]["hits"] = n
    finally:
        if tmp:
            os.unlink(corpus)
            os.rmdir(tmp)
    med = statistics.median
    for build in builds:
        cold, warm = results[build]["cold"], results[build]["warm"]
        print("%s: grep() vs the equivalent re.finditer loop, in the sandbox, %d runs (fresh "
              "sandboxes) x %d warm calls each, medians:" % (build, runs, reps))
        for p, flags, max_hits in SANDBOX_PATTERNS:
            w = warm[p]
            g, l = med(w["grep"]), med(w["loop"])
            print("  warm  %-18s flags=%-3r max_hits=%-6d %6d hits: grep %.3f s, loop %.3f s: %.1fx"
                  % (p, flags, max_hits, w["hits"], g, l, l / g))
        for first in (True, False):
            c = cold[first]
            if c["grep"]:
                g, l = med(c["grep"]), med(c["loop"])
                print("  cold  %-18s (%s first, %d runs): grep %.3f s, loop %.3f s: %.1fx"
                      % (SANDBOX_PATTERNS[0][0], "grep" if first else "loop", len(c["grep"]), g,
                         l, l / g))
        gs = cold[True]["grep"] + cold[False]["grep"]
        ls = cold[True]["loop"] + cold[False]["loop"]
        ratios = [b / a for a, b in zip(gs, ls)]
        print("  cold  %-18s (all %d runs): grep %.3f s, loop %.3f s: %.1fx; grep %.3f-%.3f s, "
              "per run %.1f-%.1fx" % (SANDBOX_PATTERNS[0][0], runs, med(gs), med(ls),
                                      med(ls) / med(gs), min(gs), max(gs), min(ratios),
                                      max(ratios)))


def corpus_bench(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    mb = len(text) / 2**20
    for pattern in [r"needle-\w+", r"ERROR id=\d+7 ", r"timeout\d+ retry"]:
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            hits, line, last = [], 1, 0
            for m in re.finditer(pattern, text):
                s = m.start()
                line += text.count("\n", last, s)
                last = s
                a = text.rfind("\n", 0, s) + 1
                b = text.find("\n", s)
                hits.append((line, s, m.group(), text[a:b if b >= 0 else len(text)]))
            times.append(time.monotonic() - t0)
        print(f"python re.finditer {pattern:20} over {mb:.0f} MB: median {statistics.median(times):.3f} s, "
              f"{len(hits)} hits (line, offset, match and line, as grep_run gives)")

    # FTS5 over the same 2,000-character pieces (lines kept whole), in memory.
    sample_mb = min(mb, 100)
    chunks, cur, size = [], [], 0
    for ln in text[: int(sample_mb * 2**20)].splitlines(keepends=True):
        if size + len(ln) > 2000 and cur:
            chunks.append("".join(cur))
            cur, size = [], 0
        cur.append(ln)
        size += len(ln)
    if cur:
        chunks.append("".join(cur))
    db = sqlite3.connect(":memory:")
    db.execute("create virtual table t using fts5(body)")
    t0 = time.monotonic()
    db.executemany("insert into t(body) values (?)", ((c,) for c in chunks))
    db.commit()
    build = time.monotonic() - t0
    qs = ["needle OR haystack", "timeout123 OR retry55 OR server9", "error", "info OR user1",
          "alpha1 OR beta2 OR gamma3 OR delta4"]
    times = []
    for _ in range(5):
        for q in qs:
            t0 = time.monotonic()
            db.execute("select rowid, bm25(t) from t where t match ? order by bm25(t) limit 10", (q,)).fetchall()
            times.append(time.monotonic() - t0)
    print(f"sqlite fts5 build over {sample_mb:.0f} MB: {build:.2f} s ({build * mb / sample_mb:.1f} s scaled to {mb:.0f} MB); "
          f"query median {statistics.median(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?")
    ap.add_argument("--sandbox", metavar="BUILD", action="append",
                    help="a build directory; given twice, runs alternate between the two")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    if a.sandbox:
        sandbox_bench([os.path.abspath(b) for b in a.sandbox], a.runs, a.reps, a.corpus)
    elif a.corpus:
        corpus_bench(a.corpus)
    else:
        ap.error("give a corpus, or --sandbox BUILD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
