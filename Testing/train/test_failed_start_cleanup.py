"""Every failure before the first checkpoint leaves no run folder behind, or only what it held before
(issue 15 item 10): an OSError in setup (an unwritable --cache-dir) and an implausible spacing, not only
the user errors the loop already cleaned up after."""

from __future__ import annotations

import pytest

from ssl3d.cli import main
from ssl3d.data.phantoms import write_phantom_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("cleanup"), range(400, 402), shape=(24, 32, 32))


def _finetune(data, out, *extra) -> int:
    return main(["finetune", "--data", str(data), "--out", str(out), "--steps", "2", "--val-fraction", "0", "--device", "cpu", *extra])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("existing", [False, True])
def test_unwritable_cache_dir_leaves_nothing(data, tmp_path, capsys, existing):
    (tmp_path / "a_file").write_text("not a folder")  # a cache folder below a file: mkdir fails with an OSError
    out = tmp_path / "run"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("kept")
    assert _finetune(data, out, "--cache-dir", str(tmp_path / "a_file" / "cache")) == 2
    assert "a_file" in _one_error(capsys)
    assert (sorted(p.name for p in out.iterdir()) == ["notes.txt"]) if existing else not out.exists()


def test_implausible_spacing_leaves_nothing(data, tmp_path, capsys):
    out = tmp_path / "deep" / "run"
    assert _finetune(data, out, "--spacing", "0.001,0.001,0.001") == 2
    assert "implausible spacing" in _one_error(capsys)
    assert not (tmp_path / "deep").exists()
