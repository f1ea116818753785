#!/usr/bin/env python3
"""short_bench — issue 20's short runs: a 2-turn RLM over a 4 MB input, one
`rlm ask` at a time and 1,000 of them in one `rlm batch` process and in one
`rlm serve` process, against fakelm at a fixed small latency (--latency-ms,
default 50). What the engine costs per run, beside the model:

  ask    wall of one `rlm ask` process minus the two model replies
         (target: 40 ms at 200 ms a reply, as shapes_bench measures it:
         --only ask --latency-ms 200; at 50 ms the spawned sandbox's start,
         ~90 ms, is no longer hidden behind the first reply); median of --runs
  batch  --tasks tasks (default 1,000) in one `rlm batch`, --in-flight at once,
  serve  the same through one `rlm serve` (--max-runs = --in-flight, a
         named input of 4 MB; the clients keep --in-flight requests open)

For batch and serve three figures, as medians where they are per run:
  - latency: a run's own elapsed time (the result line's elapsed_seconds;
    for serve the client's request time) minus its 2 model replies
  - amortized: (wall - ideal) x in_flight / tasks, the ideal being
    ceil(tasks / in_flight) x 2 replies: the engine time each run adds to
    the whole (target: 10 ms)
  - CPU: the CPU seconds of the rlm process and every sandbox it reaped,
    per run (fakelm's and the clients' are not counted)

With --log the runs are recorded in the run log (as by default; the log goes
to the temporary directory), else --no-log.

usage: bench/short_bench.py [--build DIR] [--only ask,batch,serve] [--log]
                            [--tasks N] [--in-flight N] [--latency-ms N] [--runs N]
Standard library only; everything it writes goes to a temporary directory."""
import argparse
import http.client
import json
import math
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

QUESTION = "SHORT-BENCH: how long is it? (%d)"


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


RULES = [{"match": "(?i)turn 2 of", "reply": "FINAL_VAR(result)"},
         {"match": "SHORT-BENCH", "reply": repl("result = str(len(context))")},
         {"match": "", "reply": "ok"}]


LOG = ["--no-log"]


def endpoint(fake):
    return ["--model", "fakelm", "--api-key", "fakelm", "--base-url", fake.base_url, "--mode", "rlm"] + LOG


