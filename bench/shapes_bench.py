#!/usr/bin/env python3
"""shapes_bench — the three shapes of work issue 20 names, against fakelm at a
fixed latency (200 ms) and --concurrency 64, each as the median of several runs:

  batch    one llm_query_batched of 4,302 prompts of 10 KB (a 43 MB input):
           wall time against the ideal (2 root turns + ceil(4302/64) waves),
           and how long after the call the first sub-call request left
           (targets: 1.10x, 20 ms)
  slices   399 prompts of 100,000 characters sliced from a 40 MB input in one
           batch: the peak memory (PSS) of the process tree against the input
           (target: input + the prompts the code built + those in flight + 40 MB)
  short    a 2-turn run over a 4 MB input: engine time beyond model time
           (target: 40 ms)

usage: bench/shapes_bench.py [--build DIR] [--runs N] [--only batch,slices,short]
Standard library only; everything it writes goes to a temporary directory."""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from proctree import tree_pss_kb  # noqa: E402

LATENCY = 0.2
CONCURRENCY = 64


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


class Peak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.done = pid, 0, False

    def run(self):
        while not self.done:
            self.peak_kb = max(self.peak_kb, tree_pss_kb(self.pid))
            time.sleep(0.02)


class Fake:
    """fakelm on a script, at LATENCY for every request."""

    def __init__(self, build, tmp, rules):
        self.dir = tempfile.mkdtemp(dir=tmp)
        script = os.path.join(self.dir, "script.json")
        with open(script, "w") as f:
            json.dump({"rules": rules}, f)
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([os.path.join(build, "fakelm"), "--script", script, "--port-file",
                                      port_file, "--latency-ms", str(int(LATENCY * 1000))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(3000):
            if os.path.exists(port_file) and open(port_file).read().strip():
                self.url = "http://127.0.0.1:%s/v1" % open(port_file).read().strip()
                return
            time.sleep(0.01)
        self.proc.kill()
        sys.exit("fakelm did not start")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def run(build, fake, context, trace, question="SHAPE-BENCH: how many?", sample=False):
    cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--json", "--no-log", "--model", "fakelm",
           "--api-key", "fakelm", "--base-url", fake.url, "--concurrency", str(CONCURRENCY),
           "--mode", "rlm", "--context", context, "--trace", trace, question]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = Peak(proc.pid) if sample else None
    if peak:
        peak.start()
    out, err = proc.communicate(timeout=900)
    wall = time.monotonic() - t0
    if peak:
        peak.done = True
        peak.join()
    if proc.returncode != 0:
        sys.exit("rlm failed (%d): %s" % (proc.returncode, err[-2000:]))
    with open(trace) as f:
        events = [json.loads(line) for line in f if line.strip()]
    return wall, json.loads(out), events, peak.peak_kb if peak else 0


def write_input(tmp, name, size):
    path = os.path.join(tmp, name)
    # Numbered lines: no two prompts are alike, so deduplication sends every one.
    tail = "".join(chr(97 + i % 26) for i in range(90)) + "\n"
    with open(path, "w") as f:
        f.write("".join("%08d " % i + tail for i in range(size // 100)))
    return path


def shape_batch(build, tmp, runs):
    n, size = 4302, 10000
    context = write_input(tmp, "batch.txt", n * size)
    code = ("import datetime\nprompts = [context[i * %d:(i + 1) * %d] for i in range(%d)]\n"
            "print('CALL', repr(datetime.datetime.now().timestamp()))\nreplies = llm_query_batched(prompts)\n"
            "result = str(len(replies))\nprint(result)" % (size, size, n))
    rules = [{"match": "(?i)turn 2 of", "reply": "FINAL_VAR(result)"},
             {"match": "SHAPE-BENCH", "reply": repl(code)},
             {"match": "", "reply": "ok"}]
    fake = Fake(build, tmp, rules)
    ideal = 2 * LATENCY + math.ceil(n / CONCURRENCY) * LATENCY
    walls, firsts = [], []
    try:
        for i in range(runs):
            wall, report, events, _ = run(build, fake, context, os.path.join(tmp, "batch.jsonl"))
            assert report["answer"] == str(n), report["answer"]
            out = [e for e in events if e["type"] == "code"][0]["output"]
            called = float(out.split("CALL ", 1)[1].split()[0])
            # The batch_start event is written as the batch begins; each
            # sub_call says when its request first went on the wire after it.
            begun = [e["time"] for e in events if e["type"] == "batch_start"][0]
            first = begun + min(e["sent_seconds"] for e in events
                                if e["type"] == "sub_call" and e.get("sent_seconds") is not None)
            walls.append(wall)
            firsts.append((first - called) * 1000)
    finally:
        fake.close()
    w = statistics.median(walls)
    print("batch   %d prompts of %d KB in one call: median %.2f s, ideal %.2f s = %.3fx (target 1.10x); "
          "first request %.1f ms after the call (target 20 ms)  [walls %s]"
          % (n, size // 1000, w, ideal, w / ideal, statistics.median(firsts),
             ", ".join("%.2f" % x for x in walls)))


def shape_slices(build, tmp, runs):
    n, size = 399, 100000
    input_bytes = 40 * 1000 * 1000
    context = write_input(tmp, "slices.txt", input_bytes)
    code = ("step = len(context) // %d\nprompts = [context[i * step:i * step + %d] for i in range(%d)]\n"
            "replies = llm_query_batched(prompts)\nresult = str(len(replies))" % (n, size, n))
    rules = [{"match": "(?i)turn 2 of", "reply": "FINAL_VAR(result)"},
             {"match": "SHAPE-BENCH", "reply": repl(code)},
             {"match": "", "reply": "ok"}]
    fake = Fake(build, tmp, rules)
    peaks = []
    try:
        for i in range(runs):
            _, report, _, peak = run(build, fake, context, os.path.join(tmp, "slices.jsonl"), sample=True)
            assert report["answer"] == str(n), report["answer"]
            peaks.append(peak / 1024)
    finally:
        fake.close()
    built = n * size / 2 ** 20
    flight = CONCURRENCY * size / 2 ** 20
    target = input_bytes / 2 ** 20 + built + flight + 40
    print("slices  %d prompts of %d chars from a %d MB input: peak PSS of the tree median %.0f MiB "
          "(%.1fx the input; target %.0f MiB)  [peaks %s]"
          % (n, size, input_bytes // 10 ** 6, statistics.median(peaks),
             statistics.median(peaks) / (input_bytes / 2 ** 20), target,
             ", ".join("%.0f" % p for p in peaks)))


def shape_short(build, tmp, runs):
    context = write_input(tmp, "short.txt", 4 * 1000 * 1000)
    rules = [{"match": "(?i)turn 2 of", "reply": "FINAL_VAR(result)"},
             {"match": "SHAPE-BENCH", "reply": repl("result = str(len(context))")},
             {"match": "", "reply": "ok"}]
    fake = Fake(build, tmp, rules)
    extra = []
    try:
        for i in range(runs):
            wall, report, _, _ = run(build, fake, context, os.path.join(tmp, "short.jsonl"))
            extra.append((wall - 2 * LATENCY) * 1000)
    finally:
        fake.close()
    print("short   2 turns over 4 MB: engine time beyond model time median %.0f ms (target 40 ms)  "
          "[%s]" % (statistics.median(extra), ", ".join("%.0f" % x for x in extra)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="batch,slices,short")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    tmp = tempfile.mkdtemp(prefix="rlm-shapes-")
    try:
        for name in a.only.split(","):
            {"batch": shape_batch, "slices": shape_slices, "short": shape_short}[name](build, tmp, a.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
