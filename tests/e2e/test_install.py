"""The installed tree, as a user gets it: `cmake --install` into a temporary
prefix, then everything is used from there and nothing from the build
directory — the library (versioned soname, only the rlm_* API exported),
rlm.pc through pkg-config (examples/ask.c built against the shared and the
static library), the man page, the sandbox found from the installed layout,
and the installed `rlm demo` and `rlm bench run --fake`, whose fakelm comes
from the prefix's libexec/rlm. Then the Python package: `pip install` of
python/ against that prefix, and a wheel built offline with the
distribution's tools (bundling librlm, the sandbox, rlm and fakelm),
each installed into a fresh venv and run against the fake server."""
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

from harness import BUILD, FakeLM, RlmTestCase, remove_later, repl, sanitized_build

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The distribution's interpreter, whose packages (python3-build, setuptools,
# wheel, venv) make and install the package offline.
PYTHON = "/usr/bin/python3"


class Installed(RlmTestCase):
    prefix = None

    @classmethod
    def setUpClass(cls):
        cls.top = tempfile.mkdtemp(prefix="rlm-install-")
        cls.prefix = os.path.join(cls.top, "prefix with space")
        proc = subprocess.run(["cmake", "--install", BUILD, "--prefix", cls.prefix],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError("cmake --install failed:\n" + proc.stdout + proc.stderr)
        cls.env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(cls.prefix, "lib", "pkgconfig"))

    @classmethod
    def tearDownClass(cls):
        remove_later(cls.top)

    def pkg_config(self, *args):
        proc = subprocess.run(["pkg-config"] + list(args) + ["rlm"], capture_output=True,
                              text=True, env=self.env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return shlex.split(proc.stdout)

    def p(self, *parts):
        return os.path.join(self.prefix, *parts)

    def test_layout(self):
        for rel in ("bin/rlm", "libexec/rlm/rlm-sandbox", "libexec/rlm/fakelm"):
            self.assertTrue(os.access(self.p(rel), os.X_OK), rel)
        for rel in ("include/rlm.h", "lib/librlm.a", "lib/pkgconfig/rlm.pc",
                    "share/man/man1/rlm.1"):
            self.assertTrue(os.path.isfile(self.p(rel)), rel)
        # The versioned chain: the link name, the soname, the real file.
        self.assertEqual(os.readlink(self.p("lib/librlm.so")), "librlm.so.0")
        self.assertTrue(os.path.isfile(os.path.realpath(self.p("lib/librlm.so.0"))))
        dyn = subprocess.run(["readelf", "-d", self.p("lib/librlm.so")], capture_output=True,
                             text=True, check=True).stdout
        self.assertIn("Library soname: [librlm.so.0]", dyn)
        # Nothing installed points back into the build tree.
        for rel in ("bin/rlm", "lib/librlm.so.0"):
            self.assertNotIn(BUILD, subprocess.run(["readelf", "-d", self.p(rel)],
                                                   capture_output=True, text=True).stdout)

    def test_only_the_api_is_exported(self):
        out = subprocess.run(["nm", "-D", "--defined-only", self.p("lib/librlm.so")],
                             capture_output=True, text=True, check=True).stdout
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        names = [n.split("@")[0] for n in names if n != "RLM_0"]
        self.assertIn("rlm_ask", names)
        self.assertEqual([n for n in names if not n.startswith("rlm_")], [])

    def test_pkg_config(self):
        with open(os.path.join(ROOT, "include", "rlm.h")) as f:
            version = re.search(r'RLM_VERSION "([^"]+)"', f.read()).group(1)
        self.assertEqual(self.pkg_config("--modversion"), [version])
        cflags = self.pkg_config("--cflags")
        self.assertEqual(os.path.realpath(cflags[0][2:]), os.path.realpath(self.p("include")))
        static = self.pkg_config("--static", "--libs")
        for lib in ("-lcurl", "-ljansson", "-lpcre2-8", "-lsqlite3", "-lcrypto", "-lm"):
            self.assertIn(lib, static)

    def test_man_page(self):
        with open(self.p("share/man/man1/rlm.1")) as f:
            page = f.read()
        self.assertRegex(page, re.compile(r'^\.TH RLM "1"', re.M))
        # Made from --help: every flag of the help text is in it.
        help_text = subprocess.run([self.p("bin/rlm"), "--help"], capture_output=True,
                                   text=True).stdout
        for flag in ("--base-url", "--max-cost", "--session", "--unsafe-no-sandbox"):
            self.assertIn(flag, help_text)
            self.assertIn(flag.replace("-", r"\-"), page)

    def example(self, static=False):
        """examples/ask.c built against the installed library through pkg-config."""
        out = os.path.join(self.tmp, "ask-static" if static else "ask")
        cmd = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", os.path.join(ROOT, "examples", "ask.c"),
               "-o", out] + self.pkg_config("--cflags")
        if static:
            # librlm.a by name, and the libraries rlm.pc says it needs (their
            # shared builds: the distribution ships no static libcurl deps).
            requires = [line.split()[0] for line in subprocess.run(
                ["pkg-config", "--print-requires-private", "rlm"], capture_output=True,
                text=True, env=self.env, check=True).stdout.splitlines() if line.strip()]
            self.assertEqual(sorted(requires),
                             sorted(["libcurl", "jansson", "libpcre2-8", "sqlite3", "libcrypto", "libzstd", "zlib"]))
            deps = subprocess.run(["pkg-config", "--libs"] + requires, capture_output=True,
                                  text=True, check=True).stdout.split()
            private = [f for f in self.pkg_config("--static", "--libs-only-other", "--libs-only-l")
                       if f in ("-lpthread", "-lm", "-pthread")]
            cmd += [self.p("lib/librlm.a")] + deps + private
        else:
            cmd += self.pkg_config("--libs")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=120)
        self.assertEqual(proc.returncode, 0, " ".join(cmd) + "\n" + proc.stderr)
        return out

    def run_example(self, exe, lm, extra=()):
        context = self.write("notes.txt", "alpha\nbeta\ngamma\n")
        trace = os.path.join(self.tmp, "trace.jsonl")
        env = dict(os.environ, LD_LIBRARY_PATH=self.p("lib"))
        proc = subprocess.run([exe, context, "How many lines?", "model=root",
                               "base_url=" + lm.base_url, "mode=rlm", "trace=" + trace] + list(extra),
                              capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(proc.stdout, "3\n")
        report = json.loads(proc.stderr.split("report: ", 1)[1])
        self.assertEqual(report["status"], "ok")
        with open(trace) as f:
            start = json.loads(f.readline())
        return start["sandbox_exe"]

    RULES = [{"match": "", "reply": repl("FINAL(str(len(context.splitlines())))")}]

    def test_example_shared(self):
        exe = self.example()
        needed = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout
        self.assertIn("[librlm.so.0]", needed)
        with FakeLM(self.RULES) as lm:
            sandbox = self.run_example(exe, lm)
        # Found from the library's place in the prefix, not from the build.
        self.assertEqual(os.path.realpath(sandbox),
                         os.path.realpath(self.p("libexec/rlm/rlm-sandbox")))

    def test_example_static(self):
        exe = self.example(static=True)
        needed = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout
        self.assertNotIn("librlm", needed)
        with FakeLM(self.RULES) as lm:
            sandbox = self.run_example(exe, lm, ["sandbox_exe=" + self.p("libexec/rlm/rlm-sandbox")])
        self.assertEqual(sandbox, self.p("libexec/rlm/rlm-sandbox"))

    def test_installed_demo(self):
        trace = os.path.join(self.tmp, "demo.jsonl")
        proc = subprocess.run([self.p("bin/rlm"), "demo", "--tokens", "64K", "--trace", trace],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, XDG_CACHE_HOME=self.tmp, XDG_DATA_HOME=self.tmp))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("score:    1.000", proc.stdout)
        with open(trace) as f:
            start = json.loads(f.readline())
        self.assertEqual(start["sandbox_exe"], self.p("libexec/rlm/rlm-sandbox"))

    def test_installed_bench_fake(self):
        out = os.path.join(self.tmp, "bench")
        proc = subprocess.run([self.p("bin/rlm"), "bench", "run", "--suite", "sniah", "--sizes", "8K",
                               "--fake", "--out", out], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, XDG_CACHE_HOME=self.tmp, XDG_DATA_HOME=self.tmp))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        with open(os.path.join(out, "results.jsonl")) as f:
            results = [json.loads(line) for line in f if line.strip()]
        self.assertEqual([r["score"] for r in results], [1.0])

    def test_installed_doctor_names_installed_sandbox(self):
        proc = subprocess.run([self.p("bin/rlm"), "doctor", "--json"], capture_output=True,
                              text=True, timeout=120)
        report = json.loads(proc.stdout)
        self.assertEqual(report["sandbox"]["sandbox_exe"] if "sandbox" in report
                         else report["sandbox_exe"], self.p("libexec/rlm/rlm-sandbox"))


    # ---- the Python package ----------------------------------------------------

    def python_tree(self):
        """A copy of python/ (and the header it reads its version from): a
        build writes next to its sources, never into the repository."""
        src = os.path.join(self.tmp, "src")
        shutil.copytree(os.path.join(ROOT, "python"), os.path.join(src, "python"),
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        shutil.copytree(os.path.join(ROOT, "include"), os.path.join(src, "include"))
        return os.path.join(src, "python")

    def venv(self):
        """A fresh venv that sees the distribution's setuptools and wheel."""
        path = os.path.join(self.tmp, "venv")
        subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", path], check=True,
                       timeout=300)
        return os.path.join(path, "bin", "python")

    def pip_install(self, python, what, env=None):
        proc = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps",
                               "--no-build-isolation", what], capture_output=True, text=True,
                              env=env, timeout=600, cwd=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    CHECK = (
        "import json, sys, rlm\n"
        "r = rlm.ask('How many lines?', 'a\\nb\\nc', base_url=sys.argv[1], model='root',"
        " mode='rlm')\n"
        "print(json.dumps({'answer': r.answer, 'library': rlm.library_path(),"
        " 'sandbox': rlm.doctor()['sandbox_exe']}))\n")

    def check_package(self, python):
        """Runs CHECK with the venv's python from a neutral directory (the
        package must come from the venv, never from the source tree)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("RLM_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH")}
        with FakeLM(self.RULES) as lm:
            proc = subprocess.run([python, "-c", self.CHECK, lm.base_url], capture_output=True,
                                  text=True, env=env, cwd=self.tmp, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        out = json.loads(proc.stdout)
        self.assertEqual(out["answer"], "3")
        return out

    def test_pip_install_against_the_prefix(self):
        python = self.venv()
        tree = self.python_tree()
        env = {k: v for k, v in os.environ.items() if k != "RLM_BUILD_DIR"}
        self.pip_install(python, tree, env=dict(env, RLM_PREFIX=self.prefix))
        out = self.check_package(python)
        self.assertEqual(os.path.realpath(out["library"]),
                         os.path.realpath(self.p("lib/librlm.so.0")))
        self.assertEqual(os.path.realpath(out["sandbox"]),
                         os.path.realpath(self.p("libexec/rlm/rlm-sandbox")))

    def test_wheel_built_offline_bundles_everything(self):
        tree = self.python_tree()
        dist = os.path.join(self.tmp, "dist")
        proc = subprocess.run([PYTHON, "-m", "build", "--no-isolation", "--wheel", "--outdir", dist,
                               tree], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, RLM_BUILD_DIR=BUILD))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        wheels = os.listdir(dist)
        self.assertEqual(len(wheels), 1)
        self.assertRegex(wheels[0], r"^rlm-.*-py3-none-linux_\w+\.whl$")
        python = self.venv()
        self.pip_install(python, os.path.join(dist, wheels[0]))
        out = self.check_package(python)
        site = os.path.dirname(os.path.dirname(os.path.dirname(out["library"])))
        self.assertEqual(out["library"], os.path.join(site, "rlm", "_native", "librlm.so.0"))
        self.assertEqual(out["sandbox"], os.path.join(site, "rlm", "_native", "rlm-sandbox"))
        # python -m rlm is the bundled CLI, whose demo finds the bundled fakelm.
        proc = subprocess.run([python, "-m", "rlm", "demo", "--tokens", "64K"], capture_output=True,
                              text=True, timeout=300, cwd=self.tmp,
                              env=dict(os.environ, XDG_CACHE_HOME=self.tmp, XDG_DATA_HOME=self.tmp))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("score:    1.000", proc.stdout)


if __name__ == "__main__":
    if sanitized_build():
        print("skipped: the install test builds programs against the library, which a "
              "sanitizer build's library cannot serve without its runtime preloaded")
        raise SystemExit(77)
    if not shutil.which("pkg-config") or not shutil.which("cc"):
        raise SystemExit("pkg-config and cc are needed (scripts/install-deps.sh installs them)")
    unittest.main(verbosity=2)
