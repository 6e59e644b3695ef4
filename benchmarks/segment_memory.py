"""Peak memory of ``ssl3d segment`` on a 512x512x600 CT on CPU, with a seg-cpu bundle at 1.5 mm.

The synthetic CT (int16, 0.8 x 0.8 x 1.0 mm, a body-shaped ellipse of soft tissue with brighter organs and
a spine in air) is written as NIfTI; a seg-cpu network with seeded random weights is written as a bundle
whose preprocessing resamples to 1.5 mm (273 x 273 x 400 model voxels); then ``ssl3d segment`` runs in a
child process and its peak resident memory (the kernel's high-water mark, ``ru_maxrss`` of the child)
is the figure. Weights do not change memory; the overlap changes only the time (the blend buffers hold one
window depth whatever the overlap), so the default overlap here is 0 to keep the run short.

Usage: ``python benchmarks/segment_memory.py [--overlap 0.5] [--slices 600] [--keep DIR]``.
Ends with ``target segment-memory: X GB (goal 6 GB) ok|short``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_GB = 6.0
SPACING = (0.8, 0.8, 1.0)  # (i, j, k) mm


def synthetic_ct(slices: int, size: int = 512) -> np.ndarray:
    """(slices, size, size) int16 HU: air, a body ellipse of soft tissue, a liver-like blob, a spine."""
    j, i = np.ogrid[:size, :size]
    c = (size - 1) / 2
    body = ((i - c) / (0.42 * size)) ** 2 + ((j - c) / (0.32 * size)) ** 2 <= 1
    liver = ((i - 0.38 * size) / (0.12 * size)) ** 2 + ((j - 0.45 * size) / (0.1 * size)) ** 2 <= 1
    spine = (i - c) ** 2 + (j - 0.7 * size) ** 2 <= (0.04 * size) ** 2
    plane = np.full((size, size), -1000, np.int16)
    plane[body], plane[liver], plane[spine] = 40, 60, 500
    volume = np.empty((slices, size, size), np.int16)
    noise = np.random.default_rng(0).normal(0, 15, (8, size, size)).astype(np.int16)
    for k in range(slices):
        volume[k] = plane + noise[k % 8] * body
    return volume


def write_inputs(folder: Path, slices: int) -> tuple[Path, Path]:
    import torch

    from ssl3d.bundle import write_bundle
    from ssl3d.config import get_preset, to_dict
    from ssl3d.data.phantoms import LABEL_COLORS, LABELS
    from ssl3d.io import Volume, write_volume
    from ssl3d.nets.builders import build_network

    direction = np.diag([-1.0, -1.0, 1.0])  # an axial CT: identity direction in LPS
    image = write_volume(Volume.from_geometry(synthetic_ct(slices), SPACING, direction=direction), folder / "ct.nii")
    preset = get_preset("seg-cpu")
    preset.preprocess.spacing = (1.5, 1.5, 1.5)
    torch.manual_seed(0)
    classes = len(LABELS) + 1
    network = build_network(preset.network.name, 1, classes, **preset.network.kwargs)
    meta = {
        "network": {"name": preset.network.name, "kwargs": {**preset.network.kwargs, "in_channels": 1, "out_channels": classes}},
        "task": "segmentation",
        "preprocessing": to_dict(preset.preprocess),
        "labels": [{"value": v, "name": n, "color": list(LABEL_COLORS[v])} for v, n in LABELS.items()],
        "preset": to_dict(preset),
        "provenance": {"data": "random weights (memory benchmark)", "steps": 0},
    }
    bundle = write_bundle(folder / "bundle", network.state_dict(), meta)
    return image, bundle.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overlap", type=float, default=0.0, help="sliding-window overlap (time only, not memory) [0]")
    parser.add_argument("--slices", type=int, default=600, help="slices of the 512x512 CT [600]")
    parser.add_argument("--keep", type=Path, help="keep the CT, bundle and segmentation in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ssl3d-segmem-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    image, bundle = write_inputs(folder, args.slices)
    print(f"inputs: {image} ({image.stat().st_size / 1e9:.2f} GB), bundle {bundle}; {time.perf_counter() - start:.0f} s", flush=True)
    command = [sys.executable, "-m", "ssl3d", "segment", "--model", str(bundle), "--input", str(image),
               "--output", str(folder / "seg.nii.gz"), "--device", "cpu", "--overlap", str(args.overlap)]
    start = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    print(child.stdout.strip())
    if child.returncode != 0:
        print(child.stderr.strip()[-2000:])
        print(f"target segment-memory: failed (exit {child.returncode}) (goal {GOAL_GB:g} GB) short")
        return 1
    print()
    print(f"{'figure':<34} {'value':>12}")
    print(f"{'volume (k, j, i)':<34} {f'{args.slices}x512x512':>12}")
    print(f"{'input voxels':<34} {args.slices * 512 * 512 / 1e6:>10.0f} M")
    print(f"{'segment wall time':<34} {seconds:>10.0f} s")
    print(f"{'peak RSS of the segment process':<34} {peak_gb:>9.2f} GB")
    if not args.keep:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    print(f"target segment-memory: {peak_gb:.2f} GB (goal {GOAL_GB:g} GB) {'ok' if peak_gb <= GOAL_GB else 'short'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
