"""Resident memory of a process and all its descendants, read from /proc:
the benchmarks' one way to measure host + sandbox memory together."""
import os
import threading
import time


def tree_pids(root):
    """root and every descendant's pid."""
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(pid))
        except OSError:
            pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        out.append(pid)
    return out


def tree_pss_kb(root):
    """Proportional set size of root and its descendants together, KiB:
    pages a zygote shares with the sandboxes forked from it counted once."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def tree_rss_kb(root):
    """RSS of root and of every descendant, in KiB, as {pid: (name, rss)}."""
    out = {}
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/status" % pid) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            out[pid] = (status["Name"].strip(), int(status.get("VmRSS", "0 kB").split()[0]))
        except (OSError, KeyError, ValueError):
            pass
    return out


def own_and_rest_kb(root):
    """(RSS of root, RSS of all its descendants together), KiB."""
    rss = tree_rss_kb(root)
    own = rss.pop(root, ("", 0))[1]
    return own, sum(r for _, r in rss.values())


class PeakMemory(threading.Thread):
    """Samples a process tree every `interval` seconds until stop(); keeps
    the peak of the sum (peak_kb) and of each side (peak_own_kb, peak_rest_kb)."""

    def __init__(self, pid, interval=0.005):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = self.peak_own_kb = self.peak_rest_kb = 0
        self._done = False

    def run(self):
        while not self._done:
            own, rest = own_and_rest_kb(self.pid)
            self.peak_kb = max(self.peak_kb, own + rest)
            self.peak_own_kb = max(self.peak_own_kb, own)
            self.peak_rest_kb = max(self.peak_rest_kb, rest)
            time.sleep(self.interval)

    def stop(self):
        self._done = True
        self.join()
