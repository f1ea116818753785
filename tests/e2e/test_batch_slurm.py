"""rlm batch on a real single-node Slurm (the distribution's slurm-wlm and
munge, started by slurm_local.py in a directory of their own and stopped
afterwards): an array job of 4 shards over 200 tasks against the fake model
server; one shard is cancelled with scancel midway and resubmitted alone;
rlm batch merge then finds every task exactly once. Skipped (exit 77, with
the reason) when Slurm cannot start here."""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import RLM, FakeLM, isolated_env, remove_later  # noqa: E402
from batch_common import count_lines, read_results, script_rules, task, write_tasks  # noqa: E402
from slurm_local import LocalSlurm, SlurmUnavailable  # noqa: E402

TASKS = 200
SHARDS = 4

# The job script of docs/cluster.md, trimmed to what the test needs: the
# shard comes from the array (SLURM_ARRAY_TASK_ID of --shards), so one
# index resubmitted alone is still its own shard.
JOB = """#!/bin/bash
#SBATCH --job-name=rlm-batch
#SBATCH --cpus-per-task=1
exec "$RLM" batch "$TASKS" --out "$OUT/results.{shard}.jsonl" --shards %d \\
    --tasks-in-flight 4 --mode rlm --model root-model --sub-model sub-model \\
    --base-url "$BASE_URL"
""" % SHARDS


class BatchOnSlurm(unittest.TestCase):
    slurm = None

    @classmethod
    def setUpClass(cls):
        try:
            cls.slurm = LocalSlurm(cpus=max(2, os.cpu_count() or 2)).start()
        except SlurmUnavailable as e:
            print("SKIP: a local Slurm cannot start here: %s" % e, flush=True)
            sys.exit(77)

    @classmethod
    def tearDownClass(cls):
        if cls.slurm:
            cls.slurm.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="rlm-e2e-slurm-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(remove_later, self.tmp)

    def submit(self, lm, tasks_path, array):
        job = os.path.join(self.tmp, "batch.sbatch")
        with open(job, "w") as f:
            f.write(JOB)
        env_vars = dict(isolated_env(self.tmp), RLM=RLM, TASKS=tasks_path, OUT=self.tmp,
                        BASE_URL=lm.base_url)
        export = "ALL," + ",".join("%s=%s" % kv for kv in env_vars.items())
        return self.slurm.sbatch(["--array=%s" % array, "--export=" + export, "--chdir", self.tmp,
                                  "-o", os.path.join(self.tmp, "slurm-%A_%a.out"), job])

    def shard_log(self, job, index):
        path = os.path.join(self.tmp, "slurm-%s_%d.out" % (job, index))
        if not os.path.exists(path):
            return "(no log)"
        with open(path, errors="replace") as f:
            return f.read()

    def test_array_with_a_shard_cancelled_and_resubmitted(self):
        with open(os.path.join(self.tmp, "doc.txt"), "w") as f:
            f.write("Nothing in here: the sub-model knows the code words.\n" * 50)
        tasks_path = write_tasks(os.path.join(self.tmp, "tasks.jsonl"),
                                 [task(i, ["doc.txt"]) for i in range(TASKS)])
        out = [os.path.join(self.tmp, "results.%d.jsonl" % i) for i in range(SHARDS)]
        with FakeLM(script_rules(), latency_ms=100) as lm:
            job = self.submit(lm, tasks_path, "0-%d" % (SHARDS - 1))
            # Shard 1, cancelled once it has done some of its 50 tasks.
            deadline = time.time() + 300
            while count_lines(out[1]) < 5:
                if time.time() > deadline:
                    self.fail("shard 1 made no progress: %s" % self.shard_log(job, 1))
                if "%s_1" % job not in self.slurm.jobs() and count_lines(out[1]) < 5:
                    self.fail("shard 1 ended before it could be cancelled: %s" % self.shard_log(job, 1))
                time.sleep(0.1)
            self.slurm.run("scancel", ["%s_1" % job])
            self.slurm.wait_idle(600)
            cancelled_with = read_results(out[1])
            self.assertLess(len(cancelled_with), TASKS // SHARDS,
                            "shard 1 finished before scancel: %s" % self.shard_log(job, 1))
            for i in (0, 2, 3):
                self.assertEqual(len(read_results(out[i])), TASKS // SHARDS, self.shard_log(job, i))

            again = self.submit(lm, tasks_path, "1")
            self.slurm.wait_idle(600)
            log = self.shard_log(again, 1)
            self.assertIn("%d tasks already done" % len(cancelled_with), log, log[-3000:])
            requests = lm.counters()["requests"]

        results = read_results(out[1])
        self.assertEqual(results[:len(cancelled_with)], cancelled_with)
        merged = os.path.join(self.tmp, "merged.jsonl")
        env = dict(os.environ, **isolated_env(self.tmp))
        res = subprocess.run([RLM, "batch", "merge", "--tasks", tasks_path, "-o", merged, "--json"] + out,
                             capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(res.returncode, 0, res.stderr)
        summary = json.loads(res.stdout)
        self.assertEqual(summary["results"], TASKS)
        self.assertEqual(summary["answered"], TASKS)
        self.assertEqual(summary["duplicates"], 0)
        self.assertEqual(summary["missing"], 0)
        lines = read_results(merged)
        self.assertEqual([r["id"] for r in lines], ["t%d" % i for i in range(TASKS)])
        for r in lines:
            self.assertEqual(r["answer"], "answer-" + r["id"][1:])
        # Each task asked 3 requests once; a task cancelled by scancel may
        # have asked some before it was stopped (and asks them again).
        self.assertGreaterEqual(requests, TASKS * 3)
        self.assertLess(requests, TASKS * 3 + 4 * 3 * 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
