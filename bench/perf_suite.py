#!/usr/bin/env python3
"""Performance suite (issue 7): fakelm in oracle mode at a fixed latency
(200 ms) answers generated tasks run by the real `rlm ask`. For each task it
prints wall time, CPU, peak memory of the host and of its sandbox children
(sampled from /proc every 50 ms), calls, the most calls in flight, and the
ideal time the latency allows:
    ceil(sub_calls / concurrency) * latency  +  root turns * latency.

usage: bench/perf_suite.py [--build DIR] [--latency-ms 200] [--only NAME,..] [--repeat N]
                           [--out FILE]
With --repeat N each task runs N times and the row shows the median of each
figure (the machine is often shared: one run is noise).
Standard library only. Task files go to a temp dir and are removed after each task.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proctree import tree_rss_kb  # noqa: E402

TASKS = [  # name, taskgen arguments
    ("sniah-1M", ["sniah", "--tokens", "1M"]),
    ("sniah-10M", ["sniah", "--tokens", "10M"]),
    ("sniah-100M", ["sniah", "--tokens", "100M"]),
    ("oolong-2K-lines", ["oolong", "--lines", "2000", "--variant", "0"]),
    ("oolong-20K-lines", ["oolong", "--lines", "20000", "--variant", "0"]),
    ("oolong-430K-lines", ["oolong", "--lines", "430000", "--variant", "0"]),
    ("sniah-subcalls-10M", ["sniah", "--tokens", "10M", "--subcalls"]),
    # The engine's own overhead: the 430K-line input sent as 4,300 slices, so
    # the model program holds nothing but the context and one copy of it in
    # the prompts (no lines list, no groups). Replies are "ok".
    ("slices-430K-lines", ["oolong", "--lines", "430000", "--variant", "0"]),
]

SLICE_CHARS = 8400
SLICES_SCRIPT = {
    "latency_ms": 0,
    "rules": [
        {"match": "(?i)turn 2 of", "reply": "Done.\nFINAL_VAR(result)"},
        {"match": "(?i)turn 1 of", "reply":
            "```repl\nprompts = [context[i:i + %d] for i in range(0, len(context), %d)]\n"
            "replies = llm_query_batched(prompts)\n"
            "result = str(sum(r == 'ok' for r in replies))\nprint(result)\n```" % (
                SLICE_CHARS, SLICE_CHARS)},
        {"match": "", "reply": "ok"},
    ],
}


def use_slices_script(task_dir, task):
    """Turns a generated task into the slices task: same input, own script and gold."""
    with open(os.path.join(task_dir, "script.json"), "w") as f:
        json.dump(SLICES_SCRIPT, f)
    task["gold"] = str(math.ceil(task["chars"] / SLICE_CHARS))
    with open(os.path.join(task_dir, "gold.txt"), "w") as f:
        f.write(task["gold"] + "\n")


def start_fakelm(build, task_dir, latency):
    port_file = os.path.join(task_dir, "port")
    proc = subprocess.Popen([os.path.join(build, "fakelm"), "--script",
                             os.path.join(task_dir, "script.json"), "--port-file", port_file,
                             "--latency-ms", str(latency)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(port_file):
            with open(port_file) as f:
                text = f.read().strip()
            if text:
                return proc, int(text)
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("fakelm did not start")


def run_task(build, name, args, latency, concurrency):
    task_dir = tempfile.mkdtemp(prefix="rlm-perf-")
    try:
        subprocess.run([os.path.join(build, "taskgen")] + args + ["--out", task_dir], check=True)
        with open(os.path.join(task_dir, "task.json")) as f:
            task = json.load(f)
        if name.startswith("slices-"):
            use_slices_script(task_dir, task)
        lm, port = start_fakelm(build, task_dir, latency)
        try:
            cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--json", "--no-log", "--model", "fakelm",
                   "--api-key", "fakelm", "--base-url", "http://127.0.0.1:%d/v1" % port,
                   "--concurrency", str(concurrency), "--mode", "rlm",
                   "--context", os.path.join(task_dir, "context.txt"),
                   "--question-file", os.path.join(task_dir, "question.txt")]
            # Output goes to files: a long answer (OOLONG-Pairs lists thousands
            # of pairs) would fill a pipe nobody reads while we sample.
            out_path, err_path = (os.path.join(task_dir, n) for n in ("stdout", "stderr"))
            with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
                t0 = time.time()
                r0 = os.times()
                proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f)
                host_peak = sandbox_peak = total_peak = 0
                while proc.poll() is None:
                    tree = tree_rss_kb(proc.pid)
                    host = tree.get(proc.pid, ("", 0))[1]
                    others = sum(rss for pid, (_, rss) in tree.items() if pid != proc.pid)
                    host_peak = max(host_peak, host)
                    sandbox_peak = max(sandbox_peak, others)
                    total_peak = max(total_peak, host + others)
                    time.sleep(0.05)
                wall = time.time() - t0
                r1 = os.times()
            with open(out_path) as f:
                stdout = f.read()
            with open(err_path) as f:
                stderr = f.read()
        finally:
            lm.terminate()
            lm.wait()
        report = json.loads(stdout) if stdout.strip() else {"answer": None, "error": stderr[-500:]}
        calls = sum(u.get("calls", 0) for u in report.get("usage", {}).values())
        sub_calls = report.get("sub_calls", 0)
        turns = report.get("iterations", 0)
        ideal = math.ceil(sub_calls / concurrency) * latency / 1000 + turns * latency / 1000
        with open(os.path.join(task_dir, "gold.txt")) as f:
            gold = f.read().strip()
        gold_file = os.path.join(task_dir, "gold-bare.txt")  # gold.txt ends in a newline
        with open(gold_file, "w") as f:
            f.write(task["gold"])
        score = subprocess.run([os.path.join(build, "taskgen"), "score", task["scoring"],
                                gold_file, "/dev/stdin"],
                               input=str(report.get("answer")), capture_output=True,
                               text=True).stdout.strip()
        return {
            "task": name, "chars": task["chars"], "tokens": task["tokens"], "lines": task["lines"],
            "score": float(score or 0), "answer": report.get("answer"), "gold": gold,
            "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
            "wall_over_ideal": round(wall / ideal, 2) if ideal else None,
            "cpu_s": round((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 2),
            "host_peak_mb": round(host_peak / 1024, 1), "sandbox_peak_mb": round(sandbox_peak / 1024, 1),
            "peak_mb": round(total_peak / 1024, 1),
            "peak_over_input": round(total_peak * 1024 / task["chars"], 2),
            "calls": calls, "sub_calls": sub_calls, "root_turns": turns,
            "max_in_flight": report.get("max_in_flight"), "status": report.get("status"),
        }
    finally:
        shutil.rmtree(task_dir, ignore_errors=True)


def median_row(runs):
    """One row from repeated runs: the median of every number, the worst score."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "score":
            row[key] = round(statistics.median(r[key] for r in runs if r.get(key) is not None), 2)
    row["score"] = min(r["score"] for r in runs)
    row["runs"] = len(runs)
    row["wall_s_all"] = [r["wall_s"] for r in runs]
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    rows = []
    hdr = "%-20s %10s %5s %8s %8s %6s %7s %8s %8s %8s %6s %5s" % (
        "task", "tokens", "score", "wall_s", "ideal_s", "ratio", "cpu_s", "host_MB", "sbox_MB",
        "peak/in", "calls", "infl")
    print(hdr)
    for name, args in TASKS:
        if only and name not in only:
            continue
        runs = [run_task(a.build, name, args, a.latency_ms, a.concurrency)
                for _ in range(max(1, a.repeat))]
        r = median_row(runs)
        rows.append(r)
        print("%-20s %10d %5.2f %8.2f %8.2f %6s %7.2f %8.1f %8.1f %8.2f %6d %5s" % (
            name, r["tokens"], r["score"], r["wall_s"], r["ideal_s"], r["wall_over_ideal"],
            r["cpu_s"], r["host_peak_mb"], r["sandbox_peak_mb"], r["peak_over_input"], r["calls"],
            r["max_in_flight"]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0 if all(r["score"] == 1.0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
