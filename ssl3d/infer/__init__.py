"""Inference: sliding-window segmentation, interactive (click) sessions, post-processing.

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
