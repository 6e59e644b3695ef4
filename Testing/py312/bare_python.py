"""Run code in another interpreter as Slicer's Python would see this engine: nothing but the worktree."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env(*paths: str) -> dict:
    """No virtual environment, no user site: only this worktree (and ``paths``) on ``PYTHONPATH``."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "LC_ALL": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *paths]), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run_code(python: str, code: str, *paths: str) -> subprocess.CompletedProcess:
    """``python -s -c CODE`` (dedented) in :func:`clean_env`, from the worktree's root."""
    return subprocess.run([python, "-s", "-c", textwrap.dedent(code)], env=clean_env(*paths), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
