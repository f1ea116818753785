#!/usr/bin/env python3
"""How long a JSON lines input takes to load, against the same bytes read as
text: the sandbox parses a .jsonl file into a list of dicts (docs/inputs.md).
Prints measured figures (medians); asserts nothing. Run after building:

    python3 bench/json_input_bench.py [--build build] [--mb 100] [--repeat 5]

Each run is one `rlm ask` against the fake server whose first cell counts the
records; the figure is the sandbox's start-up (the trace's sandbox_ready
seconds: copy, parse, summary), and the peak memory of host + sandbox.
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
from ask_bench import repl, run_rlm  # noqa: E402


def write_jsonl(path, megabytes):
    """Deterministic records of a few fields each (about 200 bytes a line)."""
    rng = random.Random(1)
    size = count = 0
    with open(path, "w") as f:
        while size < megabytes << 20:
            rec = {"id": count, "user": "user%d" % (count % 1000),
                   "text": ("lorem ipsum dolor sit amet %d " % count) * 3,
                   "tags": ["a", "b", "c"][: count % 3 + 1], "score": rng.random(),
                   "ok": count % 2 == 0}
            line = json.dumps(rec) + "\n"
            f.write(line)
            size += len(line)
            count += 1
    return count, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from harness import FakeLM
    tmp = tempfile.mkdtemp(prefix="rlm-json-bench-")
    jsonl = os.path.join(tmp, "records.jsonl")
    records, size = write_jsonl(jsonl, args.mb)
    text = os.path.join(tmp, "records.txt")
    os.link(jsonl, text)
    print("input: %d records, %d bytes" % (records, size))
    rules = [{"match": "COUNTED", "reply": "FINAL(done)"},
             {"match": ".", "reply": repl("print('COUNTED', len(context))")}]
    for name, path in (("text (.txt)", text), ("JSON lines (.jsonl)", jsonl)):
        starts, peaks = [], []
        for _ in range(args.repeat):
            with FakeLM(rules) as lm:
                _, events, _, peak_kb = run_rlm(args.build, lm, ["--context", path, "q"])
            ready = [e for e in events if e["type"] == "sandbox_ready"]
            starts.append(ready[0]["seconds"])
            peaks.append(peak_kb / 1024)
        print("%-20s sandbox start %.2f s (median of %d; min %.2f, max %.2f), peak %.0f MB" % (
            name, statistics.median(starts), len(starts), min(starts), max(starts),
            statistics.median(peaks)))
    os.unlink(text)
    os.unlink(jsonl)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
