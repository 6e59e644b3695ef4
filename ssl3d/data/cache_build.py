"""Building the preprocessed-volume cache at scale: worker processes, shards per rank, and an agreement
that never waits in a collective.

A volume costs seconds to preprocess (an 8.6 s 512x512x600 CT on one core), so a large dataset is built
by every rank at once, each its shard of the cases (``index % world_size == rank``), each with worker
processes (:func:`default_workers`). Entries are one file set per case written atomically, so shards never
collide and a killed build resumes where it stopped. A rank that has finished its shard then waits for
the others by looking at the entries on the (shared) file system, not in a collective, whose timeout is
minutes (:func:`wait_for_entries`); a rank that fails leaves a note there, so the others fail at once
with its error instead of waiting.

Example::

    for index, record in build_entries(cache, [0, 1, 2], make_entry, workers=2):
        ...  # records in the order they finish
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from ..errors import DatasetError
from ..io import header_geometry


class VolumeCache(Protocol):
    """What the build reads of a :class:`ssl3d.data.datasets.VolumeCache` (which imports this module)."""

    dir: Path
    config: Any
    cases: list
    labelled: bool
    strict: bool

    def missing(self, among: Sequence[int] | None = None) -> list[int]: ...

__all__ = ["build_entries", "default_workers", "wait_for_entries", "FAILED_NOTE", "STALL_S"]

FAILED_NOTE = ".build-failed-rank{rank}"  # written into the cache folder by a rank whose shard failed
STALL_S = 1800.0  # waiting for other ranks fails when no new entry appeared for this long
_WORKER_OVERHEAD = 600 << 20  # a worker's own memory (Python, numpy, torch, MONAI, SimpleITK)
# measured peak of a worker beyond that, per voxel of its input (benchmarks/cache_build.py: 2.0 GB for a
# 160x256x256 CT resampled to 1.5 mm: the float32 copies of MONAI's orientation, resampling and crop)
_BYTES_PER_INPUT_VOXEL = 140
_MIN_PARALLEL = 4  # fewer volumes than this are built here: starting workers costs more than it saves
_MIN_PARALLEL_VOXELS = 64e6  # nor less input than this (about 6 CTs of 512x512x40; ~0.2 s a million voxels)


def default_workers(cache: "VolumeCache", todo: list[int]) -> int:
    """Workers for a build of ``todo``: this rank's share of the usable cores (``LOCAL_WORLD_SIZE`` ranks per
    node), at most one per volume, and as many as the free memory holds (a worker's measured peak for the
    largest input volume); 1 for a handful of volumes or a few seconds of work."""
    if len(todo) < _MIN_PARALLEL:
        return 1
    sizes = [_input_voxels(cache.cases[i].image) for i in todo[:64]]  # a sample: headers are cheap, not free
    if sum(sizes) / len(sizes) * len(todo) < _MIN_PARALLEL_VOXELS:
        return 1  # seconds of work in all: a worker's start (torch, MONAI) would cost more
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    largest = max(sizes)
    per_worker = _WORKER_OVERHEAD + _BYTES_PER_INPUT_VOXEL * largest
    try:
        import psutil

        by_memory = max(1, int(psutil.virtual_memory().available // per_worker))
    except ImportError:  # psutil is a dependency; without it, trust the cores
        by_memory = cores
    return max(1, min(cores, len(todo), by_memory))


def _input_voxels(path: Path) -> int:
    size, _ = header_geometry(path)
    return 0 if size is None else int(size.prod())


def _start_worker() -> None:
    """One thread per worker process: the workers are the parallelism (no oversubscription)."""
    import torch

    torch.set_num_threads(1)


def build_entries(cache: "VolumeCache", todo: list[int], make: Callable[..., dict], workers: int | None = 1,
                  progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, dict]]:
    """Make the entries of case indices ``todo``: ``(index, record)`` as each finishes.

    ``make`` is :func:`~ssl3d.data.datasets.make_entry` (a module-level function, so worker processes can run
    it). ``workers`` > 1 (None: :func:`default_workers`) runs it in that many processes (this one and
    ``workers - 1`` spawned ones); the files are the same as a serial build's. An error of one case (a
    labelled set's unreadable volume) stops the build and is raised here; a cancel in this process stops
    the workers.
    """
    count = default_workers(cache, todo) if workers is None else int(workers)
    if count < 1:
        raise DatasetError(f"the cache needs at least 1 worker, got {workers}.")
    def job(index: int) -> tuple:
        return cache.dir, cache.config, index, cache.cases[index], cache.labelled, cache.strict

    if count == 1 or len(todo) == 1:
        for done, index in enumerate(todo, 1):
            yield index, make(*job(index))
            if progress is not None:
                progress(done, len(todo))
        return
    import torch

    # count - 1 spawned workers, and this process makes entries too: it works while they start (a worker
    # first imports torch and MONAI, seconds) and takes its share after; one thread each, no oversubscription
    pool = ProcessPoolExecutor(count - 1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    queue, pending, done = collections.deque(todo), {}, 0
    try:
        while queue or pending:
            while queue and len(pending) < 2 * (count - 1):  # two queued per worker: none waits for this process
                index = queue.popleft()
                pending[pool.submit(make, *job(index))] = index
            finished = [future for future in pending if future.done()]
            if not finished and queue:
                index = queue.popleft()
                results = [(index, make(*job(index)))]
            else:
                if not finished:
                    finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)  # short waits: a cancel gets in
                results = [(pending.pop(future), future.result()) for future in finished]
            for index, record in results:
                done += 1
                yield index, record
                if progress is not None:
                    progress(done, len(todo))
    finally:
        torch.set_num_threads(threads)
        _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for volumes still in work (a failure or a cancel: they are redone)."""
    processes = list(getattr(pool, "_processes", {}).values())  # the executor has no public way to kill them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def wait_for_entries(cache: "VolumeCache", stall_s: float = STALL_S, poll_s: float = 0.5,
                     progress: Callable[[int, int], None] | None = None) -> None:
    """Return once every case has an entry on disk (made by any rank); no collective is involved, and each
    look reads only the entries still missing.

    Raises:
        DatasetError: another rank left a failure note (its message), or no new entry appeared for
            ``stall_s`` seconds (the cases still missing are named: a rank died, or ``--cache-dir`` is not
            on storage that every node sees).
    """
    total, missing, last_change = len(cache.cases), cache.missing(), time.monotonic()
    while True:
        failure = _failure_note(cache.dir)
        if failure:
            raise DatasetError(f"the cache build failed on another rank: {failure}")
        if not missing:
            return
        still = cache.missing(missing)
        if len(still) != len(missing):
            missing, last_change = still, time.monotonic()
            if progress is not None:
                progress(total - len(missing), total)
            continue
        if time.monotonic() - last_change > stall_s:
            names = ", ".join(str(cache.cases[i].image) for i in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DatasetError(
                f"{cache.dir}: no new cache entry for {stall_s:.0f} s, {len(missing)} of {total} still missing ({names}); "
                "a rank stopped, or --cache-dir is not on storage every node sees.")
        time.sleep(poll_s)


def leave_failure_note(cache_dir: Path, rank: int, message: str) -> None:
    """Tell the waiting ranks that this rank's shard failed (best effort)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / FAILED_NOTE.format(rank=rank)).write_text(message + "\n", encoding="utf-8")
    except OSError:
        pass


def clear_failure_notes(cache_dir: Path) -> None:
    for note in cache_dir.glob(FAILED_NOTE.format(rank="*")) if cache_dir.is_dir() else []:
        note.unlink(missing_ok=True)


def _failure_note(cache_dir: Path) -> str | None:
    for note in sorted(cache_dir.glob(FAILED_NOTE.format(rank="*"))) if cache_dir.is_dir() else []:
        try:
            return note.read_text(encoding="utf-8").strip() or note.name
        except OSError:
            continue
    return None
