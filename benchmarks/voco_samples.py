"""VoCo sample generation: ssl3d's generator vs the official per-crop MONAI pipelines, on one CPU thread.

The reference rebuilds what the official ``VoCoAugmentation(args, aug=True)`` call does per volume, from
the facts in ../shared/reference/voco.md: for every crop its own MONAI ``Compose`` (built on each call)
of ``SpatialCropd`` -> ``Resized`` to 64³ (trilinear, align_corners=True; listed twice for base crops in
v1) -> ``RandFlipd`` on axes 0, 1, 2 (p 0.2 each) -> ``RandRotate90d(p 0.2, max_k 3)`` ->
``RandShiftIntensityd(offsets 0.1, p 0.1 in v1, 0.5 in v2)``; random-crop centres from ``np.random``
and the closed-form labels. v1: 2 random + 16 base crops of 96³ from a 384x384x96 volume; v2: 2 random
+ 9 base crops of 64³ from 192x192x64, no resize.

ssl3d: the training path itself, ``VoCoTask.batch`` (volume pick, v2 random window, draws, crop cutting,
resize, augmentation, labels, into the step's batch buffer) on an in-memory volume of the preset's model
space (v1 384x384x96; v2 a 240x240x80 volume the 192x192x64 window is cut from each step), one sample per
call (the reference's unit) and two volumes per call (one batch); v1 in the steady state (base crops cached
per volume; each volume is visited ~50 times in v1) and at a first visit (base crops computed). Protocol:
1 warm-up, then the median of ``--runs`` calls (10 for the reference, as the fixture). With CUDA present the
training path is also timed on the GPU (host volume, pinned copies).

Run: ``.venv/bin/python benchmarks/voco_samples.py``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ssl3d.config import apply_overrides, get_preset
from ssl3d.pretext.voco import position_labels
from ssl3d.pretext.voco_bundle import sample_spec
from ssl3d.pretext.voco_samples import BaseCropCache, SampleSpec
from ssl3d.pretext.voco_task import VoCoTask

GOALS = {"voco-v1": 3.0, "voco-v2": 8.0}
BASELINE = Path(__file__).resolve().parents[1] / "Testing" / "data" / "fixtures" / "voco_crop_baseline.json"


def _augment(keys: list[str], spec: SampleSpec) -> list:
    from monai.transforms import RandFlipd, RandRotate90d, RandShiftIntensityd

    return [
        RandFlipd(keys=keys, prob=spec.flip_p, spatial_axis=0),
        RandFlipd(keys=keys, prob=spec.flip_p, spatial_axis=1),
        RandFlipd(keys=keys, prob=spec.flip_p, spatial_axis=2),
        RandRotate90d(keys=keys, prob=spec.rot90_p, max_k=3),
        RandShiftIntensityd(keys=keys, offsets=spec.shift_offset, prob=spec.shift_p),
    ]


def _chain(centre: tuple[float, float, float], roi: int, spec: SampleSpec, base: bool):
    """One crop's Compose, built per call as the official code does: (C, x, y, z) MONAI layout."""
    from monai.transforms import Compose, Resized, SpatialCropd

    keys = ["image"]
    steps = [SpatialCropd(keys=keys, roi_center=centre, roi_size=(roi, roi, spec.depth))]
    if (roi, spec.depth) != (spec.out, spec.out):
        size = (spec.out,) * 3
        steps.append(Resized(keys=keys, spatial_size=size, mode="trilinear", align_corners=True))
        if base:  # the official base-crop chain lists Resized twice
            steps.append(Resized(keys=keys, spatial_size=size, mode="trilinear", align_corners=True))
    return Compose(steps + _augment(keys, spec))


