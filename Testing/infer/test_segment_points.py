"""`ssl3d segment --point/--negative/--ijk`: click mode on the command line."""

import numpy as np

from ssl3d.cli import main
from ssl3d.io import read_volume, write_volume


def test_point_mode_writes_a_mask_on_the_input_grid(tmp_path, seg_cpu_bundle, oblique_phantom, capsys):
    image, labels = oblique_phantom
    write_volume(image, tmp_path / "ct.nii.gz")
    k, j, i = np.argwhere(labels.array == 5)[len(np.argwhere(labels.array == 5)) // 2]
    args = ["segment", "--model", str(seg_cpu_bundle.path if hasattr(seg_cpu_bundle, "path") else seg_cpu_bundle),
            "--input", str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "mask.nii.gz"), "--device", "cpu"]
    assert main([*args, "--point", f"{i},{j},{k}", "--ijk"]) == 0
    mask = read_volume(tmp_path / "mask.nii.gz")
    assert mask.same_grid(image) and set(np.unique(mask.array)) <= {0, 1}
    assert (tmp_path / "mask.ctbl").is_file()


def test_bad_points_exit_2_and_write_nothing(tmp_path, seg_cpu_bundle, phantom, capsys):
    write_volume(phantom[0], tmp_path / "ct.nii.gz")
    bundle = str(seg_cpu_bundle.path if hasattr(seg_cpu_bundle, "path") else seg_cpu_bundle)
    base = ["segment", "--model", bundle, "--input", str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "m.nii.gz")]
    assert main([*base, "--point", "1,2"]) == 2
    assert main([*base, "--point", "9999,9999,9999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: ") for line in err) and len(err) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_the_clicked_structure_is_named_after_its_class_and_background_writes_nothing(tmp_path, seg_cpu_bundle, phantom, capsys, monkeypatch):
    import slicerio

    from ssl3d.bundle import as_bundle

    image, labels = phantom
    write_volume(image, tmp_path / "ct.nii.gz")
    bundle = as_bundle(seg_cpu_bundle)
    base = ["segment", "--model", str(bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--device", "cpu", "--ijk"]
    k, j, i = np.argwhere(labels.array == 5)[len(np.argwhere(labels.array == 5)) // 2]
    assert main([*base, "--output", str(tmp_path / "s.seg.nrrd"), "--point", f"{i},{j},{k}"]) == 0
    segments = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))["segments"]
    names = {e["value"]: e["name"] for e in bundle.meta["labels"]}
    assert len(segments) == 1 and segments[0]["name"] in names.values()  # the class found there, not "structure"
    assert read_volume(tmp_path / "s.seg.nrrd").array.any()
    capsys.readouterr()
    from ssl3d.infer.interactive import InteractiveSession

    real = InteractiveSession._predict
    monkeypatch.setattr(InteractiveSession, "_predict", lambda self, roi: np.zeros_like(real(self, roi)))  # background all over
    assert main([*base, "--output", str(tmp_path / "air.seg.nrrd"), "--point", f"{i},{j},{k}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing found at the point(s)" in err[0] and "background" in err[0]
    assert not (tmp_path / "air.seg.nrrd").exists()
