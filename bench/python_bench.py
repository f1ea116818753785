#!/usr/bin/env python3
"""What the Python binding costs (issue 17's targets). Prints measured
figures; asserts nothing. Run after building:

    /usr/bin/python3 bench/python_bench.py [--build build] [--runs 40]

1. overhead:   a run through rlm.ask against the same run through librlm from
               C (bench/api_loop.c, built here against the build's library),
               fake model at 0 latency; median per run, direct and rlm mode.
2. copies:     peak resident memory of the calling process for a 256 MB
               context given as bytes, ASCII str, non-ASCII str and a path,
               against `rlm ask` given the same as stdin and as a file, as a
               multiple of the context size (the run maps and describes it).
3. threads:    128 runs, 64 at a time, from a ThreadPoolExecutor in one
               process, against 64 `rlm ask` processes at a time; each run one
               root turn with one llm_query (fake latency 100 ms) and a sandbox.
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
from harness import FakeLM, repl  # noqa: E402
from proctree import PeakMemory  # noqa: E402

COUNT = {"match": "", "reply": repl("FINAL(str(len(context)))")}


def overhead(build, runs):
    import rlm
    exe = os.path.join(tempfile.mkdtemp(prefix="rlm-bench-"), "api_loop")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "include"),
                    os.path.join(HERE, "api_loop.c"), "-o", exe, "-L", build, "-lrlm",
                    "-Wl,-rpath," + build], check=True)
    print("1. overhead per run (median of %d; fake model, latency 0; C and Python runs "
          "interleaved so both see the same machine load)" % runs)
    with FakeLM([COUNT]) as lm:
        for mode in ("direct", "rlm"):
            c, py = [], []
            for _ in range(0, runs, 5):
                out = subprocess.run([exe, lm.base_url, "5", mode], capture_output=True,
                                     text=True, check=True).stdout
                c += [float(x) for x in out.split()]
                for _ in range(5):
                    t0 = time.perf_counter()
                    rlm.ask("How many lines?", "alpha\nbeta\ngamma\n", base_url=lm.base_url,
                            model="root", mode=mode)
                    py.append((time.perf_counter() - t0) * 1e3)
            cm, pm = statistics.median(c), statistics.median(py)
            print("   %-6s  C %7.2f ms   Python %7.2f ms   Python adds %+.2f ms"
                  % (mode, cm, pm, pm - cm))


CHILD = textwrap.dedent("""
    import os, pathlib, sys, json
    sys.path.insert(0, sys.argv[4])
    import rlm
    size, kind, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    def status(key):
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith(key)).split()[1])
    if kind == "bytes":
        ctx = b"x" * size
    elif kind == "ascii-str":
        ctx = "x" * size
    elif kind == "non-ascii-str":
        ctx = "\\u00e9" * (size // 2)
    else:
        ctx = pathlib.Path(kind)
    base = status("VmRSS:")
    r = rlm.ask("How long?", ctx, base_url=url, model="root", mode="rlm")
    print(json.dumps({"answer": r.answer, "base_kb": base, "peak_kb": status("VmHWM:")}))
""")


def copies(build, size=256 << 20):
    print("2. peak memory of the caller over a %d MB context (x the context size)" % (size >> 20))
    work = tempfile.mkdtemp(prefix="rlm-bench-")
    path = os.path.join(work, "ctx.txt")
    with open(path, "wb") as f:
        f.write(b"x" * size)
    script = os.path.join(work, "child.py")
    with open(script, "w") as f:
        f.write(CHILD)
    with FakeLM([COUNT]) as lm:
        for kind in ("bytes", "ascii-str", "non-ascii-str", path):
            out = subprocess.run([sys.executable, script, str(size), kind, lm.base_url,
                                  os.path.join(ROOT, "python")], capture_output=True, text=True,
                                 check=True, env=dict(os.environ, RLM_LIBRARY=os.path.join(
                                     build, "librlm.so.0"))).stdout
            d = json.loads(out)
            print("   python %-14s run adds %.2fx (the object itself: before the run)"
                  % ("path" if kind == path else kind, (d["peak_kb"] - d["base_kb"]) * 1024 / size))
        for how in ("stdin", "file"):
            cmd = [os.path.join(build, "rlm"), "ask", "-q", "--base-url", lm.base_url, "--model",
                   "root", "--mode", "rlm", "How long?"]
            with open(path, "rb") as f:
                proc = subprocess.Popen(cmd + (["--context", path] if how == "file" else []),
                                        stdin=f if how == "stdin" else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE)
                mem = PeakMemory(proc.pid)
                mem.start()
                proc.communicate()
                mem.stop()
            print("   rlm ask --context %-6s  peak %.2fx" % (
                "-" if how == "stdin" else "FILE", mem.peak_own_kb * 1024 / size))
    os.unlink(path)


def threads(build, total=128, width=64):
    import rlm
    rules = [{"match": "^Sub:", "reply": "ok", "latency_ms": 100},
             {"match": "", "reply": repl("FINAL(llm_query('Sub: ' + context[:10]))")}]
    print("3. %d runs, %d at a time (one turn, one llm_query at 100 ms, a sandbox each)"
          % (total, width))
    with FakeLM(rules) as lm:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(width) as pool:
            answers = list(pool.map(lambda i: rlm.ask("q", "ctx %d" % i, base_url=lm.base_url,
                                                      model="root", mode="rlm").answer,
                                    range(total)))
        py = time.perf_counter() - t0
        assert answers == ["ok"] * total, answers[:3]
        cmd = [os.path.join(build, "rlm"), "ask", "-q", "--base-url", lm.base_url, "--model",
               "root", "--mode", "rlm", "q"]
        t0 = time.perf_counter()

        def one(i):
            return subprocess.run(cmd, input="ctx %d" % i, capture_output=True, text=True).stdout

        with concurrent.futures.ThreadPoolExecutor(width) as pool:
            outs = list(pool.map(one, range(total)))
        cli = time.perf_counter() - t0
        assert outs == ["ok\n"] * total, outs[:3]
    print("   thread pool in one process  %.1f runs/s (%.2f s)" % (total / py, py))
    print("   rlm processes               %.1f runs/s (%.2f s)" % (total / cli, cli))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=40)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    os.environ.setdefault("RLM_LIBRARY", os.path.join(build, "librlm.so.0"))
    overhead(build, a.runs)
    copies(build)
    threads(build)


if __name__ == "__main__":
    main()