def wait_cpu(proc):
    """Waits for proc: its CPU seconds and those of every child it reaped."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def write_input(tmp):
    path = os.path.join(tmp, "short.txt")
    line = "".join(chr(97 + i % 26) for i in range(99)) + "\n"
    with open(path, "w") as f:
        f.write(line * (4 * 1000 * 1000 // len(line)))
    return path


def summary(name, a, wall, lat, cpu):
    ideal = math.ceil(a.tasks / a.in_flight) * 2 * a.latency_ms / 1000
    amortized = (wall - ideal) * a.in_flight / a.tasks * 1000
    lat = sorted(lat)
    print("%-6s %d runs, %d at once: wall %.2f s (ideal %.2f s); engine time per run: amortized "
          "%.1f ms (target 10), latency median %.1f ms (p90 %.1f), CPU %.1f ms"
          % (name, a.tasks, a.in_flight, wall, ideal, amortized, statistics.median(lat),
             lat[int(0.9 * (len(lat) - 1))], cpu / a.tasks * 1000))


def bench_ask(build, tmp, fake, context, a):
    extra, cpus = [], []
    model = 2 * a.latency_ms
    for i in range(a.runs):
        cmd = [os.path.join(build, "rlm"), "ask", "--quiet", "--json"] + endpoint(fake) + \
              ["--context", context, QUESTION % i]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = proc.stdout.read()
        err = proc.stderr.read()
        cpus.append(wait_cpu(proc) * 1000)
        extra.append((time.monotonic() - t0) * 1000 - model)
        if proc.returncode != 0 or json.loads(out)["answer"] != str(os.path.getsize(context)):
            sys.exit("rlm ask failed (%d): %s" % (proc.returncode, err[-2000:]))
    print("ask    2 turns over 4 MB, one process a run: engine time beyond model time median %.0f ms "
          "(target 40), CPU %.0f ms  [%s]" % (statistics.median(extra), statistics.median(cpus),
                                             ", ".join("%.0f" % x for x in extra)))


def bench_batch(build, tmp, fake, context, a):
    tasks = os.path.join(tmp, "tasks.jsonl")
    with open(tasks, "w") as f:
        for i in range(a.tasks):
            f.write(json.dumps({"id": "t%d" % i, "question": QUESTION % i, "inputs": [context]}) + "\n")
    out = os.path.join(tmp, "results.jsonl")
    cmd = [os.path.join(build, "rlm"), "batch", "-q", "--tasks-in-flight", str(a.in_flight),
           "--concurrency", str(2 * a.in_flight)] + endpoint(fake) + [tasks, "--out", out]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    cpu = wait_cpu(proc)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit("rlm batch failed (%d): %s" % (proc.returncode, err[-2000:]))
    with open(out) as f:
        results = [json.loads(line) for line in f]
    want = str(os.path.getsize(context))
    if len(results) != a.tasks or any(r["answer"] != want for r in results):
        sys.exit("rlm batch: wrong or missing answers")
    lat = [r["elapsed_seconds"] * 1000 - 2 * a.latency_ms for r in results]
    summary("batch", a, wall, lat, cpu)


def post(port, body):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out, time.monotonic() - t0


def bench_serve(build, tmp, fake, context, a):
    from servers import env_for
    port_file = os.path.join(tmp, "serve-port")
    cmd = [os.path.join(build, "rlm"), "serve", "--port", "0", "--port-file", port_file, "-q",
           "--max-runs", str(a.in_flight), "--concurrency", str(2 * a.in_flight),
           "--input", "short=" + context] + endpoint(fake)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env_for(tmp))
    for _ in range(3000):
        if os.path.exists(port_file) and open(port_file).read().strip():
            port = int(open(port_file).read().strip())
            break
        if proc.poll() is not None:
            sys.exit("rlm serve exited: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.01)
    else:
        proc.kill()
        sys.exit("rlm serve did not start")
    want = str(os.path.getsize(context))
    todo = queue.Queue()
    for i in range(a.tasks):
        todo.put(json.dumps({"model": "rlm:short",
                             "messages": [{"role": "user", "content": QUESTION % i}]}).encode())
    lat, inside, failed = [], [], []

    def client():
        while True:
            try:
                body = todo.get_nowait()
            except queue.Empty:
                return
            status, out, secs = post(port, body)
            reply = json.loads(out) if status == 200 else None
            if not reply or reply["choices"][0]["message"]["content"] != want:
                failed.append((status, out[:300]))
                continue
            lat.append(secs * 1000 - 2 * a.latency_ms)
            inside.append(reply["rlm"]["elapsed_seconds"] * 1000 - 2 * a.latency_ms)

    with open("/proc/%d/stat" % proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu0 = sum(int(x) for x in fields[11:15]) / tick
    threads = [threading.Thread(target=client) for _ in range(a.in_flight)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    with open("/proc/%d/stat" % proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(x) for x in fields[11:15]) / tick - cpu0
    proc.terminate()
    proc.wait(60)
    if failed:
        sys.exit("rlm serve: %d requests failed, e.g. %r" % (len(failed), failed[0]))
    summary("serve", a, wall, lat, cpu)
    print("       of the latency, inside the run (its elapsed_seconds): median %.1f ms; the rest is "
          "HTTP, admission and the reply" % statistics.median(inside))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--only", default="ask,batch,serve")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--runs", type=int, default=9, help="rlm ask processes (one at a time)")
    ap.add_argument("--log", action="store_true", help="keep the run log on (in the temporary directory)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    os.environ["RLM_BUILD_DIR"] = build
    tmp = tempfile.mkdtemp(prefix="rlm-short-")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        os.environ[var] = os.path.join(tmp, "xdg")
    if a.log:
        LOG.clear()
    from harness import FakeLM
    try:
        with FakeLM(RULES, latency_ms=a.latency_ms) as fake:
            context = write_input(tmp)
            for name in a.only.split(","):
                {"ask": bench_ask, "batch": bench_batch, "serve": bench_serve}[name](build, tmp, fake, context, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
