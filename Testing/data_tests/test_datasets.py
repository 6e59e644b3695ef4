import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl3d.data.datasets as datasets
from ssl3d.data.datasets import Case, VolumeCache, default_cache_dir, find_cases
from ssl3d.data.phantoms import make_phantom
from ssl3d.data.preprocess import PreprocessConfig, preprocess
from ssl3d.errors import ConfigError, DatasetError, VolumeReadError
from ssl3d.events import EventWriter, read_events
from ssl3d.io import Volume, read_volume, write_volume

CONFIG = PreprocessConfig(orientation="RAS", intensity="window:-175,250")


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(seed, shape=(16, 20, 24)) for seed in range(3)]


def write_nnunet(root: Path, phantoms, channel_tag=True) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for n, (image, labels) in enumerate(phantoms):
        tag = "_0000" if channel_tag else ""
        write_volume(image, root / "imagesTr" / f"case{n}{tag}.nii.gz")
        write_volume(labels, root / "labelsTr" / f"case{n}.nii.gz")
    return root


def write_folder(root: Path, phantoms) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for (image, _), name in zip(phantoms, ["b.nrrd", "a.nii.gz", "c.mha"]):
        write_volume(image, root / name)
    return root


def spy_preprocess(monkeypatch) -> list:
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return preprocess(*args, **kwargs)

    monkeypatch.setattr(datasets, "preprocess", counting)
    return calls


# ---------------------------------------------------------------------------------------------- find_cases


def test_folder_of_volumes_sorted_by_name_ignoring_other_files(tmp_path, phantoms):
    root = write_folder(tmp_path / "pre", phantoms)
    (root / "notes.txt").write_text("not a volume")
    (root / "._a.nii.gz").write_bytes(b"macOS resource fork")
    write_volume(phantoms[0][1], root / "a_mask.nrrd").rename(root / "a_mask.seg.nrrd")  # a segmentation is no image
    (root / "series").mkdir()
    (root / "series" / "slice1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    cases = find_cases(root)
    assert [c.name for c in cases] == ["a", "b", "c", "series"]
    assert cases[3].image == root / "series" and all(c.label is None for c in cases)


def test_nnunet_layout_pairs_channel_tag_and_same_name(tmp_path, phantoms):
    root = write_nnunet(tmp_path / "Dataset001", phantoms[:2])
    write_volume(phantoms[2][0], root / "imagesTr" / "other.nii.gz")  # same-name pair, no channel tag
    write_volume(phantoms[2][1], root / "labelsTr" / "other.nii.gz")
    cases = find_cases(root, labels=True)
    assert [(c.name, c.image.name, c.label.name) for c in cases] == [
        ("case0", "case0_0000.nii.gz", "case0.nii.gz"),
        ("case1", "case1_0000.nii.gz", "case1.nii.gz"),
        ("other", "other.nii.gz", "other.nii.gz"),
    ]
    assert [c.label for c in find_cases(root)] == [None] * 3  # pretraining ignores labels


def test_msd_dataset_json_relative_to_its_folder(tmp_path, phantoms):
    root = write_nnunet(tmp_path / "Task01", phantoms, channel_tag=False)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "phantom",
                "training": [{"image": f"./imagesTr/case{n}.nii.gz", "label": f"./labelsTr/case{n}.nii.gz"} for n in (2, 0)],
                "validation": [{"image": "imagesTr/case1.nii.gz", "label": "labelsTr/case1.nii.gz"}],
                "test": ["./imagesTr/case1.nii.gz"],
            }
        )
    )
    cases = find_cases(root, labels=True)  # the folder's dataset.json wins over imagesTr/
    assert [c.name for c in cases] == ["case2", "case0"]  # json order kept
    assert cases[0].image == root / "./imagesTr/case2.nii.gz" and cases[0].label.exists()
    assert [c.name for c in find_cases(root / "dataset.json", labels=True, split="validation")] == ["case1"]
    assert [c.name for c in find_cases(root / "dataset.json", split="test")] == ["case1"]


def test_voco_datalist_with_repeated_file_names(tmp_path, phantoms):
    for folder in ("BTCV", "LUNA"):
        (tmp_path / folder).mkdir()
        write_volume(phantoms[0][0], tmp_path / folder / "img1.nii.gz")
    datalist = tmp_path / "lists" / "pretrain.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"training": [{"image": "../BTCV/img1.nii.gz"}, {"image": "../LUNA/img1.nii.gz"}]}))
    assert [c.name for c in find_cases(datalist)] == ["../BTCV/img1.nii.gz", "../LUNA/img1.nii.gz"]


