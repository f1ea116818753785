"""The adversarial suite (tests/sandbox/*.py) through the real engine: for each
attack the fake model replies with it as a ```repl block, then with legitimate
code, then FINAL. Nothing the attack does may hurt the host, touch the canary
file, reach the TCP listener, put bytes it chose ({MARK}) in a file of the
host's cache or data directories, leave a temporary file there, leave the model
without a clear error, or break the next cell. Also `rlm doctor`, and the floor
being recorded in the trace.

With RLM_SANDBOX_FLOOR_ONLY=1 in the environment (ctest runs it both ways)
every sandbox refuses Landlock and namespaces, and each case must hold on the
floor alone (seccomp + rlimits)."""
import glob
import json
import os
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, RLM, FakeLM, RlmTestCase, main, repl, sanitized_build  # noqa: E402

CASES_DIR = os.path.join(os.path.dirname(__file__), "..", "sandbox")
CANARY_TEXT = "canary: the sandbox must never read or change this\n"
# Bytes attacks try to get written into a host file; no file may hold them.
MARK = "rlm-attack-chosen-bytes-7f3a"

LEGIT = repl("""
import re, json, collections, decimal, datetime, random
words = re.findall(r'[a-z]+', context)
common = collections.Counter(words).most_common(1)
big = 'abc' * 5_000_000
total = decimal.Decimal('1.10') + decimal.Decimal('2.20')
day = datetime.datetime(2024, 1, 2).strftime('%Y-%m-%d')
random.seed(1)
try:
    hog = bytearray(1 << 45)
    mem = 'no MemoryError'
except MemoryError:
    mem = 'MemoryError ok'
print('legit', common, len(big), total, day, 1 <= random.randint(1, 6) <= 6,
      json.dumps({'k': 1}), mem, llm_query('sub-call: legit'))
# Not what a model writes: the REPL's own state as this cell finds it.
sys = json.codecs.sys
genuine = all(type(f) is type(len) and f.__module__ == '_rlm'
              for f in (FINAL, FINAL_VAR, llm_query, llm_query_batched, rlm_query, SHOW_VARS))
print('repl', genuine, sys.gettrace(), sys.getprofile(), sys.getrecursionlimit(),
      sys.modules['_signal'].getsignal(2).__name__)
raise ValueError('legit-end')
""")

# What the legitimate cell must print: its work, the REPL functions and hooks
# as the sandbox set them, and its own traceback formatted by the glue.
LEGIT_OUTPUTS = ("legit [('fox', 3)] 15000000 3.30 2024-01-02 True {\"k\": 1} "
                 "MemoryError ok sub-reply",
                 "repl True None None 1000 default_int_handler",
                 "Traceback (most recent call last):", "ValueError: legit-end")


def load_cases():
    cases = []
    for path in sorted(glob.glob(os.path.join(CASES_DIR, "*.py"))):
        meta, code = {}, []
        with open(path) as f:
            for line in f:
                m = re.match(r"# (case|expect|flags|args): ?(.*)$", line.rstrip("\n"))
                if m and not code:
                    meta[m.group(1)] = m.group(2)
                else:
                    code.append(line)
        meta["name"] = os.path.splitext(os.path.basename(path))[0]
        meta["code"] = "".join(code)
        meta["flags"] = meta.get("flags", "").split()
        meta["args"] = meta.get("args", "").split()
        cases.append(meta)
    return cases


FLOOR_ONLY = os.environ.get("RLM_SANDBOX_FLOOR_ONLY", "") not in ("", "0")
FLOOR_LAYERS = "seccomp,rlimits (without: landlock, namespaces)"

# Sanitized code runs several times slower: give honest cells (a 100 MB print)
# the time they need there, while loops still end by the timeout.
CELL_TIMEOUT = "8" if sanitized_build() else "2"


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection attempt."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def host_files_problems(dirs):
    """What the host's files show of an attack: chosen bytes, temporaries."""
    problems = []
    for top in dirs:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                if name.endswith(".tmp"):
                    problems.append("a temporary file was left: %s" % path)
                with open(path, "rb") as f:
                    if MARK.encode() in f.read():
                        problems.append("chosen bytes reached a host file: %s" % path)
    return problems


