#!/usr/bin/env python3
"""check-banned.py — fails when C code calls a function the project bans
(STYLE: no strcpy, strcat, sprintf, vsprintf, gets, strtok, atoi, atol,
system, popen; and their siblings atoll, atof, tmpnam, mktemp): each has a
bounded or checked replacement (snprintf, buf_*, str_dup_len, parse_long,
parse_double, mkstemp, posix_spawn). Comments and string literals are
skipped, so prose may name them.

usage: scripts/check-banned.py [DIR...]   (default: the C directories of the repo)
Exit 0 when none is called, 1 with one line per call (file:line: name()).
Standard library only.
"""
import os
import re
import sys

BANNED = ("strcpy", "strcat", "sprintf", "vsprintf", "gets", "strtok", "atoi", "atol",
          "atoll", "atof", "system", "popen", "tmpnam", "mktemp")
CALL = re.compile(r"(?<![A-Za-z0-9_.>])(%s)\s*\(" % "|".join(BANNED))
DIRS = ("src", "cli", "tools", "tests", "bench", "fuzz", "include")


def code_only(text):
    """text with comments and string/char literals blanked, newlines kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j]) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = sys.argv[1:] or [os.path.join(root, d) for d in DIRS]
    found = 0
    for top in dirs:
        for base, subdirs, files in os.walk(top):
            subdirs[:] = sorted(d for d in subdirs if d not in ("out", "build"))
            for name in sorted(files):
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(base, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    code = code_only(f.read())
                for lineno, line in enumerate(code.split("\n"), 1):
                    for m in CALL.finditer(line):
                        print("%s:%d: %s() is banned" % (os.path.relpath(path, root), lineno,
                                                         m.group(1)))
                        found += 1
    if found:
        print("check-banned: %d call(s) of banned functions (STYLE.md)" % found, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
