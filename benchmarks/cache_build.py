"""Building the preprocessed-volume cache: one process, 2 worker processes, and 2 torchrun ranks of 1 worker.

The volumes are CT-sized phantoms (``--volumes`` of 160 x 256 x 256 voxels, int16 HU) preprocessed as the
``voco-v2`` preset does (RAS, 1.5 mm, HU window, foreground crop, pad to the window) into a fresh cache each
time. The parallel caches must equal the serial one byte for byte. Prints the seconds of each build, the
speed-ups against the serial build of the same run, and the peak memory (RSS) of a worker.

Target (issue 17): 2 workers >= 1.7x on a 2-core machine, against the one-process build (which already uses
torch's threads for the resampling); the one-thread build is printed for information.

Run: ``.venv/bin/python benchmarks/cache_build.py [--volumes 12]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssl3d.config import get_preset
from ssl3d.data.datasets import VolumeCache, find_cases
from ssl3d.data.phantoms import make_phantom
from ssl3d.io import write_volume

ROOT = Path(__file__).resolve().parents[1]
_RANK_SCRIPT = """
import os, sys
import torch.distributed as dist
from ssl3d.config import get_preset
from ssl3d.data.datasets import VolumeCache, find_cases
from ssl3d.data.cache_build import wait_for_entries
dist.init_process_group("gloo")
cache = VolumeCache(find_cases(sys.argv[1]), get_preset("voco-v2").preprocess, sys.argv[2])
cache.build_shard(dist.get_rank(), dist.get_world_size(), workers=1)
wait_for_entries(cache)
dist.barrier()
dist.destroy_process_group()
"""


def _files(cache_root: Path) -> dict[str, bytes]:
    folder = next(p for p in cache_root.iterdir() if p.is_dir())
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".npy", ".json")}


def _build(data: Path, out: Path, workers: int, threads: int | None = None) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        started = time.perf_counter()
        VolumeCache(find_cases(data), get_preset("voco-v2").preprocess, out).build(workers=workers)
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(before)


def _worker_rss(data: Path, out: Path) -> float:
    """Peak RSS (MB) of one worker process building one volume (resource.getrusage of a child)."""
    code = ("import resource, sys; from ssl3d.config import get_preset; from ssl3d.data.datasets import VolumeCache, find_cases; "
            "c = VolumeCache(find_cases(sys.argv[1])[:1], get_preset('voco-v2').preprocess, sys.argv[2]).build(); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code, str(data), str(out)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "ct"
        data.mkdir()
        for seed in range(args.volumes):
            write_volume(make_phantom(seed, shape=(160, 256, 256))[0], data / f"ct{seed:02d}.nrrd")
        serial = _build(data, tmp / "serial", 1)  # what a run did before: one process, torch's own threads
        single = _build(data, tmp / "single", 1, threads=1)
        two = _build(data, tmp / "two", 2)
        script = tmp / "rank.py"
        script.write_text(_RANK_SCRIPT)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
                        str(data), str(tmp / "ranks")], env=env, check=True, capture_output=True)
        ranks = time.perf_counter() - started
        reference = _files(tmp / "serial")
        same = all(_files(tmp / name) == reference for name in ("single", "two", "ranks"))
        rss = _worker_rss(data, tmp / "rss")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.volumes} volumes of 160x256x256, voco-v2 preprocessing, {cores} cores")
    print(f"{'build':34s} {'seconds':>8s} {'speed-up':>9s}")
    for name, seconds in (("1 process (torch threads)", serial), ("1 process, 1 thread", single), ("2 workers", two),
                          ("2 torchrun ranks x 1 worker", ranks)):
        print(f"{name:34s} {seconds:8.1f} {serial / seconds:8.2f}x")
    print(f"caches byte-identical to the serial build: {'yes' if same else 'NO'}")
    print(f"peak RSS of one worker (one volume): {rss:.0f} MB")
    speed = serial / two
    print(f"target cache-2-workers: {speed:.2f}x (goal 1.7x) {'ok' if speed >= 1.7 and same else 'short'}")


if __name__ == "__main__":
    main()
