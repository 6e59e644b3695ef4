"""ssl3d.data.samples without the network: pip is replaced by a fake that drops (or fails to drop) an archive."""

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ssl3d.data import samples
from ssl3d.io import Volume, write_volume


def _archive(tmp_path) -> bytes:
    """A stand-in for the pyradiomics sdist: the four sample NRRDs (tiny) under its data/ folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in samples.SAMPLES:
            for kind, value in (("image", -100), ("label", 1)):
                array = np.full((3, 4, 5), value, np.int16)
                path = write_volume(Volume.from_geometry(array, spacing=(0.6, 0.6, 5.0)), tmp_path / f"{name}_{kind}.nrrd")
                tar.add(path, arcname=f"pyradiomics-3.0.1/data/{path.name}")
    return buffer.getvalue()


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """``pip download`` replaced: writes ``calls['archive']`` into the -d folder; records each call."""
    calls = {"archive": _archive(tmp_path), "count": 0}

    def run(command, **kwargs):
        calls["count"] += 1
        assert command[1:4] == ["-m", "pip", "download"] and samples._PACKAGE in command
        folder = Path(command[command.index("-d") + 1])
        (folder / samples._ARCHIVE).write_bytes(calls["archive"])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(samples.subprocess, "run", run)
    return calls


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "mine"))
    assert samples.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SSL3D_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert samples.cache_dir() == tmp_path / "xdg" / "ssl3d"


def test_verified_archive_is_unpacked_into_the_cache_once(fake_pip, monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "_SHA256", hashlib.sha256(fake_pip["archive"]).hexdigest())
    image, label = samples.load_sample("lung2")
    assert image.shape == label.shape == (3, 4, 5) and np.all(label.array == 1)
    folder = tmp_path / "cache" / "samples"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}_{k}.nrrd" for n in samples.SAMPLES for k in ("image", "label"))
    assert samples.sample_paths("lung1") == (folder / "lung1_image.nrrd", folder / "lung1_label.nrrd")
    assert fake_pip["count"] == 1  # the second sample came from the cache


def test_checksum_mismatch_is_refused_and_nothing_kept(fake_pip, tmp_path):
    with pytest.raises(samples.SampleUnavailable, match=r"pyradiomics-3\.0\.1\.tar\.gz: .*SHA-256 does not match"):
        samples.sample_paths("lung1")
    assert list((tmp_path / "cache" / "samples").iterdir()) == []


def test_failed_download_is_a_typed_error(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        raise subprocess.CalledProcessError(1, command, stderr=b"no network")

    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(samples.subprocess, "run", offline)
    with pytest.raises(samples.SampleUnavailable, match=r"cannot download pyradiomics==3\.0\.1 .*CalledProcessError"):
        samples.load_sample("lung1")
    assert issubclass(samples.SampleUnavailable, samples.SSL3DError)


def test_archive_without_the_samples_is_refused(fake_pip, monkeypatch):
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w:gz"):
        pass
    fake_pip["archive"] = empty.getvalue()
    monkeypatch.setattr(samples, "_SHA256", hashlib.sha256(empty.getvalue()).hexdigest())
    with pytest.raises(samples.SampleUnavailable, match="holds no lung1_image.nrrd"):
        samples.sample_paths("lung1")


def test_unknown_sample_name():
    with pytest.raises(samples.SampleUnavailable, match="unknown sample 'lung3'; choose one of lung1, lung2"):
        samples.sample_paths("lung3")


def test_tests_using_the_real_samples_are_marked(request):
    """The conftest hook marks a test ``real_data`` when it uses a sample fixture or names one in a parameter."""
    conftest = next(p for p in request.config.pluginmanager.get_plugins()
                    if getattr(p, "__file__", None) == str(Path(__file__).with_name("conftest.py")))

    class Item:
        def __init__(self, fixtures, params=None):
            self.fixturenames, self.markers = fixtures, []
            if params is not None:
                self.callspec = type("CallSpec", (), {"params": params})()

        def add_marker(self, marker):
            self.markers.append(marker.name)

    items = [Item(["tmp_path", "lung1"]), Item(["request", "name"], {"name": "lung2"}), Item(["phantom"]),
             Item(["request", "which"], {"which": "phantom"})]
    conftest.pytest_collection_modifyitems(request.config, items)
    assert [item.markers for item in items] == [["real_data"], ["real_data"], [], []]
