"""Real clients, not only our own: the official OpenAI library for Node
(`openai`) against `rlm serve`, and the official MCP TypeScript SDK
(`@modelcontextprotocol/sdk`) against `rlm mcp` over stdio. The packages
come from the npm registry, installed by this test into npm-clients/ of
the build tree (never into the source tree); Node is the distribution's.
Without node, or when npm cannot reach the registry, the test says why and
exits 77 (CTest reports it skipped), never passing silently."""
import json
import os
import shutil
import subprocess
import sys

from harness import BUILD, RLM, FakeLM, RlmTestCase, main, repl
from servers import Serve, env_for

# Majors pinned: a new major of either client is a deliberate upgrade.
PACKAGES = {"openai": "6", "@modelcontextprotocol/sdk": "1"}
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")
NPM_DIR = os.path.join(os.path.abspath(BUILD), "npm-clients")

RULES = [
    {"match": "^sub (\\w+)$", "reply": "pong $1", "latency_ms": 300},
    {"match": "^slow sub$", "reply": "late", "latency_ms": 60000},
    {"match": "client-find", "reply": repl("FINAL('found' if 'PLATYPUS' in context else 'missing')")},
    {"match": "client-count", "reply": repl("FINAL('n=' + str(len(context)))")},
    {"match": "client-batch", "reply": repl("r = llm_query_batched(['sub a', 'sub b', 'sub c'])\nFINAL(','.join(r))")},
    {"match": "client-wait", "reply": repl("FINAL('waited')"), "latency_ms": 2000},
    {"match": "client-slow", "reply": repl("FINAL(llm_query('slow sub'))")},
    {"match": "", "reply": "plain"},
]


def skip(why):
    print("skipped: " + why, flush=True)
    raise SystemExit(77)


def install_clients():
    """The two packages in NPM_DIR (installed once per build tree)."""
    if not shutil.which("node") or not shutil.which("npm"):
        skip("node and npm are needed for the real-client tests (apt-get install nodejs npm)")
    wanted = [os.path.join(NPM_DIR, "node_modules", name, "package.json") for name in PACKAGES]
    manifest = {"name": "rlm-test-clients", "private": True,
                "dependencies": {name: major for name, major in PACKAGES.items()}}
    os.makedirs(NPM_DIR, exist_ok=True)
    path = os.path.join(NPM_DIR, "package.json")
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    if old == manifest and all(os.path.exists(w) for w in wanted):
        return
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    try:
        proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=NPM_DIR, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        skip("npm install of %s did not finish in 10 minutes (is the registry reachable?)"
             % ", ".join(PACKAGES))
    if proc.returncode != 0 or not all(os.path.exists(w) for w in wanted):
        # npm's first lines say why (the error code, the request that failed).
        why = (proc.stderr.strip().splitlines() or ["(no message)"])[:3]
        skip("npm could not install %s from the registry: %s" % (", ".join(PACKAGES), " | ".join(why)))


