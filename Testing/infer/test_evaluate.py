"""Dice, HD95 and ASSD against values computed by hand on tiny volumes; empty-mask conventions; folder
pairing, the CSV/JSON report and the CLI's errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from ssl3d.cli import main
from ssl3d.errors import ConfigError, InputError
from ssl3d.evaluate import evaluate_folders, evaluate_pair, pair_cases, parse_label_names
from ssl3d.io import Volume, write_volume

SPACING = (2.0, 1.0, 1.0)  # (i, j, k) mm: i is the last array axis


def _volumes(shape=(5, 5, 9)):
    return np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)


def _pair(pred, ref, labels=None, spacing=SPACING):
    return evaluate_pair(Volume.from_geometry(pred, spacing), Volume.from_geometry(ref, spacing), labels)


def test_single_voxels_three_columns_apart():
    pred, ref = _volumes()
    pred[2, 2, 2], ref[2, 2, 5] = 1, 1  # 3 voxels along i at 2 mm: every surface distance is 6 mm
    s = _pair(pred, ref, {1: "dot"})["dot"]
    assert s["dice"] == 0.0 and s["hd95"] == pytest.approx(6.0) and s["assd"] == pytest.approx(6.0)
    assert (s["pred_voxels"], s["ref_voxels"]) == (1, 1)


def test_cubes_shifted_by_one_column():
    # 3x3x3 cubes, the reference one column further along i (2 mm). Surfaces: the 26 voxels around each centre.
    # pred -> ref: 9 voxels of the column i=1 are 2 mm from the reference surface, the pred voxel on the
    # reference centre is 1 mm away (a face neighbour along k), 16 voxels lie on the reference surface.
    # ref -> pred mirrors it. ASSD = (2 * (9 * 2 + 1)) / 52; HD95 = 95th percentile of [0]*16 + [1] + [2]*9 = 2.
    pred, ref = _volumes()
    pred[1:4, 1:4, 1:4], ref[1:4, 1:4, 2:5] = 3, 3
    s = _pair(pred, ref)["label 3"]
    assert s["dice"] == pytest.approx(2 * 18 / 54)
    assert s["hd95"] == pytest.approx(2.0)
    assert s["assd"] == pytest.approx(38 / 52)


def test_identical_masks_score_perfectly_and_labels_are_named():
    pred, ref = _volumes()
    pred[1:3, 1:4, 2:6], ref[1:3, 1:4, 2:6] = 2, 2
    scores = _pair(pred, ref, "2:liver")
    assert list(scores) == ["liver"]
    assert scores["liver"] == {"value": 2, "dice": 1.0, "hd95": 0.0, "assd": 0.0, "pred_voxels": 24, "ref_voxels": 24}


def test_empty_masks_follow_the_convention():
    pred, ref = _volumes()
    ref[2, 2, 2] = 1  # class 1 missed, class 2 invented, class 3 absent from both
    pred[0, 0, 0] = 2
    scores = _pair(pred, ref, {1: "a", 2: "b", 3: "c"})
    diagonal = math.sqrt(4**2 + 4**2 + (8 * 2) ** 2)  # corner to corner of the (5, 5, 9) grid in mm
    for name in ("a", "b"):
        assert scores[name]["dice"] == 0.0
        assert scores[name]["hd95"] == pytest.approx(diagonal) and scores[name]["assd"] == pytest.approx(diagonal)
    assert scores["c"]["dice"] == 1.0 and math.isnan(scores["c"]["hd95"]) and math.isnan(scores["c"]["assd"])


def test_ill_different_grids_name_both_files(tmp_path):
    pred, ref = _volumes()
    a = Volume.from_geometry(pred, SPACING)
    b = Volume.from_geometry(ref, (2.0, 1.0, 1.5))
    with pytest.raises(InputError, match=r"p\.nii\.gz and r\.nii\.gz are not on the same grid \(spacing"):
        evaluate_pair(a, b, None, "p.nii.gz", "r.nii.gz")
    with pytest.raises(InputError, match="shape"):
        evaluate_pair(a, Volume.from_geometry(np.zeros((5, 5, 8), np.uint8), SPACING))


def test_ill_non_integer_and_bad_labels():
    pred, ref = _volumes()
    with pytest.raises(InputError, match="not a label map"):
        evaluate_pair(Volume.from_geometry(pred + 0.5), Volume.from_geometry(ref))
    for text in ("liver", "0:bg", "1:a,1:b", ""):
        with pytest.raises(ConfigError):
            parse_label_names(text)


@pytest.fixture()
def folders(tmp_path):
    """Two cases; predictions in .seg.nrrd-free NRRD, references in NIfTI (pairing ignores the ending)."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(), ref_dir.mkdir()
    for case, shift in (("case1", 0), ("case2", 1)):
        pred, ref = _volumes()
        pred[1:4, 1:4, 1:4], ref[1:4, 1:4, 1 + shift : 4 + shift] = 1, 1
        ref[0, 0, 8] = 2  # class 2 is missed in both cases
        write_volume(Volume.from_geometry(pred, SPACING), pred_dir / f"{case}.nrrd")
        write_volume(Volume.from_geometry(ref, SPACING), ref_dir / f"{case}.nii.gz")
    write_volume(Volume.from_geometry(_volumes()[0], SPACING), pred_dir / "extra.nii.gz")  # no reference: ignored
    return pred_dir, ref_dir


