"""Fill wheels/ with what a GPU machine needs to run ``benchmarks/gpu_all.sh`` without a package index.

Linux x86_64 wheels, at the constraints.txt versions (others as .venv has them), of what the lent GPU
machines' image lacks (Python 3.12 with torch, numpy, scipy, tensorboard, ...; see the device notes), a pip
wheel (for a Python whose pip is too old for gpu_all.sh) and the real CT sample lung1 in wheels/samples.
Never torch: the GPU machine keeps its own. Wheels over 8 MB are re-zipped with LZMA (pip unpacks any method
Python's zipfile reads; SimpleITK 53 -> 29 MB) so that wheels/ and the tree fit the device's 64 MiB carry.

Run: ``make wheels`` or ``.venv/bin/python benchmarks/wheelhouse.py [--pythons 3.10 3.11 3.12] [--all]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT_MIB = 64
#: what the GPU image lacks; --all adds every other runtime dependency (a server with Python and torch alone)
GPU_IMAGE_LACKS = ("monai", "SimpleITK", "nibabel", "slicerio", "pynrrd", "importlib-resources", "pip")
OTHERS = ("einops", "numpy", "scipy", "safetensors", "PyYAML", "psutil", "tensorboard", "pillow", "tqdm", "packaging",
          "typing-extensions", "requests", "certifi", "charset-normalizer", "idna", "urllib3", "absl-py", "grpcio",
          "markdown", "protobuf", "tensorboard-data-server", "werkzeug", "markupsafe", "setuptools")
PLATFORMS = [f"{p}_x86_64" for p in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014", "manylinux1")]
REPACK_OVER = 8e6  # bytes


def download(out: Path, pythons: list[str], packages: list[str]) -> None:
    pins = out / ".venv-pins.txt"  # versions constraints.txt does not pin follow the tested .venv
    pins.write_text(subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
                                   capture_output=True, text=True, check=True).stdout)
    try:
        for version in pythons:
            platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--implementation", "cp", "--python-version", version, *platforms,
                            "-c", str(ROOT / "constraints.txt"), "-c", str(pins), "-d", str(out), *packages], check=True)
    finally:
        pins.unlink()


def copy_samples(folder: Path, names: list[str]) -> None:
    from ssl3d.data.samples import sample_paths

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        for path in sample_paths(name):
            shutil.copy(path, folder)


def repack(wheel: Path) -> None:
    """Re-zip a large wheel with LZMA (same files, same metadata)."""
    with zipfile.ZipFile(wheel) as src:
        if wheel.stat().st_size < REPACK_OVER or all(i.compress_type == zipfile.ZIP_LZMA for i in src.infolist()):
            return
        part = wheel.with_name(wheel.name + ".part")
        with zipfile.ZipFile(part, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_LZMA)
    print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} -> {part.stat().st_size / 2**20:.1f} MiB (LZMA)")
    os.replace(part, wheel)


def report_size(out: Path) -> None:
    house = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    tree = sum((ROOT / f).stat().st_size for f in listed.stdout.splitlines() if (ROOT / f).is_file()) if listed.returncode == 0 else 0
    total = (house + tree) / 2**20
    print(f"{out.name}/: {house / 2**20:.1f} MiB; with the working tree {total:.1f} MiB (device carry limit {CARRY_LIMIT_MIB} MiB)")
    if total > CARRY_LIMIT_MIB:
        print("note: over the device carry limit; for the lent GPU machines keep the defaults (Python 3.12, no --all, lung1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "wheels", help="the wheelhouse folder (replaced; default wheels/)")
    parser.add_argument("--pythons", nargs="+", default=["3.12"], help="Python versions of the wheels (default 3.12)")
    parser.add_argument("--all", action="store_true", help="every runtime dependency, not only what the GPU image lacks")
    parser.add_argument("--samples", nargs="*", default=["lung1"], help="real CT samples to bring (default lung1)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    download(args.out, args.pythons, [*GPU_IMAGE_LACKS, *(OTHERS if args.all else ())])
    copy_samples(args.out / "samples", args.samples)
    for wheel in sorted(args.out.glob("*.whl")):
        repack(wheel)
    report_size(args.out)


if __name__ == "__main__":
    main()