def run_client(script, args, env, timeout=300):
    """Runs a client script from NPM_DIR (where its packages resolve); its
    JSON output."""
    target = os.path.join(NPM_DIR, os.path.basename(script))
    shutil.copyfile(os.path.join(CLIENTS, script), target)
    proc = subprocess.run(["node", target] + args, capture_output=True, text=True, timeout=timeout,
                          env=env)
    if proc.returncode != 0:
        raise AssertionError("node %s exited %d:\n%s\n%s" % (script, proc.returncode, proc.stdout,
                                                               proc.stderr[-4000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


class OpenAIClient(RlmTestCase):

    def test_the_openai_library(self):
        key_file = os.path.join(self.tmp, "keys")
        with open(key_file, "w") as f:
            f.write("sk-first\nsk-client\n")
        os.chmod(key_file, 0o600)
        os.makedirs(os.path.join(self.tmp, "docs"))
        self.write("docs/a.txt", "alpha\n")
        with FakeLM(RULES) as lm:
            s = Serve(self.tmp, lm, ["--mode", "rlm", "--api-key-file", key_file, "--max-runs", "1",
                                     "--queue", "0", "--input", "docs=" + os.path.join(self.tmp, "docs")])
            self.addCleanup(s.stop)
            s.start()
            out = run_client("openai_client.mjs", [s.base_url, "sk-client"], env_for(self.tmp))
        c = out["completion"]
        self.assertEqual(c["object"], "chat.completion")
        self.assertEqual((c["role"], c["finish_reason"]), ("assistant", "stop"))
        self.assertEqual(c["content"], "found")   # the earlier message was the input
        self.assertGreater(c["usage"]["total_tokens"], 0)
        self.assertEqual(c["rlm"]["how"], "code")
        # Every chunk parsed by the client: role first, the answer, the
        # finish, the usage last (stream_options.include_usage).
        chunks = out["stream"]
        self.assertTrue(all(ch["object"] == "chat.completion.chunk" for ch in chunks), chunks)
        self.assertEqual(len({ch["id"] for ch in chunks}), 1)
        text = "".join((ch["delta"] or {}).get("content") or "" for ch in chunks)
        self.assertEqual(text, "pong a,pong b,pong c")
        self.assertEqual([ch["finish_reason"] for ch in chunks if ch["finish_reason"]], ["stop"])
        self.assertGreater(chunks[-1]["usage"]["total_tokens"], 0)
        self.assertEqual(out["models"], ["rlm", "rlm:docs"])
        w = out["wrong_key"]
        self.assertEqual((w["class"], w["status"], w["code"]), ("AuthenticationError", 401, "invalid_api_key"))
        q = out["full_queue"]
        self.assertEqual((q["class"], q["status"], q["code"]), ("RateLimitError", 429, "rate_limit_exceeded"))
        self.assertGreaterEqual(int(q["retry_after"]), 1)
        self.assertEqual(out["slow"], "waited")


class McpSdkClient(RlmTestCase):

    def test_the_mcp_sdk(self):
        root = os.path.join(self.tmp, "project")
        os.makedirs(os.path.join(root, "src"))
        os.makedirs(os.path.join(self.tmp, "outside"))
        self.write("project/README.md", "ROOTDOC\n")
        self.write("project/src/main.c", "int main(void) { return 0; }\n")
        self.write("outside/secret.txt", "SECRET\n")
        os.symlink("../outside/secret.txt", os.path.join(root, "leak.txt"))
        with FakeLM(RULES) as lm:
            out = run_client("mcp_client.mjs", [RLM, root, lm.base_url], env_for(self.tmp))
        self.assertEqual(out["server"]["name"], "rlm")
        self.assertIn("tools", out["capabilities"])
        self.assertEqual([t["name"] for t in out["tools"]], ["rlm_ask", "rlm_describe"])
        self.assertEqual(out["tools"][0]["required"], ["question"])
        a = out["ask"]
        self.assertFalse(a["isError"], a)
        self.assertEqual(a["text"], "pong a,pong b,pong c")
        self.assertEqual((a["structured"]["how"], a["structured"]["status"]), ("code", "ok"))
        values = [p["progress"] for p in out["progress"]]
        self.assertTrue(values, out)
        self.assertEqual(values, sorted(set(values)))
        self.assertTrue(any("sub-calls" in (p.get("message") or "") for p in out["progress"]), out["progress"])
        self.assertFalse(out["describe"]["isError"], out["describe"])
        self.assertIn("README.md", out["describe"]["text"])
        r = out["refused"]
        self.assertTrue(r["isError"], r)
        self.assertNotIn("SECRET", r["text"])
        self.assertTrue(out["cancel"]["rejected"], out["cancel"])
        after = out["after_cancel"]
        self.assertFalse(after["isError"], after)
        self.assertRegex(after["text"], r"^n=\d+$")
        self.assertLess(after["seconds"], 30)   # the slow run's 60 s sub-call was dropped


if __name__ == "__main__":
    install_clients()
    main()
