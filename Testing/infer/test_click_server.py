"""Click-to-segment through ``ssl3d serve``: the client reproduces the in-process session exactly (phantom and
lung1), tokens are checked, bad and oversized requests get an error while the server goes on, two sessions are
isolated, a killed server is replaced on the next click, and the client imports without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssl3d.infer.click_worker import ClickWorker
from ssl3d.io import Volume
from ssl3d.serve.client import Exchange, ServerClickWorker, ServerError

ROOT = Path(__file__).resolve().parents[2]


def _drain(worker, timeout: float = 120.0) -> list:
    results, deadline = [], time.monotonic() + timeout
    while worker.pending() and time.monotonic() < deadline:
        results += worker.take()
        time.sleep(0.005)
    assert not worker.pending(), "the requests did not finish"
    return results


def _ras(volume: Volume, kji) -> tuple:
    k, j, i = kji
    return tuple(float(v) for v in (volume.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])


def _clicks(volume: Volume, positive_at, negative_at) -> list:
    """A sequence of requests: +, +, -, undo, +, reset, + (as the module submits them)."""
    key = ("volume", 1)
    first = dict(volume=volume, volumeKey=key)
    later = dict(volume=None, volumeKey=key)
    p1, p2 = (_ras(volume, kji) for kji in positive_at)
    n1 = _ras(volume, negative_at)
    return [("point", dict(**first, ras=p1, positive=True)), ("point", dict(**later, ras=p2, positive=True)),
            ("point", dict(**later, ras=n1, positive=False)), ("undo", {}), ("point", dict(**later, ras=n1, positive=True)),
            ("reset", {}), ("point", dict(**later, ras=p2, positive=True))]


def _run(worker, bundle, requests) -> list:
    for number, (kind, request) in enumerate(requests):
        worker.submit(kind, bundle=str(bundle), device="cpu", target="t", tag=number, **request) if kind == "point" \
            else worker.submit(kind, target="t", tag=number)
    return _drain(worker)


def _same(served: list, local: list) -> None:
    assert [r.get("error") for r in served] == [None] * len(served)
    assert len(served) == len(local)
    for a, b in zip(served, local):
        assert (a["kind"], a["box"], a["clicks"], a["label"], a["tag"], a["target"]) == (b["kind"], b["box"], b["clicks"], b["label"], b["tag"], b["target"])
        np.testing.assert_allclose(a["ijkToRas"], b["ijkToRas"])
        if a["box"] is not None:
            assert a["values"].dtype == b["values"].dtype and np.array_equal(a["values"], b["values"])
            assert a["changed"].dtype == bool and np.array_equal(a["changed"], b["changed"])


@pytest.fixture(scope="module")
def models(seg_cpu_bundle, tmp_path_factory):
    """A --models folder holding the segmentation bundle (a click bundle: the structure under the click)."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(seg_cpu_bundle.path, folder / "organs")
    return folder


@pytest.fixture(scope="module")
def local_worker():
    worker = ServerClickWorker(threads=2)
    yield worker
    worker.stop()


def test_served_clicks_equal_the_in_process_session_on_a_phantom(local_worker, models, phantom):
    requests = _clicks(phantom[0], positive_at=((16, 20, 18), (12, 28, 24)), negative_at=(16, 24, 30))
    served = _run(local_worker, models / "organs", requests)
    local_reference = ClickWorker()
    local = _run(local_reference, models / "organs", requests)
    local_reference.stop()
    _same(served, local)
    assert served[0]["box"] is not None and served[0]["values"].any()


def test_a_warm_up_loads_the_model_before_the_first_click_and_gives_no_result(models, phantom):
    requests = _clicks(phantom[0], positive_at=((16, 20, 18), (12, 28, 24)), negative_at=(16, 24, 30))[:3]
    served, local = [], []
    for worker, results in ((ServerClickWorker(threads=2), served), (ClickWorker(), local)):
        try:
            worker.submit("warm", bundle=str(models / "organs"), device="cpu")
            assert _drain(worker) == [], "a warm-up has nothing to write"
            if isinstance(worker, ServerClickWorker):
                assert worker._session is not None, "the warm-up opened no session"
            results += _run(worker, models / "organs", requests)
        finally:
            worker.stop()
    _same(served, local)


