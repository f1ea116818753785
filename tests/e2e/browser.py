"""Headless Chromium driven through the DevTools protocol, with the Python
standard library only (a small WebSocket client): loads a page, waits for
the rlm viewer to be ready, runs a check script in it, records every request
that leaves the page and takes a screenshot.

chromium_or_reason() says why a browser test cannot run here (no Chromium);
the test then skips with that reason, never passes silently."""
import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

CHROMIUM = os.environ.get("RLM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the networking flags keep it from
# reaching out on a machine whose only network is loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


def chromium_or_reason():
    """None when Chromium can run here, else why not."""
    if not os.access(CHROMIUM, os.X_OK):
        return "no Chromium at %s (scripts/install-deps.sh installs Debian's chromium)" % CHROMIUM
    return None


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masked
    from the client, any length, no extensions."""

    def __init__(self, url):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           % (path, hostport, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        head, _, self.rest = head.partition(b"\r\n\r\n")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                               .encode()).digest()).decode()
        if b" 101 " not in head.split(b"\r\n")[0] or accept.encode() not in head:
            raise OSError("websocket handshake refused: %r" % head[:200])

    def send(self, text):
        data = text.encode()
        n = len(data)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.rest) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise OSError("websocket closed")
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise OSError("websocket closed by the browser")
            if opcode in (0, 1, 2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Page:
    """A page in a fresh headless Chromium."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="rlm-chromium-")
        self.proc = subprocess.Popen([CHROMIUM] + FLAGS + ["--remote-debugging-port=0",
                                                           "--user-data-dir=" + self.profile, "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        port = None
        while time.time() < deadline and port is None:
            if os.path.exists(port_file):
                with open(port_file) as f:
                    first = f.readline().strip()
                port = first or None
            if port is None:
                if self.proc.poll() is not None:
                    raise OSError("Chromium exited with %s before it listened" % self.proc.returncode)
                time.sleep(0.05)
        if port is None:
            raise OSError("Chromium wrote no DevToolsActivePort in 60 s")
        with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port, timeout=30) as r:
            targets = json.load(r)
        page = [t for t in targets if t.get("type") == "page"][0]
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        self.next_id = 0
        self.requests = []
        self.errors = []
        self.loaded = False
        for method in ("Network.enable", "Page.enable", "Runtime.enable"):
            self.call(method)

    def _event(self, msg):
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise OSError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self._event(msg)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError("the page's script failed: %s" % json.dumps(r["exceptionDetails"])[:1000])
        return r["result"].get("value")

    def open_viewer(self, path, timeout=30):
        """Navigates to the page; returns the ms the viewer took to be ready
        (performance.now() when it was), or None if it never was."""
        url = "file://" + os.path.abspath(path)
        self.url = url
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready = self.evaluate("document.body && document.body.dataset.ready === '1' ? "
                                  "window.rlmViewerReady : null")
            if ready is not None:
                return ready
            time.sleep(0.02)
        return None

    def outside_requests(self):
        """Requests the page made beyond itself (there must be none)."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def screenshot(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        png = self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(png["data"]))

    def close(self):
        try:
            self.ws.close()
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
