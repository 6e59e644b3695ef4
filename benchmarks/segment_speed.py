"""Sliding-window segmentation: this pipeline against MONAI ``sliding_window_inference`` and bare forward passes.

Same network (a seg-cpu small UNet trained for a few steps on phantoms, so logits have real margins, or
``--model BUNDLE``), same model-space volume (the real CT sample lung1 through the bundle's preprocessing;
``--volume phantom`` for a held-out phantom), same window (the training patch), overlap and windows per pass. Three ways to get a label map:

    ssl3d      label_map: Gaussian blending in a one-window-deep buffer, argmax per finished slab;
               a window of one constant value (air after the intensity window) runs the network once
    ssl3d-all  the same with every window through the network (reuse_constant=False)
    MONAI      sliding_window_inference(mode="gaussian"), float32, then argmax over the whole output
    bare       the forward passes over the same window batches, nothing else (the floor)

Each is timed ``--runs`` times, interleaved, and the fastest run counts (the machine is shared). Targets:

    segment-logits       max |logit difference| ssl3d vs MONAI, float32        goal <= 1e-4
    segment-vs-monai     time ssl3d / MONAI, float32, CPU                       goal <= 1.0x   (GPU: <= 0.7x, AMP)
    segment-vs-forward   time ssl3d-all / bare forward passes (the overhead)    goal <= 1.15x
    segment-half         argmax agreement of the half-precision path with float32  goal >= 99.99 %

The half-precision path is AMP: float16 autocast on CUDA (the default there), bfloat16 autocast on CPU
(opt-in, ``--amp on``; CPU's default is float32). Blending stays float32 in both.

Usage: ``python benchmarks/segment_speed.py [--runs 3] [--quick] [--model BUNDLE] [--steps 30] [--device auto|cpu|cuda]``.
The targets are measured per device; the GPU ones carry a ``-cuda`` suffix.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ssl3d.infer.segment import _pad_for_window, label_map, load_model, sliding_window_logits
from ssl3d.infer.windows import network_multiple, window_size


def trained_bundle(folder: Path, steps: int):
    """A seg-cpu bundle trained for ``steps`` steps on six phantoms."""
    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.data.phantoms import LABELS
    from ssl3d.data.phantoms import write_phantom_dataset
    from ssl3d.train.loop import train
    from ssl3d.train.segmentation import SegmentationTask

    data = write_phantom_dataset(folder / "data", range(100, 106), shape=(48, 64, 64))
    preset = apply_overrides(get_preset("seg-cpu"), {"train.steps": steps, "train.val_every": 0, "train.checkpoint_every": steps, "train.log_every": steps})
    task = SegmentationTask(data, folder / "run" / "cache", val_fraction=0, label_names=LABELS)
    return train(task, preset, folder / "run", torch.device("cpu"))["bundle"]


def model_input(bundle, volume: str, quick: bool) -> tuple[torch.Tensor, tuple[int, int, int], str]:
    """The bundle's preprocessing of a real CT sample (``lung1``/``lung2``), or of a held-out phantom."""
    from ssl3d.data.phantoms import make_phantom
    from ssl3d.data.preprocess import PreprocessConfig, preprocess

    image, what = None, volume
    if volume != "phantom":
        from ssl3d.data.samples import SampleUnavailable, load_sample

        try:
            image, _ = load_sample(volume)
            what = f"real CT {volume} {image.shape[::-1]} (i, j, k)"
        except SampleUnavailable as exc:
            print(f"{volume} unavailable ({exc}); using a phantom")
    if image is None:
        shape = (48, 112, 112) if quick else (64, 160, 160)
        image, _ = make_phantom(999, shape=shape)
        what = f"phantom {shape[::-1]} (i, j, k)"
    x, _ = preprocess(image, PreprocessConfig(**bundle.meta["preprocessing"]))
    if quick:
        x = x[:, :, : min(x.shape[2], 48)]
    return (*_pad_for_window(x, window_size(bundle), network_multiple(bundle.network)), what)


def ours(x, window, model, overlap, sw_batch, amp=False, reuse=True) -> np.ndarray:
    return label_map(x, window, model, overlap, sw_batch, amp, reuse_constant=reuse)[0]


def monai(x, window, model, overlap, sw_batch) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    logits = sliding_window_inference(x, window, sw_batch, model, overlap=overlap, mode="gaussian")
    return logits[0].argmax(0).to(torch.uint8).cpu().numpy()


def bare(x, window, model, overlap, sw_batch) -> None:
    from monai.data.utils import dense_patch_slices

    from ssl3d.infer.segment import scan_interval

    size = tuple(x.shape[2:])
    slices = dense_patch_slices(size, window, scan_interval(size, window, overlap))
    for first in range(0, len(slices), sw_batch):
        model(torch.cat([x[(slice(None), slice(None), *s)] for s in slices[first : first + sw_batch]]))


