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
    with pytest.raises(BundleError, match="n/model.safetensors: the weights are damaged or were replaced"):
        read_bundle(tmp_path / "n").state_dict()


def _flip_a_byte_of_the_data(path, offset_from_end=3):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40  # in the tensor data, not the header: safetensors itself reads it happily
    path.write_bytes(bytes(data))


def test_weights_hash_is_recorded_and_checked(tmp_path):
    import hashlib

    bundle = write_bundle(tmp_path / "m", {"w": torch.arange(8.0)}, META)
    weights = tmp_path / "m" / "model.safetensors"
    recorded = json.loads((tmp_path / "m" / "bundle.json").read_text())["weights"]["sha256"]
    assert recorded == hashlib.sha256(weights.read_bytes()).hexdigest() == bundle.meta["weights"]["sha256"]
    _flip_a_byte_of_the_data(weights)
    with pytest.raises(BundleError, match="m/model.safetensors: the weights are damaged or were replaced"):
        read_bundle(tmp_path / "m").state_dict()


def test_older_bundles_without_a_hash_load_with_a_warning(tmp_path):
    write_bundle(tmp_path / "m", {"w": torch.arange(8.0)}, META)
    meta_path = tmp_path / "m" / "bundle.json"
    meta = json.loads(meta_path.read_text())
    del meta["weights"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="records no SHA-256 of the weights"):
        assert torch.equal(read_bundle(tmp_path / "m").state_dict()["w"], torch.arange(8.0))


def test_non_finite_weights_are_a_bundle_error(tmp_path):
    write_bundle(tmp_path / "m", {"w": torch.tensor([1.0, float("nan")]), "i": torch.arange(3)}, META)
    with pytest.raises(BundleError, match="tensor 'w' holds NaN or infinite values"):
        read_bundle(tmp_path / "m").state_dict()


def test_no_pickles(tmp_path):
    write_bundle(tmp_path / "m", {"w": torch.zeros(2)}, META)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["bundle.json", "model.safetensors"]
    json.loads((tmp_path / "m" / "bundle.json").read_text())
