"""A single-node Slurm cluster on localhost, for tests and benchmarks.

LocalSlurm() configures munged, slurmctld and slurmd from the distribution's
packages (slurm-wlm, munge) in a temporary directory of their own — their own
munge key and socket, state, spool, logs and ports — starts them in the
foreground of processes we own, and stops every one of them on exit. Nothing
under /etc or /run is touched. When a piece is missing or refuses to start,
`LocalSlurm.start()` raises SlurmUnavailable saying why (the test then skips
with exit 77, never passes). Root is needed (slurmd runs jobs as their user).

Standard library only.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


class SlurmUnavailable(Exception):
    pass


def _become_subreaper():
    """Orphans of the daemons (slurmstepd forks itself away from slurmd)
    become our children, so that stop() can wait for them rather than
    leave them to an init that may not reap."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _stray_children(names):
    """Our child processes (by /proc) whose name is in names."""
    me, found = os.getpid(), []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                head, rest = f.read().rsplit(")", 1)
            if int(rest.split()[1]) == me and head.split("(", 1)[1] in names:
                found.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find(name):
    for d in (None, "/usr/sbin", "/usr/bin", "/sbin"):
        path = shutil.which(name) if d is None else os.path.join(d, name)
        if path and os.access(path, os.X_OK):
            return path
    return None


