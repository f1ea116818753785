"""Which host receives which key (issue 13, item 1).

rlm runs in a network and mount namespace of its own, where api.openai.com,
api.anthropic.com and two other hosts resolve (through a hosts file bound
over /etc/hosts in that namespace only) to fake servers on 127.0.0.x, port
443, speaking real TLS with a certificate for those names. The namespace's
system trust store (/etc/ssl/certs/ca-certificates.crt, also bound over in
the namespace only) holds the test CA that signed it. So rlm runs unchanged,
with its default https:// URLs: no test-only switch in the engine, no
environment override of the CA bundle. Each server records the path and
headers of every request, and the tests assert which server saw which key.

When the namespace cannot be made (no user namespaces, no `unshare`, no
`openssl` to make the certificate), the test says why and exits 77, which
CTest reports as skipped: it never passes without running.
"""
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, RlmTestCase, repl  # noqa: E402

SKIP = 77
INNER = "RLM_CREDENTIALS_NAMESPACE"

OPENAI_KEY = "sk-openai-test-key"
ANTHROPIC_KEY = "sk-ant-test-key"

# name -> address; the names are what the hosts file resolves.
HOSTS = {
    "api.openai.com": "127.0.0.2",
    "api.anthropic.com": "127.0.0.3",
    "api.anthropic.com.evil.test": "127.0.0.4",
    "proxy.example": "127.0.0.5",
}


def skip(why):
    print("SKIPPED: " + why, flush=True)
    sys.exit(SKIP)


