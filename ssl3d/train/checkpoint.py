"""Atomic checkpoints: temporary file, fsync, rename; read back with ``torch.load(weights_only=True)``.

A checkpoint holds plain state (tensors, numbers, strings): model(s), optimizer, scaler, scheduler,
step, the random-number-generator states, and the task's own state. No pickled objects.

``rng`` holds one generator state per process (a list, rank order): under DDP each rank has its own
seed, so each rank restores its own state. Checkpoints written before that hold one dict (rank 0's).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..disk_space import full_disk_error, is_disk_full
from ..errors import InputError
from ..filemodes import give_umask_mode

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "restore_rank_rng", "remove_stale_temporaries",
           "state_bytes"]

_TMP_SUFFIX = ".tmp"


def _tmp_prefix(name: str) -> str:
    """The start of a temporary file's name while ``name`` is written (hidden, next to it)."""
    return f".{name}-"


_TMP_PATTERN = f"{_tmp_prefix('*.pt')}*{_TMP_SUFFIX}"  # any save_checkpoint temporary: derived, never typed twice


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact.

    Raises:
        DiskSpaceError: the disk filled up during the write (torch reports it as a RuntimeError); the
            previous file is intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        give_umask_mode(tmp)  # not mkstemp's 0600
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            raise full_disk_error(path, state_bytes(state)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def state_bytes(state: Any) -> int:
    """The tensor bytes of a (nested) state: about what its checkpoint file takes."""
    if torch.is_tensor(state):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed :func:`save_checkpoint` left in ``folder`` (call before a run writes)."""
    folder = Path(folder)
    removed = sorted(folder.glob(_TMP_PATTERN)) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise InputError(f"{path}: the checkpoint cannot be read ({type(exc).__name__}).") from None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    state = {k: (v.cpu() if torch.is_tensor(v) else [t.cpu() for t in v]) for k, v in state.items()}  # loaded onto the device
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rank_rng(saved: dict | list, rank: int, world_size: int) -> bool:
    """Set this process's generators from a checkpoint's ``rng``; False (nothing set) when it was written
    by another number of processes.

    Args:
        saved: one state per rank (a list), or one dict (a single-process checkpoint of the old format).
        rank, world_size: this process's rank and the run's number of processes.
    """
    states = [saved] if isinstance(saved, dict) else list(saved)
    if len(states) != world_size:
        return False
    set_rng_state(states[rank])
    return True
