"""Starting `rlm serve` and `rlm mcp` from a test (standard library only),
and reading what a server process holds: its descriptors, its memory, its
children (sandboxes)."""
import http.client
import json
import os
import signal
import subprocess
import time

from harness import RLM, isolated_env, wait_port_file


def env_for(tmp, extra=None):
    """The test's environment: no key or endpoint of the user's, XDG homes
    under tmp."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "ANTHROPIC_API_KEY",
                        "ANTHROPIC_BASE_URL")}
    env.update(isolated_env(tmp))
    env.update(extra or {})
    return env


class Serve:
    """`rlm serve` on a free port against a FakeLM: `with Serve(tmp, lm, [...]) as s:`."""

    def __init__(self, tmp, lm, args=(), env=None, model="root-model"):
        self.tmp = tmp
        self.port_file = os.path.join(tmp, "serve-port-%d" % time.monotonic_ns())
        self.err_path = os.path.join(tmp, "serve-%d.err" % time.monotonic_ns())
        self.cmd = [RLM, "serve", "--port", "0", "--port-file", self.port_file, "--model", model,
                    "--sub-model", "sub-model"]
        if lm is not None:
            self.cmd += ["--base-url", lm.base_url]
        self.cmd += list(args)
        self.env = env_for(tmp, env)
        self.proc = None
        self.port = None

    def start(self):
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=self.env)
        self.port = wait_port_file(self.port_file, self.proc, 30, lambda: "rlm serve exited %d: %s" % (
            self.proc.returncode, self.stderr()))
        if self.port is not None:
            return self
        self.proc.kill()
        raise RuntimeError("rlm serve did not start: " + self.stderr())

    def __enter__(self):
        return self.start()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server; returns its exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.err and not self.err.closed:
            self.err.close()
        return self.proc.returncode if self.proc else None

    def __exit__(self, *exc):
        self.stop()

    def stderr(self):
        try:
            with open(self.err_path) as f:
                return f.read()
        except OSError:
            return ""

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.port

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict (lower-case names), body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, out

    def chat(self, body, headers=None, timeout=120):
        """POST /v1/chat/completions: (status, JSON or None, headers)."""
        status, hdrs, out = self.request("POST", "/v1/chat/completions", body, headers, timeout)
        try:
            return status, json.loads(out), hdrs
        except ValueError:
            return status, None, hdrs

    def stream(self, body, headers=None, timeout=120):
        """A streamed completion: (status, [events], [comments]) where events
        are the data payloads (parsed JSON, or the text "[DONE]")."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(), headers=h)
        r = c.getresponse()
        events, comments = parse_sse(r.read().decode())
        c.close()
        return r.status, events, comments

    def metrics(self, headers=None):
        status, _, out = self.request("GET", "/metrics", headers=headers)
        assert status == 200, status
        values = {}
        for line in out.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def parse_sse(text):
    """SSE text as ([data payloads], [comments]), each event's data parsed
    as JSON unless it is [DONE]."""
    events, comments = [], []
    for block in text.split("\n\n"):
        data = []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            payload = "\n".join(data)
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events, comments


class Mcp:
    """`rlm mcp` on pipes: send requests, read messages (notifications come
    in between)."""

    def __init__(self, tmp, lm, roots, args=(), env=None):
        self.cmd = [RLM, "mcp", "--model", "root-model", "--sub-model", "sub-model"]
        for r in roots:
            self.cmd += ["--root", r]
        if lm is not None:
            self.cmd += ["--base-url", lm.base_url]
        self.cmd += list(args)
        self.env = env_for(tmp, env)
        self.err_path = os.path.join(tmp, "mcp-%d.err" % time.monotonic_ns())
        self.next_id = 1
        self.pending = []

    def __enter__(self):
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=self.env, bufsize=0)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.err.close()

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def send(self, msg):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def send_raw(self, line):
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def read(self, timeout=120):
        """The next message from the server (None at its end)."""
        import select
        if self.pending:
            return self.pending.pop(0)
        deadline = time.time() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no message from rlm mcp within %d s: %s" % (timeout, self.stderr()))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            line += chunk
            if b"\n" in line[:-1]:
                first, rest = line.split(b"\n", 1)
                for extra in rest.split(b"\n"):
                    if extra:
                        self.pending.append(json.loads(extra))
                return json.loads(first)
        return json.loads(line)

    def request(self, method, params=None, meta=None):
        """Sends a request; returns its id."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None or meta is not None:
            msg["params"] = dict(params or {})
            if meta:
                msg["params"]["_meta"] = meta
        self.send(msg)
        return rid

    def wait_for(self, rid, timeout=120, seen=None):
        """Messages until the response to rid; others go to seen (a list)."""
        deadline = time.time() + timeout
        while True:
            msg = self.read(max(1, deadline - time.time()))
            if msg is None:
                raise AssertionError("rlm mcp ended before answering %d: %s" % (rid, self.stderr()))
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg
            if seen is not None:
                seen.append(msg)

    def initialize(self, version="2025-11-25"):
        rid = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                          "clientInfo": {"name": "test", "version": "1"}})
        reply = self.wait_for(rid)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply


def children_of(pid):
    """Every descendant of pid (pids), from /proc."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def proc_name(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def thread_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))
