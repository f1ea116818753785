"""A question of a conversation cannot reach the next: each runs in a fresh
sandbox (forked from the conversation's zygote, which holds the inputs), and
only data crosses, as a snapshot the next question's child validates. Question
1 plants what it can (hooks, finalizers that call FINAL, str-subclass keys,
patched modules and REPL functions, a forged answer dict), in `rlm chat` and
across processes with --session: question 2's answer is its own, its REPL is
genuine, the data arrives (shared and cyclic references included), and its
first message names what did not. Also the snapshot's byte limit."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402

WORDS = "alpha beta gamma delta alpha\n"

# Question 1: data worth keeping, and everything that would let it steer
# question 2 if anything but data crossed.
PLANT = r'''
import collections, json
sys = json.codecs.sys
counts = collections.Counter(context.split())
big = "payload-" * 10
shared = [big, big]
cycle = []
cycle.append(cycle)
table = {"k": (1, 2.5, None), "s": {3, 4}}
from collections import Counter
def helper():
    return "helper ran"
class Planted:
    def __del__(self):
        FINAL("forged by a finalizer")
trap = [Planted()]
trap.append(trap)
class Key(str):
    def __hash__(self):
        return str.__hash__(self)
    def __eq__(self, other):
        FINAL("forged by a key")
        return False
globals()[Key("answer_2")] = "forged"
sys.modules["_rlm"].FINAL = lambda value: None
json.dumps = lambda *a, **k: "forged by json"
for hook in (lambda: sys.addaudithook(lambda e, a: 1 / 0),
             lambda: sys.settrace(lambda *a: None)):
    try:
        hook()
    except RuntimeError:
        pass
answer["content"] = "forged by the answer dict"
print("PLANTED")
'''

CHECK = r'''
import json
print("Q2-OUT", counts.most_common(1), shared[0] is shared[1], cycle[0] is cycle,
      table["s"], Counter is type(counts), "helper" in globals(), "Planted" in globals(),
      json.dumps([1]), answer["content"] == "", FINAL.__module__, answer_1)
'''

RULES = [
    {"match": r"PLANTED", "reply": "FINAL(q1-done)"},
    {"match": r"ISOQ1", "reply": repl(PLANT)},
    {"match": r"Q2-OUT (.*)", "reply": "FINAL(q2 $1)"},
    {"match": r"ISOQ2", "reply": repl(CHECK)},
]

EXPECTED_Q2 = ("q2 [('alpha', 2)] True True {3, 4} True False False [1] True _rlm q1-done")


class ConversationIsolation(RlmTestCase):
    def check_question_two(self, res, opening):
        self.assertNotIn("forged", res.stdout + res.stderr)
        # The first message of question 2 names what was left behind.
        self.assertIn("Not carried over (functions, classes and other objects that are not "
                      "data): ", opening)
        for name in ("helper", "Planted", "trap", "Key", "sys"):
            self.assertIn(name, opening)
        self.assertNotIn("counts", opening.split("Not carried over")[1].split(".")[0])

    def test_chat(self):
        words = self.write("words.txt", WORDS)
        with FakeLM(RULES) as lm:
            res = self.rlm(["--context", words], lm, command="chat",
                           stdin="ISOQ1 plant\nISOQ2 check\n")
            self.assertEqual(lm.counters()["unmatched"], 0)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "q1-done\n\n%s\n\n" % EXPECTED_Q2)
        ready = res.events("sandbox_ready")
        self.assertEqual(len(ready), 2)
        self.assertTrue(all(r["forked"] for r in ready))
        kept = res.events("data_kept")
        self.assertTrue(kept[0]["ok"])
        loaded = res.events("data_loaded")
        self.assertEqual([(d["ok"], d["from_question"]) for d in loaded], [(True, 1)])
        opening = [e for e in res.events("root_request") if e["turn"] == 1][1]["last_message"]
        self.check_question_two(res, opening)

    def test_session_across_processes(self):
        words = self.write("words.txt", WORDS)
        db = os.path.join(self.tmp, "s.db")
        session = ["--session", "iso", "--session-db", db]
        with FakeLM(RULES) as lm:
            one = self.rlm(session + ["--context", words, "ISOQ1 plant"], lm, trace_name="1.jsonl")
            self.assertExit(one, 0)
            two = self.rlm(session + ["ISOQ2 check"], lm, trace_name="2.jsonl")
        self.assertExit(two, 0)
        self.assertEqual(two.stdout, EXPECTED_Q2 + "\n")
        self.assertEqual(len(two.events("code")), 1)   # nothing of question 1 ran again
        opening = two.events("root_request")[0]["last_message"]
        self.check_question_two(two, opening)

    def test_tampered_data_is_refused_whole(self):
        # The database is a file: data changed there is checked like any
        # snapshot, refused whole, and the question starts from the inputs.
        words = self.write("words.txt", WORDS)
        db = os.path.join(self.tmp, "s.db")
        session = ["--session", "tamper", "--session-db", db]
        rules = [{"match": r"TQ1", "reply": repl("kept = [1, 2, 3]\nFINAL('one')")},
                 {"match": r"TQ2", "reply": repl("FINAL('%s' % ('kept' in globals()))")}]
        with FakeLM(rules) as lm:
            self.assertExit(self.rlm(session + ["--context", words, "TQ1"], lm), 0)
            import sqlite3
            con = sqlite3.connect(db)
            data = bytearray(con.execute("SELECT data FROM snapshots").fetchone()[0])
            data += b"Z"   # a byte after the last variable
            con.execute("UPDATE snapshots SET data = ?, not_carried = ?",
                        (bytes(data), '[{"count": 3}, {"reason": "not_data", "count": 1, '
                                      '"names": [7]}]'))
            con.commit()
            con.close()
            res = self.rlm(session + ["TQ2"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "False\n")
        loaded = res.events("data_loaded")[0]
        self.assertFalse(loaded["ok"])
        self.assertIn("invalid snapshot", loaded["error"])
        opening = res.events("root_request")[0]["last_message"]
        self.assertIn("could not be given back", opening)

    def test_snapshot_limit(self):
        rules = [
            {"match": r"LIMQ1", "reply": repl("big = 'x' * 5000\nsmall = 'kept'\nFINAL('one')")},
            {"match": r"LIMQ2", "reply": repl("FINAL('%s %s' % ('big' in globals(), small))")},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--snapshot-max", "2K", "--context", self.write("c.txt", "x")], lm,
                           command="chat", stdin="LIMQ1\nLIMQ2\n")
        self.assertExit(res, 0)
        self.assertEqual(res.stdout, "one\n\nFalse kept\n\n")
        opening = [e for e in res.events("root_request") if e["turn"] == 1][1]["last_message"]
        self.assertIn("Not carried over (too large to carry): big.", opening)
        bad = self.rlm(["--snapshot-max", "12", "--context", self.write("d.txt", "x")], None,
                       command="chat", stdin="")
        self.assertExit(bad, 2)
        self.assertIn("--snapshot-max", bad.stderr)


if __name__ == "__main__":
    main()
