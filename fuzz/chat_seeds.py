"""Seeds for fuzz_chat: chat completions request bodies (plain, streamed,
named inputs, the rlm extension, content parts, bad shapes) and MCP message
lines (initialize, tools/call, notifications, a batch). Usage:
chat_seeds.py CORPUS_DIR"""
import json
import os
import sys

u = {"role": "user", "content": "what is in it?"}
BODIES = [
    {"model": "rlm", "messages": [u]},
    {"model": "rlm", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a document"}, u]},
    {"model": "rlm:docs", "messages": [{"role": "assistant", "content": "earlier"}, u],
     "rlm": {"max_cost": 0.5, "max_time": 30, "max_subcalls": 10, "conversation_id": "c-1",
             "progress": True}},
    {"model": "rlm", "rlm": {"input": "logs"}, "temperature": 0.2, "max_tokens": 10,
     "messages": [{"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "text", "text": "two"}]}]},
    {"model": "gpt-4", "messages": [u], "n": 2, "tools": []},
    {"model": "rlm", "messages": [{"role": "developer", "content": "x"}, {"role": "tool", "content": "y"}, u]},
]
MCP = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}},
    {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {
        "name": "rlm_ask", "arguments": {"question": "q", "paths": ["src", "*.md"], "max_cost": 1},
        "_meta": {"progressToken": 3}}},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "rlm_describe", "arguments": {"paths": ["a"]}}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "a"}},
    [{"jsonrpc": "2.0", "id": 3, "method": "ping"}],
]

out = sys.argv[1]
for i, b in enumerate(BODIES):
    with open(os.path.join(out, "chat-%d.json" % i), "w") as f:
        json.dump(b, f)
for i, m in enumerate(MCP):
    with open(os.path.join(out, "mcp-%d.json" % i), "w") as f:
        json.dump(m, f)
