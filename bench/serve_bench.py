#!/usr/bin/env python3
"""rlm serve under load, against the fake model at 200 ms a reply (issue 16's
targets). Prints measured figures; asserts only that every answer is right.

    python3 bench/serve_bench.py [--build build] [--clients 200] [--max-runs 20]

Load: --clients requests at once, each a 2-turn RLM with 10 sub-calls on its
own 1 MB input sent inline (an earlier user message): turn 1 splits the
input in ten and sends one llm_query_batched of ten 100 KB sub-calls, turn 2
answers. The model alone needs 3 x 0.2 s on a run's critical path, so with
--max-runs R runs at once (and a dispatcher --concurrency of at least 10 R,
so sub-calls never wait for one another) the latency limit the settings set
is ceil(clients / R) x 0.6 s for the last request to finish. Reported: the
wall time against 1.3 x that limit, each request's latency (median, max),
and the server's memory (its own RSS, sampled every 20 ms, and the PSS of
its whole tree, sandboxes included) against 50 MB + 15 MB per concurrent run
+ the inputs it holds.

Sharing: the server is started with a 40 MB named input; the bench reads
the memory after it is loaded, then runs R requests at once on rlm:big and
reads it again. A copy per run would add 40 MB each; shared, the growth per
run is the run's own (its sandbox and buffers).
"""
import argparse
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

LATENCY_MS = 200
MB = 1 << 20


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


RULES = [
    # The sub-calls: one per tenth of the input.
    {"match": "(?s)^chunk (\\d+)\\n", "reply": "seen $1"},
    # The shared named input: counted in one cell.
    {"match": "count the big one", "reply": repl("FINAL('ok %d' % len(context))")},
    # The root's second turn: the answer.
    {"match": "Turn 2 of", "reply": "FINAL_VAR(res)"},
    # The root's first turn: ten sub-calls in one batch, no answer yet.
    {"match": ".", "reply": repl(
        "n = len(context)\n"
        "parts = [context[i * n // 10:(i + 1) * n // 10] for i in range(10)]\n"
        "r = llm_query_batched(['chunk %d\\n' % i + p for i, p in enumerate(parts)])\n"
        "assert r == ['seen %d' % i for i in range(10)], r\n"
        "res = 'ok %d' % n\n"
        "print(res)")},
]


def cpu_seconds(pid):
    """CPU seconds of pid itself and of its children it has reaped (the
    sandboxes), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid):
    """pid and every descendant."""
    from servers import children_of
    return [pid] + children_of(pid)


class Sampler(threading.Thread):
    """The server's RSS and its tree's PSS, sampled until stopped: peaks."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.rss, self.pss, self.sandboxes = pid, 0, 0, 0
        self.done = threading.Event()

    def run(self):
        from servers import rss_kb
        while not self.done.is_set():
            self.rss = max(self.rss, rss_kb(self.pid))
            procs = tree(self.pid)
            self.pss = max(self.pss, sum(pss_kb(p) for p in procs))
            self.sandboxes = max(self.sandboxes, len(procs) - 1)
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.join()


def post(port, body, timeout=600):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out, time.monotonic() - t0


