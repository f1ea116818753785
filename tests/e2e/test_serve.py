"""rlm serve, spoken to as any OpenAI client would (the raw protocol, with
the standard library): completions, streams, models, named inputs, keys,
the queue and its 429, budgets capped by the server's, conversations, a
client that leaves, slow and many connections, the drain, and nothing
leaking (descriptors, memory, sandboxes) after the bad inputs."""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import FakeLM, RlmTestCase, main, repl, sanitized_build
from servers import Serve, children_of, fd_count, parse_sse, rss_kb, thread_count

RULES = [
    {"match": "^sub (\\w+)$", "reply": "pong $1", "latency_ms": 20},
    {"match": "^slow sub$", "reply": "late", "latency_ms": 60000},
    {"match": "serve-count", "reply": repl("FINAL(str(len(context)))")},
    {"match": "serve-batch", "reply": repl("r = llm_query_batched(['sub a', 'sub b'])\nFINAL(','.join(r))")},
    {"match": "serve-named", "reply": repl("FINAL(context[:8])")},
    {"match": "serve-both", "reply": repl("FINAL(context[:8] + '|' + context_1[:5])")},
    {"match": "serve-slow", "reply": repl("FINAL(llm_query('slow sub'))")},
    {"match": "serve-wait", "reply": repl("FINAL('waited')"), "latency_ms": 1500},
    {"match": "serve-three", "reply": repl("r = llm_query_batched(['sub a', 'sub b', 'sub c'])\nFINAL(str(len(r)))")},
    {"match": "(?i)budget", "reply": "FINAL(capped)"},
    {"match": "serve-first", "reply": repl("FINAL('first ' + context[:5])")},
    {"match": "serve-again", "reply": repl("FINAL(answer_1 + ' again')")},
    {"match": "serve-question", "reply": repl("FINAL('ok')")},
    {"match": "", "reply": "plain answer"},
]


def user(text):
    return {"role": "user", "content": text}


