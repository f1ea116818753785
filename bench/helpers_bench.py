"""The plain-Python side of helpers_bench: the grep patterns of helpers_bench.c
run as re.finditer loops over the same corpus (as model code would in the
sandbox), and SQLite FTS5 index builds and queries for the search comparison."""
import re
import sqlite3
import statistics
import sys
import time

path = sys.argv[1]
with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
mb = len(text) / 2**20

for pattern in [r"needle-\w+", r"ERROR id=\d+7 ", r"timeout\d+ retry"]:
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        hits, line, last = [], 1, 0
        for m in re.finditer(pattern, text):
            line += text.count("\n", last, m.start())
            last = m.start()
            hits.append((line, m.start()))
        times.append(time.monotonic() - t0)
    print(f"python re.finditer {pattern:20} over {mb:.0f} MB: median {statistics.median(times):.3f} s, {len(hits)} hits")

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