def test_weighted_sources_as_voco_v2_repeats_its_datasets(tmp_path, phantoms):
    """VoCo v2 repeats abdomen x8, head-neck x8, chest x1 (ConcatDataset): one 'weight' per source."""
    write_folder(tmp_path / "abdomen", phantoms[:2])
    write_nnunet(tmp_path / "headneck", phantoms[:1])
    (tmp_path / "chest").mkdir()
    write_volume(phantoms[2][0], tmp_path / "chest" / "lung.nrrd")
    (tmp_path / "chest" / "list.json").write_text(json.dumps({"training": [{"image": "lung.nrrd", "weight": 3}]}))
    datalist = tmp_path / "pretrain.json"
    datalist.write_text(json.dumps({"sources": [{"data": "abdomen", "weight": 8}, {"data": "headneck", "weight": 8},
                                                {"data": "chest/list.json", "name": "chest"}]}))
    cases = find_cases(datalist)
    assert [(c.name, c.weight) for c in cases] == [("abdomen/a", 8), ("abdomen/b", 8), ("headneck/case0_0000", 8), ("chest/lung", 3)]
    assert cases[3].image == tmp_path / "chest" / "lung.nrrd"
    (tmp_path / "dataset.json").write_text(datalist.read_text())  # a folder's dataset.json may list sources too
    assert find_cases(tmp_path) == cases
    cache = VolumeCache(cases, CONFIG, tmp_path / "cache").build()
    assert cache.weights == [8, 8, 8, 3] and cache.names == [c.name for c in cases]
    assert VolumeCache([Case(c.name, c.image) for c in cases], CONFIG, tmp_path / "cache").dir == cache.dir  # weights: not a cache key


@pytest.mark.parametrize("record, message", [
    ({"sources": []}, "'sources' must be a non-empty list"),
    ({"sources": [{"weight": 2}]}, r"sources\[0\] must be an object with a 'data' path"),
    ({"sources": [{"data": "a", "weight": 0}]}, "'weight' must be a positive integer"),
    ({"sources": [{"data": "a", "weight": 1.5}]}, "'weight' must be a positive integer"),
    ({"sources": [{"data": "a"}, {"data": "a"}]}, r"sources\[1\] has the name 'a' of sources\[0\]"),
    ({"sources": [{"data": "nested.json"}]}, "a source cannot itself list 'sources'"),
    ({"training": [{"image": "a/a.nii.gz", "weight": True}]}, r"training\[0\]: 'weight' must be a positive integer"),
])
def test_ill_weighted_datalists(tmp_path, phantoms, record, message):
    write_folder(tmp_path / "a", phantoms[:2])
    (tmp_path / "nested.json").write_text(json.dumps({"sources": [{"data": "a"}]}))
    (tmp_path / "list.json").write_text(json.dumps(record))
    with pytest.raises(DatasetError, match=message):
        find_cases(tmp_path / "list.json")


def test_single_volume(tmp_path, phantoms):
    path = write_volume(phantoms[0][0], tmp_path / "ct.nrrd")
    assert find_cases(path) == [Case("ct", path)]
    with pytest.raises(DatasetError, match="single volume has no label"):
        find_cases(path, labels=True)


def _missing_label(root, phantoms):
    write_nnunet(root, phantoms)
    (root / "labelsTr" / "case1.nii.gz").unlink()


def _orphan_label(root, phantoms):
    write_nnunet(root, phantoms)
    (root / "imagesTr" / "case2_0000.nii.gz").unlink()


def _two_channels(root, phantoms):
    write_nnunet(root, phantoms)
    write_volume(phantoms[0][0], root / "imagesTr" / "case0_0001.nii.gz")


def _empty(root, phantoms):
    root.mkdir()
    (root / "readme.txt").write_text("nothing")


def _bad_json(root, phantoms):
    root.mkdir()
    (root / "dataset.json").write_text('{"training": [')


def _json_without_training(root, phantoms):
    root.mkdir()
    (root / "data.json").write_text('{"numTraining": 3}')


def _json_missing_file(root, phantoms):
    root.mkdir()
    (root / "dataset.json").write_text('{"training": [{"image": "gone.nii.gz", "label": "gone_seg.nii.gz"}]}')


def _json_without_label(root, phantoms):
    root.mkdir()
    write_volume(phantoms[0][0], root / "x.nii.gz")
    (root / "dataset.json").write_text('{"training": [{"image": "x.nii.gz"}]}')