class ServeTest(RlmTestCase):

    def serve(self, lm, *args, env=None):
        s = Serve(self.tmp, lm, ["--mode", "rlm"] + list(args), env=env)
        self.addCleanup(self.stopped_cleanly, s)
        return s.start()

    def stopped_cleanly(self, s):
        """SIGTERM ends the server with 0: drained, and in a sanitizer
        build without a leak or error report."""
        self.assertEqual(s.stop(), 0, s.stderr()[-4000:])

    # ---- answers ---------------------------------------------------------

    def test_completion_with_inline_input(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm)
            status, body, _ = s.chat({"model": "rlm", "messages": [
                {"role": "system", "content": "Be brief."},
                user("0123456789"), user("serve-count: how long is it?")], "temperature": 0.3})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["object"], "chat.completion")
            msg = body["choices"][0]["message"]
            self.assertEqual(msg["role"], "assistant")
            self.assertEqual(msg["content"], "10")   # the one earlier message is the input
            self.assertEqual(body["choices"][0]["finish_reason"], "stop")
            self.assertGreater(body["usage"]["prompt_tokens"], 0)
            self.assertEqual(body["usage"]["total_tokens"],
                             body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"])
            ext = body["rlm"]
            self.assertEqual(ext["status"], "ok")
            self.assertEqual(ext["how"], "code")
            self.assertEqual(ext["turns"], 1)
            self.assertEqual(ext["ignored"], ["temperature"])
            self.assertIsInstance(ext["trace_id"], int)
            # The run is in the run log; the system message went with the
            # question, not into the input.
            out = subprocess.run([self.rlm_command([], None)[0][0], "logs", "show", str(ext["trace_id"]), "--json"],
                                 capture_output=True, text=True, env=s.env)
            self.assertEqual(out.returncode, 0, out.stderr)
            row = json.loads(out.stdout)
            self.assertEqual(row["command"], "serve")
            self.assertEqual(row["answer"], "10")
            self.assertEqual(row["question"], "Be brief.\n\nserve-count: how long is it?")

    def test_stream_in_openai_chunks(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm)
            body = {"model": "rlm", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [user("serve-batch please")]}
            status, events, comments = s.stream(body)
            self.assertEqual(status, 200)
            self.assertEqual(events[-1], "[DONE]")
            chunks = events[:-1]
            ids = {c["id"] for c in chunks}
            self.assertEqual(len(ids), 1)
            self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
            self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
            self.assertEqual(text, "pong a,pong b")
            finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
            self.assertEqual(len(finish), 1)
            self.assertEqual(finish[0]["choices"][0]["finish_reason"], "stop")
            self.assertEqual(finish[0]["rlm"]["sub_calls"], 2)
            usage = chunks[-1]
            self.assertEqual(usage["choices"], [])
            self.assertGreater(usage["usage"]["total_tokens"], 0)
            self.assertTrue(all(c["usage"] is None for c in chunks[:-1]))
            # Progress as comments, which clients skip: JSON after "rlm".
            progress = [json.loads(c[4:]) for c in comments if c.startswith("rlm ")]
            types = [p["type"] for p in progress]
            self.assertIn("batch_start", types)
            self.assertIn("run_end", types)

            # Without include_usage: no usage chunk, no usage field.
            status, events, _ = s.stream({"model": "rlm", "stream": True,
                                          "messages": [user("serve-batch again")]})
            self.assertEqual(events[-1], "[DONE]")
            self.assertTrue(all("usage" not in c for c in events[:-1]))
            self.assertTrue(all(c["choices"] for c in events[:-1]))

            # The extension: progress as chunks with no choices.
            status, events, _ = s.stream({"model": "rlm", "stream": True, "rlm": {"progress": True},
                                          "messages": [user("serve-batch with progress")]})
            extra = [c for c in events[:-1] if "rlm_event" in c]
            self.assertTrue(extra)
            self.assertTrue(all(c["choices"] == [] for c in extra))

    def test_models_and_named_inputs(self):
        docs = self.write("docs.txt", "MAGIC-42 and the rest\n")
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--input", "docs=" + docs)
            status, _, out = s.request("GET", "/v1/models")
            self.assertEqual(status, 200)
            models = json.loads(out)
            self.assertEqual(models["object"], "list")
            self.assertEqual([m["id"] for m in models["data"]], ["rlm", "rlm:docs"])
            self.assertEqual(models["data"][1]["rlm_input"]["bytes"], 22)
            status, _, out = s.request("GET", "/v1/models/rlm:docs")
            self.assertEqual((status, json.loads(out)["id"]), (200, "rlm:docs"))

            status, body, _ = s.chat({"model": "rlm:docs", "messages": [user("serve-named")]})
            self.assertEqual((status, body["choices"][0]["message"]["content"]), (200, "MAGIC-42"))
            status, body, _ = s.chat({"model": "rlm", "rlm": {"input": "docs"},
                                      "messages": [user("serve-named")]})
            self.assertEqual(body["choices"][0]["message"]["content"], "MAGIC-42")
            # Both: the named input is context, the messages context_1.
            status, body, _ = s.chat({"model": "rlm:docs", "messages": [user("HELLO there"),
                                                                         user("serve-both")]})
            self.assertEqual(body["choices"][0]["message"]["content"], "MAGIC-42|HELLO")

            for model in ("rlm:nope", "gpt-4o"):
                status, body, _ = s.chat({"model": model, "messages": [user("serve-named")]})
                self.assertEqual(status, 404)
                self.assertEqual(body["error"]["code"], "model_not_found")
            status, body, _ = s.chat({"model": "rlm:docs", "rlm": {"input": "other"},
                                      "messages": [user("x")]})
            self.assertEqual(status, 400)

    # ---- keys --------------------------------------------------------------

    def test_bearer_keys(self):
        keys = self.write("keys", "# clients\nkey-one\n\n  key-two  \n")
        os.chmod(keys, 0o600)
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--api-key-file", keys)
            body = {"model": "rlm", "messages": [user("serve-question")]}
            status, reply, hdrs = s.chat(body)
            self.assertEqual(status, 401)
            self.assertEqual(reply["error"]["code"], "invalid_api_key")
            self.assertEqual(hdrs.get("www-authenticate"), "Bearer")
            for bad in ("Bearer key-on", "Bearer key-one2", "Basic key-one", "Bearer ", "key-one"):
                status, _, _ = s.chat(body, {"Authorization": bad})
                self.assertEqual(status, 401, bad)
            for good in ("Bearer key-one", "bearer key-two"):
                status, reply, _ = s.chat(body, {"Authorization": good})
                self.assertEqual(status, 200, reply)
            self.assertEqual(s.request("GET", "/v1/models")[0], 401)
            self.assertEqual(s.request("GET", "/metrics")[0], 401)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            m = s.metrics({"Authorization": "Bearer key-two"})
            self.assertGreaterEqual(m['rlm_refused_total{reason="auth"}'], 6)

        # Keys readable by others, and a wide listen without keys: refused.
        os.chmod(keys, 0o644)
        s = Serve(self.tmp, None, ["--api-key-file", keys])
        with self.assertRaises(RuntimeError) as e:
            s.start()
        self.assertIn("chmod 600", str(e.exception))
        s = Serve(self.tmp, None, ["--listen", "0.0.0.0"])
        with self.assertRaises(RuntimeError) as e:
            s.start()
        self.assertIn("--api-key-file", str(e.exception))

    # ---- bad requests ----------------------------------------------------------

    def test_bad_requests_are_clear_errors(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-body", "128K")
            ok = {"model": "rlm", "messages": [user("serve-question")]}
            cases = [
                ("{not json", 400, None),
                ("[1, 2]", 400, None),
                (json.dumps({"model": "rlm"}), 400, "messages"),
                (json.dumps({"model": "rlm", "messages": []}), 400, "messages"),
                (json.dumps({"messages": ok["messages"]}), 400, "model"),
                (json.dumps({"model": "rlm", "messages": [{"role": "assistant", "content": "x"}]}), 400, "messages"),
                (json.dumps({"model": "rlm", "messages": [user("   ")]}), 400, "messages"),
                (json.dumps({"model": "rlm", "messages": [{"role": "wizard", "content": "x"}]}), 400, "messages"),
                (json.dumps({"model": "rlm", "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "http://x"}}]}]}), 400, "messages"),
                (json.dumps(dict(ok, n=2)), 400, "n"),
                (json.dumps(dict(ok, tools=[{"type": "function"}])), 400, "tools"),
                (json.dumps(dict(ok, stream="yes")), 400, "stream"),
                (json.dumps(dict(ok, rlm={"max_cots": 1})), 400, "rlm"),
                (json.dumps(dict(ok, rlm={"max_cost": -1})), 400, "rlm"),
                (json.dumps(dict(ok, rlm={"conversation_id": "../etc"})), 400, "rlm"),
                ("[" * 10000 + "]" * 10000, 400, None),
                (json.dumps({"model": "rlm", "messages": [{"role": "system", "content": "x" * 70000},
                                                          user("q")]}), 400, "messages"),
            ]
            for body, want, param in cases:
                status, hdrs, out = s.request("POST", "/v1/chat/completions", body,
                                              {"Content-Type": "application/json"})
                self.assertEqual(status, want, (body[:80], out[:300]))
                err = json.loads(out)["error"]
                self.assertTrue(err["message"])
                self.assertEqual(err["type"], "invalid_request_error")
                if param:
                    self.assertEqual(err["param"], param, out)
            status, _, out = s.request("POST", "/v1/chat/completions", json.dumps(ok),
                                       {"Content-Type": "text/plain"})
            self.assertEqual(status, 415)
            status, _, out = s.request("POST", "/v1/chat/completions", json.dumps(ok), {})
            self.assertEqual(status, 415)
            self.assertEqual(s.request("GET", "/v1/chat/completions")[0], 405)
            self.assertEqual(s.request("POST", "/v1/models", "{}")[0], 405)
            self.assertEqual(s.request("GET", "/v1/embeddings")[0], 404)
            self.assertEqual(s.request("GET", "/v1/models/nope")[0], 404)
            # A body past the cap: refused from its length, before it is sent...
            conn = socket.create_connection(("127.0.0.1", s.port))
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 1073741824\r\n\r\n" + b"{" * 1000)
            reply = recv_all(conn, 10)
            conn.close()
            self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply[:200])
            # ... or, chunked with no length (1 GB offered), cut by a close
            # as it passes the cap: the server does not read the rest.
            conn = socket.create_connection(("127.0.0.1", s.port))
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.settimeout(10)
            sent, chunk = 0, b"10000\r\n" + b" " * 0x10000 + b"\r\n"
            try:
                while sent < (1 << 30):
                    conn.sendall(chunk)
                    sent += 0x10000
            except OSError:
                pass
            conn.close()
            self.assertLess(sent, 64 << 20)   # the cap (128K) and the sockets' buffers
            # Still serving.
            status, body, _ = s.chat(ok)
            self.assertEqual(status, 200, body)

    # ---- the queue ---------------------------------------------------------------

    def test_full_queue_is_429_with_retry_after(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-runs", "1", "--queue", "1", "--queue-timeout", "60")
            results = {}

            def ask(name, question):
                results[name] = s.chat({"model": "rlm", "messages": [user(question)]})

            first = threading.Thread(target=ask, args=("first", "serve-wait"))
            first.start()
            lm.wait_in_flight(1)
            second = threading.Thread(target=ask, args=("second", "serve-wait"))
            second.start()
            wait_until(lambda: s.metrics()["rlm_runs_queued"] == 1)
            status, body, hdrs = s.chat({"model": "rlm", "messages": [user("serve-question")]})
            self.assertEqual(status, 429, body)
            self.assertEqual(body["error"]["code"], "rate_limit_exceeded")
            self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
            first.join()
            second.join()
            self.assertEqual(results["first"][0], 200)
            self.assertEqual(results["second"][0], 200)   # it waited its turn
            self.assertEqual(s.metrics()['rlm_refused_total{reason="queue_full"}'], 1)

        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-runs", "1", "--queue", "4", "--queue-timeout", "0.5")
            first = threading.Thread(target=lambda: s.chat({"model": "rlm", "messages": [user("serve-wait")]}))
            first.start()
            lm.wait_in_flight(1)
            status, body, hdrs = s.chat({"model": "rlm", "messages": [user("serve-question")]})
            self.assertEqual(status, 429)
            self.assertIn("retry-after", hdrs)
            first.join()

    def test_refusals_of_authenticated_clients_are_in_the_run_log(self):
        """Every request is in the run log, those refused before a run
        started too (status "refused", the reason, the model, no trace); but
        not an unauthenticated one: anyone could fill the disk with those."""
        keys = self.write("keys", "key-one\n")
        os.chmod(keys, 0o600)
        auth = {"Authorization": "Bearer key-one"}
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--api-key-file", keys, "--max-runs", "1", "--queue", "1",
                           "--queue-timeout", "60", "--max-body", "128K", "--input",
                           "docs=" + self.write("docs.txt", "docs\n"))
            for _ in range(3):
                self.assertEqual(s.chat({"model": "rlm", "messages": [user("no key")]})[0], 401)
            self.assertEqual(s.chat({"model": "rlm", "messages": [user("bad key")]},
                                    {"Authorization": "Bearer nope"})[0], 401)
            status, _, _ = s.request("POST", "/v1/chat/completions", "{not json",
                                     dict(auth, **{"Content-Type": "application/json"}))
            self.assertEqual(status, 400)
            status, body, _ = s.chat({"model": "rlm:nope", "messages": [user("which input?")]}, auth)
            self.assertEqual(status, 404, body)
            conn = socket.create_connection(("127.0.0.1", s.port))
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-one"
                         b"\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
            self.assertTrue(recv_all(conn, 10).startswith(b"HTTP/1.1 413"))
            conn.close()
            # Chunked, with no length: cut by a close as it passes the cap.
            conn = socket.create_connection(("127.0.0.1", s.port))
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-one"
                         b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.settimeout(10)
            try:
                for _ in range(1024):
                    conn.sendall(b"10000\r\n" + b" " * 0x10000 + b"\r\n")
            except OSError:
                pass
            conn.close()
            wait_until(lambda: s.metrics(auth)['rlm_refused_total{reason="body_too_large"}'] == 2)
            results = {}

            def ask(name):
                results[name] = s.chat({"model": "rlm", "messages": [user("serve-wait")]}, auth)

            threads = [threading.Thread(target=ask, args=(n,)) for n in ("first", "second")]
            threads[0].start()
            lm.wait_in_flight(1)
            threads[1].start()
            wait_until(lambda: s.metrics(auth)["rlm_runs_queued"] == 1)
            status, body, _ = s.chat({"model": "rlm:docs", "messages": [user("serve-question full")]}, auth)
            self.assertEqual(status, 429, body)
            for t in threads:
                t.join()
            self.assertEqual([results[n][0] for n in ("first", "second")], [200, 200])

            rlm = self.rlm_command([], None)[0][0]
            out = subprocess.run([rlm, "logs", "--json"], capture_output=True, text=True, env=s.env)
            self.assertEqual(out.returncode, 0, out.stderr)
            rows = json.loads(out.stdout)
            refused = sorted((r for r in rows if r["status"] == "refused"), key=lambda r: r["id"])
            self.assertEqual(len(rows), 2 + len(refused))   # the two runs, and nothing of the 401s
            # Each row is written before its reply goes out: in the order of the replies.
            self.assertEqual([r["error"].split(":")[0] for r in refused],
                             ["HTTP 400 invalid_request_error", "HTTP 404 model_not_found", "HTTP 413 request_too_large",
                              "HTTP 413 request_too_large", "HTTP 429 rate_limit_exceeded"])
            self.assertEqual([r["model"] for r in refused], [None, "rlm:nope", None, None, "rlm:docs"])
            self.assertIn("passed the server's cap as it came", refused[3]["error"])
            self.assertEqual(refused[4]["question"], "serve-question full")
            self.assertIn("every run slot is busy", refused[4]["error"])
            for r in refused:
                self.assertEqual(r["command"], "serve")
                self.assertEqual(r["trace_bytes"], 0)
                self.assertGreater(r["started"], time.time() - 600)
            self.assertNotIn("no key", out.stdout)
            # A refusal keeps no trace, and says so.
            out = subprocess.run([rlm, "view", str(refused[0]["id"]), "-o", os.path.join(self.tmp, "r.html")],
                                 capture_output=True, text=True, env=s.env)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("refused before a run started", out.stderr)

    # ---- budgets -------------------------------------------------------------------

    def test_request_budgets_are_capped_by_the_server(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-subcalls", "2")
            status, body, _ = s.chat({"model": "rlm", "rlm": {"max_subcalls": 1000},
                                      "messages": [user("serve-three")]})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["rlm"]["stopped_by"], "max_subcalls")
            self.assertEqual(body["rlm"]["sub_calls"], 0)   # the batch of 3 did not fit in 2
            status, body, _ = s.chat({"model": "rlm", "rlm": {"max_subcalls": 2},
                                      "messages": [user("serve-batch")]})
            self.assertEqual(body["choices"][0]["message"]["content"], "pong a,pong b")
            # Lower than the server's: the request's own.
            status, body, _ = s.chat({"model": "rlm", "rlm": {"max_subcalls": 1},
                                      "messages": [user("serve-batch")]})
            self.assertEqual(body["rlm"]["stopped_by"], "max_subcalls")

    # ---- conversations ---------------------------------------------------------------

    def test_conversation_over_http(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm)
            h = {"X-RLM-Conversation": "talk-1"}
            status, body, _ = s.chat({"model": "rlm", "messages": [user("ABCDEFG"), user("serve-first")]}, h)
            self.assertEqual((status, body["choices"][0]["message"]["content"]), (200, "first ABCDE"))
            self.assertEqual(body["rlm"]["conversation_id"], "talk-1")
            # The client sends the history again, as OpenAI clients do: the
            # earlier messages are not a new input, answer_1 is there.
            status, body, _ = s.chat({"model": "rlm", "messages": [
                user("ABCDEFG"), user("serve-first"), {"role": "assistant", "content": "first ABCDE"},
                user("serve-again")]}, h)
            self.assertEqual(body["choices"][0]["message"]["content"], "first ABCDE again", body)
            # The same id in the body.
            status, body, _ = s.chat({"model": "rlm", "rlm": {"conversation_id": "talk-1"},
                                      "messages": [user("serve-again")]})
            self.assertEqual(status, 200, body)
            # It is a session like rlm chat --session's.
            out = subprocess.run([self.rlm_command([], None)[0][0], "sessions", "list"],
                                 capture_output=True, text=True, env=s.env)
            self.assertIn("talk-1", out.stdout + out.stderr)
            # One question of a conversation at a time.
            slow = threading.Thread(target=lambda: s.chat({"model": "rlm", "messages": [user("serve-wait")]},
                                                          {"X-RLM-Conversation": "talk-2"}))
            slow.start()
            lm.wait_in_flight(1)
            status, body, _ = s.chat({"model": "rlm", "messages": [user("serve-question")]},
                                     {"X-RLM-Conversation": "talk-2"})
            self.assertEqual(status, 409, body)
            slow.join()
            status, body, _ = s.chat({"model": "rlm", "messages": [user("q")]},
                                     {"X-RLM-Conversation": "other"} | {})
            self.assertEqual(status, 200)
            status, body, _ = s.chat({"model": "rlm", "rlm": {"conversation_id": "a"},
                                      "messages": [user("q")]}, {"X-RLM-Conversation": "b"})
            self.assertEqual(status, 400)

    # ---- clients that leave, slow clients, many clients ----------------------------------

    def test_client_that_leaves_cancels_its_run(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm)
            baseline = set(children_of(s.proc.pid))
            for streamed in (True, False):
                conn = socket.create_connection(("127.0.0.1", s.port))
                body = json.dumps({"model": "rlm", "stream": streamed,
                                   "messages": [user("serve-slow")]}).encode()
                # Counted before the request goes: its root request may
                # reach the model before the next line would run.
                before = lm.counters()["requests"]
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                wait_until(lambda: lm.counters()["requests"] >= before + 2)   # root, then the 60 s sub-call
                # Its sandbox is alive now.
                self.assertGreater(len(set(children_of(s.proc.pid)) - baseline), 0)
                t0 = time.time()
                conn.close()
                # The run ends long before its sub-call would have: the
                # sub-call was abandoned (the fake server, which only answers
                # after 60 s, does not notice; our side does).
                wait_until(lambda: s.metrics()["rlm_runs_in_flight"] == 0, timeout=20)
                self.assertLess(time.time() - t0, 15)
                wait_until(lambda: set(children_of(s.proc.pid)) <= baseline, timeout=20)
            # A run leaves rlm_runs_in_flight when it ends; its request's
            # thread, which polls it every 250 ms, counts it in the totals.
            wait_until(lambda: s.metrics().get('rlm_runs_total{status="no answer"}', 0) >= 2, timeout=10)
            m = s.metrics()
            self.assertEqual(m['rlm_runs_total{status="no answer"}'], 2)

    def test_slow_headers_are_cut_and_others_served(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--read-timeout", "2", "--max-connections", "64")
            slow = []
            for _ in range(20):
                c = socket.create_connection(("127.0.0.1", s.port))
                c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                slow.append(c)
            # Keep trickling a header byte now and then: never idle.
            t0 = time.time()
            status, body, _ = s.chat({"model": "rlm", "messages": [user("serve-question")]})
            self.assertEqual(status, 200, body)
            self.assertLess(time.time() - t0, 10)
            closed = 0
            deadline = time.time() + 15
            while time.time() < deadline and closed < len(slow):
                closed = 0
                for c in slow:
                    try:
                        c.sendall(b"X")
                        c.setblocking(False)
                        try:
                            if c.recv(1024) == b"":
                                closed += 1
                        except BlockingIOError:
                            pass
                        finally:
                            c.setblocking(True)
                    except OSError:
                        closed += 1
                time.sleep(0.5)
            for c in slow:
                c.close()
            self.assertEqual(closed, len(slow))
            self.assertGreaterEqual(s.metrics()['rlm_refused_total{reason="read_timeout"}'], 20)

    def test_a_thousand_connections_at_once(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-connections", "100")
            # A first run opens what the server keeps for all of them (the
            # run log's connection: its file, WAL and shared memory).
            self.assertEqual(s.chat({"model": "rlm", "messages": [user("serve-question")]})[0], 200)
            fds_before = fd_count(s.proc.pid)
            socks = []
            for _ in range(1000):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=10))
                except OSError:
                    pass
            for c in socks:
                try:
                    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
            answered = clean = 0
            for c in socks:
                try:
                    data = recv_all(c, 30)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 200"):
                    answered += 1
                elif data == b"":
                    clean += 1
                c.close()
            self.assertEqual(answered + clean, len(socks))
            self.assertGreater(answered, 0)
            status, body, _ = s.chat({"model": "rlm", "messages": [user("serve-question")]})
            self.assertEqual(status, 200)
            wait_until(lambda: fd_count(s.proc.pid) <= fds_before + 2, timeout=20)

    # ---- nothing leaks ----------------------------------------------------------------

    def test_no_leaks_after_bad_and_good_requests(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--max-body", "256K")
            # Warm up: every path once.
            for _ in range(5):
                s.chat({"model": "rlm", "messages": [user("x" * 1000), user("serve-count")]})
                s.request("POST", "/v1/chat/completions", "{bad", {"Content-Type": "application/json"})
            time.sleep(0.5)
            pid = s.proc.pid
            fds, rss, kids, threads = fd_count(pid), rss_kb(pid), set(children_of(pid)), thread_count(pid)
            bad = ["{bad", "[]", json.dumps({"model": "rlm"}), "x" * 300000]
            for i in range(60):
                s.request("POST", "/v1/chat/completions", bad[i % len(bad)],
                          {"Content-Type": "application/json"})
                status, body, _ = s.chat({"model": "rlm", "messages": [user("y" * 20000),
                                                                       user("serve-count")]})
                self.assertEqual(status, 200, body)
                if i % 10 == 0:
                    conn = socket.create_connection(("127.0.0.1", s.port))
                    conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                    conn.close()
            time.sleep(1)
            wait_until(lambda: fd_count(pid) <= fds, timeout=20)
            wait_until(lambda: set(children_of(pid)) <= kids, timeout=20)
            wait_until(lambda: thread_count(pid) <= threads + 1, timeout=20)
            grown = rss_kb(pid) - rss
            # ASan's quarantine holds freed memory: there the leak checker
            # at exit (stopped_cleanly) is the test of memory.
            if not sanitized_build():
                self.assertLess(grown, 20 * 1024, "RSS grew %d KiB over 120 requests" % grown)

    # ---- the drain ------------------------------------------------------------------------

    def test_sigterm_drains(self):
        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--drain-timeout", "30")
            result = {}
            t = threading.Thread(target=lambda: result.update(r=s.chat(
                {"model": "rlm", "messages": [user("serve-wait")]})))
            t.start()
            lm.wait_in_flight(1)
            s.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: s.request("GET", "/health")[0] == 503)
            status, body, hdrs = s.chat({"model": "rlm", "messages": [user("serve-question")]})
            self.assertEqual(status, 503)
            self.assertIn("retry-after", hdrs)
            t.join()
            self.assertEqual(result["r"][0], 200)   # the running one finished
            self.assertEqual(result["r"][1]["choices"][0]["message"]["content"], "waited")
            self.assertEqual(s.proc.wait(30), 0)
            self.assertIn("draining", s.stderr())

        with FakeLM(RULES) as lm:
            s = self.serve(lm, "--drain-timeout", "1")
            result = {}
            t = threading.Thread(target=lambda: result.update(r=s.chat(
                {"model": "rlm", "messages": [user("serve-slow")]})))
            t.start()
            wait_until(lambda: lm.counters()["in_flight"] >= 1)
            t0 = time.time()
            s.proc.send_signal(signal.SIGTERM)
            t.join()
            self.assertEqual(s.proc.wait(30), 0)
            self.assertLess(time.time() - t0, 15)
            status, body, _ = result["r"]
            self.assertEqual(status, 503)
            self.assertEqual(body["error"]["code"], "cancelled")
            self.assertIn("cancelled 1 run", s.stderr())


def recv_all(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def wait_until(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met within %d s" % timeout)


if __name__ == "__main__":
    main()
