"""rlm mcp, spoken to over its pipes as an MCP client would (JSON-RPC 2.0,
one message per line): the handshake and its protocol revision, the tools
and their schemas, rlm_ask with progress, cancellation, rlm_describe, and
paths outside the allowed roots refused (symbolic links resolved, relative
paths from the first root, nothing of the outside told)."""
import json
import os
import signal
import time

from harness import FakeLM, RlmTestCase, main, repl
from servers import Mcp, children_of

RULES = [
    {"match": "^sub (\\w+)$", "reply": "pong $1", "latency_ms": 300},
    {"match": "^slow sub$", "reply": "late", "latency_ms": 60000},
    {"match": "mcp-first", "reply": repl("FINAL(context[:8])")},
    {"match": "mcp-dict", "reply": repl("FINAL(','.join(sorted(context)))")},
    {"match": "mcp-batch", "reply": repl("r = llm_query_batched(['sub a', 'sub b', 'sub c'])\nFINAL(','.join(r))")},
    {"match": "mcp-slow", "reply": repl("FINAL(llm_query('slow sub'))")},
    {"match": "", "reply": "plain"},
]


class McpTest(RlmTestCase):

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.tmp, "project")
        os.makedirs(os.path.join(self.root, "src"))
        os.makedirs(os.path.join(self.tmp, "outside"))
        self.write("project/README.md", "ROOTDOC: a project\n")
        self.write("project/src/main.c", "int main(void) { return 0; }\n")
        self.write("outside/secret.txt", "SECRET-VALUE\n")
        os.symlink("../outside/secret.txt", os.path.join(self.root, "leak.txt"))
        os.symlink("../outside", os.path.join(self.root, "leakdir"))

    def mcp(self, lm, *args):
        m = Mcp(self.tmp, lm, [self.root], ["--mode", "rlm"] + list(args))
        self.addCleanup(self.ended_cleanly, m)
        return m

    def ended_cleanly(self, m):
        """Its stdin closed (or SIGTERM), rlm mcp ends with 0: in a
        sanitizer build, without a leak or error report."""
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()
        self.assertEqual(m.proc.returncode, 0, m.stderr()[-4000:])

    def call(self, m, name, arguments, meta=None, seen=None):
        rid = m.request("tools/call", {"name": name, "arguments": arguments}, meta)
        return m.wait_for(rid, seen=seen)

    def test_handshake_and_tools(self):
        with self.mcp(None) as m:
            reply = m.initialize()
            r = reply["result"]
            self.assertEqual(r["protocolVersion"], "2025-11-25")
            self.assertEqual(r["serverInfo"]["name"], "rlm")
            self.assertIn("tools", r["capabilities"])
            self.assertIn(os.path.realpath(self.root), r["instructions"])
            tools = m.wait_for(m.request("tools/list"))["result"]["tools"]
            self.assertEqual([t["name"] for t in tools], ["rlm_ask", "rlm_describe"])
            for t in tools:
                self.assertEqual(t["inputSchema"]["type"], "object")
                self.assertEqual(t["outputSchema"]["type"], "object")
            self.assertEqual(tools[0]["inputSchema"]["required"], ["question"])
            self.assertEqual(m.wait_for(m.request("ping"))["result"], {})
            err = m.wait_for(m.request("resources/list"))["error"]
            self.assertEqual(err["code"], -32601)
        # An older revision the SDK speaks is answered in kind; an unknown one with ours.
        with self.mcp(None) as m:
            self.assertEqual(m.initialize("2025-03-26")["result"]["protocolVersion"], "2025-03-26")
        with self.mcp(None) as m:
            self.assertEqual(m.initialize("1999-01-01")["result"]["protocolVersion"], "2025-11-25")

    def test_bad_messages(self):
        with self.mcp(None) as m:
            m.initialize()
            m.send_raw(b"not json\n")
            self.assertEqual(m.read()["error"]["code"], -32700)
            m.send_raw(b'[{"jsonrpc":"2.0","id":9,"method":"ping"}]\n')
            self.assertEqual(m.read()["error"]["code"], -32600)
            m.send_raw(b'{"jsonrpc":"1.0","id":9,"method":"ping"}\n')
            self.assertEqual(m.read()["error"]["code"], -32600)
            m.send_raw(b'{"jsonrpc":"2.0","id":9,"method":"ping","params":[1]}\n')
            self.assertEqual(m.read()["error"]["code"], -32602)
            m.send_raw(b"[" * 5000 + b"\n")
            self.assertEqual(m.read()["error"]["code"], -32700)
            err = m.wait_for(m.request("tools/call", {"name": "rm_rf", "arguments": {}}))
            self.assertEqual(err["error"]["code"], -32602)
            for args in ({}, {"question": ""}, {"question": "q", "paths": "a"},
                         {"question": "q", "paths": [""]}, {"question": "q", "max_cost": -1},
                         {"question": "q", "surprise": 1}):
                r = self.call(m, "rlm_ask", args)["result"]
                self.assertTrue(r["isError"], args)
            r = self.call(m, "rlm_describe", {"paths": []})["result"]
            self.assertTrue(r["isError"])
            # Still answering.
            self.assertEqual(m.wait_for(m.request("ping"))["result"], {})

    def test_ask_with_progress(self):
        with FakeLM(RULES) as lm, self.mcp(lm) as m:
            m.initialize()
            seen = []
            reply = self.call(m, "rlm_ask", {"question": "mcp-first", "paths": ["README.md"]}, seen=seen)
            r = reply["result"]
            self.assertFalse(r["isError"], r)
            self.assertEqual(r["content"][0]["text"], "ROOTDOC:")
            s = r["structuredContent"]
            self.assertEqual((s["answer"], s["how"], s["status"]), ("ROOTDOC:", "code", "ok"))
            self.assertIn("cost_usd", s)
            self.assertEqual(seen, [])   # no progress token: no progress
            # With a token, progress notifications, increasing, before the result.
            reply = self.call(m, "rlm_ask", {"question": "mcp-batch", "paths": ["src/"]},
                              meta={"progressToken": "tok-1"}, seen=seen)
            self.assertEqual(reply["result"]["content"][0]["text"], "pong a,pong b,pong c")
            progress = [n["params"] for n in seen if n.get("method") == "notifications/progress"]
            self.assertTrue(progress)
            self.assertTrue(all(p["progressToken"] == "tok-1" for p in progress))
            values = [p["progress"] for p in progress]
            self.assertEqual(values, sorted(values))
            self.assertEqual(len(set(values)), len(values))
            self.assertTrue(any("sub-calls" in p["message"] for p in progress), progress)
            # A directory and a glob, relative to the (first) root: a dict
            # by path, each path as read (under the root, links resolved).
            r = self.call(m, "rlm_ask", {"question": "mcp-dict", "paths": ["src", "*.md"]})["result"]
            root = os.path.realpath(self.root)
            self.assertEqual(r["content"][0]["text"],
                             root + "/README.md," + root + "/src/main.c", r)

    def test_paths_outside_the_roots_are_refused(self):
        with FakeLM(RULES) as lm, self.mcp(lm) as m:
            m.initialize()
            outside = os.path.join(self.tmp, "outside", "secret.txt")
            for paths in ([outside], ["leak.txt"], ["leakdir/secret.txt"], ["../outside/secret.txt"],
                          ["/etc/passwd"], [os.path.join(self.tmp, "outside", "nothing.txt")],
                          [os.path.join(self.tmp, "outside", "*.txt")], ["-"]):
                for tool, args in (("rlm_ask", {"question": "mcp-first", "paths": paths}),
                                   ("rlm_describe", {"paths": paths})):
                    r = self.call(m, tool, args)["result"]
                    self.assertTrue(r["isError"], (tool, paths, r))
                    text = r["content"][0]["text"]
                    self.assertNotIn("SECRET", text)
                    self.assertNotIn("No such file", text)   # existence is not told
            # A directory walk skips the links that lead out, and says so.
            r = self.call(m, "rlm_describe", {"paths": ["."]})["result"]
            self.assertFalse(r["isError"], r)
            d = r["structuredContent"]["description"]
            self.assertIn("README.md", d)
            self.assertNotIn("SECRET", d)
            self.assertNotIn("leak", d.split("Preview")[0] if "Preview" in d else "")
            self.assertEqual(lm.counters()["requests"], 0)   # describing asks no model

    def test_cancel_stops_the_run(self):
        with FakeLM(RULES) as lm, self.mcp(lm) as m:
            m.initialize()
            pid = m.proc.pid
            idle_children = len(children_of(pid))   # the pool's zygote
            rid = m.request("tools/call", {"name": "rlm_ask", "arguments": {
                "question": "mcp-slow", "paths": ["README.md"]}}, {"progressToken": 7})
            deadline = time.time() + 30
            while lm.counters()["requests"] < 2 and time.time() < deadline:
                time.sleep(0.05)
            self.assertGreater(len(children_of(pid)), 0)
            m.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": rid, "reason": "user cancelled"}})
            # No reply to a cancelled request; the server goes on answering.
            t0 = time.time()
            pong = m.wait_for(m.request("ping"), seen=[])
            self.assertEqual(pong["result"], {})
            # The run stopped long before its 60 s sub-call: its sandbox is gone.
            while time.time() - t0 < 20 and len(children_of(pid)) > idle_children:
                time.sleep(0.1)
            self.assertLessEqual(len(children_of(pid)), idle_children, children_of(pid))
            msgs = []
            m.proc.stdin.close()
            m.proc.wait(30)
            while True:
                msg = m.read(5)
                if msg is None:
                    break
                msgs.append(msg)
            self.assertFalse([x for x in msgs if x.get("id") == rid], msgs)
            self.assertLess(time.time() - t0, 25)

    def test_stdin_closed_or_sigterm_ends_it(self):
        with FakeLM(RULES) as lm, self.mcp(lm) as m:
            m.initialize()
            m.request("tools/call", {"name": "rlm_ask", "arguments": {"question": "mcp-slow",
                                                                      "paths": ["README.md"]}})
            deadline = time.time() + 30
            while lm.counters()["requests"] < 2 and time.time() < deadline:
                time.sleep(0.05)
            t0 = time.time()
            m.proc.send_signal(signal.SIGTERM)
            self.assertEqual(m.proc.wait(30), 0)
            self.assertLess(time.time() - t0, 15)
        with self.mcp(None) as m:
            m.initialize()
            m.proc.stdin.close()
            self.assertEqual(m.proc.wait(30), 0)

    def test_needs_a_root(self):
        import subprocess
        from harness import RLM
        out = subprocess.run([RLM, "mcp"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--root", out.stderr)
        out = subprocess.run([RLM, "mcp", "--root", os.path.join(self.tmp, "none")], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 2)


if __name__ == "__main__":
    main()
