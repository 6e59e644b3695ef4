"""Click latency of :class:`ssl3d.infer.interactive.InteractiveSession` on a real CT (pyradiomics lung1).

The session holds an ``interactive-cpu`` bundle (small UNet, image + 2 guidance channels, 2.5 mm, 32³
window). Latency does not depend on training, only on the network and on how far the region of interest
grows, so the bundle gets random weights unless ``--bundle`` names a trained one; random weights tend to
predict large regions, which makes the ROI grow to its cap: a pessimistic case. Protocol: ``set_volume``
(timed, not a target), 3 warm-up clicks, then ``--clicks`` clicks in sequences of 4 (positive, positive,
negative, positive) at points inside the body, with a ``reset`` between sequences; median and p95 of
``add_point`` (it returns the full-grid mask, a copy, every time), with the ROI capped at one window (it
never grows: the best case) and at the session's default cap (the target). The reference is the naive
way: the same network on the whole model-space volume, once per click.

``--via-server`` also runs the same clicks (default cap) through :class:`ssl3d.serve.client.ServerClickWorker`
and a local ``ssl3d serve`` it starts, polled every 10 ms as the module's timer does while a click is pending:
the first click from nothing (server start, torch and MONAI imports, model load and warm-up, the volume's
transfer), the first click after a warm-up request (what the module sends when its click section opens),
and the median and p95 of the clicks, beside the in-process session measured in the same run.

Run: ``.venv/bin/python benchmarks/click_latency.py [--threads 2] [--clicks 24] [--bundle DIR] [--device auto|cpu|cuda] [--via-server]``.
Ends with ``target click-latency-cpu: X s (goal 3 s) ok|short`` and, with CUDA, the same for the GPU
(goal 0.25 s); without CUDA the GPU line says it was skipped. With ``--via-server`` also
``target server-click-p95-<device>`` (goal: in-process p95 x 1.3 + 0.1 s on the CPU, 0.25 s on the GPU) and
``target server-first-click-cpu`` (goal 15 s).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GOALS = {"cpu": 3.0, "gpu": 0.25}
FIRST_CLICK_GOAL_S = 15.0
POLL_S = 0.01  # the module's timer runs every 20 ms while a click is pending
DEFAULT_CAP = 3  # InteractiveSession's default max_roi


def _random_bundle(folder: Path) -> Path:
    from ssl3d.bundle import write_bundle
    from ssl3d.config import get_preset
    from ssl3d.nets.builders import build_network
    from ssl3d.train.interactive import GuidanceConfig, interactive_bundle_meta

    preset = get_preset("interactive-cpu")
    kwargs = {k: v for k, v in preset.network.kwargs.items() if k not in ("in_channels", "out_channels")}
    torch.manual_seed(0)
    network = build_network(preset.network.name, 3, 2, **kwargs)
    meta = interactive_bundle_meta(preset, GuidanceConfig(), {"data": "none: random weights for the latency benchmark", "steps": 0})
    return write_bundle(folder / "interactive-random", network.state_dict(), meta).path


def _points(image, label, count: int, seed: int) -> list[tuple[np.ndarray, bool]]:
    """Sequences of 4 clicks: near the tumour (the label) first, then anywhere in the body (HU > -300)."""
    rng = np.random.default_rng(seed)
    body = np.argwhere(image.array > -300)
    tumour = np.argwhere(label.array > 0)
    clicks = []
    for n in range(count):
        pool = tumour if (n // 4) % 2 == 0 and len(tumour) else body
        k, j, i = pool[rng.integers(len(pool))]
        clicks.append(((image.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3], n % 4 != 2))
    return clicks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(bundle: Path, image, label, device: torch.device, clicks: int, max_roi: int) -> dict:
    from ssl3d.infer.interactive import InteractiveSession

    start = time.perf_counter()
    session = InteractiveSession(bundle, device=device, max_roi=max_roi)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    session.set_volume(image)
    set_s = time.perf_counter() - start
    times, rois = [], []
    for n, (ras, positive) in enumerate(_points(image, label, clicks + 3, seed=1)):
        if n >= 3 and (n - 3) % 4 == 0:
            session.reset()
        _sync(device)
        start = time.perf_counter()
        session.add_point(ras, positive)
        _sync(device)
        if n >= 3:  # the first 3 clicks warm up
            times.append(time.perf_counter() - start)
            rois.append(int(np.prod([hi - lo for lo, hi in session._roi])))
    whole = session._image.shape[2:]
    x = torch.zeros((1, 3, *whole), device=device)
    session._forward(x)
    _sync(device)
    start = time.perf_counter()
    session._forward(x)
    _sync(device)
    return {
        "load_s": load_s, "set_volume_s": set_s, "median_s": statistics.median(times),
        "p95_s": float(np.percentile(times, 95)), "max_s": max(times), "roi_voxels": int(statistics.median(rois)),
        "model_grid": tuple(int(v) for v in whole), "whole_volume_s": time.perf_counter() - start,
    }


def _wait(worker) -> list:
    while True:
        results = worker.take()
        for result in results:
            if result.get("error"):
                raise RuntimeError(result["error"])
        if results or not worker.pending():
            return results
        time.sleep(POLL_S)


def measure_server(bundle: Path, image, label, device: str, clicks: int, threads: int) -> dict:
    """The same clicks through a local click server (its own process, started here), the default ROI cap."""
    from ssl3d.serve.client import ServerClickWorker

    points = _points(image, label, clicks + 3, seed=1)
    worker = ServerClickWorker(threads=threads)
    times = []
    try:
        for n, (ras, positive) in enumerate(points):
            if n >= 3 and (n - 3) % 4 == 0:
                worker.submit("reset", target="bench")
                _wait(worker)
            start = time.perf_counter()
            worker.submit("point", bundle=str(bundle), device=device, volume=image if n == 0 else None, volumeKey="lung1",
                          ras=tuple(float(v) for v in ras), positive=positive, target="bench")
            _wait(worker)
            if n == 0:
                first = time.perf_counter() - start
            elif n >= 3:
                times.append(time.perf_counter() - start)
    finally:
        worker.stop()
    worker = ServerClickWorker(threads=threads)  # a new server: warmed up first, as when the click section opens
    try:
        worker.submit("warm", bundle=str(bundle), device=device)
        start = time.perf_counter()
        _wait(worker)
        warm = time.perf_counter() - start
        ras, positive = points[0]
        start = time.perf_counter()
        worker.submit("point", bundle=str(bundle), device=device, volume=image, volumeKey="lung1",
                      ras=tuple(float(v) for v in ras), positive=positive, target="bench")
        _wait(worker)
        first_warm = time.perf_counter() - start
    finally:
        worker.stop()
    return {"first_s": first, "warm_s": warm, "first_after_warm_s": first_warm, "median_s": statistics.median(times),
            "p95_s": float(np.percentile(times, 95)), "max_s": max(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the goal is for 2 cores) [2]")
    parser.add_argument("--clicks", type=int, default=24, help="timed clicks after 3 warm-up clicks [24]")
    parser.add_argument("--bundle", type=Path, help="an interactive bundle [random weights, interactive-cpu]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, and the GPU when CUDA is there; cpu or cuda: only that one [auto]")
    parser.add_argument("--via-server", action="store_true", help="also through a local 'ssl3d serve' (default ROI cap)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    torch.set_num_threads(args.threads)
    devices = ([("cpu", torch.device("cpu"))] if args.device != "cuda" else []) + (
        [("gpu", torch.device("cuda"))] if args.device != "cpu" and torch.cuda.is_available() else [])
    from ssl3d.data.samples import SampleUnavailable, load_sample

    try:
        image, label = load_sample("lung1")
    except SampleUnavailable as exc:
        print(f"lung1 unavailable ({exc}); nothing measured")
        for name, _ in devices:
            print(f"target click-latency-{name}: not measured (goal {GOALS[name]:g} s) short")
        return 1
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"volume: lung1 {image.shape[::-1]} voxels (i, j, k), spacing {np.round(image.spacing, 3).tolist()} mm")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or _random_bundle(Path(tmp))
        results = {(name, cap): measure(bundle, image, label, device, args.clicks, cap) for name, device in devices for cap in (1, DEFAULT_CAP)}
        served = {name: measure_server(bundle, image, label, device.type, args.clicks, args.threads)
                  for name, device in devices} if args.via_server else {}
    header = f"{'device':<6} {'ROI cap':>7} {'load s':>7} {'set_volume s':>12} {'median s':>9} {'p95 s':>7} {'max s':>7} {'ROI voxels':>10} {'whole-volume forward s':>22}"
    print(header)
    for (name, cap), r in results.items():
        print(f"{name:<6} {cap:>7} {r['load_s']:>7.2f} {r['set_volume_s']:>12.2f} {r['median_s']:>9.3f} {r['p95_s']:>7.3f} {r['max_s']:>7.3f} "
              f"{r['roi_voxels']:>10} {r['whole_volume_s']:>22.3f}")
    print(f"model grid (D, H, W): {next(iter(results.values()))['model_grid']}; {args.clicks} timed clicks per row; ROI cap in windows per axis "
          f"(1: never grows, the best case; {DEFAULT_CAP}: the session default, the target)")
    for name, r in served.items():
        print(f"through the server ({name}, cap {DEFAULT_CAP}, polled every {POLL_S:g} s): median {r['median_s']:.3f} s, p95 {r['p95_s']:.3f} s, "
              f"max {r['max_s']:.3f} s; first click {r['first_s']:.2f} s (server start, imports, model load, volume transfer); "
              f"warm-up {r['warm_s']:.2f} s, then first click {r['first_after_warm_s']:.2f} s (the volume's transfer and one prediction)")
    for name in ("cpu", "gpu"):
        if (name, DEFAULT_CAP) not in results:
            why = "no CUDA device" if name == "gpu" and args.device != "cpu" else f"--device {args.device}"
            print(f"target click-latency-{name}: skipped, {why} (goal {GOALS[name]:g} s)")
            continue
        value = results[name, DEFAULT_CAP]["p95_s"]
        print(f"target click-latency-{name}: {value:.3f} s (goal {GOALS[name]:g} s) {'ok' if value <= GOALS[name] else 'short'}")
        if name in served:
            p95 = served[name]["p95_s"]
            goal, why = (value * 1.3 + 0.1, "in-process p95 x 1.3 + 0.1") if name == "cpu" else (GOALS["gpu"], "GPU server")
            print(f"target server-click-p95-{name}: {p95:.3f} s (goal {goal:.3f} s, {why}) {'ok' if p95 <= goal else 'short'}")
    if "cpu" in served:
        first = served["cpu"]["first_s"]
        print(f"target server-first-click-cpu: {first:.2f} s (goal {FIRST_CLICK_GOAL_S:g} s) {'ok' if first <= FIRST_CLICK_GOAL_S else 'short'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