class SandboxAttacks(RlmTestCase):
    def run_case(self, case):
        """Runs one case; returns a list of what went wrong (empty: passed)."""
        tmp = os.path.join(self.tmp, case["name"])
        os.makedirs(tmp)
        canary_dir = os.path.join(tmp, "outside")
        os.makedirs(canary_dir)
        canary = os.path.join(canary_dir, "canary.txt")
        with open(canary, "w") as f:
            f.write(CANARY_TEXT)
        context = os.path.join(tmp, "context.txt")
        with open(context, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog; fox and fox\n")
        listener = Listener()
        code = case["code"].format(CANARY=canary, CANARY_DIR=canary_dir, PORT=listener.port,
                                   HOST_PID=os.getpid(), MARK=MARK)
        host_dirs = {name: os.path.join(tmp, name) for name in ("cache", "data")}
        for path in host_dirs.values():
            os.makedirs(os.path.join(path, "rlm"))
        rules = [
            {"match": "^sub-call:", "reply": "sub-reply"},
            {"match": r"(?i)turn 3 of", "reply": "FINAL(survived)"},
            {"match": r"(?i)turn 2 of", "reply": LEGIT},
            {"match": "Attack", "reply": repl(code)},
        ]
        trace = os.path.join(tmp, "trace.jsonl")
        problems = []
        with FakeLM(rules) as lm:
            cmd = [RLM, "ask", "--quiet", "--model", "root", "--sub-model", "sub",
                   "--base-url", lm.base_url, "--trace", trace, "--context", context,
                   "--cell-timeout", CELL_TIMEOUT, "--sandbox-memory", "1G", "--mode", "rlm"]
            cmd += case["args"] + ["Attack: what is here?"]
            env = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL")}
            env["XDG_CACHE_HOME"] = host_dirs["cache"]
            env["XDG_DATA_HOME"] = host_dirs["data"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        listener.close()
        problems += host_files_problems(host_dirs.values())
        if proc.returncode != 0 or proc.stdout != "survived\n":
            problems.append("host: exit %d, stdout %r, stderr %r" % (
                proc.returncode, proc.stdout[-300:], proc.stderr[-500:]))
        with open(canary) as f:
            if f.read() != CANARY_TEXT:
                problems.append("the canary changed")
        if sorted(os.listdir(canary_dir)) != ["canary.txt"]:
            problems.append("files appeared next to the canary: %s" % os.listdir(canary_dir))
        if listener.connections:
            problems.append("the listener saw %d connection(s)" % listener.connections)
        try:
            with open(trace) as f:
                events = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as e:
            return problems + ["no trace: %s" % e]
        cells = [e for e in events if e["type"] == "code"]
        if len(cells) < 2:
            return problems + ["expected 2 code events, got %d" % len(cells)]
        if not re.search(case["expect"], cells[0]["output"] or ""):
            problems.append("the model did not get a clear error matching %r; it saw %r" % (
                case["expect"], (cells[0]["output"] or "")[:600]))
        if not all(text in (cells[1]["output"] or "") for text in LEGIT_OUTPUTS):
            problems.append("legitimate code broke afterwards: %r" % cells[1]["output"][:900])
        ready = [e for e in events if e["type"] == "sandbox_ready"]
        if not ready or "seccomp" not in ready[0]["layers"]:
            problems.append("sandbox_ready does not record the layers: %r" % ready)
        elif FLOOR_ONLY and any(e["layers"] != FLOOR_LAYERS for e in ready):
            problems.append("not the floor alone: %r" % [e["layers"] for e in ready])
        return problems

    def test_attacks(self):
        cases = load_cases()
        self.assertGreaterEqual(len(cases), 50)
        if sanitized_build():
            # No RLIMIT_AS under AddressSanitizer: growth would use real memory.
            cases = [c for c in cases if "memory" not in c["flags"]]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(self.run_case, cases))
        failed = []
        for case, problems in zip(cases, results):
            with self.subTest(case=case["name"]):
                if problems:
                    failed.append(case["name"])
                self.assertEqual(problems, [], "%s (%s)" % (case["name"], case.get("case")))
        print("\n%d attack cases, %d failed %s" % (len(cases), len(failed), failed),
              file=sys.stderr)


class Doctor(RlmTestCase):
    def test_doctor_json_and_table(self):
        # The sandbox part; the endpoint is a local one, not contacted.
        local = ["--offline", "--base-url", "http://127.0.0.1:9/v1"]
        res = subprocess.run([RLM, "doctor", "--json"] + local, capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        report = json.loads(res.stdout)
        self.assertTrue(report["ok"])
        names = [layer["name"] for layer in report["layers"]]
        self.assertEqual(names, ["landlock", "namespaces", "seccomp", "rlimits"])
        for layer in report["layers"]:
            self.assertTrue(layer["detail"], layer)
            if not layer["active"]:
                self.assertIn(layer["name"], report["warnings"])
        # Each layer that is off names what the floor does not cover.
        off = [layer["name"] for layer in report["layers"] if not layer["active"]]
        self.assertEqual(len(report["not_covered"]), len(off))
        for name, gap in zip(off, report["not_covered"]):
            self.assertTrue(gap.startswith("without %s: " % name), gap)
        if FLOOR_ONLY:
            self.assertEqual(off, ["landlock", "namespaces"])
            self.assertEqual(report["summary"], FLOOR_LAYERS)
        self.assertRegex(report["python"], r"^3\.\d+")
        self.assertGreater(report["ready_seconds"], 0)
        res = subprocess.run([RLM, "doctor"] + local, capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0)
        for word in ("landlock", "namespaces", "seccomp", "rlimits", "ok:"):
            self.assertIn(word, res.stdout)
        if off:
            self.assertIn("Not covered here:", res.stdout)
            self.assertNotIn("runs confined", res.stdout)

    def test_doctor_without_a_sandbox(self):
        res = subprocess.run([RLM, "doctor", "--offline", "--sandbox-exe", "/nonexistent/rlm-sandbox"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 4)
        self.assertIn("NOT OK", res.stdout)
        res = subprocess.run([RLM, "doctor", "--bogus"], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(res.returncode, 2)

    def test_unsafe_is_recorded(self):
        rules = [{"match": ".", "reply": repl("print(len(open('/etc/hostname').read()) >= 0)")
                  + "\nFINAL(done)"}]
        with FakeLM(rules) as lm:
            res = self.rlm(["--unsafe-no-sandbox", "--context", self.write("c.txt", "x"), "q"],
                           lm)
        self.assertExit(res, 0)
        ready = res.events("sandbox_ready")[0]
        self.assertEqual(ready["layers"], "none (unsafe)")
        self.assertTrue(ready["unsafe"])


if __name__ == "__main__":
    main()
