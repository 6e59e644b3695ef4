"""The one bundle writer every weight import shares (ssl3d.weights.imported_bundle) and the format dispatch."""

import hashlib

import pytest
import torch

from ssl3d.bundle import read_bundle
from ssl3d.cli import main
from ssl3d.errors import ConfigError, InputError
from ssl3d.weights import import_weights
from ssl3d.weights.imported_bundle import check_out_dir, write_imported_bundle
from ssl3d.weights.keymap import match_state

META = {
    "network": {"name": "unet-small", "kwargs": {"channels": [4, 8]}},
    "task": "segmentation",
    "preprocessing": {"orientation": "RAS", "intensity": "window:-175,250"},
    "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}],
    "provenance": {"data": "phantoms", "assumed": {"patch": {"value": [96, 96, 96], "from": "a recipe"}}},
}


def test_every_import_records_the_file_its_hash_the_format_and_the_match(tmp_path):
    target = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    file = tmp_path / "release.pt"
    torch.save({"state_dict": {"w": torch.ones(2, 3)}}, file)
    _, report = match_state(target, {"w": torch.ones(2, 3)}, lambda k: k, allow_partial=True, source=file.name)
    folder = write_imported_bundle(tmp_path / "bundle", target, META, file, "swinunetr-seg", report)
    provenance = read_bundle(folder).meta["provenance"]
    assert provenance["source"] == str(file.resolve()) and provenance["source_name"] == "release.pt"
    assert provenance["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest() and provenance["format"] == "swinunetr-seg"
    match = provenance["match"]
    assert match["matched"] == 1 and match["missing"] == ["b"] and match["partial"] is True
    assert match["summary"].startswith("release.pt: updated 1 of 2")
    assert provenance["data"] == "phantoms" and provenance["assumed"]["patch"]["value"] == [96, 96, 96]  # the format's own


def test_an_out_folder_that_is_not_a_bundle_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    check_out_dir(tmp_path / "new")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text("{}")
    check_out_dir(tmp_path / "bundle")  # an earlier import: replaced
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    for out in ("notes", "file"):
        with pytest.raises(InputError, match=f"--out .*{out}: exists and is not a bundle folder"):
            check_out_dir(tmp_path / out)


@pytest.mark.parametrize("fmt", ["voco", "mis-fm", "swinunetr-seg"])
def test_each_format_checks_the_out_folder_before_reading_the_file(tmp_path, capsys, fmt):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    missing = tmp_path / "not_there.pt"  # never read: the folder is refused first
    assert main(["import-weights", str(missing), "--format", fmt, "--out", str(tmp_path / "notes")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'notes'}: exists and is not a bundle folder")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["a.txt"]


def test_import_weights_names_the_closest_format(tmp_path):
    with pytest.raises(ConfigError, match="unknown --format 'mis_fm'. Did you mean 'mis-fm'"):
        import_weights(tmp_path / "x.pt", "mis_fm", tmp_path / "out")
