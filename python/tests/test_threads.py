"""Two runs from two Python threads at once: both in flight together (the
GIL is released during runs), each with its own answer."""
import threading
import time

import rlm
from common import opts, repl
from harness import FakeLM


def test_two_threads_run_at_once():
    rules = [{"match": r"question (\d)", "reply": repl("FINAL('answer $1')"), "latency_ms": 1500}]
    results = {}
    ticks = []
    with FakeLM(rules) as lm:
        def run(n):
            results[n] = rlm.ask("question %d" % n, "ctx %d" % n, **opts(lm))

        threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        # The main thread keeps running Python while both runs wait on the model.
        while any(t.is_alive() for t in threads):
            ticks.append(time.monotonic())
            time.sleep(0.01)
        for t in threads:
            t.join()
        counters = lm.counters()
    assert results[1].answer == "answer 1" and results[2].answer == "answer 2"
    assert counters["max_in_flight"] == 2
    assert len(ticks) > 50
