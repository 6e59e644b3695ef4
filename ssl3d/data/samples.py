"""Real CT samples: two chest CTs with tumour masks from the pyradiomics 3.0.1 source package (BSD-3).

They are fetched once with ``pip download`` (the package registry is the only source reachable offline
here), checked against a known SHA-256, and cached under the user cache folder; never committed.

=========  =====================================  ===================  =================
name       files                                  size (i, j, k)       spacing (mm)
=========  =====================================  ===================  =================
lung1      lung1_image.nrrd, lung1_label.nrrd     512 x 512 x 48       0.57 x 0.57 x 5
lung2      lung2_image.nrrd, lung2_label.nrrd     512 x 512 x 61       0.63 x 0.63 x 5
=========  =====================================  ===================  =================

Example::

    image, label = load_sample("lung1")   # Volumes on the same grid
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import SSL3DError

__all__ = ["SAMPLES", "SampleUnavailable", "cache_dir", "sample_paths", "load_sample"]

SAMPLES = ("lung1", "lung2")
_PACKAGE = "pyradiomics==3.0.1"
_ARCHIVE = "pyradiomics-3.0.1.tar.gz"
_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"


class SampleUnavailable(SSL3DError):
    """The sample data could not be fetched (no network, no pip); tests skip on it."""


def cache_dir() -> Path:
    """``$SSL3D_CACHE`` or the user cache folder (``~/.cache/ssl3d`` on Linux)."""
    if os.environ.get("SSL3D_CACHE"):
        return Path(os.environ["SSL3D_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("LOCALAPPDATA") if os.name == "nt" else None)
    return Path(base or Path.home() / ".cache") / "ssl3d"


def sample_paths(name: str) -> tuple[Path, Path]:
    """(image, label) paths of a sample, fetching the data on first use."""
    if name not in SAMPLES:
        raise SampleUnavailable(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}.")
    folder = cache_dir() / "samples"
    image, label = folder / f"{name}_image.nrrd", folder / f"{name}_label.nrrd"
    if not (image.is_file() and label.is_file()):
        _fetch(folder)
        if not (image.is_file() and label.is_file()):
            raise SampleUnavailable(f"{_ARCHIVE}: the downloaded release holds no {image.name} and {label.name}.")
    return image, label


def load_sample(name: str):
    """(image, label) Volumes of a sample."""
    from ..io import read_volume

    image, label = sample_paths(name)
    return read_volume(image), read_volume(label)


def _fetch(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", "-q", "-d", tmp, _PACKAGE]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            raise SampleUnavailable(f"cannot download {_PACKAGE} for the sample CTs ({type(exc).__name__}).") from None
        archive = Path(tmp) / _ARCHIVE
        if not archive.is_file() or hashlib.sha256(archive.read_bytes()).hexdigest() != _SHA256:
            raise SampleUnavailable(f"{archive.name}: missing or its SHA-256 does not match the known release.")
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and any(name == f"{s}_{kind}.nrrd" for s in SAMPLES for kind in ("image", "label")):
                    data = tar.extractfile(member).read()
                    partial = folder / (name + ".part")
                    partial.write_bytes(data)
                    os.replace(partial, folder / name)
