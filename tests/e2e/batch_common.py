"""What the tests and the benchmark of `rlm batch` share: a fake-model script
whose answers depend on the task (so a result in the wrong place shows), task
files, reading a results file. Standard library only."""
import json
import os

from harness import repl

# Turn 1 asks one sub-call whose reply names the task, turn 2 finishes with
# it: every task costs 2 root turns and 1 sub-call, and its answer is
# "answer-N" for the question "Question N: ...".
def script_rules():
    return [
        {"match": r"^echo (\d+)$", "reply": "answer-$1"},
        {"match": r"(?i)turn 2 of", "reply": "Done.\n" + repl("FINAL(found)")},
        {"match": r"(?s)Question (\d+): what", "reply": repl('found = llm_query("echo $1")\nprint(found)')},
    ]


def task(n, inputs, **extra):
    t = {"id": "t%d" % n, "question": "Question %d: what is the code word?" % n, "inputs": inputs}
    t.update(extra)
    return t


def write_tasks(path, tasks):
    with open(path, "w") as f:
        for t in tasks:
            f.write((t if isinstance(t, str) else json.dumps(t)) + "\n")
    return path


def read_results(path):
    """The result lines of a file, parsed; a torn line fails the test."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    assert text == "" or text.endswith("\n"), "torn last line in %s" % path
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0
