"""Inference: sliding-window segmentation, interactive (click) sessions, post-processing.

``ssl3d.infer.InteractiveSession`` is imported on first use, so ``import ssl3d.infer`` stays light.
"""

from __future__ import annotations

__all__ = ["InteractiveSession", "segment_volume"]


def __getattr__(name: str):
    if name == "InteractiveSession":
        from .interactive import InteractiveSession

        return InteractiveSession
    if name == "segment_volume":
        from .segment import segment_volume

        return segment_volume
    raise AttributeError(f"module 'ssl3d.infer' has no attribute {name!r}")
