"""The corpus of reference-style replies (tests/data/corpus, README there) run
end to end: each case's replies, written the way models trained on the
reference library `rlms` write them, go through the real `rlm ask` against
the fake server, and must finish with the expected answer, `how` and exit
code — unchanged code, no adaptation to rlm."""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main  # noqa: E402

CORPUS = os.path.join(os.environ.get("RLM_TEST_DATA") or
                      os.path.join(os.path.dirname(__file__), "..", "data"), "corpus")


class Corpus(RlmTestCase):
    def write_input(self, name, value):
        """A .jsonl input is a list of records, one line each (a str starting
        "RAW:" is written as is: a broken line); a .json input any value."""
        if name.endswith(".jsonl") and isinstance(value, list):
            text = "".join((item[4:] if isinstance(item, str) and item.startswith("RAW:")
                            else json.dumps(item)) + "\n" for item in value)
        elif name.endswith(".json") and not isinstance(value, str):
            text = json.dumps(value)
        else:
            text = value
        return self.write(name, text)

    def run_case(self, path):
        with open(path) as f:
            case = json.load(f)
        for name, value in case.get("inputs", {}).items():
            self.write_input(name, value)
        args = ["--json"] + case.get("args", ["--max-iterations", "4"])
        for c in case.get("context", []):
            args += ["--context", os.path.join(self.tmp, c)]
        with FakeLM(case["rules"]) as lm:
            res = self.rlm(args + [case["question"]], lm)
            log = lm.requests()
            unmatched = lm.counters()["unmatched"]
        expect = case["expect"]
        self.assertExit(res, expect.get("exit", 0))
        self.assertEqual(unmatched, 0, "a request no rule matched: %s" %
                         [r.get("last_user", "")[-300:] for r in log if r.get("rule") == -1])
        report = res.report
        if "answer" in expect:
            self.assertEqual(report["answer"], expect["answer"])
        if "how" in expect:
            self.assertEqual(report["how"], expect["how"])
            if expect["how"]:
                self.assertEqual(res.events("final_answer")[-1]["how"], expect["how"])
        outputs = [e.get("output") or "" for e in res.events("code")]
        for pattern in expect.get("outputs", []):
            self.assertTrue(any(re.search(pattern, o, re.M) for o in outputs),
                            "no output matches %r: %r" % (pattern, outputs))
        # What each request ended with, whole (the server's log cuts it).
        users = [e.get("last_message") or "" for e in res.events("root_request")]
        for pattern in expect.get("requests", []):
            self.assertTrue(any(re.search(pattern, u) for u in users),
                            "no request matches %r" % pattern)
        for pattern in expect.get("no_request", []):
            self.assertFalse(any(re.search(pattern, u) for u in users),
                             "a request matches %r" % pattern)


def add_cases():
    paths = sorted(glob.glob(os.path.join(CORPUS, "*.json")))
    if not paths:
        raise RuntimeError("no corpus cases in " + CORPUS)
    for path in paths:
        name = "test_" + os.path.splitext(os.path.basename(path))[0]
        setattr(Corpus, name, lambda self, p=path: self.run_case(p))


add_cases()

if __name__ == "__main__":
    main()