def test_folders_report_csv_and_json(tmp_path, folders):
    pred_dir, ref_dir = folders
    summary = evaluate_folders(pred_dir, ref_dir, {1: "cube", 2: "dot"}, out=tmp_path / "report.csv")
    assert list(summary["cases"]) == ["case1", "case2"]
    assert summary["mean"]["cube"]["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["std"]["cube"]["dice"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [
        ("case1", "cube"), ("case1", "dot"), ("case2", "cube"), ("case2", "dot"),
        ("mean", "cube"), ("mean", "dot"), ("mean", "all"), ("std", "cube"), ("std", "dot"), ("std", "all"),
    ]
    assert float(rows[2]["assd_mm"]) == pytest.approx(38 / 52) and rows[0]["hd95_mm"] == "0"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["labels"] == {"1": "cube", "2": "dot"} and "both empty" in report["convention"]
    assert report["mean"]["dot"]["dice"] == 0.0


def test_folder_pairing_errors(tmp_path, folders):
    pred_dir, ref_dir = folders
    (pred_dir / "case2.nrrd").unlink()
    with pytest.raises(InputError, match=r"no prediction for 1 of 2 reference cases \(case2\)"):
        pair_cases(pred_dir, ref_dir)
    with pytest.raises(InputError, match="both be files or both be folders"):
        pair_cases(pred_dir / "case1.nrrd", ref_dir)


def test_cli_evaluate(tmp_path, folders, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "r.csv"
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 cases" in text and "label 1" in text and out.is_file() and (tmp_path / "r.json").is_file()
    single = tmp_path / "one.csv"
    assert main(["evaluate", "--pred", str(pred_dir / "case1.nrrd"), "--ref", str(ref_dir / "case1.nii.gz"), "--labels", "1:cube", "--out", str(single)]) == 0
    assert list(csv.DictReader(single.open()))[0]["dice"] == "1"


def test_cli_evaluate_bad_inputs_exit_2(tmp_path, folders, capsys):
    pred_dir, ref_dir = folders
    other = tmp_path / "other"
    other.mkdir()
    write_volume(Volume.from_geometry(np.zeros((5, 5, 9), np.uint8), (1.0, 1.0, 1.0)), other / "case1.nii.gz")
    cases = {
        "missing ref": (["--ref", str(tmp_path / "nope")], "nope"),
        "bad labels": (["--ref", str(ref_dir), "--labels", "liver"], "--labels"),
        "not csv": (["--ref", str(ref_dir), "--out", str(tmp_path / "r.txt")], ".csv"),
        "folder missing": (["--ref", str(ref_dir), "--out", str(tmp_path / "no" / "r.csv")], "does not exist"),
        "other grid": (["--ref", str(other)], "not on the same grid"),
    }
    for what, (args, needle) in cases.items():
        args = ["evaluate", "--pred", str(pred_dir), "--out", str(tmp_path / "r.csv"), *args] if "--out" not in args else ["evaluate", "--pred", str(pred_dir), *args]
        assert main(args) == 2, what
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (what, err)
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "no").exists()
