#!/usr/bin/env python3
"""Writes seed snapshots for fuzz_snapshot into DIR, straight from the format
(docs/internals/snapshot-format.md), not through rlm's encoder."""
import os
import struct
import sys


def u64(n):
    return struct.pack("<Q", n)


def name(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b


def sized(tag, b):
    return tag + u64(len(b)) + b


def snapshot(entries):
    return b"RLMSNAP\x01" + u64(len(entries)) + b"".join(name(n) + v for n, v in entries)


SEEDS = {
    "scalars": [("n", b"N"), ("t", b"T"), ("i", b"I" + struct.pack("<q", -7)),
                ("f", b"D" + struct.pack("<d", 1.5)), ("c", b"C" + struct.pack("<dd", 1, 2)),
                ("s", sized(b"S", "caf\u00e9".encode())), ("b", sized(b"B", b"\x00\xff")),
                ("big", sized(b"L", (2 ** 100).to_bytes(14, "little", signed=True)))],
    "containers": [("x", b"[" + u64(2) + b"(" + u64(1) + b"N" + b"{" + u64(1) + b"I" + u64(1)
                        + b"s" + u64(1) + b"F"),
                   ("fs", b"f" + u64(2) + b"T" + b"F")],
    "shared": [("a", b"[" + u64(2) + b"N" + b"R" + u64(0)),
               ("s", sized(b"S", b"x" * 20)), ("again", b"R" + u64(1))],
    "collections": [("c", b"c" + u64(1) + sized(b"S", b"k") + b"I" + u64(3)),
                    ("o", b"o" + u64(1) + b"N" + b"N"),
                    ("d", b"d" + b"A" + name("builtins") + name("list") + u64(0)),
                    ("q", b"q" + struct.pack("<q", 2) + u64(1) + b"T")],
    "modules": [("re", b"M" + name("re")), ("Counter", b"A" + name("collections") + name("Counter"))],
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for key, entries in SEEDS.items():
        with open(os.path.join(out, key + ".snap"), "wb") as f:
            f.write(snapshot(entries))


if __name__ == "__main__":
    main()