def fastest(fns: dict[str, Callable[[], object]], runs: int, device: torch.device) -> dict[str, float]:
    """Interleaved runs; the fastest of each (the model is warm: the accuracy checks ran before)."""
    best = {name: float("inf") for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(bundle, x, window, device: torch.device, overlap: float, sw_batch: int, runs: int) -> dict[str, float]:
    model = load_model(bundle, device)
    x = x.to(device)
    with torch.inference_mode():
        reference = sliding_window_inference_logits(x, window, model, overlap, sw_batch)
        difference = (sliding_window_logits(x, window, model, overlap, sw_batch) - reference).abs().max().item()
        half = ours(x, window, model, overlap, sw_batch, amp=True)
        agreement = float(np.mean(half == reference[0].argmax(0).to(torch.uint8).cpu().numpy()))
        passes: list[int] = []
        ours(x, window, lambda batch: passes.append(len(batch)) or model(batch), overlap, sw_batch)
        amp = device.type == "cuda"  # the pipeline's default on this device
        times = fastest({
            "ssl3d": lambda: ours(x, window, model, overlap, sw_batch, amp),
            "ssl3d-all": lambda: ours(x, window, model, overlap, sw_batch, amp, reuse=False),
            "MONAI": lambda: monai(x, window, model, overlap, sw_batch),
            "bare": lambda: bare(x, window, model, overlap, sw_batch),
            "ssl3d-half": lambda: ours(x, window, model, overlap, sw_batch, True),
        }, runs, device)
    return {"difference": difference, "agreement": agreement, "computed": sum(passes), **times}


def sliding_window_inference_logits(x, window, model, overlap, sw_batch) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(x, window, sw_batch, model, overlap=overlap, mode="gaussian")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each way (the fastest counts) [3]")
    parser.add_argument("--quick", action="store_true", help="a smaller volume and one run")
    parser.add_argument("--model", type=Path, help="a segmentation bundle [a seg-cpu UNet trained here on phantoms]")
    parser.add_argument("--steps", type=int, default=30, help="training steps of the seg-cpu UNet [30]")
    parser.add_argument("--keep", type=Path, help="train in this folder and keep the bundle (pass it as --model next time)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap [0.5]")
    parser.add_argument("--sw-batch", type=int, default=2, help="windows per forward pass [2]")
    parser.add_argument("--volume", choices=("lung1", "lung2", "phantom"), default="lung1", help="input: a real CT sample or a phantom [lung1]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, and the GPU when CUDA is there; cpu or cuda: only that one (the bundle trains on CPU) [auto]")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    from ssl3d.bundle import read_bundle

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="ssl3d-segspeed-") as tmp:
        start = time.perf_counter()
        bundle = read_bundle(args.model or trained_bundle(args.keep or Path(tmp), args.steps))
        print(f"network: {bundle.network['name']} {bundle.network['kwargs']} from {bundle.path} ({time.perf_counter() - start:.0f} s to get it)", flush=True)
        x, window, what = model_input(bundle, args.volume, args.quick)
        devices = ([torch.device("cpu")] if args.device != "cuda" else []) + (
            [torch.device("cuda")] if args.device != "cpu" and torch.cuda.is_available() else [])
        results = {d.type: measure(bundle, x, window, d, args.overlap, args.sw_batch, runs) for d in devices}
    windows = _count(x, window, args.overlap)
    print(f"\n{what} -> model-space volume {tuple(x.shape[2:])}, window {window}, overlap {args.overlap}, {windows} windows, sw-batch {args.sw_batch}, fastest of {runs}")
    print(f"{'device':<6} {'ssl3d s':>8} {'all s':>8} {'MONAI s':>8} {'bare s':>8} {'half s':>8} {'run/all':>8} {'vs MONAI':>9} {'all/bare':>9} {'max |dlogit|':>13} {'half agree %':>13}")
    for device, r in results.items():
        print(f"{device:<6} {r['ssl3d']:>8.2f} {r['ssl3d-all']:>8.2f} {r['MONAI']:>8.2f} {r['bare']:>8.2f} {r['ssl3d-half']:>8.2f} {r['computed']:>4}/{windows:<3} "
              f"{r['ssl3d'] / r['MONAI']:>8.3f}x {r['ssl3d-all'] / r['bare']:>8.3f}x {r['difference']:>13.2e} {100 * r['agreement']:>13.4f}")
    print("ssl3d: constant windows run once ('run/all' windows through the network); all: every window runs.")
    print("GPU rows: ssl3d runs with AMP, its default there; MONAI float32. CPU: both float32; 'half' = bfloat16 autocast.\n")
    for device, r in results.items():
        tag = "" if device == "cpu" else f"-{device}"
        ratio_goal = 1.0 if device == "cpu" else 0.7
        _target(f"segment-logits{tag}", r["difference"], 1e-4, f"{r['difference']:.2e}", "1e-4", lower=True)
        _target(f"segment-vs-monai{tag}", r["ssl3d"] / r["MONAI"], ratio_goal, f"{r['ssl3d'] / r['MONAI']:.3f}x", f"{ratio_goal}x", lower=True)
        _target(f"segment-vs-forward{tag}", r["ssl3d-all"] / r["bare"], 1.15, f"{r['ssl3d-all'] / r['bare']:.3f}x", "1.15x", lower=True)
        _target(f"segment-half{tag}", r["agreement"], 0.9999, f"{100 * r['agreement']:.4f} %", "99.99 %", lower=False)
    if args.device == "auto" and not torch.cuda.is_available():
        for name, goal in (("logits", "<= 1e-4"), ("vs-monai", "<= 0.7x"), ("vs-forward", "<= 1.15x"), ("half", ">= 99.99 %")):
            print(f"target segment-{name}-cuda: skipped, no CUDA device (goal {goal})")
    return 0


def _count(x, window, overlap) -> int:
    from monai.data.utils import dense_patch_slices

    from ssl3d.infer.segment import scan_interval

    size = tuple(x.shape[2:])
    return len(dense_patch_slices(size, window, scan_interval(size, window, overlap)))


def _target(name: str, value: float, goal: float, shown: str, goal_shown: str, lower: bool) -> None:
    ok = value <= goal if lower else value >= goal
    print(f"target {name}: {shown} (goal {'<=' if lower else '>='} {goal_shown}) {'ok' if ok else 'short'}")


if __name__ == "__main__":
    sys.exit(main())
