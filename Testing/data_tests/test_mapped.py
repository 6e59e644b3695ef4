"""Memory-mapped reading of the cache (issue 17): the tasks read each sample's region from the memory maps, and
every sample is bit-identical to the one the fully loaded tensors (``VolumeCache.load_all``) gave."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl3d.config import apply_overrides, get_preset
from ssl3d.data.datasets import VolumeCache, find_cases
from ssl3d.data.mapped import MappedVolume
from ssl3d.data.phantoms import write_phantom_dataset
from ssl3d.pretext import vf_samples


def _ctx(preset, run_dir):
    from ssl3d.train.distributed import DistInfo
    from ssl3d.train.logger import RunLogger
    from ssl3d.train.loop import TrainContext

    run_dir.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(run_dir, None, False, preset.train.steps, tensorboard=False)
    return TrainContext(preset, run_dir, torch.device("cpu"), DistInfo(), logger, preset.train.seed)


def _gen(*entropy):
    return vf_samples._seeded(*entropy)


# ---------------------------------------------------------------------------------------------- MappedVolume


@pytest.fixture()
def small(tmp_path):
    array = np.random.default_rng(0).normal(size=(3, 7, 1)).astype(np.float16)
    np.save(tmp_path / "v.npy", array)
    return MappedVolume.open(tmp_path / "v.npy", torch.float32), torch.from_numpy(array.astype(np.float32))[None]


def _boxes(shape, rng, n=40):
    for _ in range(n):
        starts = [int(rng.integers(0, s + 1)) for s in shape]
        yield starts, [int(rng.integers(0, s + 2)) for s in shape]


def test_regions_are_slices_of_the_loaded_volume(small):
    mapped, loaded = small
    assert mapped.shape == loaded.shape and torch.equal(mapped.load(), loaded)
    for starts, sizes in _boxes(loaded.shape[1:], np.random.default_rng(1)):
        box = (slice(None), *(slice(a, a + n) for a, n in zip(starts, sizes)))
        assert torch.equal(mapped[box], loaded[box]) and torch.equal(mapped.region(starts, sizes), loaded[box])
    with pytest.raises(IndexError):
        mapped[0]


@pytest.mark.parametrize("mode", ["minimum", "zero", "reflect"])
def test_padded_reads_equal_pad_volumes(small, mode):
    mapped, loaded = small
    patch = (8, 7, 6)  # depth 3 -> 8, width 1 -> 6 (numpy's reflect repeats a 1-voxel axis)
    padded, expected = mapped.padded(patch, mode), vf_samples.pad_volumes([loaded], patch, mode)[0]
    assert padded.shape == expected.shape == (1, 8, 7, 6) and torch.equal(padded.load(), expected)
    for starts, sizes in _boxes(expected.shape[1:], np.random.default_rng(2)):
        box = (slice(None), *(slice(a, a + n) for a, n in zip(starts, sizes)))
        assert torch.equal(padded[box], expected[box]), (starts, sizes)


def test_label_reads_table_and_foreground(tmp_path):
    label = np.random.default_rng(3).choice(np.array([0, 0, 0, 50, 100], np.uint8), size=(20, 9, 11))
    np.save(tmp_path / "l.npy", label)
    table = np.zeros(256, np.uint8)
    table[50], table[100] = 2, 0  # 100 becomes background
    mapped = MappedVolume.open(tmp_path / "l.npy", torch.uint8).relabelled(table)
    expected = torch.from_numpy(table)[torch.from_numpy(label).long()]
    assert mapped.load().dtype == torch.uint8 and torch.equal(mapped.load()[0], expected)
    assert MappedVolume.open(tmp_path / "l.npy", torch.uint8).values() == {0, 50, 100} and mapped.values() == {0, 2}
    counts, fg = mapped.slice_counts(), torch.nonzero(expected)
    assert counts.tolist() == [int(s.count_nonzero()) for s in expected] and counts.sum() == len(fg)
    assert all(mapped.nth_nonzero(k, counts) == fg[k].tolist() for k in range(len(fg)))


# ---------------------------------------------------------------------------------------------- Volume Fusion


@pytest.fixture(scope="module")
def vf_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("vf_mapped")
    write_phantom_dataset(root / "data", range(2), shape=(16, 40, 36))
    write_phantom_dataset(root / "data", range(2, 4), shape=(24, 30, 48))
    preset = get_preset("vf-v1-cpu")
    return VolumeCache(find_cases(root / "data" / "imagesTr", labels=False), preset.preprocess, root / "cache").build()


@pytest.mark.parametrize("version,mode", [(1, "minimum"), (1, "zero"), (1, "reflect"), (2, None)])
def test_fused_batches_equal_the_loaded_ones(vf_cache, version, mode):
    fusion = get_preset(f"vf-v{version}-cpu").fusion
    fusion = replace(fusion, patch=(20, 32, 32)) if version == 1 else fusion  # v1: every volume is padded on an axis
    loaded, mapped = vf_cache.load_all(), vf_cache.mapped()
    if version == 1:
        loaded = vf_samples.pad_volumes(loaded, fusion.patch, mode)
        mapped = [v.padded(fusion.patch, mode) for v in mapped]
        assert all(v.shape[1:] != v.spatial for v in mapped)
    for step in range(4):
        batches = [vf_samples.fused_batch(volumes, fusion, [_gen(step, i) for i in range(3)], _gen(step, 99))
                   for volumes in (loaded, mapped)]
        assert all(torch.equal(a, b) for a, b in zip(*batches))
    assert all(torch.equal(a, b) for a, b in zip(vf_samples.fused_set(loaded, fusion, 3, 7), vf_samples.fused_set(mapped, fusion, 3, 7)))


def test_fusion_task_reads_memory_maps(vf_cache, tmp_path):
    from ssl3d.pretext.vf_task import FusionTask

    preset = apply_overrides(get_preset("vf-v1-cpu"), {"train.batch_size": 2})
    task = FusionTask(vf_cache.cases[0].image.parent, tmp_path / "cache")
    task.setup(_ctx(preset, tmp_path / "run"))
    assert all(isinstance(v, MappedVolume) for v in task.train_set)
    x, label = task.batch(_ctx(preset, tmp_path / "run"), 0, range(2))
    assert x.shape == (2, 1, *preset.fusion.patch) and label.dtype == torch.uint8
