"""The tests clean up after themselves (issue 13, item 13): a test's
temporary directory, a fake server's directory and the files rlm writes for a
test (its cache, sessions and prices, kept under the test's directory rather
than the user's) are gone when the test ends; RLM_KEEP_TEST_DIRS=1 keeps
them."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import FakeLM, RlmTestCase  # noqa: E402


class Probe(RlmTestCase):
    def test_probe(self):
        pass


class Cleanup(unittest.TestCase):
    def test_fake_server_directory_is_removed(self):
        with FakeLM([{"match": ".", "reply": "FINAL(x)"}]) as lm:
            where = lm.dir
            self.assertTrue(os.path.isdir(where))
        self.assertFalse(os.path.exists(where))

    def test_test_directory_and_user_files_are_removed(self):
        probe = Probe("test_probe")
        probe.setUp()
        where = probe.tmp
        _, env, _ = probe.rlm_command([], None)
        self.assertTrue(env["XDG_CACHE_HOME"].startswith(where))
        self.assertTrue(env["XDG_DATA_HOME"].startswith(where))
        probe.write("a.txt", "x")
        probe.doCleanups()
        self.assertFalse(os.path.exists(where))

    def test_keep_on_request(self):
        code = ("import sys; sys.path.insert(0, %r); import harness; "
                "from harness import FakeLM\n"
                "with FakeLM([]) as lm: print(lm.dir)\n") % os.path.dirname(harness.__file__)
        env = dict(os.environ, RLM_KEEP_TEST_DIRS="1")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        where = proc.stdout.splitlines()[0]
        self.assertIn("kept: " + where, proc.stdout)
        self.assertTrue(os.path.isdir(where))
        subprocess.run(["rm", "-rf", where])


if __name__ == "__main__":
    unittest.main(verbosity=2)
