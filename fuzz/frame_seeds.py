#!/usr/bin/env python3
"""Writes seed streams for fuzz_frame into DIR, straight from the wire format
(docs/internals/sandbox-protocol.md): two header bytes (which frames are raw,
the reader's limit and chunk size), then length-prefixed frames."""
import json
import os
import struct
import sys


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def obj(value):
    return frame(json.dumps(value, separators=(",", ":")).encode())


CALL = {"type": "call", "kind": "llm", "model": None, "prompt_lengths": [5, 3]}
SEEDS = {
    # A call frame and its raw prompts (frame 1 raw), then a result.
    "call_raw": (0b010, 12, obj(CALL) + frame(b"hello\0abc\0")
                 + obj({"type": "result", "output": "x", "ok": True})),
    "ready": (0, 7, obj({"type": "ready", "python": "3.11", "layers": {}})),
    "garbled": (0, 3, frame(b"{not json") + obj({"type": "ready"})),
    "not_object": (0, 9, frame(b"[1,2,3]")),
    "empty_payload": (0, 1, frame(b"")),
    "oversized": (0, 0, struct.pack(">I", 1 << 20) + b"{}"),
    "truncated_body": (0, 5, struct.pack(">I", 100) + b'{"type":'),
    "truncated_head": (0, 2, b"\x00\x00"),
    "nul_in_string": (0, 4, frame(b'{"type":"result","output":"a\\u0000b"}')),
    # Streamed batches (bit 7): piece count - 1, the lengths, then the raw frame.
    "pieces": (0x80, 12, bytes([2, 5, 3, 0]) + frame(b"hello\0abc\0\0")),
    "pieces_bad_total": (0x80, 12, bytes([1, 2, 1]) + frame(b"ab\0c\0\0")),
    "pieces_no_nul": (0x80, 12, bytes([1, 2, 1]) + frame(b"abXc\0")),
    "pieces_truncated": (0x80, 12, bytes([1, 2, 1]) + struct.pack(">I", 5) + b"ab\0"),
    "pieces_oversized": (0x80, 0, bytes([0, 200]) + struct.pack(">I", 201)),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (mask, limit, stream) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([mask, limit]) + stream)


if __name__ == "__main__":
    main()
