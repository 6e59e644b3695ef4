"""A launcher that behaves like Slicer's ``PythonSlicer``, for the process-tree tests of ssl3d.jobs.

``PythonSlicer`` is CTK's AppLauncher configured to run ``python-real`` (Slicer's
``CMake/SlicerBlockInstallPython.cmake``). The AppLauncher (``ctkAppLauncher::runProcess``) starts the
program with ``QProcess::start`` and ``QProcess::ForwardedChannels``: the child inherits stdout and stderr
and stays in the launcher's process group. It installs no signal handler, so SIGTERM kills the launcher
(default action) and forwards nothing: the child runs on, re-parented. When the child ends, the launcher
exits with its code (``applicationFinished``: a normal exit passes the code on, a crash gives 1).

    python fake_launcher.py PROGRAM [ARGS...]
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: fake_launcher.py PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(sys.argv[1:])  # same group, inherited stdio, like QProcess::ForwardedChannels
    code = child.wait()
    return code if code >= 0 else 1  # QProcess::CrashExit -> EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
