"""pyenv's interpreters for the Python tiers: 3.12 (Slicer 5.10+), 3.10 (the pip floor), 3.9 (Slicer 5.8)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def find_python(minor: int) -> str | None:
    """The newest ``python3.<minor>`` of pyenv (``pyenv root``, ``$PYENV_ROOT``, ``~/.pyenv``), else on PATH."""
    roots = []
    if shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        roots += [done.stdout.strip()] if done.returncode == 0 else []
    roots += [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    name = f"python3.{minor}"
    for root in filter(None, roots):
        found = sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}.*", "bin", name)),
                       key=lambda path: [int(n) for n in re.findall(r"\d+", Path(path).parents[1].name)])
        if found:
            return found[-1]
    return shutil.which(name)


def _python(minor: int, why: str) -> str:
    found = find_python(minor)
    if found is None:
        pytest.skip(f"no python3.{minor} (pyenv's is on the CI machines): {why}")
    return found


@pytest.fixture(scope="session")
def python312() -> str:
    return _python(12, "the Slicer 5.10+ tier needs it")


@pytest.fixture(scope="session")
def python310() -> str:
    return _python(10, "the pip floor's compile check needs it")


@pytest.fixture(scope="session")
def python39() -> str:
    return _python(9, "the Slicer 5.8 check needs it")
