"""Builds the Python package around librlm. Which librlm, first found wins:

  RLM_BUILD_DIR=DIR   a CMake build of rlm: its librlm.so, rlm-sandbox, rlm
                      and fakelm are bundled into the package (rlm/_native/),
                      which then works on its own: this is how wheels are made;
  RLM_PREFIX=DIR      an installed rlm (cmake --install --prefix DIR): the
                      package records that library and uses it;
  pkg-config rlm      an installed rlm found by pkg-config: the same;
  ../CMakeLists.txt   this source tree: built with CMake into build/native,
                      then bundled (needs scripts/install-deps.sh's packages).

Offline, with the distribution's tools:
    pip install --no-build-isolation ./python
    python3 -m build --no-isolation --wheel python
"""
import os
import re
import shlex
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # no wheel package: plain installs still work
    bdist_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
SONAME = "librlm.so.0"
BUNDLED = ("rlm-sandbox", "rlm", "fakelm")


def version():
    with open(os.path.join(SOURCE, "include", "rlm.h")) as f:
        return re.search(r'#define RLM_VERSION "([^"]+)"', f.read()).group(1)


def installed_library(prefix=None):
    """The librlm.so.0 of an installed rlm, or None."""
    env = dict(os.environ)
    if prefix:
        env["PKG_CONFIG_PATH"] = os.pathsep.join(
            os.path.join(prefix, d, "pkgconfig") for d in ("lib", "lib64", "lib/x86_64-linux-gnu",
                                                           "lib/aarch64-linux-gnu"))
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "rlm"], capture_output=True,
                             text=True, env=env, check=True).stdout
        libdir = shlex.split(out)[0]   # pkg-config escapes spaces
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None
    path = os.path.realpath(os.path.join(libdir, SONAME))
    return path if os.path.exists(path) else None


def build_from_source():
    build = os.path.join(HERE, "build", "native")
    subprocess.run(["cmake", "-S", SOURCE, "-B", build, "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True)
    subprocess.run(["cmake", "--build", build, "--target", "rlm_shared", "rlm-sandbox", "rlm",
                    "fakelm"], check=True)
    return build


def locate():
    """("bundle", build_dir) or ("installed", library_path)."""
    if os.environ.get("RLM_BUILD_DIR"):
        return "bundle", os.environ["RLM_BUILD_DIR"]
    if os.environ.get("RLM_PREFIX"):
        lib = installed_library(os.environ["RLM_PREFIX"])
        if not lib:
            raise SystemExit("RLM_PREFIX=%s holds no installed rlm (lib/pkgconfig/rlm.pc)"
                             % os.environ["RLM_PREFIX"])
        return "installed", lib
    lib = installed_library()
    if lib:
        return "installed", lib
    if os.path.exists(os.path.join(SOURCE, "CMakeLists.txt")):
        return "bundle", build_from_source()
    raise SystemExit("librlm not found: install rlm (cmake --install build), or set "
                     "RLM_BUILD_DIR to a build directory or RLM_PREFIX to an install prefix")


class BuildPy(build_py):
    """Adds the native part: the bundled programs, or the installed library's path."""

    def run(self):
        super().run()
        how, where = locate()
        target = os.path.join(self.build_lib, "rlm")
        if how == "installed":
            with open(os.path.join(target, "_install.py"), "w") as f:
                f.write('"""Written by setup.py: the installed librlm this package uses."""\n'
                        "LIBRARY = %r\n" % where)
            return
        native = os.path.join(target, "_native")
        os.makedirs(native, exist_ok=True)
        # One flat directory: the library finds rlm-sandbox beside itself, and
        # the rlm command its sandbox and fakelm beside itself.
        shutil.copy2(os.path.realpath(os.path.join(where, SONAME)), os.path.join(native, SONAME))
        for name in BUNDLED:
            src = os.path.join(where, name)
            if not os.access(src, os.X_OK):
                raise SystemExit("%s is missing from %s: build rlm first" % (name, where))
            shutil.copy2(src, os.path.join(native, name))


commands = {"build_py": BuildPy}
if bdist_wheel is not None:
    class Wheel(bdist_wheel):
        """A wheel for this platform (it holds native programs) but for any
        Python 3: the package calls the library through ctypes, no C API of
        Python's."""

        def get_tag(self):
            return ("py3", "none", super().get_tag()[2])

    commands["bdist_wheel"] = Wheel

class NativeDistribution(Distribution):
    """Holds native code (installed to platlib, a platform wheel)."""

    def has_ext_modules(self):
        return True


setup(version=version(), cmdclass=commands, distclass=NativeDistribution)
