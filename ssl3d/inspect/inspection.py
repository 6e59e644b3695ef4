"""What one inspection produces, in memory: the record :mod:`.voco_map` and :mod:`.fusion_map` return and
:mod:`.commands` writes. A leaf of the package, so those modules import it and not the package ``__init__``
(which imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ..io import Volume

__all__ = ["Inspection"]


@dataclass
class Inspection:
    """Everything one inspection produces, in memory.

    Attributes:
        volumes: ``{name: Volume}`` on the input's grid; written as ``name.nrrd``.
        summary: the JSON-ready summary; written as ``summary.json``.
        pictures: ``{file name: RGB uint8 (rows, cols, 3)}``; written as PNG.
        texts: ``{file name: content}`` (``boxes.json``, a colour table ...).
    """

    volumes: dict[str, "Volume"]
    summary: dict[str, Any]
    pictures: dict[str, "np.ndarray"] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
