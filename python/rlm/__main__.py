"""python3 -m rlm ARGS...: the rlm command-line tool that comes with the
library in use (bundled in a wheel, or installed beside librlm), run with
the same arguments."""
import os
import shutil
import sys

from . import _native


def main() -> None:
    exe = _native.helper_path("rlm") or shutil.which("rlm")
    if not exe:
        sys.exit("rlm: the rlm command was not found beside %s nor on PATH" % _native.path)
    os.execv(exe, ["rlm"] + sys.argv[1:])


if __name__ == "__main__":
    main()
