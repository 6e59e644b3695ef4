"""ssl3d.disk_space and where it is used: a job that cannot fit is refused before it starts; a full disk in
the middle of a write is one user error naming the file system; the run's events say the run died."""

from __future__ import annotations

import errno

import pytest
import torch

import ssl3d.disk_space as disk_space
from ssl3d.disk_space import DiskSpaceError, full_disk_error, human_bytes, is_disk_full, require
from ssl3d.errors import InputError


def test_require_names_the_numbers_and_the_file_system(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 1_500_000)
    require(tmp_path / "new" / "folder", 1_000_000, "the cache")  # fits
    with pytest.raises(DiskSpaceError, match=r"new/folder: the cache needs about 2\.0 MB, but the file system at / .*has 1\.5 MB free"):
        require(tmp_path / "new" / "folder", 2_000_000, "the cache")
    assert issubclass(DiskSpaceError, InputError) and human_bytes(999) == "999 B" and human_bytes(12_345_678) == "12.3 MB"


def test_full_disk_is_recognised_in_torch_and_os_errors(tmp_path):
    torch_text = "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: PytorchStreamWriter failed writing file data/0: file write failed"
    assert is_disk_full(RuntimeError(torch_text)) and is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(RuntimeError("CUDA out of memory")) and not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    message = str(full_disk_error(tmp_path / "x.pt", 5_000_000))
    assert message.startswith(f"{tmp_path / 'x.pt'}: the file system at /") and "it needed about 5.0 MB" in message


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from ssl3d.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")

    def full(obj, stream):
        stream.write(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskSpaceError, match=r"last\.pt: the file system at .* is full .*it needed about 1\.0 KB"):
        save_checkpoint({"step": 2, "w": torch.zeros(250)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_cache_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from ssl3d.data.datasets import Case, VolumeCache
    from ssl3d.data.phantoms import make_phantom
    from ssl3d.data.preprocess import PreprocessConfig
    from ssl3d.io import write_volume

    cases = [Case(f"c{i}", write_volume(make_phantom(i, shape=(16, 20, 24))[0], tmp_path / f"c{i}.nrrd")) for i in range(2)]
    config = PreprocessConfig(orientation="RAS", intensity="none", spacing=(0.5, 0.5, 0.5))
    cache = VolumeCache(cases, config, tmp_path / "cache")
    estimate = sum(cache._estimate_bytes(c) for c in cases)
    assert estimate > 2 * 16 * 20 * 24 * 4 * 8  # resampled to a finer grid: about 8x the voxels of each volume
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: estimate - 1)
    with pytest.raises(DiskSpaceError, match=r"preprocessing 2 volume\(s\) into the cache needs about"):
        cache.build()
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: estimate)
    cache.build()
    assert sum(cache.image(i).nbytes for i in range(2)) <= estimate


def test_training_that_cannot_fit_its_checkpoints_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.train.loop import Task, train

    class Big(Task):
        def setup(self, ctx):
            self.model = torch.nn.Linear(1000, 1000)  # 4 MB of weights; Adam keeps two more per checkpoint

        def modules(self):
            return {"model": self.model}

    preset = apply_overrides(get_preset("seg-cpu"), {"train.steps": 1, "optim.name": "adam"})
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 20_000_000)
    with pytest.raises(DiskSpaceError, match=r"two checkpoints \(12\.0 MB each\) and its bundle needs about 28\.0 MB, .* 20\.0 MB free"):
        train(Big(), preset, tmp_path / "run", torch.device("cpu"))
    assert not (tmp_path / "run").exists()


def test_a_run_that_dies_after_a_checkpoint_says_so_in_its_events(tmp_path):
    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.events import read_events
    from ssl3d.train.loop import Task, train

    class DiesAtStep3(Task):
        def setup(self, ctx):
            self.model = torch.nn.Linear(3, 1)

        def modules(self):
            return {"model": self.model}

        def batch(self, ctx, step, indices):
            if step == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(ctx.run_dir / "cache" / "x.npy"))
            return torch.ones(2, 3)

        def losses(self, ctx, batch, step):
            return {"total": self.model(batch).pow(2).mean()}

    preset = apply_overrides(get_preset("seg-cpu"), {"train.steps": 5, "train.checkpoint_every": 1, "train.val_every": 0,
                                                     "optim.name": "sgd"})
    with pytest.raises(DiskSpaceError, match=r"x\.npy: the file system at .* is full"):
        train(DiesAtStep3(), preset, tmp_path / "run", torch.device("cpu"))
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert events[-1]["event"] == "error" and "is full" in events[-1]["message"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()  # resumable: the run folder stays
