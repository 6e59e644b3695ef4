"""Session fixtures of the segmentation and evaluation tests: a segmentation bundle trained in a few
steps on phantoms (the real bundle format, written by SegmentationTask), and a pretext bundle."""

from __future__ import annotations

import pytest
import torch

#: Coarse enough that a 512x512x48 CT becomes 73x73x60 model voxels; 16^3 windows, so windows really slide.
SPACING_MM = 4.0
PATCH = (16, 16, 16)


@pytest.fixture(scope="session")
def seg_cpu_bundle(tmp_path_factory):
    from ssl3d.bundle import read_bundle
    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.data.phantoms import LABELS
    from ssl3d.data.phantoms import write_phantom_dataset
    from ssl3d.train.loop import train
    from ssl3d.train.segmentation import SegmentationTask

    root = tmp_path_factory.mktemp("seg_cpu_bundle")
    data = write_phantom_dataset(root / "data", range(3), shape=(24, 32, 32))
    preset = apply_overrides(get_preset("seg-cpu"), {
        "train.steps": 6, "train.batch_size": 2, "train.val_every": 0, "train.checkpoint_every": 6, "train.log_every": 6,
        "train.patch": list(PATCH), "network.kwargs": {"channels": [4, 8, 16]},
        "preprocess.spacing": [SPACING_MM] * 3, "preprocess.pad_to": list(PATCH),
    })
    task = SegmentationTask(data, root / "run" / "cache", val_fraction=0, label_names=LABELS)
    outputs = train(task, preset, root / "run", torch.device("cpu"))
    return read_bundle(outputs["bundle"])


@pytest.fixture(scope="session")
def pretext_bundle(tmp_path_factory, seg_cpu_bundle):
    """Same network, task 'pretext': what 'ssl3d segment' must refuse."""
    from ssl3d.bundle import write_bundle

    meta = {k: v for k, v in seg_cpu_bundle.meta.items() if k in ("network", "preprocessing", "preset")}
    meta.update(task="pretext", pretext={"method": "vf", "preset": "vf-v1-cpu"})
    return write_bundle(tmp_path_factory.mktemp("pretext") / "bundle", seg_cpu_bundle.state_dict(), meta)
