"""ssl3d.data.samples without the network: the archive comes from a file:// URL ($SSL3D_SAMPLES_URL)."""

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
    """A stand-in for the pyradiomics sdist: the four sample NRRDs (tiny) under its data/ folder, and a
    setup.py that would leave a mark if anything ran it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in samples.SAMPLES:
            for kind, value in (("image", -100), ("label", 1)):
                array = np.full((3, 4, 5), value, np.int16)
                path = write_volume(Volume.from_geometry(array, spacing=(0.6, 0.6, 5.0)), tmp_path / f"{name}_{kind}.nrrd")
                tar.add(path, arcname=f"pyradiomics-3.0.1/data/{path.name}")
        setup = tmp_path / "setup.py"
        setup.write_text(f"open({str(tmp_path / 'built')!r}, 'w').write('ran')\n")
        tar.add(setup, arcname="pyradiomics-3.0.1/setup.py")
    return buffer.getvalue()


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """The archive served from a file:// URL; ``calls['count']`` counts the downloads; no subprocess may start."""
    calls = {"archive": _archive(tmp_path), "count": 0}
    served = tmp_path / "mirror" / samples._ARCHIVE
    served.parent.mkdir()

    def serve(archive: bytes) -> None:
        served.write_bytes(archive)

    calls["serve"] = serve
    serve(calls["archive"])
    real_open = samples.urllib.request.urlopen

    def counting(url, **kwargs):
        calls["count"] += 1
        return real_open(url, **kwargs)

    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[0]}")

    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL3D_SAMPLES_URL", served.as_uri())
    monkeypatch.setattr(samples.urllib.request, "urlopen", counting)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    return calls


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "mine"))
    assert samples.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SSL3D_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert samples.cache_dir() == tmp_path / "xdg" / "ssl3d"


def test_verified_archive_is_unpacked_into_the_cache_once(fake_release, monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "_SHA256", hashlib.sha256(fake_release["archive"]).hexdigest())
    image, label = samples.load_sample("lung2")
    assert image.shape == label.shape == (3, 4, 5) and np.all(label.array == 1)
    folder = tmp_path / "cache" / "samples"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}_{k}.nrrd" for n in samples.SAMPLES for k in ("image", "label"))
    assert samples.sample_paths("lung1") == (folder / "lung1_image.nrrd", folder / "lung1_label.nrrd")
    assert fake_release["count"] == 1  # the second sample came from the cache
    assert not (tmp_path / "built").exists() and sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["samples"]


def test_checksum_mismatch_is_refused_before_anything_reads_the_archive(fake_release, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(samples.tarfile, "open", lambda *a, **k: opened.append(a) or pytest.fail("the archive was opened"))
    with pytest.raises(samples.SampleUnavailable, match=r"pyradiomics-3\.0\.1\.tar\.gz from file://.*SHA-256 does not match"):
        samples.sample_paths("lung1")
    assert not opened and list((tmp_path / "cache").iterdir()) == []  # no samples/ folder, no temporary left


def test_the_default_url_is_the_pinned_release():
    assert samples._URL.startswith("https://files.pythonhosted.org/packages/") and samples._URL.endswith("/pyradiomics-3.0.1.tar.gz")


@pytest.mark.parametrize("url, reason", [("file:///no/such/folder/pyradiomics-3.0.1.tar.gz", "No such file"),
                                         ("http://127.0.0.1:9/pyradiomics-3.0.1.tar.gz", "refused")])
def test_failed_download_says_why_and_leaves_nothing(tmp_path, monkeypatch, url, reason):
    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL3D_SAMPLES_URL", url)
    with pytest.raises(samples.SampleUnavailable, match=rf"cannot download the sample CTs from {url}: .*{reason}.*SSL3D_SAMPLES_URL"):
        samples.load_sample("lung1")
    assert issubclass(samples.SampleUnavailable, samples.SSL3DError)
    assert list((tmp_path / "cache").iterdir()) == []


def test_archive_without_the_samples_is_refused(fake_release, monkeypatch, tmp_path):
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w:gz"):
        pass
    fake_release["serve"](empty.getvalue())
    monkeypatch.setattr(samples, "_SHA256", hashlib.sha256(empty.getvalue()).hexdigest())
    with pytest.raises(samples.SampleUnavailable, match="holds no lung1_image.nrrd"):
        samples.sample_paths("lung1")
    assert list((tmp_path / "cache").iterdir()) == []


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
