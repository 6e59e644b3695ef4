"""Volume Fusion sample generation: ssl3d (batched torch) against a reference built the official way.

The reference follows the documented behaviour of the official code (PyMIC ``crop4vf.py`` for v2,
``self_sup/util.py::volume_fusion`` at a906dfc for v1): Python ``random`` draws, ``scipy.ndimage.zoom``
(order 1), ``np.percentile``, per-block and per-box Python loops. It is written here from those facts.

Input: one float32 volume [1, 128, 256, 256] (v2, as ``fixtures/vf_stats.json``) and a float32 batch
[4, 1, 64, 128, 128] (v1). Prints a table, then one ``target`` line per goal:

    vf-v2          ssl3d / reference samples/s, one thread each              goal >= 5x
    vf-v2-batch    ssl3d batched on 2 threads / reference on one thread      goal >= 10x
    vf-v1          ssl3d / reference, one thread, batch of 4                 goal >= 3x

Usage: ``python benchmarks/vf_samples.py [--runs R] [--quick]``. With CUDA present, GPU times of the
ssl3d path are printed too (no target here: the GPU goal is a share of a training step, measured by vf_step.py).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from ssl3d.pretext import vf_loss  # noqa: E402
from ssl3d.pretext import volume_fusion as vf  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "Testing" / "data" / "fixtures" / "vf_stats.json"
OUT = (64, 128, 128)


# ----------------------------------------------------------------------------- reference (official way)
def ref_resized_crop(image: np.ndarray, rng: random.Random, lower=(0.7,) * 3, upper=(1.5,) * 3) -> np.ndarray:
    size = image.shape[1:]
    scale = [lower[i] + (upper[i] - lower[i]) * rng.random() for i in range(3)]
    crop = [min(int(OUT[i] * scale[i]), size[i]) for i in range(3)]
    start = [rng.randint(0, size[i] - crop[i]) for i in range(3)]
    patch = image[:, start[0]:start[0] + crop[0], start[1]:start[1] + crop[1], start[2]:start[2] + crop[2]]
    return ndimage.zoom(patch, [1.0] + [OUT[i] / crop[i] for i in range(3)], order=1)


def ref_flip(image: np.ndarray, rng: random.Random) -> np.ndarray:
    axes = [a for a in (-1, -2, -3) if rng.random() > 0.5]
    return np.flip(image, axes) if axes else image


def ref_contrast(image: np.ndarray, p0: float, p1: float) -> np.ndarray:
    vmin, vmax = image.min(), image.max()
    v0, v1 = np.percentile(image, p0), np.percentile(image, p1)
    out = np.empty(image.shape, np.float64)
    low, high = image < v0, image > v1
    mid = ~(low | high)
    out[low] = 0.1 * (image[low] - vmin) / (v0 - vmin)
    out[mid] = 0.1 + 0.8 * (image[mid] - v0) / (v1 - v0)
    out[high] = 0.9 + 0.1 * (image[high] - v1) / (vmax - v1)
    return out


def ref_gamma(image: np.ndarray, rng: random.Random, low: float = 0.7, high: float = 1.5) -> np.ndarray:
    gamma = low + (high - low) * rng.random()
    vmin, vmax = image.min(), image.max()
    if vmin < vmax:
        image = np.power((image - vmin) / (vmax - vmin), gamma) * (vmax - vmin) + vmin
    return image


def ref_crop4vf(image: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    p1 = ref_flip(ref_resized_crop(image, rng), rng)
    p2 = ref_flip(ref_resized_crop(image, rng), rng)
    patches = []
    for p in (p1, p2):
        p = ref_contrast(p, rng.uniform(0.1, 2.0), rng.uniform(98, 99.9))
        patches.append(ref_gamma(p, rng))
    if rng.random() < 0.25:
        patches = [1.0 - p for p in patches]
    return patches[0], patches[1]


def ref_fusion_v2(p1: np.ndarray, p2: np.ndarray, rng: random.Random, k: int = 4, ratio: float = 0.7,
                  bmin=(5, 8, 8), bmax=(20, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    _, d, h, w = p1.shape
    db, hb, wb = (rng.randint(bmin[i], bmax[i]) for i in range(3))
    od, oh, ow = rng.randint(0, d % db), rng.randint(0, h % hb), rng.randint(0, w % wb)
    dn, hn, wn = d // db, h // hb, w // wb
    n_fg = int(dn * hn * wn * ratio)
    chosen = [1] * n_fg + [0] * (dn * hn * wn - n_fg)
    rng.shuffle(chosen)
    mask = np.zeros([1, d, h, w], np.uint8)
    for i in range(dn):
        for j in range(hn):
            for m in range(wn):
                if chosen[(i * hn + j) * wn + m]:
                    d0, h0, w0 = od + i * db, oh + j * hb, ow + m * wb
                    mask[:, d0:d0 + db, h0:h0 + hb, w0:w0 + wb] = rng.randint(1, k)
    alpha = mask * 1.0 / k
    return alpha * p1 + (1.0 - alpha) * p2, mask


def ref_fusion_v1(x: torch.Tensor, rng: random.Random, k: int = 4, block_range=(10, 40),
                  smin=(8, 8, 8), smax=(40, 80, 80)) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, d, h, w = x.shape
    mask = torch.zeros([n, 1, d, h, w])
    for b in range(n):
        for _ in range(rng.randint(*block_range)):
            size = [rng.randint(smin[i], smax[i]) for i in range(3)]
            centre = [rng.randint(0, s - 1) for s in (d, h, w)]
            lo = [max(centre[i] - size[i] // 2, 0) for i in range(3)]
            hi = [min(centre[i] - size[i] // 2 + size[i], s) for i, s in enumerate((d, h, w))]
            mask[b, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = torch.ones(
                [1, hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]]) * rng.randint(1, k)
    alpha = mask / k
    return alpha * torch.roll(x, 1, 0) + (1.0 - alpha) * x, mask.int()


# ----------------------------------------------------------------------------- timing helpers
def median_time(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours_v2(volume: torch.Tensor, gen: torch.Generator, method: str = "exact") -> None:
    fg, bg = vf.crop4vf(volume, gen, OUT, percentile_method=method)
    vf.fuse_v2(fg, bg, gen)


def _worker(args: tuple[int, int, int, object]) -> float:
    batch, runs, seed, barrier = args
    torch.set_num_threads(1)
    volume = torch.randn(1, 1, 128, 256, 256, generator=torch.Generator().manual_seed(seed))
    volume = volume.expand(batch, -1, -1, -1, -1)
    gen = torch.Generator().manual_seed(seed)
    ours_v2(volume, gen)
    barrier.wait()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(runs):
        ours_v2(volume, gen)
    return time.perf_counter() - t0


def two_process_rate(batch: int, runs: int) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            times = pool.map(_worker, [(batch, runs, s, barrier) for s in (1, 2)])
    return 2 * batch * runs / max(times)


def bitmask_paint(boxes: vf.Boxes, spatial: tuple[int, int, int]) -> torch.Tensor:
    """The rejected vectorised v1 painting: per-axis box bitmasks, AND, highest set bit."""
    n, slots = boxes.classes.shape
    bits = (torch.ones(slots, dtype=torch.long) << torch.arange(slots)) * (boxes.classes > 0)
    axes = []
    for a, s in enumerate(spatial):
        r = torch.arange(s)
        inside = (r >= boxes.starts[:, :, a, None]) & (r < boxes.stops[:, :, a, None])
        axes.append((inside * bits[:, :, None]).sum(1))
    dh = axes[0][:, :, None] & axes[1][:, None, :]
    top = torch.frexp((dh[..., None] & axes[2][:, None, None, :]).double())[1].long()
    table = torch.cat([torch.zeros(n, 1, dtype=torch.long), boxes.classes], 1)
    return table.gather(1, top.view(n, -1)).view(n, 1, *spatial).to(torch.uint8)


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median; default 7)")
    parser.add_argument("--quick", action="store_true", help="3 runs per figure")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    torch.set_num_threads(1)
    rows: list[tuple[str, float, int, str]] = []
    fixture = json.loads(FIXTURE.read_text())["timing"] if FIXTURE.exists() else None

    volume_np = np.random.default_rng(303).standard_normal((1, 128, 256, 256)).astype(np.float32)
    volume = torch.from_numpy(volume_np)[None]
    rng = random.Random(303)
    ref_v2 = median_time(lambda: ref_fusion_v2(*ref_crop4vf(volume_np, rng), rng), runs)
    rows.append(("v2 reference (scipy/numpy), per sample", ref_v2, 1, "1 thread"))
    if fixture:
        rows.append(("v2 official, fixtures/vf_stats.json", fixture["v2_crop4vf_plus_volumefusion_per_sample"]
                     ["total"]["median_s"], 1, "1 thread, other run"))
    gen = torch.Generator().manual_seed(0)
    ours_1 = median_time(lambda: ours_v2(volume, gen), runs)
    rows.append(("v2 ssl3d, batch 1", ours_1, 1, "1 thread"))
    batch4 = volume.expand(4, -1, -1, -1, -1)
    ours_4 = median_time(lambda: ours_v2(batch4, gen), runs) / 4
    rows.append(("v2 ssl3d, batch 4, per sample", ours_4, 1, "1 thread"))
    hist_4 = median_time(lambda: ours_v2(batch4, gen, "histogram"), runs) / 4
    rows.append(("v2 ssl3d, batch 4, histogram percentiles, per sample", hist_4, 1, "1 thread"))

    torch.set_num_threads(2)
    batch8 = volume.expand(8, -1, -1, -1, -1)
    ours_2t = median_time(lambda: ours_v2(batch8, gen), runs) / 8
    rows.append(("v2 ssl3d, batch 8, per sample", ours_2t, 1, "2 threads (intra-op)"))
    torch.set_num_threads(1)
    ours_2p = 1.0 / two_process_rate(4, runs)
    rows.append(("v2 ssl3d, batch 4 in each of 2 processes, per sample", ours_2p, 1, "2 processes x 1 thread"))

    x = torch.rand(4, 1, 64, 128, 128, generator=torch.Generator().manual_seed(304))
    rng1 = random.Random(304)
    ref_v1 = median_time(lambda: ref_fusion_v1(x, rng1), runs)
    rows.append(("v1 reference (per-box loop), batch 4", ref_v1, 4, "1 thread"))
    if fixture:
        rows.append(("v1 official, fixtures/vf_stats.json", fixture["v1_volume_fusion_per_batch"]["time"]
                     ["median_s"], 4, "1 thread, other run"))
    ours_v1 = median_time(lambda: vf.fuse_v1(x, gen), runs)
    rows.append(("v1 ssl3d fuse_v1, batch 4", ours_v1, 4, "1 thread"))
    boxes = vf.draw_boxes_v1(4, OUT, gen)
    rows.append(("v1 label: slice fill per box (used)", median_time(lambda: vf.paint_boxes_v1(boxes, OUT), runs),
                 4, "1 thread"))
    rows.append(("v1 label: vectorised bitmask (rejected)", median_time(lambda: bitmask_paint(boxes, OUT), runs),
                 4, "1 thread"))
    rows += loss_rows(runs)
    if torch.cuda.is_available():
        gpu_rows(rows, volume, x, runs)

    print(f"{'figure':66s} {'seconds':>10s} {'samples/s':>10s}  setting")
    for name, sec, samples, how in rows:
        print(f"{name:66s} {sec:10.4f} {samples / sec:10.1f}  {how}")
    best_2 = min(ours_2t, ours_2p)
    print(f"v2 on 2 threads vs an ideal 2-worker reference: {ref_v2 / best_2 / 2:.1f}x (information)")
    report("vf-v2", ref_v2 / ours_1, 5.0)
    report("vf-v2-batch", ref_v2 / best_2, 10.0)
    report("vf-v1", ref_v1 / ours_v1, 3.0)


def loss_rows(runs: int) -> list[tuple[str, float, int, str]]:
    """fusion_loss (one softmax, uint8 label) against the formula with a float one-hot and two softmaxes,
    forward + backward on PCT-Net's 4 output sizes for a batch of 2."""
    label = torch.randint(0, 5, (2, 1, *OUT), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    sizes = (OUT, (64, 64, 64), (32, 32, 32), (16, 16, 16))
    outs = [torch.randn(2, 5, *s, requires_grad=True) for s in sizes]
    weights = [1.0, 0.5, 0.25, 0.125]

    def ours() -> None:
        vf_loss.fusion_loss(outs, label, weights=weights)["total"].backward()

    def plain() -> None:
        onehot = torch.nn.functional.one_hot(label[:, 0].long(), 5).permute(0, 4, 1, 2, 3).float()
        total = 0.0
        for w, out in zip(weights, outs):
            y, dims = torch.nn.functional.adaptive_avg_pool3d(onehot, out.shape[2:]), (0, 2, 3, 4)
            p = torch.softmax(out, 1)
            dice = (1 - (2 * (p * y).sum(dims) + 1e-5) / (y.sum(dims) + p.sum(dims) + 1e-5)).mean()
            ce = (-(y * torch.log(0.999 * torch.softmax(out, 1) + 5e-4)).sum(1)).mean()
            total = total + w * (0.5 * dice + 0.5 * ce)
        (total / sum(weights)).backward()
    return [("loss fwd+bwd, 4 outputs, batch 2: float one-hot, 2 softmaxes", median_time(plain, runs), 2, "1 thread"),
            ("loss fwd+bwd, 4 outputs, batch 2: ssl3d fusion_loss", median_time(ours, runs), 2, "1 thread")]


def gpu_rows(rows: list[tuple[str, float, int, str]], volume: torch.Tensor, x: torch.Tensor, runs: int) -> None:
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    for batch in (2, 4):
        vol = volume.to(dev).expand(batch, -1, -1, -1, -1)

        def step() -> None:
            ours_v2(vol, gen)
            torch.cuda.synchronize()
        rows.append((f"v2 ssl3d on GPU, batch {batch}", median_time(step, runs), batch, "cuda"))
    xg = x.to(dev)

    def step_v1() -> None:
        vf.fuse_v1(xg, gen)
        torch.cuda.synchronize()
    rows.append(("v1 ssl3d fuse_v1 on GPU, batch 4", median_time(step_v1, runs), 4, "cuda"))


def report(name: str, measured: float, goal: float) -> None:
    print(f"target {name}: {measured:.1f}x (goal {goal:g}x) {'ok' if measured >= goal else 'short'}")


if __name__ == "__main__":
    main()
