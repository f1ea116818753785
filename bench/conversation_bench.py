#!/usr/bin/env python3
"""Conversation benchmark: what a question of `rlm chat` costs before the
model is asked, over a 40 MB input. fakelm answers at once; each question
makes a variable (a list of 100,000 ints and a dict), and later questions
use the earlier ones' data. From the trace it prints, as medians over the
questions after the first, the time from the `question` event to the first
`root_request` (starting the question's sandbox and handing it what earlier
questions left), the end of a question to the next's start, and the time a
question's sandbox takes to write its data (`data_kept`); then the same with
RLM_SANDBOX_FLOOR_ONLY (no namespaces, no Landlock).

usage: bench/conversation_bench.py [--build DIR] [--questions N] [--repeat N]
Standard library only; asserts nothing but that every question was answered.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))


def repl(code):
    return "```repl\n" + code.strip("\n") + "\n```"


RULES = [
    {"match": r"CONVQ1\b", "reply": repl(
        "nums = list(range(100000))\ntable = {str(i): i * 2 for i in range(10000)}\n"
        "FINAL('a1:%d' % len(context))")},
    {"match": r"CONVQ(\d+)", "reply": repl(
        "nums.append($1)\ntable['q$1'] = len(nums)\nFINAL('a$1:%d' % len(nums))")},
]


def run_chat(build, lm, ctx, questions, env):
    trace = tempfile.mktemp(suffix=".jsonl")
    cmd = [os.path.join(build, "rlm"), "chat", "--quiet", "--model", "root", "--sub-model",
           "sub", "--base-url", lm.base_url, "--trace", trace, "--context", ctx]
    stdin = "".join("CONVQ%d\n" % (k + 1) for k in range(questions))
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit("rlm chat failed (%d): %s" % (proc.returncode, proc.stderr))
    with open(trace) as f:
        events = [json.loads(line) for line in f]
    os.unlink(trace)
    return events


def data_seconds(events):
    """How long each question took to write the data it leaves (data_kept)."""
    return [e["seconds"] for e in events if e["type"] == "data_kept" and e.get("ok")]


def question_starts(events):
    """Per question: (start to first root request, previous run_end to this question)."""
    rows, start, first, last_end = [], None, False, None
    for e in events:
        if e.get("node") != "0":
            continue
        if e["type"] == "question":
            start, first = e["t"], True
            gap = e["t"] - last_end if last_end is not None else None
        elif e["type"] == "root_request" and first:
            rows.append((e["t"] - start, gap))
            first = False
        elif e["type"] == "run_end":
            last_end = e["t"]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    os.environ["RLM_BUILD_DIR"] = build
    import harness
    harness.FAKELM = os.path.join(build, "fakelm")
    size = 40 * 1024 * 1024
    with tempfile.TemporaryDirectory() as d:
        ctx = os.path.join(d, "big.txt")
        line = "lorem ipsum dolor sit amet, consectetur adipiscing elit 0123\n"
        with open(ctx, "w") as f:
            f.write(line * (size // len(line)))
        for label, extra in (("every layer", {}), ("floor only", {"RLM_SANDBOX_FLOOR_ONLY": "1"})):
            env = dict(os.environ, XDG_CACHE_HOME=d, **extra)
            firsts, laters, gaps, kept = [], [], [], []
            for _ in range(args.repeat):
                with harness.FakeLM(RULES) as lm:
                    events = run_chat(build, lm, ctx, args.questions, env)
                rows = question_starts(events)
                kept += data_seconds(events)
                if len(rows) != args.questions:
                    raise SystemExit("expected %d questions, saw %d" % (args.questions, len(rows)))
                firsts.append(rows[0][0])
                laters += [r[0] for r in rows[1:]]
                gaps += [r[1] for r in rows[1:] if r[1] is not None]
            print("conversation over %.0f MB, %s: question 1 start %.1f ms; questions 2-%d start "
                  "%.1f ms, end of one to start of the next %.1f ms, writing a question's data "
                  "%s (medians over %d runs)"
                  % (size / 1e6, label, statistics.median(firsts) * 1e3, args.questions,
                     statistics.median(laters) * 1e3, statistics.median(gaps) * 1e3,
                     "%.1f ms" % (statistics.median(kept) * 1e3) if kept else "-",
                     args.repeat))


if __name__ == "__main__":
    main()
