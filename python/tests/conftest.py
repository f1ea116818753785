"""pytest setup for the Python package: the package from this source tree,
the library from the build directory (RLM_BUILD_DIR, as CTest sets it; or
RLM_LIBRARY), the fake model server of tests/e2e/harness.py, and an
environment that never reads or writes the user's keys, cache or sessions."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "python"))

BUILD = os.environ.setdefault("RLM_BUILD_DIR", os.path.join(ROOT, "build"))
os.environ.setdefault("RLM_LIBRARY", os.path.join(BUILD, "librlm.so.0"))
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL", "OPENROUTER_API_KEY"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Each test's own XDG directories: the user's are never touched."""
    for kind in ("CACHE", "DATA", "CONFIG"):
        monkeypatch.setenv("XDG_%s_HOME" % kind, str(tmp_path / ("xdg-" + kind.lower())))
    return tmp_path