@pytest.mark.parametrize(
    "make, target, message",
    [
        (_missing_label, ".", r"1 image\(s\) have no label in .*labelsTr.*: case1_0000.nii.gz"),
        (_orphan_label, ".", r"labelsTr: 1 label\(s\) have no image in imagesTr/: case2.nii.gz"),
        (_two_channels, ".", r"case0_0000.nii.gz and case0_0001.nii.gz both pair with label case0.nii.gz"),
        (_empty, ".", r"no volumes found; looked for files ending in .nii.gz"),
        (_bad_json, ".", r"dataset.json: not valid JSON \(Expecting value at line 1"),
        (_json_without_training, "data.json", r"needs a non-empty 'training' list .* found keys \['numTraining'\]"),
        (_json_missing_file, ".", r"2 listed file\(s\) do not exist .*: gone.nii.gz, gone_seg.nii.gz"),
        (_json_without_label, ".", r"1 image\(s\) have no 'label' in their 'training' entry: x.nii.gz"),
    ],
)
def test_ill_datasets(tmp_path, phantoms, make, target, message):
    root = tmp_path / "data"
    make(root, phantoms)
    with pytest.raises(DatasetError, match=message) as info:
        find_cases(root / target, labels=True)
    assert str(root) in str(info.value)


def test_ill_paths(tmp_path, phantoms):
    with pytest.raises(DatasetError, match="no such file or folder"):
        find_cases(tmp_path / "nope")
    write_folder(tmp_path / "plain", phantoms[:1])
    with pytest.raises(DatasetError, match="a plain folder of volumes has none"):
        find_cases(tmp_path / "plain", labels=True)


# ---------------------------------------------------------------------------------------------- cache


def test_cache_round_trip_and_reuse(tmp_path, phantoms, monkeypatch):
    cases = find_cases(write_nnunet(tmp_path / "Dataset001", phantoms), labels=True)
    calls = spy_preprocess(monkeypatch)
    cache = VolumeCache(cases, CONFIG, tmp_path / "cache").build()
    assert len(calls) == 3 and cache.preprocessed == 3 and len(cache) == 3
    assert cache.names == ["case0", "case1", "case2"] and cache.dir.parent == tmp_path / "cache"
    x, y, mapping = preprocess(read_volume(cases[1].image), CONFIG, read_volume(cases[1].label))
    np.testing.assert_array_equal(cache.image(1), x[0, 0].numpy())
    np.testing.assert_array_equal(cache.label(1), y[0, 0].numpy())
    assert cache.image(1).dtype == np.float32 and cache.label(1).dtype == np.uint8
    assert isinstance(cache.image(1), np.memmap)
    np.testing.assert_array_equal(cache.mapping(1).model_to_input, mapping.model_to_input)

    again = VolumeCache(cases, CONFIG, tmp_path / "cache").build()
    assert len(calls) == 3 and again.preprocessed == 0 and again.names == cache.names
    os.utime(cases[2].image, ns=(0, 10**9))  # a changed source file is preprocessed again, alone
    assert VolumeCache(cases, CONFIG, tmp_path / "cache").build().preprocessed == 1
    other = PreprocessConfig(orientation="RAS", intensity="zscore")
    assert VolumeCache(cases, other, tmp_path / "cache").build().dir != cache.dir


def test_load_all_and_info_float16(tmp_path, phantoms):
    cases = find_cases(write_nnunet(tmp_path / "Dataset001", phantoms[:2]), labels=True)
    cache = VolumeCache(cases, PreprocessConfig(orientation="RAS", dtype="float16"), tmp_path / "cache").build()
    assert cache.image(0).dtype == np.float16
    images, labels = cache.load_all(), cache.load_labels()
    assert [t.shape for t in images] == [(1, 16, 20, 24)] * 2 and images[0].dtype == torch.float32
    assert labels[0].dtype == torch.uint8 and labels[0].shape == (1, 16, 20, 24)
    info = cache.info()
    arrays = sorted(Path(info["dir"]).glob("*.npy"))
    assert len(arrays) == 4 and info["bytes"] == sum(p.stat().st_size for p in arrays)
    assert (info["entries"], info["dtype"], info["skipped"]) == (2, "float16", 0)
    assert info["bytes"] == sum(a.nbytes + 128 for a in [cache.image(0), cache.image(1), cache.label(0), cache.label(1)])


