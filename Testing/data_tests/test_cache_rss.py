"""Resident memory stays flat while the number of cached volumes grows (issue 17): the Volume Fusion,
segmentation and interactive tasks read the cache through its memory maps, so their anonymous RSS after
setup and a few batches is the same for N and 4N cached volumes; a whole-dataset copy (``load_all``, what
the tasks did before) grows with N and fails the same check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssl3d.data.phantoms import write_phantom_dataset

N, SHAPE = 6, (64, 128, 128)  # 4N volumes: 101 MB as float32 tensors, 50 MB of float16 cache
MARGIN_MB = 16.0  # 3N more volumes copied are 75 MB

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists() or "RssAnon" not in Path("/proc/self/status").read_text(),
                                reason="reads RssAnon from /proc/self/status (Linux)")

_SCRIPT = r"""
import gc, json, sys
from dataclasses import replace
from pathlib import Path

import torch

from ssl3d.config import apply_overrides, get_preset
from ssl3d.data.datasets import VolumeCache, find_cases
from ssl3d.pretext.vf_task import FusionTask
from ssl3d.train.distributed import DistInfo
from ssl3d.train.interactive import InteractiveTask
from ssl3d.train.logger import RunLogger
from ssl3d.train.loop import TrainContext
from ssl3d.train.segmentation import SegmentationTask

torch.set_num_threads(1)
data, cache_dir, run = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])


def rss_anon_mb():
    gc.collect()
    try:  # freed heap back to the system: what is left is what the process holds
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    line = next(l for l in open("/proc/self/status") if l.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


vf = apply_overrides(get_preset("vf-v1-cpu"), {"train.batch_size": 2})
preprocess = vf.preprocess  # no resampling: the cached volumes keep their size
presets = {"vf": vf}
for name in ("seg-cpu", "interactive-cpu"):
    preset = apply_overrides(get_preset(name), {"train.batch_size": 2})
    presets[name.split("-")[0]] = replace(preset, preprocess=preprocess, train=replace(preset.train, patch=(32, 32, 32)))
make = {"vf": lambda: FusionTask(data, cache_dir), "seg": lambda: SegmentationTask(data, cache_dir),
        "interactive": lambda: InteractiveTask(data, cache_dir)}

base, out, held = rss_anon_mb(), {}, []
for name, preset in presets.items():
    (run / name).mkdir(parents=True, exist_ok=True)
    logger = RunLogger(run / name, None, False, 1, tensorboard=False)
    ctx = TrainContext(preset, run / name, torch.device("cpu"), DistInfo(), logger, 0, cache_workers=1)
    task = make[name]()
    task.setup(ctx)
    for step in range(3):
        task.batch(ctx, step, range(2))
    held.append(task)  # every task stays alive: the figures add up
    out[name] = rss_anon_mb() - base
before = rss_anon_mb()  # then the old path: every cached volume copied into memory
held.append(VolumeCache(find_cases(data, labels=False), preprocess, cache_dir).build().load_all())
out["load_all"] = rss_anon_mb() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """4N phantoms in imagesTr/labelsTr, and a datalist of the first N; both caches built here."""
    from ssl3d.config import get_preset
    from ssl3d.data.datasets import VolumeCache, find_cases

    root = tmp_path_factory.mktemp("rss")
    big = write_phantom_dataset(root / "data", range(4 * N), shape=SHAPE)
    names = sorted(p.name.replace("_0000.nii.gz", "") for p in (big / "imagesTr").iterdir())[:N]
    entries = [{"image": f"imagesTr/{n}_0000.nii.gz", "label": f"labelsTr/{n}.nii.gz"} for n in names]
    small = big / "first.json"
    small.write_text(json.dumps({"training": entries}))
    preprocess = get_preset("vf-v1-cpu").preprocess
    for data in (small, big):
        for labels in (False, True):
            VolumeCache(find_cases(data, labels=labels), preprocess, root / "cache").build(workers=2)
    return root, small, big


@pytest.fixture(scope="module")
def measured(datasets) -> tuple[dict, dict]:
    """RssAnon growth (MB) of each task, added up, then of a ``load_all`` copy: for N and for 4N volumes."""
    root, small, big = datasets
    out = []
    for data in (small, big):
        done = subprocess.run([sys.executable, "-c", _SCRIPT, str(data), str(root / "cache"), str(root / f"run-{data.stem}")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    few, many = out
    print(f"\nRssAnon growth (MB), {N} -> {4 * N} cached volumes of {SHAPE}: "
          + ", ".join(f"{k} {few[k]:.1f} -> {many[k]:.1f}" for k in few))
    return few, many


def test_rss_stays_flat_as_the_cache_grows(measured):
    few, many = measured
    assert all(many[k] - few[k] < MARGIN_MB for k in ("vf", "seg", "interactive")), (few, many)


def test_a_whole_dataset_copy_fails_the_same_check(measured):
    few, many = measured
    assert many["load_all"] - few["load_all"] > 4 * MARGIN_MB, (few, many)
