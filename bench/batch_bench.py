#!/usr/bin/env python3
"""rlm batch benchmarks against the fake server (issue 18's targets). Prints
measured figures (medians over --repeat runs); asserts only that every task
was answered once. Run after building:

    python3 bench/batch_bench.py [--build build] [--tasks 2000] [--repeat 1]
                                 [--tasks-in-flight 96] [--slurm] [--slurm-tasks 400]

Every task is 2 root turns and one batch of 10 sub-calls over its own 100 KB
input; every model reply takes 200 ms. With --concurrency 256 the model
alone bounds the run at (tasks x 12 requests x 0.2 s) / 256 — the limit that
concurrency sets (18.75 s for 2,000 tasks). Reported:

  - wall time and its ratio to that limit                 (target < 1.3)
  - peak memory of the whole process tree (rlm, zygotes, sandboxes), as
    proportional set size (shared pages counted once), against
    100 MB + 10 MB per task in flight                     (target: under it)
  - the ledger's cost per task (its commits, timed by rlm batch)  (< 1 ms)
  - BATCH_BENCH_LOG=1 keeps the run log on (every task recorded, as by
    default; the log goes to a temporary XDG_DATA_HOME); else --no-log
  - with --slurm: the same kind of batch (--slurm-tasks tasks) as 1, 2 and 4
    shards of an array job on a local single-node Slurm (tests/e2e/slurm_local.py):
    wall from submission to the last shard's end, and the speed-up
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
sys.path.insert(0, HERE)
from proctree import tree_pss_kb  # noqa: E402

LATENCY_MS = 200
SUB_CALLS = 10
INPUT_BYTES = 100 * 1024


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


def rules():
    return [
        {"match": r"^Part (\d+) of task (\d+):", "reply": "p$1-t$2"},
        {"match": "(?i)turn 2 of", "reply": repl("FINAL(found)")},
        {"match": r"(?s)Question (\d+): summarise", "reply": repl(
            "step = len(context) // %d\n"
            "parts = [context[i * step:(i + 1) * step] for i in range(%d)]\n"
            "got = llm_query_batched(['Part %%d of task $1: %%s' %% (i, p[:200]) for i, p in enumerate(parts)])\n"
            "found = 'task $1: ' + ','.join(got)\nprint(len(found))" % (SUB_CALLS, SUB_CALLS))},
    ]


def write_inputs(d, n):
    os.makedirs(os.path.join(d, "in"), exist_ok=True)
    line = "2026-01-01 12:00:00 worker-3 request served in 12 ms from cache shard 7\n"
    text = (line * (INPUT_BYTES // len(line) + 1))[:INPUT_BYTES]
    tasks = os.path.join(d, "tasks.jsonl")
    with open(tasks, "w") as f:
        for i in range(n):
            name = "in/doc%05d.txt" % i
            with open(os.path.join(d, name), "w") as g:
                g.write("doc %d\n" % i + text)
            f.write(json.dumps({"id": "t%d" % i, "question": "Question %d: summarise the log" % i,
                                "inputs": [name]}) + "\n")
    return tasks


class PeakPss(threading.Thread):
    def __init__(self, pid, interval=0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kb, self._done = pid, interval, 0, False

    def run(self):
        while not self._done:
            self.peak_kb = max(self.peak_kb, tree_pss_kb(self.pid))
            time.sleep(self.interval)

    def stop(self):
        self._done = True
        self.join()


def read_results(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def batch_command(build, lm, tasks, out, in_flight, concurrency, extra=()):
    log = [] if os.environ.get("BATCH_BENCH_LOG") == "1" else ["--no-log"]
    return [os.path.join(os.path.abspath(build), "rlm"), "batch", tasks, "--out", out, "--json", "-q"] + log + [
            "--mode", "rlm", "--model", "root", "--sub-model", "sub",
            "--base-url", lm.base_url, "--concurrency", str(concurrency),
            "--tasks-in-flight", str(in_flight)] + list(extra)


def one_run(build, d, tasks, n, in_flight, concurrency):
    from harness import FakeLM
    out = os.path.join(d, "results.jsonl")
    for leftover in (out, out + ".ledger", out + ".ledger-wal", out + ".ledger-shm"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    with FakeLM(rules(), latency_ms=LATENCY_MS) as lm:
        cmd = batch_command(build, lm, tasks, out, in_flight, concurrency)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mem = PeakPss(proc.pid)
        mem.start()
        stdout, stderr = proc.communicate()
        wall = time.monotonic() - start
        mem.stop()
        counters = lm.counters()
    if proc.returncode != 0:
        raise SystemExit("rlm batch failed (%d): %s" % (proc.returncode, stderr[-3000:]))
    results = read_results(out)
    ids = [r["id"] for r in results]
    assert len(ids) == n == len(set(ids)), "tasks missing or twice"
    assert all(r["status"] == "answered" for r in results)
    assert all(r["answer"].startswith("task %s: p0-t%s" % (r["id"][1:], r["id"][1:])) for r in results)
    summary = json.loads(stdout)
    return wall, mem.peak_kb, summary["ledger_ms_per_task"], counters["max_in_flight"], counters["requests"]


def bench_one_machine(build, n, repeat, in_flight, concurrency):
    limit = n * (2 + SUB_CALLS) * LATENCY_MS / 1000.0 / concurrency
    walls, peaks, ledger, max_flight = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        tasks = write_inputs(d, n)
        for _ in range(repeat):
            wall, peak, led, mif, req = one_run(build, d, tasks, n, in_flight, concurrency)
            walls.append(wall)
            peaks.append(peak)
            ledger.append(led)
            max_flight.append(mif)
            assert req == n * (2 + SUB_CALLS), req
    wall = statistics.median(walls)
    budget_mb = 100 + 10 * in_flight
    print("one machine: %d tasks x (2 root turns + %d sub-calls over %d KB), %d ms per reply, "
          "--concurrency %d, --tasks-in-flight %d" % (n, SUB_CALLS, INPUT_BYTES // 1024, LATENCY_MS,
                                                      concurrency, in_flight))
    print("  wall %.1f s (median of %d: %s); limit set by the concurrency %.2f s; ratio %.2f (target < 1.3)"
          % (wall, len(walls), ", ".join("%.1f" % w for w in walls), limit, wall / limit))
    print("  requests in flight at the server, at most: %d" % statistics.median(max_flight))
    print("  peak memory (PSS of rlm + zygotes + sandboxes) %.0f MB; budget 100 MB + 10 MB x %d = %d MB"
          % (statistics.median(peaks) / 1024, in_flight, budget_mb))
    print("  ledger %.3f ms per task (target < 1 ms)" % statistics.median(ledger))


def bench_slurm(build, n, in_flight, concurrency):
    from harness import FakeLM
    from slurm_local import LocalSlurm, SlurmUnavailable
    try:
        slurm = LocalSlurm().start()
    except SlurmUnavailable as e:
        print("slurm: skipped: %s" % e)
        return
    try:
        d = tempfile.mkdtemp(prefix="rlm-bench-slurm-")
        os.chmod(d, 0o755)
        tasks = write_inputs(d, n)
        walls = {}
        with FakeLM(rules(), latency_ms=LATENCY_MS) as lm:
            for shards in (1, 2, 4):
                out_dir = os.path.join(d, "s%d" % shards)
                os.mkdir(out_dir)
                cmd = batch_command(build, lm, tasks, os.path.join(out_dir, "r.{shard}.jsonl"), in_flight,
                                    concurrency, ["--shards", str(shards)])
                job = os.path.join(out_dir, "job.sbatch")
                with open(job, "w") as f:
                    f.write("#!/bin/bash\nexec " + " ".join("'%s'" % c for c in cmd) + "\n")
                start = time.monotonic()
                slurm.sbatch(["--array=0-%d" % (shards - 1), "--chdir", out_dir,
                              "-o", os.path.join(out_dir, "slurm-%a.out"), job])
                slurm.wait_idle(3600)
                walls[shards] = time.monotonic() - start
                got = sum(len(read_results(os.path.join(out_dir, "r.%d.jsonl" % i))) for i in range(shards))
                assert got == n, "shards of %d: %d results of %d" % (shards, got, n)
        print("local Slurm (1 node, %d cores): %d tasks, --tasks-in-flight %d and --concurrency %d per shard"
              % (os.cpu_count(), n, in_flight, concurrency))
        for shards, wall in walls.items():
            print("  %d shard%s: %.1f s (speed-up %.2f)" % (shards, "s" if shards > 1 else "", wall,
                                                        walls[1] / wall))
        shutil.rmtree(d, ignore_errors=True)
    finally:
        slurm.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tasks-in-flight", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--slurm", action="store_true")
    ap.add_argument("--slurm-only", action="store_true")
    ap.add_argument("--slurm-tasks", type=int, default=400)
    ap.add_argument("--slurm-in-flight", type=int, default=16)
    args = ap.parse_args()
    os.environ["RLM_BUILD_DIR"] = os.path.abspath(args.build)
    if not args.slurm_only:
        bench_one_machine(args.build, args.tasks, args.repeat, args.tasks_in_flight, args.concurrency)
    if args.slurm or args.slurm_only:
        bench_slurm(args.build, args.slurm_tasks, args.slurm_in_flight, 64)


if __name__ == "__main__":
    main()
