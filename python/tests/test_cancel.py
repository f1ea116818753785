"""Ctrl-C in the middle of a run: the run is cancelled through rlm_cancel,
KeyboardInterrupt reaches the program once the sandbox is stopped, and no
sandbox process or thread is left behind. The run is in a child Python
process, sent a real SIGINT while its request is in flight."""
import json
import os
import signal
import subprocess
import sys
import textwrap

from harness import FakeLM

CHILD = textwrap.dedent("""
    import json, os, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    import rlm

    def descendants():
        kids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/stat" % pid) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == os.getpid() and fields[0] != "Z":
                    kids.append(int(pid))
        return kids

    out = {}
    stream = len(sys.argv) > 3
    tasks_before = len(os.listdir("/proc/self/task"))
    try:
        if stream:
            for event in rlm.stream("slow question", "ctx", base_url=sys.argv[1], model="m",
                                    mode="rlm"):
                pass
        else:
            rlm.ask("slow question", "ctx", base_url=sys.argv[1], model="m", mode="rlm")
        out["outcome"] = "answered"
    except KeyboardInterrupt:
        out["outcome"] = "KeyboardInterrupt"
    out["threads"] = [t.name for t in threading.enumerate()]
    time.sleep(0.2)
    # Native threads too (the library's I/O thread, the worker): all gone.
    out["tasks_added"] = len(os.listdir("/proc/self/task")) - tasks_before
    out["children"] = descendants()
    print(json.dumps(out), flush=True)
""")


def run_and_interrupt(tmp_path, stream=False):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rules = [{"match": "", "reply": "```repl\nx = 1\n```", "latency_ms": 60000}]
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__import__("rlm").__file__)))
    with FakeLM(rules) as lm:
        proc = subprocess.Popen([sys.executable, str(script), lm.base_url, pkg]
                                + (["stream"] if stream else []),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lm.wait_in_flight(1)
            # The sandbox is up by the time the root's request is in flight.
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out), err


def test_ctrl_c_cancels_the_run(tmp_path):
    out, err = run_and_interrupt(tmp_path)
    assert out["outcome"] == "KeyboardInterrupt", err
    assert out["threads"] == ["MainThread"]
    assert out["tasks_added"] == 0
    assert out["children"] == []


def test_ctrl_c_while_streaming(tmp_path):
    out, err = run_and_interrupt(tmp_path, stream=True)
    assert out["outcome"] == "KeyboardInterrupt", err
    assert out["threads"] == ["MainThread"]
    assert out["tasks_added"] == 0
    assert out["children"] == []
