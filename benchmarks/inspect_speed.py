"""Pretext inspection speed: ``ssl3d inspect voco|vf`` on a 512 x 512 x 300 CT-like volume, end to end.

Per bundle, what the command does after Python has started: read the volume (an uncompressed NIfTI),
inspect it (the bundle's preprocessing, the forward passes, the maps pasted back onto the input grid, the
picture) and write the outputs (compressed NRRD, PNG, JSON) all-or-nothing. VoCo: the default 16 random
crops, not dense; VF: the default seed. Bundles are built untrained from the presets (the time does not
depend on the weights): with CUDA the full presets voco-v1, voco-v2 (SwinUNETR-v2 B) and vf-v1, vf-v2
(PCT-Net); on the CPU the ``*-cpu`` presets. The volume is a phantom (ssl3d.data.phantoms) scaled up to
the size, 0.78 x 0.78 x 1.25 mm, with noise.

Each bundle is run ``--runs`` times; the first run is cold (bundle load, CUDA kernels chosen) and is the
one the target takes, as a user's single inspection. Target (GPU only):

    inspect-<preset>-cuda   seconds of the first run on a 512 x 512 x 300 volume   goal < 30 s

Usage: ``python benchmarks/inspect_speed.py [--device auto|cpu|cuda] [--runs 2] [--quick] [--size I,J,K]``.
Without CUDA (``make bench`` on the 2-core machine) the volume is 128 x 128 x 75 unless ``--size`` says
otherwise: the figures are information there, the target is a GPU one. ``--quick``: one run on that small
volume (a smoke run; no target is judged below the full size).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl3d.inspect import inspect_fusion, inspect_voco, write_inspection
from ssl3d.io import Volume, read_volume, write_volume

FULL_SIZE = (512, 512, 300)  # (i, j, k)
QUICK_SIZE = (128, 128, 75)
GOAL_S = 30.0
SPACING = (0.78, 0.78, 1.25)


def ct_volume(size_ijk: tuple[int, int, int]) -> Volume:
    """A CT-like int16 volume of ``size_ijk`` voxels: a phantom a quarter the size, each voxel repeated 4 x 4 x 4,
    plus noise (sigma 10 HU), so intensities and the body outline are a CT's."""
    from ssl3d.data.phantoms import make_phantom

    shape = tuple(int(s) for s in size_ijk[::-1])  # (k, j, i)
    small, _ = make_phantom(11, shape=tuple(max(16, -(-s // 4)) for s in shape))
    array = small.array
    for axis, s in enumerate(shape):
        array = np.repeat(array, -(-s // array.shape[axis]), axis=axis)[(slice(None),) * axis + (slice(0, s),)]
    noise = np.random.default_rng(0).normal(0.0, 10.0, size=shape).astype(np.float32)
    array = np.clip(array + noise, -1024, 3071).astype(np.int16)
    direction = small.ijk_to_ras[:3, :3] / np.linalg.norm(small.ijk_to_ras[:3, :3], axis=0)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = direction * np.asarray(SPACING), small.ijk_to_ras[:3, 3]
    return Volume(array, affine)


def build_bundle(preset_name: str, folder: Path) -> Path:
    """An untrained pretext bundle of a VoCo or VF preset (seeded weights)."""
    from ssl3d.bundle import write_bundle
    from ssl3d.config import get_preset

    preset = get_preset(preset_name)
    torch.manual_seed(0)
    if preset.method == "voco":
        from ssl3d.pretext.voco_bundle import VoCoNetwork, voco_bundle_meta

        net = VoCoNetwork(preset.network, preset.voco)
        meta = voco_bundle_meta(preset, net, {"data": None, "steps": 0})
    else:
        from ssl3d.nets.builders import build_network
        from ssl3d.pretext.vf_bundle import fusion_bundle_meta
        from ssl3d.pretext.vf_task import network_spec

        name, kwargs = network_spec(preset)
        net = build_network(name, **kwargs)
        meta = fusion_bundle_meta(preset, name, kwargs, {"data": None, "steps": 0}, {})
    return write_bundle(folder / preset_name, net.state_dict(), meta).path


def inspect_once(method: str, bundle: Path, path: Path, out: Path, device: torch.device) -> dict[str, float]:
    """One inspection as the command runs it: seconds to read, to inspect and to write."""
    start = time.perf_counter()
    volume = read_volume(path)
    read = time.perf_counter()
    if method == "voco":
        result = inspect_voco(bundle, volume, device=device)
    else:
        result = inspect_fusion(bundle, volume, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    inspected = time.perf_counter()
    write_inspection(result, out, {"benchmark": "inspect_speed"}, "benchmarks/inspect_speed.py")
    done = time.perf_counter()
    return {"read": read - start, "inspect": inspected - read, "write": done - inspected, "total": done - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the full presets on CUDA when it is there, else the *-cpu presets on the CPU [auto]")
    parser.add_argument("--runs", type=int, default=2, help="runs per bundle; the first (cold) one is the target's [2]")
    parser.add_argument("--quick", action="store_true", help=f"one run on a {'x'.join(map(str, QUICK_SIZE))} volume")
    parser.add_argument("--size", metavar="I,J,K", help=f"volume size in voxels [{','.join(map(str, FULL_SIZE))}]")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    try:
        size = tuple(int(v) for v in args.size.split(",")) if args.size else (FULL_SIZE if cuda and not args.quick else QUICK_SIZE)
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 16:
        parser.error(f"--size must be I,J,K: three sizes >= 16, got {args.size}")
    runs = 1 if args.quick else args.runs
    device = torch.device("cuda" if cuda else "cpu")
    presets = ("voco-v1", "voco-v2", "vf-v1", "vf-v2") if cuda else ("voco-v1-cpu", "voco-v2-cpu", "vf-v1-cpu", "vf-v2-cpu")

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        path = write_volume(ct_volume(size), tmp / "ct.nii", compress=False)
        print(f"volume {size[0]} x {size[1]} x {size[2]} (i, j, k), {SPACING} mm: made in {time.perf_counter() - start:.1f} s")
        for name in presets:
            bundle = build_bundle(name, tmp / "bundles")
            method = "voco" if name.startswith("voco") else "vf"
            rows[name] = [inspect_once(method, bundle, path, tmp / f"out-{name}", device) for _ in range(runs)]

    gpu = f", {torch.cuda.get_device_name()}" if cuda else ""
    print(f"Pretext inspection of a {size[0]} x {size[1]} x {size[2]} CT, end to end (torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads{gpu}); seconds")
    print(f"{'preset':<14}{'device':<8}{'run':>4}{'read':>8}{'inspect':>9}{'write':>8}{'total':>8}")
    for name, results in rows.items():
        for n, r in enumerate(results):
            print(f"{name:<14}{device.type:<8}{n + 1:>4}{r['read']:>8.2f}{r['inspect']:>9.2f}{r['write']:>8.2f}{r['total']:>8.2f}")
    full = size == FULL_SIZE
    for name, results in rows.items():
        if not cuda:
            continue
        if not full:
            print(f"target inspect-{name}-cuda: skipped, volume {size} is not {FULL_SIZE} (goal < {GOAL_S:.0f} s)")
            continue
        first = results[0]["total"]
        print(f"target inspect-{name}-cuda: {first:.1f} s (goal < {GOAL_S:.0f} s on a GPU) {'ok' if first < GOAL_S else 'short'}")
    if not cuda:
        for name in ("voco-v1", "voco-v2", "vf-v1", "vf-v2"):
            print(f"target inspect-{name}-cuda: skipped, no CUDA device (goal < {GOAL_S:.0f} s on a GPU)")


if __name__ == "__main__":
    main()