def load(port, bodies):
    """Every body posted at once (one thread each, released together):
    [(status, reply, seconds)] and the wall time."""
    results = [None] * len(bodies)
    start = threading.Barrier(len(bodies) + 1)

    def one(i):
        start.wait()
        try:
            results[i] = post(port, bodies[i])
        except OSError as e:
            results[i] = (0, str(e).encode(), 0.0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    return results, time.monotonic() - t0


def check(results, want):
    for status, out, _ in results:
        if status != 200:
            raise SystemExit("a request failed: %d %s" % (status, out[:300]))
        answer = json.loads(out)["choices"][0]["message"]["content"]
        if answer != want:
            raise SystemExit("wrong answer: %r (wanted %r)" % (answer, want))


def shared(port, pid, R, big_bytes, base_rss, base_pss):
    """R runs at once on the 40 MB named input: how much the memory grows."""
    q = {"model": "rlm:big", "messages": [{"role": "user", "content": "count the big one"}]}
    sampler = Sampler(pid)
    sampler.start()
    results, wall = load(port, [json.dumps(q).encode()] * R)
    sampler.stop()
    check(results, "ok %d" % big_bytes)
    grown_rss = (sampler.rss - base_rss) / 1024
    grown_pss = (sampler.pss - base_pss) / 1024
    print("shared 40 MB input: %d runs at once on rlm:big in %.2f s; peak growth: server RSS "
          "+%.1f MB, tree PSS +%.1f MB = %.1f MB per run (a copy per run would be +%.0f MB "
          "each)" % (R, wall, grown_rss, grown_pss, grown_pss / R, big_bytes / MB))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--max-runs", type=int, default=20)
    ap.add_argument("--input-kb", type=int, default=1024, help="each request's inline input")
    ap.add_argument("--no-shared", action="store_true", help="skip the 40 MB named input")
    args = ap.parse_args()
    os.environ["RLM_BUILD_DIR"] = os.path.abspath(args.build)
    from harness import FakeLM
    from servers import Serve, rss_kb

    R, N = args.max_runs, args.clients
    with tempfile.TemporaryDirectory() as tmp, FakeLM(RULES, latency_ms=LATENCY_MS) as lm:
        big = os.path.join(tmp, "big.txt")
        line = b"2026-12-06 12:00:00 worker-17 INFO request served in 12 ms, nothing to report\n"
        with open(big, "wb") as f:
            f.write(line * (40 * MB // len(line)))
        big_bytes = os.path.getsize(big)
        s = Serve(tmp, lm, ["--mode", "rlm", "--max-runs", str(R), "--queue", str(N),
                            "--queue-timeout", "600", "--concurrency", str(10 * R + 10),
                            "--max-body", "8M", "--max-connections", str(N + 50), "-q",
                            "--input", "big=" + big, "--no-log"])
        t0 = time.monotonic()
        s.start()
        pid = s.proc.pid
        started = time.monotonic() - t0
        time.sleep(0.5)
        base_rss, base_pss = rss_kb(pid), sum(pss_kb(p) for p in tree(pid))
        print("server: up in %.1f s with a %.0f MB named input; RSS %.1f MB, tree PSS %.1f MB "
              "(server + zygotes)" % (started, big_bytes / MB, base_rss / 1024, base_pss / 1024))

        # ---- the 40 MB input shared by R runs at once ----------------------
        if not args.no_shared:
            shared(s.port, pid, R, big_bytes, base_rss, base_pss)

        # ---- N clients at once, 1 MB inline each -----------------------------
        doc = ("a line of the one-megabyte document, numbered %08d\n" % 0)
        text = "".join(doc.replace("%08d" % 0, "%08d" % i)
                       for i in range(args.input_kb * 1024 // len(doc)))
        bodies = [json.dumps({"model": "rlm", "messages": [
            {"role": "user", "content": text},
            {"role": "user", "content": "bench question %d" % i}]}).encode() for i in range(N)]
        lm_before = lm.counters()["requests"]
        cpu0 = (cpu_seconds(pid), cpu_seconds(lm.proc.pid), os.times())
        sampler = Sampler(pid)
        sampler.start()
        results, wall = load(s.port, bodies)
        sampler.stop()
        cpu1 = (cpu_seconds(pid), cpu_seconds(lm.proc.pid), os.times())
        check(results, "ok %d" % len(text))
        calls = lm.counters()["requests"] - lm_before
        lat = sorted(r[2] for r in results)
        limit = math.ceil(N / R) * 3 * LATENCY_MS / 1000
        held = N * len(bodies[0]) / MB
        mem_limit = 50 + 15 * R + big_bytes / MB
        print("load: %d clients at once, each a 2-turn RLM with 10 sub-calls on %d KB inline "
              "(%d model calls); --max-runs %d" % (N, args.input_kb, calls, R))
        print("  wall %.2f s; the settings' latency limit ceil(%d/%d) x 0.6 s = %.2f s; ratio %.2f "
              "(target <= 1.3)" % (wall, N, R, limit, wall / limit))
        print("  per request: median %.2f s, p90 %.2f s, max %.2f s (one run alone: 0.6 s of model "
              "latency)" % (statistics.median(lat), lat[int(0.9 * (len(lat) - 1))], lat[-1]))
        runs = sorted(json.loads(r[1])["rlm"]["elapsed_seconds"] for r in results)
        print("  the runs themselves (their elapsed_seconds, from admission to answer): median %.2f s, "
              "p90 %.2f s, max %.2f s" % (statistics.median(runs), runs[int(0.9 * (len(runs) - 1))],
                                          runs[-1]))
        print("  server RSS peak %.1f MB vs 50 + 15 x %d + %.0f (named) = %.0f MB; the %d requests' "
              "bodies are %.0f MB of it at most" % (sampler.rss / 1024, R, big_bytes / MB, mem_limit,
                                                   N, held))
        print("  tree PSS peak (server + sandboxes) %.1f MB, %d sandboxes at most"
              % (sampler.pss / 1024, sampler.sandboxes))
        mine = (cpu1[2].user + cpu1[2].system) - (cpu0[2].user + cpu0[2].system)
        print("  CPU seconds over the load: server %.1f, its sandboxes %.1f, fake model %.1f, "
              "these clients %.1f (of %.1f the machine's %d cores had; load average %.1f)"
              % (cpu1[0][0] - cpu0[0][0], cpu1[0][1] - cpu0[0][1], cpu1[1][0] - cpu0[1][0], mine,
                 wall * os.cpu_count(), os.cpu_count(), os.getloadavg()[0]))
        s.stop()


if __name__ == "__main__":
    main()
