"""A run with a bit of everything, for the tests of what a user sees of a
run (--verbose, rlm view, the run log): a depth-2 tree (the root starts a
child RLM), a batch of sub-calls with one that fails after its retries and
one retried once, code that raises, and model text holding HTML and script
that must be shown as text, never run."""
from harness import FakeLM, repl

QUESTION = "Summarise the records"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'

RULES = [
    # The child RLM: its question is the prompt rlm_query gave it.
    {"match": r"CHILDQ", "reply": "The child answers at once.\n" + repl('FINAL("child says 42")')},
    {"match": r"^PART 3:", "status": 500, "reply": "the part server broke"},
    {"match": r"^PART 5:", "times": 1, "status": 503, "reply": "busy, try again"},
    {"match": r"^PART (\d+):", "reply": "part $1 done"},
    {"match": r"ROOT-GOT:", "reply": "All parts are in. " + HOSTILE + "\nFINAL(12 parts, the child said 42 " + HOSTILE + ")"},
    {"match": QUESTION, "reply": "I will split the work, then ask a child RLM.\n" + repl(
        'parts = llm_query_batched(["PART %d: count the records" % i for i in range(12)])\n'
        'print(len(parts), sum(1 for p in parts if p.startswith("Error")))\n'
        'size = len(context_0)\n'
        'c = rlm_query("CHILDQ: what does the child find?")\n'
        'print("ROOT-GOT:" + c)') + "\n" + repl('print("' + HOSTILE.replace('"', '\\"') + '")\n1/0')},
]

ARGS = ["--max-depth", "2", "--max-retries", "2"]


def context(case):
    """The run's input file, written in case's directory."""
    return case.write("records.txt", "".join("record %d: value %d\n" % (i, i * 7) for i in range(200)))


def trace(case):
    """Runs it in case (an RlmTestCase) and returns its trace's path."""
    with FakeLM(RULES) as lm:
        res = case.rlm(ARGS + ["--context", context(case), QUESTION], lm)
    case.assertExit(res, 0)
    return res.trace_path
