"""The run-folder lock: one live owner per run folder (issue 15 item 2; Slicer's Cancel race)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ssl3d.errors import InputError
from ssl3d.train.run_lock import LOCK_FILE, STALE_S, RunFolderBusy, RunLock, live_owner


def _write_lock(run_dir, pid: int, host: str, started: float, age_s: float = 0.0) -> None:
    path = run_dir / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host, "started": started, "token": "other"}), encoding="utf-8")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_a_second_owner_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    first = RunLock.acquire(run)
    try:
        with pytest.raises(RunFolderBusy) as caught:
            RunLock.acquire(run)
        assert isinstance(caught.value, InputError)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(caught.value)
    finally:
        first.release()
    assert not (run / LOCK_FILE).exists()
    RunLock.acquire(run).release()  # free again after the release


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    _write_lock(tmp_path, int(done.stdout), socket.gethostname(), time.time() - 5)
    assert live_owner(tmp_path) is None
    lock = RunLock.acquire(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_another_hosts_lock_is_live_until_its_heartbeat_stops(tmp_path):
    _write_lock(tmp_path, 1, "another-host.invalid", time.time() - 3600, age_s=1.0)
    with pytest.raises(RunFolderBusy, match="another-host.invalid"):
        RunLock.acquire(tmp_path)
    _write_lock(tmp_path, 1, "another-host.invalid", time.time() - 3600, age_s=STALE_S + 5)
    RunLock.acquire(tmp_path).release()