class LocalSlurm:
    """`with LocalSlurm(cpus=2) as s:` then s.sbatch(...), s.squeue(), ..."""

    def __init__(self, cpus=None, keep=False):
        self.cpus = cpus or os.cpu_count() or 1
        self.keep = keep
        self.dir = None
        self.procs = []
        self.env = None
        self.bin = {}

    # ---- set-up -------------------------------------------------------------

    def _write_config(self):
        d = self.dir
        for sub in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
        self.munge_socket = os.path.join(d, "munge", "munge.socket")
        key = os.path.join(d, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_key = key
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        hostname = socket.gethostname()
        mem_mb = 1024
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        mem_mb = max(256, int(line.split()[1]) // 1024 // 2)
        except OSError:
            pass
        conf = "\n".join([
            "ClusterName=rlmtest",
            "SlurmctldHost=%s(127.0.0.1)" % hostname,
            "SlurmctldPort=%d" % self.ctld_port,
            "SlurmdPort=%d" % self.slurmd_port,
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=socket=%s" % self.munge_socket,
            "StateSaveLocation=%s/state" % d,
            "SlurmdSpoolDir=%s/spool" % d,
            "SlurmctldPidFile=%s/slurmctld.pid" % d,
            "SlurmdPidFile=%s/slurmd.pid" % d,
            "SlurmctldLogFile=%s/log/slurmctld.log" % d,
            "SlurmdLogFile=%s/log/slurmd.log" % d,
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=300",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "NodeName=rlmnode NodeHostname=%s NodeAddr=127.0.0.1 CPUs=%d RealMemory=%d State=UNKNOWN"
            % (hostname, self.cpus, mem_mb),
            "PartitionName=debug Nodes=rlmnode Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
            "",
        ])
        self.conf = os.path.join(d, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def _spawn(self, name, args):
        log = open(os.path.join(self.dir, "log", name + ".out"), "wb")
        proc = subprocess.Popen([self.bin[name]] + args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def _log_tail(self, name, n=15):
        out = []
        for path in (os.path.join(self.dir, "log", name + ".out"),
                     os.path.join(self.dir, "log", name + ".log")):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out += f.read().splitlines()[-n:]
        return "\n".join(out)

    def _wait(self, what, check, timeout, proc_name):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise SlurmUnavailable("%s exited (status %s) while waiting for %s:\n%s"
                                           % (name, p.returncode, what, self._log_tail(name)))
            if check():
                return
            time.sleep(0.2)
        raise SlurmUnavailable("%s not ready within %d s:\n%s" % (what, timeout, self._log_tail(proc_name)))

    def start(self):
        if os.geteuid() != 0:
            raise SlurmUnavailable("a local Slurm needs root (slurmd runs jobs as their user)")
        for name in SLURM_BINARIES:
            path = _find(name)
            if not path:
                raise SlurmUnavailable("%s not found (apt-get install slurm-wlm munge; "
                                       "scripts/install-deps.sh installs them)" % name)
            self.bin[name] = path
        _become_subreaper()
        self.dir = tempfile.mkdtemp(prefix="rlm-slurm-")
        os.chmod(self.dir, 0o755)
        self._write_config()
        try:
            self._spawn("munged", ["--foreground", "--force", "--socket", self.munge_socket,
                                   "--key-file", self.munge_key,
                                   "--log-file", os.path.join(self.dir, "log", "munged.log"),
                                   "--pid-file", os.path.join(self.dir, "munge", "munged.pid"),
                                   "--seed-file", os.path.join(self.dir, "munge", "munged.seed")])
            self._wait("munged", lambda: os.path.exists(self.munge_socket), 15, "munged")
            self._spawn("slurmctld", ["-D", "-i", "-f", self.conf])
            self._wait("slurmctld", lambda: self._run_ok(["scontrol", "ping"], "UP"), 30, "slurmctld")
            self._spawn("slurmd", ["-D", "-f", self.conf, "-N", "rlmnode"])
            self._wait("slurmd (node idle)", self._node_idle, 60, "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _run_ok(self, args, needle):
        try:
            out = subprocess.run([self.bin[args[0]]] + args[1:], capture_output=True, text=True,
                                 env=self.env, timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            return False
        return out.returncode == 0 and needle in out.stdout

    def _node_idle(self):
        try:
            out = subprocess.run([self.bin["sinfo"], "-h", "-N", "-o", "%T"], capture_output=True,
                                 text=True, env=self.env, timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            return False
        state = out.stdout.strip().rstrip("*")
        return out.returncode == 0 and state in ("idle", "mixed", "allocated")

    def stop(self):
        """Stops every daemon we started (SIGTERM, then SIGKILL after 10 s),
        jobs included, and removes the directory unless keep."""
        if self.bin.get("scancel") and self.env and any(p.poll() is None for n, p in self.procs
                                                          if n == "slurmctld"):
            subprocess.run([self.bin["scancel"], "--full", "--user", "root"], env=self.env,
                           capture_output=True, timeout=10)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs = []
        # Job steps that outlived slurmd: stopped and waited for.
        for pid in _stray_children(("slurmstepd", "slurmd", "slurmctld", "munged")):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- use ----------------------------------------------------------------

    def run(self, name, args, check=True, timeout=60):
        out = subprocess.run([self.bin[name]] + list(args), capture_output=True, text=True,
                             env=self.env, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError("%s %s: exit %d: %s" % (name, " ".join(args), out.returncode,
                                                      out.stderr.strip()))
        return out.stdout

    def sbatch(self, args):
        """Submits; returns the job id."""
        out = self.run("sbatch", ["--parsable"] + list(args))
        return out.strip().split(";")[0]

    def jobs(self):
        """{(job id as squeue prints it): state} of the jobs still known."""
        out = self.run("squeue", ["-h", "-r", "-o", "%i %T"], check=False)
        jobs = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                jobs[parts[0]] = parts[1]
        return jobs

    def wait_idle(self, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.jobs():
                return
            time.sleep(0.5)
        raise AssertionError("jobs still queued or running after %d s: %s" % (timeout, self.jobs()))


if __name__ == "__main__":
    with LocalSlurm() as s:
        print("slurm up in", s.dir)
        jid = s.sbatch(["--array=0-3", "--wrap", "echo $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT",
                        "-o", os.path.join(s.dir, "out-%a.txt")])
        print("job", jid)
        s.wait_idle(60)
        for i in range(4):
            with open(os.path.join(s.dir, "out-%d.txt" % i)) as f:
                print(f.read().strip())
