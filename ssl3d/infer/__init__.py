"""Inference: sliding-window segmentation, interactive (click) sessions, post-processing.

    windows.py       the window and size rules (a leaf: the three below apply the same ones)
    segment.py       whole-volume segmentation and the files it writes
    interactive.py   click sessions: a warm model, points in, a full-grid mask out
    memory.py        the GPU memory a bundle's inference needs, and the device chosen from it
    click_worker.py  the worker thread behind SSLSegment's clicks; commands.py: ``segment``, ``evaluate``

``ssl3d.infer.InteractiveSession``, ``device_for_bundle`` (where to run a bundle, given the GPU's free
memory) and the rest are imported on first use, so ``import ssl3d.infer`` stays light.
"""

from __future__ import annotations

__all__ = ["InteractiveSession", "MemoryEstimate", "device_for_bundle", "estimate_click_memory", "estimate_segment_memory", "segment_volume"]
_MEMORY = ("MemoryEstimate", "device_for_bundle", "estimate_click_memory", "estimate_segment_memory")


def __getattr__(name: str):
    if name == "InteractiveSession":
        from .interactive import InteractiveSession

        return InteractiveSession
    if name in _MEMORY:
        from . import memory

        return getattr(memory, name)
    if name == "segment_volume":
        from .segment import segment_volume

        return segment_volume
    raise AttributeError(f"module 'ssl3d.infer' has no attribute {name!r}")
