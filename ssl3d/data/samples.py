"""Real CT samples: two chest CTs with tumour masks from the pyradiomics 3.0.1 source package (BSD-3).

They are fetched once as the release archive itself, straight from the package registry's file host (or
``$SSL3D_SAMPLES_URL``, a mirror or a ``file://`` copy of the same archive); its SHA-256 is checked before
anything reads it, nothing in it is built or run (only the four ``.nrrd`` files are taken out), and they are
cached under the user cache folder; never committed.

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
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import SSL3DError

__all__ = ["SAMPLES", "SampleUnavailable", "cache_dir", "sample_paths", "load_sample"]

SAMPLES = ("lung1", "lung2")
_ARCHIVE = "pyradiomics-3.0.1.tar.gz"
_URL = ("https://files.pythonhosted.org/packages/1b/35/c7f7fb7affd302fd8107dcee6b6e7aaf3708b75ad69d5f9a3dfcadb73eaa/"
        + _ARCHIVE)  # PyPI's file for pyradiomics 3.0.1 (its JSON API lists this URL and hash)
_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
_TIMEOUT_S = 120


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
    """Download the archive into a temporary folder beside ``folder``, check its hash, then move the four
    NRRDs into ``folder`` (created only then: a failure leaves no empty folder)."""
    url = os.environ.get("SSL3D_SAMPLES_URL") or _URL
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".samples-") as tmp:
        archive = Path(tmp) / _ARCHIVE
        digest = _download(url, archive)
        if digest != _SHA256:
            raise SampleUnavailable(f"{_ARCHIVE} from {url}: its SHA-256 does not match the known release ({digest[:12]}...); nothing was unpacked.")
        found = _unpack(archive, Path(tmp))
        if found:
            folder.mkdir(exist_ok=True)
            for file in found:
                os.replace(file, folder / file.name)


def _download(url: str, target: Path) -> str:
    """Stream ``url`` into ``target``; its SHA-256 (SampleUnavailable with the reason when it cannot be fetched)."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(target, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SampleUnavailable(f"cannot download the sample CTs from {url}: {reason} (set SSL3D_SAMPLES_URL to a copy of {_ARCHIVE}).") from None
    return digest.hexdigest()


def _unpack(archive: Path, into: Path) -> list[Path]:
    """The sample NRRDs of the verified archive, written into ``into`` (regular files only, by base name)."""
    wanted = {f"{s}_{kind}.nrrd" for s in SAMPLES for kind in ("image", "label")}
    found = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                with tar.extractfile(member) as source, open(into / name, "wb") as out:
                    shutil.copyfileobj(source, out)
                found.append(into / name)
    return found
