"""Label values that are not classes (issue 15 item 5): a 0/255 mask is refused with the way to map it, and
``--labels 255:NAME`` maps the value to class 1; a ``--labels`` value that no label holds is an error."""

from __future__ import annotations

import pytest

from ssl3d.bundle import read_bundle
from ssl3d.cli import main
from ssl3d.data.phantoms import write_phantom_dataset
from ssl3d.errors import DatasetError
from ssl3d.io import read_volume, write_volume
from ssl3d.train.segmentation import class_map

pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py


@pytest.fixture(scope="module")
def mask_255(tmp_path_factory):
    """Phantoms whose label maps are binary masks saved as 0/255 (liver only)."""
    folder = write_phantom_dataset(tmp_path_factory.mktemp("mask255"), range(300, 302), shape=(24, 32, 32))
    for path in (folder / "labelsTr").iterdir():
        labels = read_volume(path)
        write_volume(labels.like(((labels.array == 1) * 255).astype("uint8")), path)
    return folder


def _finetune(data, out, *extra) -> int:
    return main(["finetune", "--data", str(data), "--out", str(out), "--steps", "2", "--val-fraction", "0", "--device", "cpu", *extra])


def test_0_255_mask_is_refused_with_the_mapping(mask_255, tmp_path, capsys):
    assert _finetune(mask_255, tmp_path / "run") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("cache: ")]  # progress lines
    assert len(err) == 1 and "{0, 255}" in err[0] and "256-class" in err[0] and "--labels 255:NAME" in err[0], err
    assert not (tmp_path / "run").exists()


def test_labels_255_maps_to_class_1(mask_255, tmp_path):
    assert _finetune(mask_255, tmp_path / "run", "--labels", "255:tumour") == 0
    bundle = read_bundle(tmp_path / "run" / "bundle")
    assert bundle.network["kwargs"]["out_channels"] == 2
    assert bundle.labels == {1: ("tumour", bundle.labels[1][1])}


def test_class_map_rules():
    assert class_map([1, 2, 3], None, "d") == {1: 1, 2: 2, 3: 3}
    assert class_map([1, 2, 3], "1:liver,3:kidney", "d") == {1: 1, 2: 2, 3: 3}
    assert class_map([1, 4], None, "d") == {1: 1, 4: 4}  # a small gap stays as it is
    assert class_map([100, 200], "200:b,100:a", "d") == {100: 1, 200: 2}
    with pytest.raises(DatasetError, match="names value.s. 7 that no label map holds; the labels hold 1, 2"):
        class_map([1, 2], "1:liver,7:x", "d")
    with pytest.raises(DatasetError, match="--labels 100:NAME,200:NAME"):
        class_map([100, 200], "100:a", "d")
