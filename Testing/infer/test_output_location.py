"""An output location where nothing can be written (read-only, full) is refused BEFORE the work, with one
error naming the user's path (issue 15 item 6). Root ignores file modes, so the failure is simulated where
the file system reports it: creating or writing a file in that folder."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from ssl3d.cli import main
from ssl3d.io import write_volume


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder whose file system refuses new files (EROFS), as a read-only mount does."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, dir=None, **k: mkstemp(dir=dir))
    return folder


def _no_work(monkeypatch, module, name):
    def fail(*args, **kwargs):
        raise AssertionError("the work started before the output location was checked")

    monkeypatch.setattr(module, name, fail)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_segment_to_a_read_only_folder_fails_before_the_work(tmp_path, read_only, phantom, seg_cpu_bundle, capsys, monkeypatch):
    import ssl3d.bundle

    ct = write_volume(phantom[0], tmp_path / "ct.nrrd")
    _no_work(monkeypatch, ssl3d.bundle, "read_bundle")
    for args in (["--output", str(read_only / "s.seg.nrrd")],
                 ["--output", str(tmp_path / "s.seg.nrrd"), "--probabilities", str(read_only / "p.nii.gz")]):
        assert main(["segment", "--model", str(seg_cpu_bundle.path), "--input", str(ct), *args, "--device", "cpu"]) == 2
        line = _error(capsys)
        assert "ro/" in line and "Read-only file system" in line, line
    assert list(read_only.iterdir()) == [] and not (tmp_path / "s.seg.nrrd").exists()


def test_evaluate_to_a_read_only_folder_fails_before_the_work(tmp_path, read_only, phantom, capsys, monkeypatch):
    import ssl3d.evaluate

    labels = write_volume(phantom[1], tmp_path / "ref.nii.gz")
    _no_work(monkeypatch, ssl3d.evaluate, "evaluate_folders")
    assert main(["evaluate", "--pred", str(labels), "--ref", str(labels), "--out", str(read_only / "r.csv")]) == 2
    assert "--out" in (line := _error(capsys)) and "ro/r.csv" in line and "Read-only" in line


def test_inspect_to_a_read_only_folder_fails_before_the_work(tmp_path, read_only, phantom, seg_cpu_bundle, capsys):
    ct = write_volume(phantom[0], tmp_path / "ct.nrrd")
    assert main(["inspect", "voco", "--model", str(seg_cpu_bundle.path), "--input", str(ct), "--out", str(read_only / "insp"), "--device", "cpu"]) == 2
    assert "--out" in (line := _error(capsys)) and "ro/insp" in line and "Read-only" in line, line


def test_a_failed_volume_write_names_the_users_path(tmp_path, read_only, phantom):
    from ssl3d.errors import InputError

    with pytest.raises(InputError, match="ro/x.nii.gz: cannot write in .*Read-only file system"):
        write_volume(phantom[1], read_only / "x.nii.gz")
