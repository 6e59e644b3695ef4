"""Pretext inspection: what a VoCo or Volume Fusion bundle does on one volume, as overlays on its grid.

Public API::

    volumes, summary = voco_map("run/bundle", read_volume("ct.nii.gz"), boxes=[(12.5, -30, 40)])
    volumes["predicted"].same_grid(ct)      # True: every output volume is on the input's grid
    volumes, summary = fusion_map("vf/bundle", ct, seed=0)

:func:`inspect_voco` and :func:`inspect_fusion` return an :class:`Inspection` (volumes, summary, pictures
and small text files such as a colour table) that :func:`write_inspection` writes all-or-nothing;
``ssl3d inspect voco|vf`` is those two calls.

Files: ``inspection.py`` (the :class:`Inspection` record, a leaf), ``voco_map.py`` and ``fusion_map.py`` (one
per method, independent of each other), ``commands.py`` (writing, and ``ssl3d inspect``).

``import ssl3d.inspect`` is light: the modules below import numpy at most; torch, MONAI and PIL are
imported by the functions that use them. (The functions ``voco_map`` and ``fusion_map`` share their
names with their modules; the names bound here are the functions, so import the modules' other names
with ``from ssl3d.inspect.voco_map import ...``.)
"""

from __future__ import annotations

from .commands import write_inspection
from .fusion_map import fusion_map, inspect_fusion
from .inspection import Inspection
from .voco_map import inspect_voco, voco_map

__all__ = ["Inspection", "fusion_map", "inspect_fusion", "inspect_voco", "voco_map", "write_inspection"]
