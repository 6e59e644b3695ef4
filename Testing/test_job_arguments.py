"""What the Slicer modules start and show, without Slicer: engine command lines (ssl3d.job_arguments) and bundle
summaries (ssl3d.bundle_info). These are the module logic's checks from Testing/slicer_replay/test_static.py,
run on the engine functions the modules call."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ssl3d import bundle_info, job_arguments
from ssl3d.errors import InputError


def test_command_lines():
    assert job_arguments.pretrain_arguments("vf", "vf-v1-cpu", Path("data"), Path("run"), steps=50, batch_size=2,
                                       network="unet", device="cpu") == [
        "pretrain", "--method", "vf", "--preset", "vf-v1-cpu", "--data", "data", "--out", "run", "--steps", "50",
        "--batch-size", "2", "--network", "unet", "--device", "cpu"]
    assert job_arguments.pretrain_arguments("voco", "voco-v1-cpu", Path("d"), Path("o"), steps=3, resume=True) == [
        "pretrain", "--method", "voco", "--preset", "voco-v1-cpu", "--data", "d", "--out", "o", "--steps", "3",
        "--device", "auto", "--resume"]
    assert job_arguments.inspect_arguments("voco", Path("b"), Path("in.nii.gz"), Path("out"), box="1,2,3", seed=4) == [
        "inspect", "voco", "--model", "b", "--input", "in.nii.gz", "--out", "out", "--box", "1,2,3"]
    assert job_arguments.inspect_arguments("vf", Path("b"), Path("in.nii.gz"), Path("out"), box="1,2,3", seed=4, dense=True) == [
        "inspect", "vf", "--model", "b", "--input", "in.nii.gz", "--out", "out", "--seed", "4"]
    assert job_arguments.finetune_arguments(Path("data"), Path("run"), Path("pretext"), "segmentation", 0) == [
        "finetune", "--data", "data", "--out", "run", "--init", "pretext"]
    assert job_arguments.finetune_arguments(Path("data"), Path("run"), None, "interactive", 7,
                                       {"0": "background", "2": "left, kidney", "1": "liver:x"}) == [
        "finetune", "--data", "data", "--out", "run", "--task", "interactive", "--steps", "7",
        "--labels", "1:liver x,2:left kidney"]
    assert job_arguments.segment_arguments(Path("b"), Path("in.nii.gz"), Path("out.nii.gz")) == [
        "segment", "--model", "b", "--input", "in.nii.gz", "--output", "out.nii.gz", "--device", "auto"]


@pytest.mark.parametrize("call", [
    lambda: job_arguments.pretrain_arguments("mae", "x", Path("d"), Path("o")),
    lambda: job_arguments.pretrain_arguments("voco", "voco-v1-cpu", None, Path("o")),
    lambda: job_arguments.finetune_arguments(Path("d"), None),
    lambda: job_arguments.segment_arguments(None, Path("in.nii.gz"), Path("out.nii.gz")),
], ids=["method", "pretrain-data", "finetune-out", "segment-model"])
def test_command_lines_refuse_what_is_missing(call):
    with pytest.raises(InputError):
        call()


def test_progress_text():
    event = {"event": "progress", "step": 120, "total": 1000, "loss": {"total": 0.532, "pos": 0.1},
             "samples_per_s": 3.14, "eta_s": 250}
    assert job_arguments.progress_text(event) == "step 120/1000 · loss 0.532 · 3.14 samples/s · 4 min 10 s left"
    assert job_arguments.progress_text({"event": "progress", "message": "cache: 3 of 12 volumes"}) == "cache: 3 of 12 volumes"
    assert job_arguments.number("x") != job_arguments.number("x")  # NaN


def test_bundle_task_method_and_clicks():
    assert [bundle_info.pretext_method(i) for i in ({}, {"pretext": {"method": "VoCo"}}, {"pretext": {"method": "mae"}})] == [
        None, "voco", None]
    assert [bundle_info.bundle_task(i) for i in ({"task": "segmentation"}, {"task": {"name": "interactive"}}, {})] == [
        "segmentation", "interactive", None]
    assert [bundle_info.takes_clicks({"task": t}) for t in ("segmentation", "interactive", "pretext")] == [True, True, False]


def test_bundle_descriptions():
    text = bundle_info.describe_bundle({
        "task": "segmentation", "network": {"name": "unet"}, "preprocessing": {"spacing": [1.5, 1.5, 2.0]},
        "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}, {"value": 2, "name": "<b>", "color": [0, 0, 255]}],
        "provenance": {"data": "phantoms", "steps": 20, "licence": "CC-BY-4.0", "cache": {"dir": "x"}},
        "metrics": {"validation": {"dice": 0.9}, "empty": {}}})
    for expected in ("<b>segmentation</b> · unet", "#dd8265", "1 liver", "2 &lt;b&gt;", "1.5 x 1.5 x 2 mm",
                     "steps=20", "dice=0.900", "Licence: CC-BY-4.0"):
        assert expected in text, expected
    assert "cache" not in text and "empty" not in text
    assert "Validation" not in bundle_info.describe_bundle({"task": "segmentation", "metrics": {"validation": {}}})
    assert bundle_info.describe_pretext({"pretext": {"method": "voco", "preset": "voco-v1-cpu", "heads": None},
                                         "network": {"name": "cnn-small"}, "provenance": {"steps": 40}}) == (
        "voco · voco-v1-cpu · cnn-small · 40 steps · no pretext heads (imported weights): cannot be inspected")
    assert bundle_info.describe_pretext({}) == ""


def test_bundles_of_a_run(tmp_path):
    assert bundle_info.read_bundle_info(None) == {} and bundle_info.read_bundle_info(tmp_path) == {}
    (tmp_path / "bundle.json").write_text("{not json")
    assert bundle_info.read_bundle_info(tmp_path) == {}
    older, newer = tmp_path / "run" / "step10", tmp_path / "run" / "final"
    for folder in (older, newer):
        folder.mkdir(parents=True)
        (folder / "bundle.json").write_text(json.dumps({"task": "pretext"}))
    past = time.time() - 60
    os.utime(older / "bundle.json", (past, past))
    assert bundle_info.read_bundle_info(newer) == {"task": "pretext"}
    assert bundle_info.newest_bundle(tmp_path / "run") == newer
    assert bundle_info.newest_bundle(tmp_path / "missing") is None
    assert bundle_info.bundle_from_outputs({"bundle": str(older)}) == older
    assert bundle_info.bundle_from_outputs({"log": str(tmp_path / "x.log"), "meta": str(newer / "bundle.json")}) == newer
    assert bundle_info.bundle_from_outputs({}) is None
