"""What a user sees of a run on stderr: -v in a pipe (plain text: the turns,
the code, the outputs, one line per batch, the child indented; nothing on
stdout but the answer), --progress in a pipe (whole lines and the summary),
and the live view in a pseudo-terminal (the line rewrites itself within the
terminal's width, code is coloured, the summary line follows the answer),
and nothing at all in a pipe unless asked."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main  # noqa: E402
import rich_run  # noqa: E402

ANSWER = "12 parts, the child said 42 " + rich_run.HOSTILE


class Verbose(RlmTestCase):
    def command(self, lm, extra):
        cmd, env, _ = self.rlm_command(rich_run.ARGS + extra + ["--context", rich_run.context(self),
                                                                rich_run.QUESTION], lm)
        cmd.remove("--quiet")
        return cmd, env

    def run_piped(self, extra):
        with FakeLM(rich_run.RULES) as lm:
            cmd, env = self.command(lm, extra)
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)

    def test_verbose_in_a_pipe(self):
        p = self.run_piped(["-v"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ANSWER + "\n")   # stdout holds the answer only
        err = p.stderr
        self.assertNotIn("\033", err)               # no colour, no cursor movement in a pipe
        self.assertIn("── turn 1 · root", err)
        # Turn 2 resends turn 1's prefix, which the server's cache serves.
        self.assertRegex(err, r"── turn 2 · root · [\d.]+s · \d+\+\d+ tokens \(\d+ cached\)")
        self.assertIn("I will split the work", err)
        self.assertIn('│ parts = llm_query_batched(["PART %d: count the records" % i for i in range(12)])', err)
        self.assertIn("ZeroDivisionError", err)
        self.assertIn("· raised", err)
        # One line for the batch: its bar and its counts.
        batch = [line for line in err.splitlines() if "sub-calls × 12" in line]
        self.assertEqual(len(batch), 1, err)
        self.assertRegex(batch[0], r"\[#+x+\] 11 done, 1 failed, 3 retried")
        # The child RLM's lines are indented under its parent.
        self.assertRegex(err, r"\n  ↳ child RLM 0\.1 \(depth 2\) starts")
        self.assertRegex(err, r"\n  ── turn 1 · 0\.1")
        self.assertRegex(err, r"\n  │ FINAL\(\"child says 42\"\)")
        self.assertIn("✓ final answer (FINAL in text) at turn 2", err)
        # No progress line and no summary unless asked, in a pipe.
        self.assertNotIn("rlm: turn", err)
        self.assertNotRegex(err, r"rlm: \d+ turns")

    def test_nothing_in_a_pipe_unless_asked(self):
        p = self.run_piped([])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ANSWER + "\n")
        self.assertNotIn("turn", p.stderr)
        self.assertNotIn("sub-calls ·", p.stderr)

    def test_progress_in_a_pipe(self):
        p = self.run_piped(["--progress"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ANSWER + "\n")
        self.assertNotIn("\r", p.stderr)
        self.assertIn("rlm: starting", p.stderr)
        self.assertRegex(p.stderr, r"rlm: 2 turns · 13 sub-calls · [\d,]+ tokens \([\d,]+ cached\) · prices unknown · [\d.]+s\n")

    def test_live_view_in_a_terminal(self):
        master, slave = pty.openpty()
        # A narrow terminal: the live line must fit in it.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
        with FakeLM(rich_run.RULES, latency_ms=300) as lm:
            cmd, env = self.command(lm, ["-v"])
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=slave)
            os.close(slave)
            chunks = []
            while True:
                ready, _, _ = select.select([master], [], [], 60)
                if not ready:
                    break
                try:
                    data = os.read(master, 65536)
                except OSError:   # the terminal's other side closed: the run ended
                    break
                if not data:
                    break
                chunks.append(data)
            out = proc.stdout.read().decode()
            proc.stdout.close()
            proc.wait(timeout=60)
            os.close(master)
        err = b"".join(chunks).decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out, ANSWER + "\n")
        # The live line rewrites itself, and every one fits in 59 columns.
        # (A live line is followed by the next redraw or erasure, never a newline.)
        lines = re.findall(r"\r\033\[K(rlm: [^\r\n]*)(?=\r\033)", err)
        self.assertTrue(lines, err)
        for line in lines:
            self.assertLessEqual(len(line), 59, line)
        self.assertTrue(any("waiting for root-model" in line for line in lines), lines)
        # Its clock ticks while the model is silent (300 ms a reply): the
        # same state is drawn again with a later time.
        waits = [line for line in lines if "waiting for root-model" in line]
        self.assertGreater(len(set(waits)), 1, waits)
        # Code is coloured; model text cannot reach the terminal raw.
        self.assertIn("\033[33mllm_query_batched\033[0m", err)
        self.assertNotIn('<script>document.title="pwned"</script>\033', err)
        self.assertRegex(err, r"rlm: 2 turns · 13 sub-calls · [\d,]+ tokens \([\d,]+ cached\) · prices unknown · [\d.]+s")


if __name__ == "__main__":
    main()
