"""Tier 2b: scenes built by ``ssl3d.mrml`` as the modules build them, rendered by slicer-core's slice views
offscreen and checked as pictures by colour regions (not golden images: those shift with VTK versions).

Every test here is skipped, with the reason, when slicer-core is missing or VTK cannot render without a
display on this machine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from slice_views import OffscreenSlicer, offscreen_problem  # noqa: E402

if importlib.util.find_spec("slicer") is None or importlib.util.find_spec("slicer_core") is None:
    PROBLEM = "slicer-core is not installed (pip install slicer-core)"
else:
    PROBLEM = offscreen_problem()


def pytest_collection_modifyitems(config, items):
    if PROBLEM:
        for item in items:
            if HERE in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


@pytest.fixture()
def host():
    """A fresh offscreen Slicer (scene, logics, slice views) per test."""
    app = OffscreenSlicer()
    yield app
    app.close()