def official_sample(data: dict, spec: SampleSpec) -> tuple[list, np.ndarray]:
    """The official per-volume call: 2 random crops + grid² base crops, each through its own Compose."""
    lo, hi = spec.centre_range
    centres = np.array([[np.random.randint(lo, hi), np.random.randint(lo, hi)] for _ in range(spec.n_random)])
    labels = position_labels(centres, spec.crop, spec.base, spec.grid)
    crops = [_chain((cx, cy, spec.depth // 2), spec.crop, spec, False)(data)["image"] for cx, cy in centres]
    for i in range(spec.grid):
        for j in range(spec.grid):
            centre = ((i + 0.5) * spec.base, (j + 0.5) * spec.base, spec.depth // 2)
            crops.append(_chain(centre, spec.base, spec, True)(data)["image"])
    return crops, labels


def _median(fn: Callable[[], object], runs: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _InMemoryTask(VoCoTask):
    """VoCoTask on one in-memory volume (no dataset, no cache, no network): what ``batch`` does per step."""

    def __init__(self, volume: torch.Tensor) -> None:
        super().__init__("memory", "memory", val_crops=0)
        self.volume = volume

    def _load_volumes(self, ctx):
        return [self.volume], {}


def _task(name: str, volume: torch.Tensor, batch: int, device: torch.device):
    from ssl3d.train.distributed import DistInfo
    from ssl3d.train.loop import TrainContext

    preset = apply_overrides(get_preset(name), {"train.batch_size": batch})
    ctx = TrainContext(preset, Path("."), device, DistInfo(), None, 0)
    task = _InMemoryTask(volume)
    task.setup_samples(ctx)
    step = iter(range(10**9))
    return task, lambda: task.batch(ctx, next(step), range(batch))


def measure(name: str, runs: int) -> dict[str, float]:
    from monai.data import MetaTensor

    preset = get_preset(name)
    spec = sample_spec(preset)
    gen = torch.Generator().manual_seed(505)
    official_layout = torch.rand((1, spec.size, spec.size, spec.depth), generator=gen)  # (C, x, y, z)
    data = {"image": MetaTensor(official_layout)}
    np.random.seed(0)
    row = {"official": _median(lambda: official_sample(data, spec), max(10, runs // 3))}
    pad = (16, 48, 48) if preset.voco.window else (0, 0, 0)  # v2: a volume larger than the window
    volume = torch.rand((1, spec.depth + pad[0], spec.size + pad[1], spec.size + pad[2]), generator=gen)
    cpu = torch.device("cpu")
    _, one = _task(name, volume, 1, cpu)
    row["ours_b1"] = _median(one, runs)
    _, two = _task(name, volume, 2, cpu)
    row["ours_b2"] = _median(two, runs) / 2
    task, first = _task(name, volume, 1, cpu)

    def first_visit():
        task.base_cache = BaseCropCache(spec)  # v1: the base crops are computed again
        first()

    row["first_visit"] = _median(first_visit, runs)
    if torch.cuda.is_available():
        _, gpu = _task(name, volume, 2, torch.device("cuda"))
        row["gpu_b2"] = _median(gpu, runs, torch.cuda.synchronize) / 2
    return row


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _baseline() -> dict[str, float]:
    if not BASELINE.is_file():
        return {}
    record = json.loads(BASELINE.read_text())
    return {"voco-v1": record["v1"]["median_s"], "voco-v2": record["v2"]["median_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per figure (default 30)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import monai

    rows = {name: measure(name, args.runs) for name in ("voco-v1", "voco-v2")}
    fixture = _baseline()
    print(f"VoCo sample generation, seconds per sample, 1 CPU thread ({_cpu_name()}; "
          f"torch {torch.__version__}, MONAI {monai.__version__})")
    labels = [
        ("official MONAI pipeline, measured now", "official"),
        ("ssl3d VoCoTask.batch, 1 volume/call", "ours_b1"),
        ("ssl3d VoCoTask.batch, 2 volumes/call", "ours_b2"),
        ("ssl3d, first visit (v1: base crops computed)", "first_visit"),
    ] + ([("ssl3d VoCoTask.batch on CUDA, 2 volumes/call", "gpu_b2")] if torch.cuda.is_available() else [])
    print(f"{'pipeline':<44}{'voco-v1':>12}{'voco-v2':>12}")
    if fixture:
        text = "official, fixture (2-core Xeon, 1 thread)"
        print(f"{text:<44}{fixture['voco-v1']:>12.4f}{fixture['voco-v2']:>12.4f}")
    for text, key in labels:
        print(f"{text:<44}{rows['voco-v1'][key]:>12.4f}{rows['voco-v2'][key]:>12.4f}")
    for name, row in rows.items():
        speedup = row["official"] / row["ours_b1"]
        verdict = "ok" if speedup >= GOALS[name] else "short"
        print(f"target {name} samples speed-up: {speedup:.1f}x (goal {GOALS[name]:.0f}x) {verdict}")


if __name__ == "__main__":
    main()
