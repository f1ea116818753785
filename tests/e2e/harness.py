"""End-to-end test harness: starts the fake OpenAI-compatible server on a free
loopback port with a script, runs the real `rlm` binary against it, and reads
back its stdout, exit code, --json report and JSONL trace.

Standard library only; run by the system python3. Scripts are built as Python
dicts so replies holding code fences stay readable.
"""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

BUILD = os.environ.get("RLM_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
RLM = os.path.join(BUILD, "rlm")
FAKELM = os.path.join(BUILD, "fakelm")
# RLM_KEEP_TEST_DIRS=1 keeps every test's temporary directory (and says
# where it is) to look at after a failure; otherwise each is removed when
# its test or fake server is done with it.
KEEP_DIRS = os.environ.get("RLM_KEEP_TEST_DIRS") == "1"


def sanitized_build():
    """True when BUILD was configured with RLM_SANITIZE (ASan, UBSan)."""
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            return re.search(r"^RLM_SANITIZE:BOOL=ON$", f.read(), re.M) is not None
    except OSError:
        return False


def remove_later(path):
    """Removes a test's temporary directory, or says where it was kept."""
    if KEEP_DIRS:
        print("kept: " + path, flush=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _guard_user_files():
    """Whatever a test runs — through rlm_command or straight (rlm demo, rlm
    bench, a failing rlm ask) — finds XDG homes of its own, never the user's:
    the run log, sessions, cache and prices stay untouched. Removed at exit."""
    home = tempfile.mkdtemp(prefix="rlm-e2e-home-")
    atexit.register(shutil.rmtree, home, True)
    os.environ.update(isolated_env(home))


def isolated_env(where):
    """XDG variables under `where`: the user's cache, run log, sessions and
    prices are never read or written by a test."""
    return {"XDG_%s_HOME" % kind: os.path.join(where, "xdg-" + kind.lower())
            for kind in ("CACHE", "DATA", "CONFIG")}


def repl(code):
    """A reply holding one ```repl block."""
    return "```repl\n" + code.strip("\n") + "\n```"


_guard_user_files()


def wait_port_file(path, proc, timeout, exited):
    """The port a server wrote to path once listening, or None after timeout
    seconds; RuntimeError(exited()) if proc ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        if proc.poll() is not None:
            raise RuntimeError(exited())
        time.sleep(0.01)
    return None


class FakeLM:
    """The fake server as a context manager: `with FakeLM(rules) as lm:`."""

    def __init__(self, rules, latency_ms=0, require_key=None, extra_args=(), script_keys=None):
        """script_keys: more top-level keys of the script (prompt_cache, oracle, ...)."""
        self.dir = tempfile.mkdtemp(prefix="rlm-e2e-")
        self.script = os.path.join(self.dir, "script.json")
        with open(self.script, "w") as f:
            json.dump(dict(script_keys or {}, latency_ms=latency_ms, rules=rules), f)
        self.port_file = os.path.join(self.dir, "port")
        self.log = os.path.join(self.dir, "requests.jsonl")
        args = [FAKELM, "--script", self.script, "--port", "0",
                "--port-file", self.port_file, "--log", self.log]
        if require_key:
            args += ["--require-key", require_key]
        self.args = args + list(extra_args)
        self.proc = None
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.port = wait_port_file(self.port_file, self.proc, 10,
                                   lambda: "fakelm exited: " + self.proc.stderr.read().decode())
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("fakelm did not start within 10 s")
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        remove_later(self.dir)

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.port

    def counters(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/counters" % self.port, timeout=5) as r:
            return json.load(r)

    def requests(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_for_request(self, pattern, timeout=30):
        """Waits until a logged request's last_user matches the regex
        `pattern` (a request is logged when it is answered, so this is for
        rules that answer at once); returns that log line."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for r in self.requests():
                if re.search(pattern, r.get("last_user") or ""):
                    return r
            time.sleep(0.05)
        raise AssertionError("no request matching %r within %d s" % (pattern, timeout))

    def wait_in_flight(self, n=1, timeout=30):
        """Waits until at least n requests are being answered (e.g. held by a
        rule's latency)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.counters()["in_flight"] >= n:
                return
            time.sleep(0.05)
        raise AssertionError("fewer than %d requests in flight within %d s" % (n, timeout))


class Result:
    def __init__(self, proc, trace_path):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.trace_path = trace_path

    @property
    def report(self):
        return json.loads(self.stdout)

    @property
    def trace(self):
        with open(self.trace_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def events(self, kind):
        return [e for e in self.trace if e["type"] == kind]


class RlmTestCase(unittest.TestCase):
    """Base class: temp dir per test, helpers to write files and run rlm."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="rlm-e2e-")
        self.addCleanup(remove_later, self.tmp)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(path, mode) as f:
            f.write(text)
        return path

    def rlm_command(self, args, lm=None, env=None, trace=True, command="ask",
                    trace_name="trace.jsonl"):
        """The command line and environment of `rlm COMMAND ARGS` against lm
        (a FakeLM or None), and the trace path."""
        trace_path = os.path.join(self.tmp, trace_name)
        cmd = [RLM, command, "--quiet", "--model", "root-model", "--sub-model", "sub-model"]
        if lm is not None:
            cmd += ["--base-url", lm.base_url]
        if trace:
            cmd += ["--trace", trace_path]
        # The tests exercise the RLM loop on small inputs, which auto mode
        # would answer with one direct call; tests of modes say --mode.
        if "--mode" not in args:
            cmd += ["--mode", "rlm"]
        run_env = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "ANTHROPIC_API_KEY",
                                "ANTHROPIC_BASE_URL")}
        run_env.update(isolated_env(self.tmp))
        run_env.update(env or {})
        return cmd + list(args), run_env, trace_path

    def rlm(self, args, lm=None, timeout=300, env=None, trace=True, stdin=None,
            command="ask", trace_name="trace.jsonl"):
        """Runs `rlm ask ARGS` (or another command, e.g. chat) against lm (a
        FakeLM or None) with a trace."""
        cmd, run_env, trace_path = self.rlm_command(args, lm, env, trace, command, trace_name)
        # No stdin given: /dev/null, never the test runner's own stdin (rlm ask
        # reads a non-terminal stdin as its input when there is no --context).
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=run_env,
                              input=stdin, stdin=subprocess.DEVNULL if stdin is None else None)
        return Result(proc, trace_path)

    def rlm_start(self, args, lm=None, env=None, command="ask", trace_name="trace.jsonl",
                  stdin=subprocess.DEVNULL):
        """Starts `rlm COMMAND ARGS` without waiting: returns the Popen (text
        pipes for stdout and stderr) and the trace path."""
        cmd, run_env, trace_path = self.rlm_command(args, lm, env, True, command, trace_name)
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=run_env)
        return proc, trace_path

    def signal_in_flight(self, proc, lm, sig, feed=None, timeout=60):
        """Once proc (from rlm_start; feed is written to its stdin first) has
        a request in flight at lm, sends it sig and waits for it to end:
        returns its stdout, stderr and the seconds from the signal to its end.
        A process still running after timeout is killed."""
        try:
            if feed is not None:
                proc.stdin.write(feed)
                proc.stdin.flush()
            lm.wait_in_flight(1)
            t0 = time.time()
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=timeout)
            return out, err, time.time() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def trace_of(self, trace_path):
        """The events of a trace file."""
        with open(trace_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def code_outputs(self, result):
        """The output of every code block the run executed, in order."""
        return [e.get("output") or "" for e in result.events("code")]

    def assertExit(self, result, code):
        self.assertEqual(result.code, code,
                         "exit %d, wanted %d\nstdout: %s\nstderr: %s" % (
                             result.code, code, result.stdout[-2000:], result.stderr[-2000:]))


def main():
    unittest.main(verbosity=2)
