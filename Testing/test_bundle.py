import json

import pytest
import torch

from ssl3d.bundle import as_bundle, read_bundle, write_bundle
from ssl3d.errors import BundleError

META = {
    "network": {"name": "unet-small", "kwargs": {"channels": [4, 8]}},
    "task": "segmentation",
    "preprocessing": {"orientation": "RAS", "intensity": "window:-175,250"},
    "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}],
    "provenance": {"data": "phantoms", "steps": 3},
}


def test_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    bundle = write_bundle(tmp_path / "m", state, META)
    again = read_bundle(tmp_path / "m")
    assert again.meta["schema"] == 1 and again.task == "segmentation"
    assert again.labels == {1: ("liver", (221, 130, 101))}
    assert torch.equal(again.state_dict()["w"], state["w"])
    assert as_bundle(bundle) is bundle and as_bundle(tmp_path / "m").meta == again.meta


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "magic"}, "task must be one of"),
        ({"labels": [{"value": 1, "name": "a", "color": [300, 0, 0]}]}, r"labels\[0\].color"),
        ({"labels": [{"value": 0, "name": "a", "color": [1, 2, 3]}]}, r"labels\[0\].value"),
        ({"network": {"kwargs": {}}}, "network must be"),
        ({"colour": 1}, "unknown section 'colour'"),
        ({"schema": 99}, "requires bundle schema 99"),
        ({"preprocessing": {"gamma": 1}}, "preprocessing has unknown fields"),
        ({"task": "pretext"}, "needs a 'pretext' section"),
    ],
)
def test_validation_names_the_bad_field(tmp_path, change, message):
    with pytest.raises(BundleError, match=message):
        write_bundle(tmp_path / "m", {"w": torch.zeros(1)}, {**META, **change})
    assert not (tmp_path / "m").exists()


def test_missing_or_broken_folders(tmp_path):
    with pytest.raises(BundleError, match="not a bundle folder"):
        read_bundle(tmp_path / "none")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "bundle.json").write_text("{}")
    with pytest.raises(BundleError, match="needs bundle.json and model.safetensors"):
        read_bundle(tmp_path / "half")
    write_bundle(tmp_path / "m", {"w": torch.zeros(1)}, META)
    (tmp_path / "m" / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(tmp_path / "m")
    write_bundle(tmp_path / "n", {"w": torch.zeros(1)}, META)
    (tmp_path / "n" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot read the weights"):
        read_bundle(tmp_path / "n").state_dict()


def test_no_pickles(tmp_path):
    write_bundle(tmp_path / "m", {"w": torch.zeros(2)}, META)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["bundle.json", "model.safetensors"]
    json.loads((tmp_path / "m" / "bundle.json").read_text())
