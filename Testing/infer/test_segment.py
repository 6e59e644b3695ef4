"""Whole-volume segmentation: MONAI parity of the streamed sliding windows, exact input geometry on real CTs
and an oblique phantom, Slicer outputs (seg.nrrd, colour table), probabilities, CLI errors."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from ssl3d.cli import main
from ssl3d.infer.segment import (
    color_table_path,
    probability_paths,
    scan_interval,
    segment,
    sliding_window_logits,
    sliding_window_slabs,
)
from ssl3d.io import read_volume, write_volume


@pytest.fixture(scope="module")
def small_net():
    from ssl3d.nets.builders import build_network

    torch.manual_seed(0)
    return build_network("unet-small", 1, 4, channels=[4, 8]).eval()


# window, overlap, sw_batch on a (1, 1, 20, 24, 28) input
WINDOW_CASES = [
    ((8, 12, 16), 0.5, 1),  # several rows along every axis
    ((8, 12, 16), 0.25, 3),  # batches that cross rows
    ((20, 8, 28), 0.5, 2),  # one row spanning D
    ((6, 6, 6), 0.0, 4),  # no overlap, odd sides
]


@pytest.mark.parametrize("window, overlap, sw_batch", WINDOW_CASES)
def test_logits_equal_monai_sliding_window_inference(small_net, window, overlap, sw_batch):
    from monai.inferers import sliding_window_inference

    x = torch.randn(1, 1, 20, 24, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = sliding_window_inference(x, window, sw_batch, small_net, overlap=overlap, mode="gaussian")
        ours = sliding_window_logits(x, window, small_net, overlap, sw_batch)
    assert ours.shape == reference.shape == (1, 4, 20, 24, 28)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_constant_windows_run_once_and_change_nothing(small_net):
    from monai.inferers import sliding_window_inference

    # windows (8, 12, 16) at overlap 0.5: rows along D start at 0, 4, 8, 12, each row has 3 x 3 windows
    x = torch.randn(1, 1, 20, 24, 28, generator=torch.Generator().manual_seed(2))
    x[:, :, :8] = 0.0  # "air": the 9 windows of row 0 are all 0
    x[:, :, 12:] = 1.0  # the 9 windows of row 3 are all 1
    passes = []

    def counting(batch):
        passes.append(len(batch))
        return small_net(batch)

    with torch.no_grad():
        reference = sliding_window_inference(x, (8, 12, 16), 2, small_net, overlap=0.5, mode="gaussian")
        ours = sliding_window_logits(x, (8, 12, 16), counting, 0.5, 2)
        everything = sliding_window_logits(x, (8, 12, 16), small_net, 0.5, 2, reuse_constant=False)
    assert (ours - reference).abs().max().item() <= 1e-5 and (everything - reference).abs().max().item() <= 1e-5
    assert sum(passes) == 1 + 18 + 1 and max(passes) <= 2  # rows 1 and 2 are mixed; rows 0 and 3 run one window each


def test_slabs_come_in_order_and_cover_depth(small_net):
    x = torch.zeros(1, 1, 40, 8, 8)
    with torch.no_grad():
        slabs = [(d0, d1, s.shape) for d0, d1, s in sliding_window_slabs(x, (16, 8, 8), small_net, 0.5)]
    assert [(d0, d1) for d0, d1, _ in slabs] == [(0, 8), (8, 16), (16, 24), (24, 40)]
    assert all(shape == (4, d1 - d0, 8, 8) for d0, d1, shape in slabs)
    assert scan_interval((40, 8, 8), (16, 8, 8), 0.5) == (8, 8, 8)


def test_ill_window_larger_than_input(small_net):
    from ssl3d.errors import InputError

    with pytest.raises(InputError, match="window"):
        next(sliding_window_slabs(torch.zeros(1, 1, 8, 8, 8), (16, 8, 8), small_net))


@pytest.fixture(scope="module")
def coarse_bundle(tmp_path_factory, seg_cpu_bundle):
    """The session bundle at 8 mm: a 512x512x61 CT becomes about 41x41x38 model voxels (a few dozen windows)."""
    from ssl3d.bundle import write_bundle

    meta = {k: v for k, v in seg_cpu_bundle.meta.items() if k != "schema"}
    meta["preprocessing"] = {**meta["preprocessing"], "spacing": [8.0, 8.0, 8.0]}
    return write_bundle(tmp_path_factory.mktemp("coarse") / "bundle", seg_cpu_bundle.state_dict(), meta)


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["lung1", "lung2"])
def test_geometry_on_real_ct(name, request, coarse_bundle):
    image, _ = request.getfixturevalue(name)
    result = segment(coarse_bundle, image, device="cpu")
    assert result.labels.shape == image.shape
    np.testing.assert_array_equal(result.labels.ijk_to_ras, image.ijk_to_ras)
    assert result.labels.array.dtype == np.uint8 and result.info["windows"] > 8  # the windows really slide


def test_oblique_phantom_seg_nrrd_round_trip(tmp_path, oblique_phantom, seg_cpu_bundle, capsys):
    import slicerio

    image, _ = oblique_phantom
    write_volume(image, tmp_path / "ct.nrrd")
    out = tmp_path / "ct_seg.seg.nrrd"
    assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nrrd"), "--output", str(out), "--device", "cpu"]) == 0
    back = read_volume(out)
    assert back.same_grid(read_volume(tmp_path / "ct.nrrd"), atol=1e-6)
    segmentation = slicerio.read_segmentation(str(out))
    got = {s["labelValue"]: (s["name"], [round(c * 255) for c in s["color"]]) for s in segmentation["segments"]}
    expected = {e["value"]: (e["name"], e["color"]) for e in seg_cpu_bundle.meta["labels"]}
    assert got == expected
    direct = segment(seg_cpu_bundle, read_volume(tmp_path / "ct.nrrd"), device="cpu").labels.array
    np.testing.assert_array_equal(back.array, direct)
    shown = capsys.readouterr()
    assert "classes found" in shown.out
    last = shown.err.splitlines()[-1]  # off a terminal: progress lines on stderr, the last one at the end
    assert last.startswith("segment: ") and " windows, " in last and last.split()[1].split("/")[0] == last.split()[1].split("/")[1]


def test_nifti_output_gets_colour_table(tmp_path, phantom, seg_cpu_bundle):
    image, _ = phantom
    write_volume(image, tmp_path / "ct.nii.gz")
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--output", str(out), "--sw-batch", "3"]) == 0
    assert read_volume(out).same_grid(image, atol=1e-5)
    table = color_table_path(out)
    assert table.name == "seg.ctbl"
    lines = [line.split() for line in table.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == ["0", "Background", "0", "0", "0", "0"]
    expected = [[str(e["value"]), e["name"].replace(" ", "_"), *map(str, e["color"]), "255"] for e in seg_cpu_bundle.meta["labels"]]
    assert lines[1:] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "seg.ctbl", "seg.nii.gz"]


def test_probabilities_one_file_per_class(tmp_path, phantom, seg_cpu_bundle):
    image, _ = phantom
    write_volume(image, tmp_path / "ct.nii.gz")
    probs = tmp_path / "p.nii.gz"
    assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "s.nrrd"),
                 "--probabilities", str(probs)]) == 0
    result = segment(seg_cpu_bundle, image, device="cpu", probabilities=True)
    paths = probability_paths(probs, result.entries)
    assert paths[4].name == "p_4_right_kidney.nii.gz"
    total = np.zeros(image.shape, np.float32)
    for value, path in paths.items():
        volume = read_volume(path)
        assert volume.same_grid(image, atol=1e-5) and volume.array.dtype == np.float32
        assert 0.0 <= volume.array.min() and volume.array.max() <= 1.0 + 1e-3
        total += volume.array
    assert total.max() <= 1.0 + 1e-2  # foreground classes share one softmax with the background


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, phantom, seg_cpu_bundle, pretext_bundle, capsys):
    image, _ = phantom
    good_input = write_volume(image, tmp_path / "ct.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    damaged = tmp_path / "damaged"
    shutil.copytree(seg_cpu_bundle.path, damaged)
    weights = bytearray((damaged / "model.safetensors").read_bytes())
    weights[-5] ^= 0x40  # a flipped bit in the tensor data: safetensors reads it without complaint
    (damaged / "model.safetensors").write_bytes(bytes(weights))
    huge = write_volume(type(image).from_geometry(image.array, spacing=(500.0, 500.0, 1000.0)), tmp_path / "huge.nrrd")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    model, base = str(seg_cpu_bundle.path), ["segment", "--device", "cpu"]
    cases = {
        "missing model": (["--model", str(tmp_path / "nope"), "--input", str(good_input), "--output", str(out_dir / "s.nii.gz")], "nope"),
        "pretext bundle": (["--model", str(pretext_bundle.path), "--input", str(good_input), "--output", str(out_dir / "s.nii.gz")], "pretext"),
        "unreadable input": (["--model", model, "--input", str(tmp_path / "broken.nii.gz"), "--output", str(out_dir / "s.nii.gz")], "broken.nii.gz"),
        "missing input": (["--model", model, "--input", str(tmp_path / "absent.nii.gz"), "--output", str(out_dir / "s.nii.gz")], "absent.nii.gz"),
        "output folder missing": (["--model", model, "--input", str(good_input), "--output", str(tmp_path / "no" / "s.nii.gz")], "does not exist"),
        "unknown output ending": (["--model", model, "--input", str(good_input), "--output", str(out_dir / "s.png")], "unknown file ending"),
        "bad probabilities ending": (["--model", model, "--input", str(good_input), "--output", str(out_dir / "s.nii.gz"), "--probabilities", str(out_dir / "p.seg.nrrd")], "--probabilities"),
        "damaged weights": (["--model", str(damaged), "--input", str(good_input), "--output", str(out_dir / "s.nii.gz")], "damaged/model.safetensors: the weights are damaged"),
        "implausible spacing": (["--model", model, "--input", str(huge), "--output", str(out_dir / "s.nii.gz")], "implausible spacing (500.0, 500.0, 1000.0)"),
        "overlap out of range": (["--model", model, "--input", str(good_input), "--output", str(out_dir / "s.nii.gz"), "--overlap", "1"], "--overlap"),
    }
    for what, (args, needle) in cases.items():
        assert main(base + args) == 2, what
        assert needle in _one_error_line(capsys), what
    assert list(out_dir.iterdir()) == []
    assert not (tmp_path / "no").exists()


def test_cli_refuses_an_output_that_is_its_input(tmp_path, phantom, seg_cpu_bundle, capsys):
    image, _ = phantom
    ct = write_volume(image, tmp_path / "ct.nrrd")
    before = ct.read_bytes()
    (tmp_path / "link.nrrd").symlink_to(ct)
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "1.dcm").write_bytes(b"not read: the output check comes first")
    base = ["segment", "--device", "cpu", "--model", str(seg_cpu_bundle.path)]
    cases = {
        "same file": (["--input", str(ct), "--output", str(ct)], "is the input volume"),
        "a link to the input": (["--input", str(ct), "--output", str(tmp_path / "link.nrrd")], "is the input volume"),
        "the input through a link": (["--input", str(tmp_path / "link.nrrd"), "--output", str(ct)], "is the input volume"),
        "probabilities on the input": (["--input", str(ct), "--output", str(tmp_path / "s.nii.gz"), "--probabilities", str(ct)], "--probabilities"),
        "inside the DICOM folder": (["--input", str(dicom), "--output", str(dicom / "seg.seg.nrrd")], "inside the DICOM input folder"),
    }
    for what, (args, needle) in cases.items():
        assert main(base + args) == 2, what
        assert needle in _one_error_line(capsys), what
    assert ct.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "link.nrrd", "series"]
    assert [p.name for p in dicom.iterdir()] == ["1.dcm"]


def test_fast_argmax_matches_torch_including_ties():
    from ssl3d.infer.segment import _argmax

    logits = torch.randn(7, 5, 6, 7, generator=torch.Generator().manual_seed(3))
    logits[3, 0] = logits[5, 0] = 9.0  # a tie: the first maximum wins, as torch.argmax
    assert torch.equal(_argmax(logits), logits.argmax(0).to(torch.uint8))


def test_amp_on_the_cpu_warns_that_it_is_slow(tmp_path, phantom, seg_cpu_bundle, capsys):
    write_volume(phantom[0], tmp_path / "ct.nrrd")
    args = ["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nrrd"), "--output", str(tmp_path / "s.seg.nrrd"), "--device", "cpu"]
    assert main([*args, "--amp", "on"]) == 0
    assert "warning: --amp on runs the windows in bfloat16 on the CPU" in capsys.readouterr().err
    assert main([*args, "--amp", "auto"]) == 0
    assert "bfloat16" not in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda n: n.update(name="unet-smal"), r"the network recorded in bundle\.json \('unet-smal'\) cannot be built: unknown network 'unet-smal'\. Did you mean 'unet-small'"),
    (lambda n: n["kwargs"].update(channels="abc"), r"the network recorded in bundle\.json \('unet-small'\) cannot be built: network 'unet-small'"),
    (lambda n: n["kwargs"].update(channels=[4, 8]), r"the weights do not fit network 'unet-small' \(Unexpected key\(s\) in state_dict: "),
])
def test_bundle_network_errors_name_the_bundle(tmp_path, phantom, seg_cpu_bundle, capsys, edit, message):
    import json
    import shutil

    bundle = shutil.copytree(seg_cpu_bundle.path, tmp_path / "edited")
    meta = json.loads((bundle / "bundle.json").read_text())
    edit(meta["network"])
    (bundle / "bundle.json").write_text(json.dumps(meta))
    write_volume(phantom[0], tmp_path / "ct.nrrd")
    assert main(["segment", "--model", str(bundle), "--input", str(tmp_path / "ct.nrrd"), "--output", str(tmp_path / "s.seg.nrrd"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bundle}: ") and re.search(message, err[0]), err