def test_corrupt_volume_in_pretraining_folder_is_skipped(tmp_path, phantoms):
    root = write_folder(tmp_path / "pre", phantoms[:2])
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip")
    cases = find_cases(root)
    with EventWriter(tmp_path / "events.jsonl") as events:
        cache = VolumeCache(cases, CONFIG, tmp_path / "cache", events=events).build()
    assert cache.names == ["a", "b"] and len(cache.skipped) == 1
    lines = (cache.dir / "skipped.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{root / 'broken.nii.gz'}\tthe compressed data is truncated")
    warnings = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 1 and "broken.nii.gz" in warnings[0]["message"]
    assert VolumeCache(cases, CONFIG, tmp_path / "cache").build().skipped == cache.skipped  # remembered
    with pytest.raises(VolumeReadError, match="broken.nii.gz"):
        VolumeCache(cases, CONFIG, tmp_path / "cache", strict=True).build()
    with pytest.raises(VolumeReadError, match="broken.nii.gz"):
        VolumeCache(cases, CONFIG, tmp_path / "fresh", strict=True).build()


def test_skipped_volume_warning_reaches_the_terminal_above_the_progress_bar(tmp_path, phantoms, monkeypatch):
    import io
    import sys

    from ssl3d.train.logger import RunLogger

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = write_folder(tmp_path / "pre", phantoms[:1])
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip")
    monkeypatch.setattr(sys, "stderr", Terminal())
    logger = RunLogger(tmp_path / "run", None, True, 10, tensorboard=False)  # a training run's sinks, with a bar
    try:
        VolumeCache(find_cases(root), CONFIG, tmp_path / "cache", events=logger).build()
        assert logger._text._bar is not None
    finally:
        logger.close()
    assert f"warning: skipped unreadable volume {root / 'broken.nii.gz'}" in sys.stderr.getvalue()


def test_every_volume_skipped(tmp_path):
    """The error names the reasons itself: a training run removes its folder (and skipped.txt) on failure."""
    (tmp_path / "bad.nii").write_bytes(b"no header")
    with pytest.raises(DatasetError, match=r"all 1 volumes are unreadable, nothing to train on: bad\.nii: .+\.$"):
        VolumeCache(find_cases(tmp_path / "bad.nii"), CONFIG, tmp_path / "cache").build()
    for n in range(5):
        (tmp_path / "many" / f"{n}.nii").parent.mkdir(exist_ok=True)
        (tmp_path / "many" / f"{n}.nii").write_bytes(b"no header")
    with pytest.raises(DatasetError, match=r"all 5 volumes are unreadable.*0\.nii: .*; 1\.nii: .*; 2\.nii: .*; and 2 more\.$"):
        VolumeCache(find_cases(tmp_path / "many"), CONFIG, tmp_path / "cache").build()


def test_unreadable_volume_in_labelled_set_is_an_error(tmp_path, phantoms):
    root = write_nnunet(tmp_path / "Dataset001", phantoms[:2])
    (root / "labelsTr" / "case1.nii.gz").write_bytes(b"garbage")
    with pytest.raises(VolumeReadError, match="case1.nii.gz"):
        VolumeCache(find_cases(root, labels=True), CONFIG, tmp_path / "cache").build()


def test_label_on_another_grid(tmp_path, phantoms):
    root = write_nnunet(tmp_path / "Dataset001", phantoms[:1])
    image, labels = phantoms[0]
    moved = labels.ijk_to_ras.copy()
    moved[:3, 3] += 5.0
    write_volume(Volume(labels.array, moved), root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(DatasetError, match=r"case0.nii.gz: the label is not on the grid of its image .*case0_0000.nii.gz.*origin"):
        VolumeCache(find_cases(root, labels=True), CONFIG, tmp_path / "cache").build()
    write_volume(Volume(labels.array.astype(np.int16) * 100, labels.ijk_to_ras), root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(DatasetError, match=r"label values must be integers in 0..255"):
        VolumeCache(find_cases(root, labels=True), CONFIG, tmp_path / "cache").build()
    assert not list((tmp_path / "cache").rglob("*.npy"))  # no partial entries


def test_ill_cache_arguments(tmp_path, phantoms):
    path = write_volume(phantoms[0][0], tmp_path / "ct.nii.gz")
    with pytest.raises(ConfigError, match="cache dtype must be one of .* got 'int8'"):
        VolumeCache(find_cases(path), PreprocessConfig(dtype="int8"), tmp_path)
    with pytest.raises(DatasetError, match="repeated: ct"):
        VolumeCache([Case("ct", path), Case("ct", path)], CONFIG, tmp_path)
    with pytest.raises(RuntimeError, match="build"):
        len(VolumeCache(find_cases(path), CONFIG, tmp_path))


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "user"))
    assert default_cache_dir(tmp_path / "run") == tmp_path / "run" / "cache"
    assert default_cache_dir(None) == tmp_path / "user" / "datasets"
