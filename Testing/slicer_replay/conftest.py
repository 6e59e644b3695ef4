"""Fixtures of the MRML tests (slicer-core): a bare scene with Slicer's default colour tables."""

from __future__ import annotations

import pytest


@pytest.fixture()
def scene():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()  # Slicer's default colour tables, as in the application
    colors.SetMRMLScene(scene)
    yield scene
    colors.SetMRMLScene(None)
    scene.Clear(1)
