"""Memory-mapped reading of the cache (issue 17): the tasks read each sample's region from the memory maps, and
every sample is bit-identical to the one the fully loaded tensors (``VolumeCache.load_all``) gave."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

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


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")
def test_mapped_volumes_hold_no_open_file(vf_cache):
    """A map is opened per read: 160k cached volumes are not 160k file descriptors."""
    before = len(os.listdir("/proc/self/fd"))
    mapped = vf_cache.mapped()
    assert [v[:, :2, :2, :2].shape for v in mapped] == [(1, 2, 2, 2)] * len(vf_cache) and len(os.listdir("/proc/self/fd")) <= before


def test_fusion_task_reads_memory_maps(vf_cache, tmp_path):
    from ssl3d.pretext.vf_task import FusionTask

    preset = apply_overrides(get_preset("vf-v1-cpu"), {"train.batch_size": 2})
    task = FusionTask(vf_cache.cases[0].image.parent, tmp_path / "cache")
    task.setup(_ctx(preset, tmp_path / "run"))
    assert all(isinstance(v, MappedVolume) for v in task.train_set)
    x, label = task.batch(_ctx(preset, tmp_path / "run"), 0, range(2))
    assert x.shape == (2, 1, *preset.fusion.patch) and label.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------- segmentation


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """Phantoms with sparse label values (x50, named by --labels): the tasks relabel them per patch."""
    from ssl3d.io import read_volume, write_volume

    root = tmp_path_factory.mktemp("seg_mapped")
    data = write_phantom_dataset(root / "data", range(5), shape=(32, 48, 40))
    values = set()
    for path in sorted((data / "labelsTr").iterdir()):
        volume = read_volume(path)
        volume.array[...] = volume.array * 50
        values |= set(np.unique(volume.array).tolist()) - {0}
        write_volume(volume, path)
    return data, ",".join(f"{v}:organ{v}" for v in sorted(values))


def _old_segmentation_sample(ctx, task, train_set, step, index):
    """SegmentationTask._sample as it was on fully loaded, relabelled (1, D, H, W) tensors."""
    g = ctx.generator(step, index)
    image, label = train_set[int(torch.randint(len(train_set), (1,), generator=g))]
    patch = ctx.preset.train.patch
    if patch is not None:
        sizes = image.shape[1:]
        if torch.rand(1, generator=g).item() < ctx.preset.train.pos_fraction and bool(label.any()):
            fg = torch.nonzero(label[0])
            centre = fg[int(torch.randint(len(fg), (1,), generator=g))].tolist()
            start = [min(max(0, c - p // 2), max(0, s - p)) for c, p, s in zip(centre, patch, sizes)]
        else:
            start = [int(torch.randint(max(1, s - p + 1), (1,), generator=g)) for s, p in zip(sizes, patch)]
        box = (slice(None), *(slice(a, a + p) for a, p in zip(start, patch)))
        image, label = image[box], label[box]
    flips = [d + 1 for d in range(3) if torch.rand(1, generator=g).item() < ctx.preset.train.flip_p]
    return (image.flip(flips), label.flip(flips)) if flips else (image, label)


@pytest.mark.parametrize("patch", [[16, 24, 20], None])
def test_segmentation_batches_equal_the_loaded_ones(seg_data, tmp_path, patch):
    from ssl3d.train.segmentation import SegmentationTask

    data, labels = seg_data
    preset = apply_overrides(get_preset("seg-cpu"), {"train.pos_fraction": 0.7})
    if patch is None:  # whole volumes: padded to one shape
        preset = replace(preset, train=replace(preset.train, patch=None), preprocess=replace(preset.preprocess, pad_to=(40, 40, 40)))
    else:
        preset = replace(preset, train=replace(preset.train, patch=tuple(patch)))
    ctx = _ctx(preset, tmp_path / "run")
    task = SegmentationTask(data, tmp_path / "cache", val_fraction=0.4, labels=labels)
    task.setup(ctx)
    cache = VolumeCache(find_cases(data, labels=True), preset.preprocess, tmp_path / "cache").build()
    train_set, val = task._split(ctx, cache.load_all(), cache.load_labels())
    values = sorted({int(v) for _, lab in train_set for v in torch.unique(lab).tolist()} - {0})
    table = torch.zeros(256, dtype=torch.uint8)
    table[values] = torch.arange(1, len(values) + 1, dtype=torch.uint8)
    train_set, val = ([(image, table[label.long()]) for image, label in pairs] for pairs in (train_set, val))
    assert task.values == list(range(1, len(values) + 1)) and len(values) > 1
    for step in range(6):
        samples = [_old_segmentation_sample(ctx, task, train_set, step, i) for i in range(2)]
        x, y = task.batch(ctx, step, range(2))
        from ssl3d.train.segmentation import pad_to_multiple

        assert torch.equal(x, pad_to_multiple(torch.stack([s[0] for s in samples]), task.multiple)[0])
        assert torch.equal(y, pad_to_multiple(torch.stack([s[1] for s in samples]).long(), task.multiple)[0])
    assert len(task.val) == len(val) == 2
    assert all(torch.equal(m.load(), t) for pair, old in zip(task.val, val) for m, t in zip(pair, old))


# ---------------------------------------------------------------------------------------------- interactive


def test_interactive_samples_equal_the_loaded_ones(seg_data, tmp_path):
    from ssl3d.train.interactive import InteractiveTask
    from ssl3d.train.segmentation import held_out_count

    data, _ = seg_data
    preset = apply_overrides(get_preset("interactive-cpu"), {"train.patch": [16, 24, 40]})  # width 40: some crops are padded
    ctx = _ctx(preset, tmp_path / "run")
    task = InteractiveTask(data, tmp_path / "cache", val_fraction=0.2)
    task.setup(ctx)
    assert all(isinstance(v, MappedVolume) for v in task.images)
    cache = VolumeCache(find_cases(data, labels=True), preset.preprocess, tmp_path / "cache").build()
    loaded = cache.load_all()
    order = np.random.default_rng(ctx.seed).permutation(len(loaded))
    mapped_images = task.images
    loaded_images = [loaded[i] for i in order[held_out_count(ctx, len(loaded), 0.2):]]
    for step in range(4):
        for i in range(3):
            task.images = mapped_images
            new = task._sample(ctx, step, i)
            task.images = loaded_images
            old = task._sample(ctx, step, i)
            assert torch.equal(new.image, old.image) and np.array_equal(new.target, old.target)
            assert new.clicks == old.clicks and new.rounds == old.rounds
    task.images = mapped_images
    (image, structures), = task.val
    assert image.shape == loaded[order[0]].shape and structures


# ---------------------------------------------------------------------------------------------- OpenMaps (VoCo)


def _maps_held(files) -> int:
    """How many of ``files`` this process has memory-mapped now (Linux: /proc/self/maps)."""
    import gc

    gc.collect()  # a dropped map is unmapped when its last tensor goes
    names = {str(Path(f).resolve()) for f in files}
    with open("/proc/self/maps") as maps:
        return len({line.split()[-1] for line in maps if line.split()[-1] in names})


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="counts mappings in /proc/self/maps (Linux)")


@needs_proc
def test_open_maps_view_the_files_and_hold_at_most_the_limit(tmp_path):
    from ssl3d.data.mapped import OpenMaps

    arrays = [np.full((2, 3, 4), n, dtype=np.float32) + np.arange(4, dtype=np.float32) for n in range(6)]
    files = [tmp_path / f"{n}.npy" for n in range(6)]
    for file, array in zip(files, arrays):
        np.save(file, array)
    maps = OpenMaps(files, limit=2)
    view = maps[0]
    assert _maps_held(files[:1]) == 1 and torch.equal(view[0], torch.from_numpy(arrays[0]))  # the map itself, no copy
    del view
    for n in range(6):
        assert torch.equal(maps[n], torch.from_numpy(arrays[n])[None])
        assert _maps_held(files) <= 2
    assert torch.equal(maps[-1], maps[5]) and [t.shape for t in maps[1:3]] == [(1, 2, 3, 4)] * 2
    doubled = OpenMaps(files, lambda t: t * 2, limit=1)
    assert torch.equal(doubled[3], 2 * torch.from_numpy(arrays[3])[None]) and _maps_held(files) <= 1 + 1  # maps' last one, doubled's copy
    with pytest.raises(IndexError):
        maps[6]


@needs_proc
def test_voco_task_holds_a_bounded_number_of_maps_with_the_same_batches(tmp_path, monkeypatch):
    """VoCo keeps at most OPEN_MAPS cached volumes mapped (a kernel mapping and a descriptor each: 160k volumes
    would pass Linux's 65530 mappings); a volume dropped and opened again gives the same samples."""
    from ssl3d.pretext import voco_task
    from ssl3d.pretext.voco_task import VoCoTask

    data = write_phantom_dataset(tmp_path / "data", range(300, 308), shape=(32, 48, 48)) / "imagesTr"
    preset = apply_overrides(get_preset("voco-v1-cpu"), {"train.batch_size": 2})
    crops = {}
    for limit in (2, 1000):
        monkeypatch.setattr(voco_task, "OPEN_MAPS", limit)
        task = VoCoTask(data, tmp_path / "cache")
        ctx = _ctx(preset, tmp_path / f"run{limit}")
        task.setup_samples(ctx)
        files = task.volumes.files
        crops[limit] = [task.batch(ctx, step, range(2)).samples.crops.clone() for step in range(6)]  # every volume, some twice
        assert _maps_held(files) <= limit and len(files) == 8
        ctx.logger.close()
    assert all(torch.equal(a, b) for a, b in zip(crops[2], crops[1000]))
