"""The cache built in parallel: worker processes and shards make exactly the serial build's files; ranks wait
for each other on the file system and fail at once with a failed rank's error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from ssl3d.data import cache_build
from ssl3d.data.datasets import Case, VolumeCache
from ssl3d.data.phantoms import make_phantom
from ssl3d.data.preprocess import PreprocessConfig
from ssl3d.errors import DatasetError
from ssl3d.io import write_volume

CONFIG = PreprocessConfig(orientation="RAS", spacing=(1.2, 1.2, 1.5), intensity="window:-175,250")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Case]:
    root = tmp_path_factory.mktemp("cache_build")
    out = []
    for seed in range(6):
        image, label = make_phantom(seed, shape=(24, 32, 32))
        out.append(Case(f"p{seed}", write_volume(image, root / f"p{seed}.nrrd"), write_volume(label, root / f"p{seed}_label.nrrd")))
    return out


def _files(cache: VolumeCache) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.dir.iterdir()) if p.suffix in (".npy", ".json")}


def test_two_workers_and_two_shards_make_the_serial_build_byte_for_byte(cases, tmp_path):
    serial = VolumeCache(cases, CONFIG, tmp_path / "serial").build(workers=1)
    reference = _files(serial)
    assert len(reference) == 3 * len(cases) and serial.preprocessed == len(cases)
    seen = []
    parallel = VolumeCache(cases, CONFIG, tmp_path / "parallel").build(workers=2, progress=lambda d, t: seen.append((d, t)))
    assert _files(parallel) == reference and parallel.preprocessed == len(cases)
    assert seen == [(n, len(cases)) for n in range(1, len(cases) + 1)]
    shards = VolumeCache(cases, CONFIG, tmp_path / "shards")
    assert shards.build_shard(0, 2, workers=1) == 3 and shards.missing() == [1, 3, 5]
    assert shards.build_shard(1, 2, workers=2) == 3 and shards.missing() == []
    shards.build()
    assert shards.preprocessed == 0 and _files(shards) == reference  # read, not made again
    with pytest.raises(Exception, match="shard must be K/N"):
        shards.build_shard(2, 2)


def test_an_error_in_a_worker_stops_the_build_with_its_message(cases, tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"not a volume")
    bad = [*cases[:4], Case("broken", broken, cases[0].label)]  # a labelled set: an unreadable volume is an error
    with pytest.raises(Exception, match="broken.nrrd"):
        VolumeCache(bad, CONFIG, tmp_path / "c").build(workers=2)


def test_waiting_ranks_see_a_failure_note_at_once_and_a_stall_by_its_timeout(cases, tmp_path):
    cache = VolumeCache(cases, CONFIG, tmp_path / "c")
    cache.build_shard(0, 2)
    cache_build.leave_failure_note(cache.dir, 1, "rank 1: p1.nrrd: cannot be read")
    started = time.monotonic()
    with pytest.raises(DatasetError, match="the cache build failed on another rank: rank 1: p1.nrrd: cannot be read"):
        cache_build.wait_for_entries(cache, stall_s=60)
    assert time.monotonic() - started < 5
    cache_build.clear_failure_notes(cache.dir)
    with pytest.raises(DatasetError, match=r"no new cache entry for 1 s, 3 of 6 still missing \(.*p1\.nrrd, .*p3\.nrrd, .*p5\.nrrd\)"):
        cache_build.wait_for_entries(cache, stall_s=1, poll_s=0.1)
    cache.build_shard(1, 2)
    cache_build.wait_for_entries(cache, stall_s=1, poll_s=0.1)  # complete: returns


def test_default_workers_share_the_cores_and_fit_the_memory(cases, tmp_path, monkeypatch):
    import psutil

    cache = VolumeCache(cases, CONFIG, tmp_path / "c")
    assert cache_build.default_workers(cache, [0, 1, 2]) == 1  # a handful: built here
    assert cache_build.default_workers(cache, list(range(6))) == 1  # six small phantoms: seconds of work in all
    monkeypatch.setattr(cache_build, "_MIN_PARALLEL_VOXELS", 0)  # as if they were CTs
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cache_build.default_workers(cache, list(range(6))) == 4  # 16 cores, 4 ranks on this node
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 2 * cache_build._WORKER_OVERHEAD})())
    assert cache_build.default_workers(cache, list(range(6))) == 1  # memory for one worker only


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals to the own process")
def test_a_cancel_stops_the_workers(cases, tmp_path, monkeypatch):
    import signal
    import threading

    import psutil

    from ssl3d.cancel_watch import CancelWatch
    from ssl3d.errors import Cancelled

    def workers() -> set[int]:  # multiprocessing's resource tracker lives on with the process: not a worker
        alive = set()
        for child in psutil.Process().children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                    alive.add(child.pid)
            except psutil.Error:  # gone, or ended and not yet reaped: not working
                pass
        return alive

    before = workers()
    many = [Case(f"{c.name}-{n}", c.image, c.label) for n in range(4) for c in cases]
    fine = PreprocessConfig(orientation="RAS", spacing=(0.2, 0.2, 0.2), intensity="window:-175,250")  # seconds a volume
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        with pytest.raises(Cancelled), CancelWatch():
            timer.start()
            VolumeCache(many, fine, tmp_path / "c").build(workers=2)  # 24 volumes: far longer than 3 s
    finally:
        timer.cancel()
    deadline = time.monotonic() + 10
    while workers() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers() - before  # the worker processes are gone


def test_ssl3d_cache_builds_shards_that_training_then_finds(tmp_path, capsys):
    from ssl3d.cli import main
    from ssl3d.config import get_preset
    from ssl3d.data.datasets import find_cases
    from ssl3d.data.phantoms import write_phantom_dataset
    from ssl3d.events import read_events

    data = write_phantom_dataset(tmp_path / "ds", range(3), shape=(24, 32, 32))
    base = ["cache", "--data", str(data), "--preset", "seg-cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--shard", "0/2", "--events", str(tmp_path / "e0.jsonl")]) == 0
    out = capsys.readouterr().out
    assert ": 3 volumes, 2 to preprocess (shard 0/2): about " in out and "shard 0/2: 2 volumes preprocessed" in out
    assert main([*base, "--shard", "1/2"]) == 0
    assert "1 volumes preprocessed" in capsys.readouterr().out
    done = read_events(tmp_path / "e0.jsonl")[-1]
    assert done["event"] == "done" and done["summary"]["missing"] == 1
    cache = VolumeCache(find_cases(data, labels=True), get_preset("seg-cpu").preprocess, tmp_path / "cache").build()
    assert cache.preprocessed == 0 and len(cache) == 3  # the training's own cache: all there
    assert main(["finetune", "--data", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                 "--steps", "1", "--val-fraction", "0", "--device", "cpu"]) == 0
    run_json = __import__("json").loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["cache"]["entries"] == 3 and run_json["cache"]["dir"] == str(cache.dir)
    capsys.readouterr()
    for bad, message in ((["--shard", "2/2"], "--shard K/N needs 0 <= K < N"), (["--shard", "x"], "--shard must be K/N"),
                         (["--workers", "0"], "--workers must be >= 1")):
        assert main([*base, *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["cache", "--data", str(data), "--cache-dir", str(tmp_path / "c2")]) == 2
    assert "--preset NAME" in capsys.readouterr().err
