"""Reading the cache through memory maps (issue 17) against fully loaded tensors: time per fused batch and
anonymous RSS.

Input: V float32 cached volumes of 128x256x256 (the faithful VF presets' dtype; 32 MiB each) written as the
cache writes them (``.npy``). The same fused batches (the same seeds, bit-identical) are drawn with the
vf-v1 and vf-v2 presets' fusion settings from :meth:`MappedVolume` reads (``VolumeCache.mapped``, what the
tasks use) and from the volumes loaded whole into tensors (``VolumeCache.load_all``, what they used before),
on the CPU with the page cache warm. Prints a table, then one ``target`` line per goal:

    read-v1      mapped / loaded time per vf-v1 batch (batch 2)            goal <= 1.25x
    read-v2      mapped / loaded time per vf-v2 batch (batch 2)            goal <= 1.25x
    rss          RssAnon growth of the mapped reads / of the loaded copy   goal <= 0.1x

Usage: ``python benchmarks/cache_read.py [--volumes V] [--batches B]``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl3d.config import get_preset
from ssl3d.data.mapped import MappedVolume
from ssl3d.pretext import vf_samples

SHAPE = (128, 256, 256)


def rss_anon_mb() -> float:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch(volumes, fusion, step: int) -> tuple[float, str]:
    """Seconds for one batch, and its digest (kept instead of the batch: RSS stays the reads')."""
    start = time.perf_counter()
    x, y = vf_samples.fused_batch(volumes, fusion, [vf_samples._seeded(step, i) for i in range(2)], vf_samples._seeded(step, 99))
    seconds = time.perf_counter() - start
    return seconds, hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()


def compare(version: int, mapped: list, paths: list, batches: int, base: float) -> tuple:
    """(preset, ms mapped, ms loaded, RssAnon growth mapped, loaded, identical) for vf-v{version}."""
    fusion = get_preset(f"vf-v{version}").fusion
    sources = [v.padded(fusion.patch, "minimum") for v in mapped] if version == 1 else mapped
    batch(sources, fusion, 0)  # the page cache warm
    grown_mapped = rss_anon_mb() - base
    loaded = [torch.from_numpy(np.load(p))[None] for p in paths]
    loaded = vf_samples.pad_volumes(loaded, fusion.patch) if version == 1 else loaded
    grown_loaded = rss_anon_mb() - base
    times: dict[str, list[float]] = {"mapped": [], "loaded": []}
    same = True
    for step in range(batches):  # interleaved, each first in turn: a busy machine drifts
        digests = {}
        for name, volumes in [("mapped", sources), ("loaded", loaded)][:: 1 if step % 2 else -1]:
            seconds, digests[name] = batch(volumes, fusion, step)
            times[name].append(seconds)
        same = same and digests["mapped"] == digests["loaded"]
    t_mapped, t_loaded = (statistics.median(times[k]) for k in ("mapped", "loaded"))
    return f"vf-v{version}", t_mapped * 1e3, t_loaded * 1e3, grown_mapped, grown_loaded, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=6, help="cached volumes [6]")
    parser.add_argument("--batches", type=int, default=16, help="batches timed per path and version [16]")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for v in range(args.volumes):
            path = Path(tmp) / f"case{v}.npy"
            np.save(path, rng.random(SHAPE, dtype=np.float32) * 2 - 1)
            paths.append(path)
        base = rss_anon_mb()
        mapped = [MappedVolume.open(p, torch.float32) for p in paths]
        rows = [compare(version, mapped, paths, args.batches, base) for version in (1, 2)]
    print(f"{args.volumes} cached volumes of {SHAPE} float32, batch 2, CPU ({torch.get_num_threads()} threads), page cache warm")
    print(f"{'preset':8} {'mapped ms':>10} {'loaded ms':>10} {'RssAnon mapped MB':>18} {'RssAnon loaded MB':>18} identical")
    for name, tm, tl, gm, gl, same in rows:
        print(f"{name:8} {tm:10.1f} {tl:10.1f} {gm:18.1f} {gl:18.1f} {same}")
    ratios = {f"read-{name[3:]}": tm / tl for name, tm, tl, *_ in rows}
    rss = max(r[3] for r in rows) / min(r[4] for r in rows)
    for name, value, goal, ok in [*((k, v, "<= 1.25x", v <= 1.25) for k, v in ratios.items()), ("rss", rss, "<= 0.1x", rss <= 0.1)]:
        print(f"target {name}: {value:.2f}x (goal {goal}) {'ok' if ok else 'short'}")
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
