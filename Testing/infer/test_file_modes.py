"""Outputs written through tempfile get the umask's modes (not mkstemp's 0600 / mkdtemp's 0700)."""

import os
import stat

import pytest
import torch

from ssl3d.cli import main
from ssl3d.infer.segment import color_table_path
from ssl3d.io import write_volume


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_segment_outputs_get_the_umask_modes(tmp_path, phantom, seg_cpu_bundle, umask_022):
    image, _ = phantom
    write_volume(image, tmp_path / "ct.nii.gz")
    for out in (tmp_path / "a.seg.nrrd", tmp_path / "b.nii.gz"):
        assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(tmp_path / "ct.nii.gz"), "--output", str(out), "--device", "cpu"]) == 0
        assert _mode(out) == 0o644, out
    table = color_table_path(tmp_path / "b.nii.gz")
    assert _mode(table) == 0o644
    assert table.read_text().splitlines()[0] == f"# Color table file {table.name}"  # not the temporary's name


def test_bundles_checkpoints_reports_get_the_umask_modes(tmp_path, seg_cpu_bundle, umask_022):
    from ssl3d.bundle import write_bundle
    from ssl3d.evaluate import _atomic_write
    from ssl3d.train.checkpoint import save_checkpoint

    bundle = write_bundle(tmp_path / "bundle", {"w": torch.zeros(2)}, {k: v for k, v in seg_cpu_bundle.meta.items() if k != "schema"})
    assert _mode(bundle.path) == 0o755 and all(_mode(p) == 0o644 for p in bundle.path.iterdir())
    assert _mode(save_checkpoint({"step": 1}, tmp_path / "last.pt")) == 0o644
    _atomic_write({tmp_path / "report.csv": "a,b\n"})
    assert _mode(tmp_path / "report.csv") == 0o644