def enter_namespace():
    """Re-runs this file inside a new network + mount namespace."""
    if not shutil.which("unshare"):
        skip("no unshare(1): cannot make a network namespace")
    if not shutil.which("openssl"):
        skip("no openssl(1): cannot make the fake servers' certificate")
    args = ["unshare", "--net", "--mount"]
    if os.geteuid() != 0:
        args.append("--map-root-user")
    probe = subprocess.run(args + ["true"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip("cannot create a network namespace: " + probe.stderr.strip())
    env = dict(os.environ)
    env[INNER] = "1"
    rc = subprocess.call(args + [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env=env)
    sys.exit(rc)


def make_certificate(d):
    """A CA and a server certificate for every name in HOSTS."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key",
        "-out", d + "/ca.pem", "-days", "2", "-subj", "/CN=rlm test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/server.key",
        "-out", d + "/server.csr", "-subj", "/CN=api.openai.com")
    with open(d + "/ext", "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + h for h in HOSTS) + "\n")
    run("x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.pem", "-CAkey",
        d + "/ca.key", "-CAcreateserial", "-out", d + "/server.pem", "-days", "2",
        "-extfile", d + "/ext")


def setup_namespace(d):
    """lo up, the hosts file and the trust store bound over the system's."""
    if subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True).returncode != 0:
        skip("cannot bring up lo in the namespace")
    with open(d + "/hosts", "w") as f:
        f.write("127.0.0.1 localhost\n")
        for name, addr in HOSTS.items():
            f.write("%s %s\n" % (addr, name))
    for src, dst in ((d + "/hosts", "/etc/hosts"),
                     (d + "/ca.pem", "/etc/ssl/certs/ca-certificates.crt")):
        if not os.path.exists(dst):
            skip("%s does not exist: cannot replace it in the namespace" % dst)
        r = subprocess.run(["mount", "--bind", src, dst], capture_output=True, text=True)
        if r.returncode != 0:
            skip("cannot bind %s in the namespace: %s" % (dst, r.stderr.strip()))


class Server:
    """A fake provider on one address: OpenAI chat completions or Anthropic
    messages, whichever path is asked. A root request answers with a cell
    calling llm_query until the transcript holds a sub-call's reply, then
    with FINAL; a request for the model 'sub-model' is a sub-call."""

    def __init__(self, name, addr, context):
        self.name = name
        self.seen = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                server.seen.append({"path": self.path, "headers": dict(self.headers),
                                    "model": body.get("model")})
                text = server.reply(body)
                if self.path.endswith("/messages"):
                    out = {"id": "m", "type": "message", "role": "assistant", "model": body["model"],
                           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 5, "output_tokens": 5}}
                else:
                    out = {"id": "c", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 5}}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer((addr, 443), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, body):
        if body.get("model") in ("sub-model", "claude-haiku-4-5"):
            return "sub-answer from " + self.name
        everything = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
        if "sub-answer" in everything or "use-subcall" not in everything:
            return "FINAL(answer from %s)" % self.name
        return repl("print(llm_query('hello'))")

    def keys(self):
        """Every credential this server was sent."""
        out = []
        for r in self.seen:
            h = {k.lower(): v for k, v in r["headers"].items()}
            for name in ("authorization", "x-api-key", "api-key"):
                if name in h:
                    out.append(h[name])
        return out

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Credentials(RlmTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="rlm-e2e-cred-")
        make_certificate(cls.dir)
        setup_namespace(cls.dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cls.dir + "/server.pem", cls.dir + "/server.key")
        cls.servers = {name: Server(name, addr, ctx) for name, addr in HOSTS.items()}

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers.values():
            s.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        for s in self.servers.values():
            s.seen.clear()

    def run_rlm(self, args, env=None, question="q"):
        cmd = [RLM, "ask", "--quiet", "--no-stream", "--max-retries", "0",
               "--trace", os.path.join(self.tmp, "trace.jsonl")] + args + [question]
        run_env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OPENAI_", "ANTHROPIC_", "RLM_"))}
        run_env.update({"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})
        run_env.update(env or {})
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=run_env,
                              stdin=subprocess.DEVNULL)
        return proc

    def keys(self, name):
        return self.servers[name].keys()

    def only_contacted(self, *names):
        contacted = sorted(n for n, s in self.servers.items() if s.seen)
        self.assertEqual(contacted, sorted(names))

    def test_default_is_openai_with_the_openai_key(self):
        p = self.run_rlm(["--model", "gpt-5-mini"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("answer from api.openai.com", p.stdout)
        self.only_contacted("api.openai.com")
        self.assertEqual(self.keys("api.openai.com"), ["Bearer " + OPENAI_KEY])
        self.assertEqual(self.servers["api.openai.com"].seen[0]["path"], "/v1/chat/completions")

    def test_provider_anthropic_goes_to_anthropic_with_its_key(self):
        p = self.run_rlm(["--provider", "anthropic", "--model", "some-model"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.only_contacted("api.anthropic.com")
        self.assertEqual(self.keys("api.anthropic.com"), [ANTHROPIC_KEY])
        self.assertEqual(self.servers["api.anthropic.com"].seen[0]["path"], "/v1/messages")

    def test_claude_model_goes_to_anthropic(self):
        p = self.run_rlm(["--model", "claude-sonnet-4-5"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.only_contacted("api.anthropic.com")
        self.assertEqual(self.keys("api.anthropic.com"), [ANTHROPIC_KEY])

    def test_anthropic_key_alone_never_reaches_openai(self):
        p = self.run_rlm(["--provider", "anthropic"], env={"OPENAI_API_KEY": ""})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.servers["api.openai.com"].seen, [])

    def test_look_alike_host_gets_no_key(self):
        for extra in ([], ["--provider", "anthropic"], ["--provider", "openai"]):
            for s in self.servers.values():
                s.seen.clear()
            p = self.run_rlm(extra + ["--base-url", "https://api.anthropic.com.evil.test/v1"])
            self.only_contacted("api.anthropic.com.evil.test")
            self.assertEqual(self.keys("api.anthropic.com.evil.test"), [], (extra, p.stderr))

    def test_look_alike_host_is_not_anthropic(self):
        p = self.run_rlm(["--base-url", "https://api.anthropic.com.evil.test/v1"])
        self.assertEqual(self.servers["api.anthropic.com.evil.test"].seen[0]["path"],
                         "/v1/chat/completions", p.stderr)

    def test_a_key_given_for_a_url_goes_there(self):
        p = self.run_rlm(["--base-url", "https://proxy.example/v1", "--api-key", "sk-given"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.keys("proxy.example"), ["Bearer sk-given"])

    def test_env_key_follows_env_base_url(self):
        p = self.run_rlm([], env={"OPENAI_BASE_URL": "https://proxy.example/v1"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.only_contacted("proxy.example")
        self.assertEqual(self.keys("proxy.example"), ["Bearer " + OPENAI_KEY])

    def test_env_key_not_sent_to_another_base_url(self):
        p = self.run_rlm(["--base-url", "https://proxy.example/v1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.keys("proxy.example"), [])

    def test_sub_base_url_on_another_host_gets_no_key(self):
        p = self.run_rlm(["--mode", "rlm", "--model", "root-model", "--sub-model", "sub-model",
                          "--sub-base-url", "https://proxy.example/v1"], question="use-subcall")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("answer from api.openai.com", p.stdout)
        self.assertEqual(self.keys("api.openai.com"), ["Bearer " + OPENAI_KEY] * 2)
        self.assertEqual([r["model"] for r in self.servers["proxy.example"].seen], ["sub-model"])
        self.assertEqual(self.keys("proxy.example"), [])

    def test_sub_api_key_goes_to_the_sub_endpoint(self):
        p = self.run_rlm(["--mode", "rlm", "--model", "root-model", "--sub-model", "sub-model",
                          "--sub-base-url", "https://proxy.example/v1", "--sub-api-key", "sk-sub"],
                         question="use-subcall")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.keys("proxy.example"), ["Bearer sk-sub"])
        self.assertEqual(self.keys("api.openai.com"), ["Bearer " + OPENAI_KEY] * 2)

    def test_claude_sub_model_goes_to_anthropic(self):
        p = self.run_rlm(["--mode", "rlm", "--model", "root-model", "--sub-model",
                          "claude-haiku-4-5"], question="use-subcall")
        self.assertEqual(self.keys("api.anthropic.com"), [ANTHROPIC_KEY], p.stderr)
        self.assertEqual(self.keys("api.openai.com"), ["Bearer " + OPENAI_KEY] * 2)

    def test_pasted_endpoint_path_is_recognised(self):
        p = self.run_rlm(["--base-url", "https://api.openai.com/v1/chat/completions"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.servers["api.openai.com"].seen[0]["path"], "/v1/chat/completions")

    def test_several_base_urls_share_the_given_key(self):
        p = self.run_rlm(["--base-url", "https://proxy.example/v1,https://api.openai.com/v1",
                          "--api-key", "sk-both", "--mode", "rlm", "--model", "root-model",
                          "--sub-model", "sub-model"], question="use-subcall")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.keys("proxy.example") + self.keys("api.openai.com"),
                         ["Bearer sk-both"] * 3)


if __name__ == "__main__":
    if os.environ.get(INNER) != "1":
        enter_namespace()
    unittest.main(verbosity=2)