def test_served_clicks_equal_the_in_process_session_on_lung1(local_worker, models, lung1):
    ct = lung1[0]
    shape = ct.array.shape
    requests = _clicks(ct, positive_at=((shape[0] // 2, shape[1] // 2, shape[2] // 3), (shape[0] // 3, shape[1] // 2, shape[2] // 3)),
                       negative_at=(shape[0] // 2, shape[1] // 2, shape[2] // 2))
    served = _run(local_worker, models / "organs", requests)
    local_reference = ClickWorker()
    local = _run(local_reference, models / "organs", requests)
    local_reference.stop()
    _same(served, local)


def test_a_killed_server_gives_one_error_and_the_next_click_starts_a_new_one(models, phantom):
    worker = ServerClickWorker(threads=2)
    try:
        key = ("volume", 7)
        point = dict(bundle=str(models / "organs"), device="cpu", volumeKey=key, ras=_ras(phantom[0], (16, 20, 18)), target="t")
        worker.submit("point", volume=phantom[0], **point)
        first = _drain(worker)
        assert first[0].get("error") is None and first[0]["clicks"] == 1
        old = worker._server.process
        old.kill()
        old.wait(10)
        worker.submit("point", volume=None, **point)  # the module sends no volume: it was sent before
        failed = _drain(worker)
        assert len(failed) == 1 and "click server" in failed[0]["error"]
        worker.submit("point", volume=None, **point)  # the next click: a new server, the volume sent again
        again = _drain(worker)
        assert again[0].get("error") is None and again[0]["clicks"] == 1
        assert worker._server.process.pid != old.pid
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def remote(models, tmp_path_factory):
    """``ssl3d serve`` as on a GPU machine: a token file, small limits; (address, token, process)."""
    token = "t" * 40
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(token + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "ssl3d", "serve", "--models", str(models), "--token-file", str(token_file),
                                "--max-request-mb", "1", "--max-sessions", "3", "--threads", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    ready = json.loads(process.stdout.readline())
    assert "token" not in ready, "a token read from a file is never printed"
    yield ("127.0.0.1", ready["port"]), token, process
    process.terminate()
    process.wait(10)


def _post(remote, path, header, arrays=None, token=None):
    address, good, _ = remote
    return Exchange(*address, path, good if token is None else token, header, arrays).wait(60)


def test_wrong_and_missing_tokens_get_401(remote):
    for token in ("", "x" * 40, remote[1][:-1] + "u"):
        with pytest.raises(ServerError) as refused:
            _post(remote, "/health", {}, token=token)
        assert refused.value.status == 401
    assert _post(remote, "/health", {})[0]["sessions"] >= 0


def test_bad_requests_get_one_line_errors_and_the_server_goes_on(remote, models):
    address, token, process = remote
    cases = [("/open", {"bundle": "../organs"}, None, 400), ("/open", {"bundle": "missing"}, None, 404),
             ("/point", {"session": "nope", "ras": [0, 0, 0]}, None, 404), ("/nowhere", {"session": "x"}, None, 404),
             ("/volume", {"session": "x"}, {"volume": np.zeros((128, 128, 64), np.int16)}, 413)]
    for path, header, arrays, status in cases:
        with pytest.raises(ServerError) as refused:
            _post(remote, path, header, arrays)
        assert refused.value.status == status, (path, str(refused.value))
        assert "\n" not in str(refused.value)
    import socket  # a body that is not the protocol at all

    with socket.create_connection(address) as raw:
        raw.sendall(b"POST /open HTTP/1.1\r\nX-SSL3D-Token: " + token.encode() + b"\r\nContent-Length: 5\r\n\r\nhello")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert process.poll() is None and _post(remote, "/health", {})[0]["sessions"] >= 0


def test_two_sessions_on_one_server_never_see_each_others_masks(remote, models, phantom):
    address, token, _ = remote
    small = Volume(phantom[0].array[:, :24, :24].copy(), phantom[0].ijk_to_ras)  # under the 1 MiB limit
    one, two = (ServerClickWorker(url=f"http://{address[0]}:{address[1]}", token=token) for _ in range(2))
    try:
        for worker, kji, key in ((one, (16, 12, 12), "a"), (two, (8, 4, 4), "b")):
            worker.submit("point", bundle=str(models / "organs"), device="cpu", volume=small, volumeKey=key,
                          ras=_ras(small, kji), target=key)
        a, b = _drain(one)[0], _drain(two)[0]
        assert a.get("error") is None and b.get("error") is None and a["clicks"] == b["clicks"] == 1
        assert one._session != two._session
        reference = ClickWorker()
        for kji, key in (((16, 12, 12), "a"), ((8, 4, 4), "b")):
            reference.submit("restart")
            reference.submit("point", bundle=str(models / "organs"), device="cpu", volume=small, volumeKey=key,
                             ras=_ras(small, kji), target=key)
        expected = _drain(reference)
        reference.stop()
        for got, want in ((a, expected[0]), (b, expected[1])):
            assert got["box"] == want["box"] and np.array_equal(got["values"], want["values"])
        with pytest.raises(ServerError) as full:  # the session bound: 3 at once
            for _ in range(3):
                _post(remote, "/open", {"bundle": "organs", "device": "cpu"})
        assert full.value.status == 503
    finally:
        one.stop()
        two.stop()


def test_the_client_imports_without_torch():
    code = ("import sys, ssl3d.serve.client; heavy = [m for m in ('torch', 'monai', 'SimpleITK', 'scipy') if m in sys.modules];"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_serve_refuses_a_missing_models_folder_and_a_short_token(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([sys.executable, "-m", "ssl3d", "serve", "--models", str(tmp_path / "none")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error:") and "Traceback" not in missing.stderr
    (tmp_path / "token").write_text("short")
    short = subprocess.run([sys.executable, "-m", "ssl3d", "serve", "--models", str(tmp_path), "--token-file", str(tmp_path / "token")],
                           capture_output=True, text=True, env=env, timeout=60)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr


# ------------------------------------------------------------------------------- a host that holds the GIL
HOST_C = r"""
#include <Python.h>
#include <unistd.h>
/* As PythonQt inside Slicer: the main thread holds the GIL all the time, and Python runs only when the
   host calls it, here a tick() every 250 ms (Slicer's module timer). usleep keeps the GIL. */
int main(void) {
    Py_Initialize();
    PyObject *module = PyImport_ImportModule("gil_driver");
    PyObject *tick = module ? PyObject_GetAttrString(module, "tick") : NULL;
    if (!tick) { PyErr_Print(); return 2; }
    for (;;) {
        PyObject *done = PyObject_CallNoArgs(tick);
        if (!done) { PyErr_Print(); return 3; }
        int finished = PyObject_IsTrue(done);
        Py_DECREF(done);
        if (finished) break;
        usleep(250000);
    }
    return Py_FinalizeEx() < 0 ? 4 : 0;
}
"""

DRIVER = r"""
import json, os, time
import numpy as np
from ssl3d.io import Volume

CLICKS, LIMIT_S = 3, 20.0
phantom = np.load(os.environ["GIL_PHANTOM"])
volume = Volume(phantom["image"], phantom["affine"])
if os.environ["GIL_MODE"] == "server":
    from ssl3d.serve.client import ServerClickWorker
    worker = ServerClickWorker(url=os.environ["GIL_URL"], token=os.environ["GIL_TOKEN"])
    bundle = os.environ["GIL_BUNDLE"]
else:  # today's thread worker, with a stand-in session that computes in pure Python (0.1 s a click)
    from ssl3d.infer.click_worker import ClickWorker

    class Busy:
        def __init__(self, bundle, device):
            self.clicks, self.last_changed, self.label_name = [], None, None
        def set_volume(self, v):
            self.mask = Volume(np.zeros(v.shape, np.uint8), v.ijk_to_ras)
        def add_point(self, ras, positive=True):
            deadline = time.process_time() + 0.1
            while time.process_time() < deadline:
                sum(range(1000))
            self.clicks.append(ras)

    worker, bundle = ClickWorker(Busy), "busy"
seconds, started, number = [], None, 0
worker.submit("warm", bundle=bundle, device="cpu")  # as the module does when its click section opens
warming = time.monotonic()

def tick():
    global started, number, warming
    if warming is not None:
        for result in worker.take():
            raise RuntimeError(result.get("error") or f"warm-up gave a result: {result}")
        if worker.pending() and time.monotonic() - warming < 120:
            return False
        warming = None
    for result in worker.take():
        if result.get("error"):
            raise RuntimeError(result["error"])
        seconds.append(time.monotonic() - started)
        started = None
    if started is not None and time.monotonic() - started > LIMIT_S:
        seconds.append(time.monotonic() - started)
        started = None
        number = CLICKS
    if started is None:
        if number >= CLICKS:
            worker.stop()
            with open(os.environ["GIL_OUT"], "w") as out:
                json.dump(seconds, out)
            return True
        k, j, i = 16, 20 + 4 * number, 18
        ras = tuple(float(v) for v in (volume.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])
        worker.submit("point", bundle=bundle, device="cpu", volume=volume if number == 0 else None, volumeKey="v",
                      ras=ras, positive=True, target="t")
        started, number = time.monotonic(), number + 1
    return False
"""


@pytest.fixture(scope="module")
def gil_host(tmp_path_factory):
    """The host program, built with this machine's gcc against this Python (skipped when it cannot be built)."""
    import sysconfig

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the GIL-holding host cannot be built")
    folder = tmp_path_factory.mktemp("gil_host")
    (folder / "host.c").write_text(HOST_C)
    (folder / "gil_driver.py").write_text(DRIVER)
    include, libdir = sysconfig.get_paths()["include"], sysconfig.get_config_var("LIBDIR")
    library = "python" + (sysconfig.get_config_var("LDVERSION") or sysconfig.get_python_version())
    build = subprocess.run(["gcc", str(folder / "host.c"), f"-I{include}", f"-L{libdir}", f"-l{library}",
                            f"-Wl,-rpath,{libdir}", "-o", str(folder / "host")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"the GIL-holding host does not build here: {build.stderr.strip().splitlines()[-1:]}")
    return folder


def _hosted_clicks(gil_host, phantom, env) -> list:
    import site
    import sysconfig

    np.savez(gil_host / "phantom.npz", image=phantom[0].array, affine=phantom[0].ijk_to_ras)
    out = gil_host / f"seconds-{env['GIL_MODE']}.json"
    paths = [str(gil_host), str(ROOT), sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    run = subprocess.run([str(gil_host / "host")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(paths), "GIL_OUT": str(out),
                              "GIL_PHANTOM": str(gil_host / "phantom.npz"), "PYTHONHOME": sys.base_prefix})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(out.read_text())


def test_clicks_through_the_server_finish_in_a_host_that_holds_the_gil(gil_host, remote, phantom):
    (host, port), token, _ = remote
    seconds = _hosted_clicks(gil_host, phantom, {"GIL_MODE": "server", "GIL_URL": f"http://{host}:{port}", "GIL_TOKEN": token,
                                                 "GIL_BUNDLE": str(Path("models") / "organs")})
    assert len(seconds) == 3 and max(seconds) < 2.0, f"click seconds through the server: {seconds}"


def test_todays_thread_worker_starves_in_a_host_that_holds_the_gil(gil_host, phantom):
    seconds = _hosted_clicks(gil_host, phantom, {"GIL_MODE": "thread"})
    assert max(seconds) > 2.0, f"the thread worker was expected to starve, its clicks took {seconds} s"
