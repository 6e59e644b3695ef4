"""ssl3d.cancel_watch in this process: SIGTERM and a cancel file naming the job become Cancelled in the main thread."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ssl3d.cancel_watch import POLL_S, CancelWatch
from ssl3d.errors import Cancelled

LIMIT_S = 2.0  # a command stops within this after a cancel


def busy_until_cancelled(watch: CancelWatch, seconds: float = 10.0) -> float:
    """Pure-Python work that never calls check(); returns how long it ran before Cancelled."""
    started = time.monotonic()
    with pytest.raises(Cancelled):
        while time.monotonic() - started < seconds:
            sum(range(1000))
    return time.monotonic() - started


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_is_raised_where_the_main_thread_is():
    previous = signal.getsignal(signal.SIGTERM)
    with CancelWatch() as watch:
        later(0.1, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert busy_until_cancelled(watch) < LIMIT_S
        assert "SIGTERM" in watch.reason
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored


def test_the_jobs_cancel_file_stops_the_work_and_a_stale_one_does_not(tmp_path):
    cancel = tmp_path / "cancel"
    cancel.write_text("cancelled at 1.0 by job old-token\n")  # left by an earlier job of this folder
    with CancelWatch(cancel, token="new-token") as watch:
        time.sleep(3 * POLL_S)
        assert not watch.requested
        later(0.1, lambda: cancel.write_text("cancelled at 2.0 by job new-token\n"))
        assert busy_until_cancelled(watch) < LIMIT_S
    assert cancel.is_file()  # nobody deletes it


def test_a_cancel_inside_a_shielded_block_is_raised_after_it(tmp_path):
    cancel = tmp_path / "cancel"
    with CancelWatch(cancel, token="t") as watch:
        with watch.shielded():
            cancel.write_text("t")
            deadline = time.monotonic() + LIMIT_S
            while not watch.requested and time.monotonic() < deadline:
                sum(range(1000))  # not cut although the cancel has arrived
            assert watch.requested
        assert busy_until_cancelled(watch) < LIMIT_S


def test_a_cancel_during_the_final_step_changes_nothing(tmp_path):
    cancel = tmp_path / "cancel"
    with CancelWatch(cancel) as watch:
        watch.check()
        with watch.final():
            cancel.write_text("")
            time.sleep(3 * POLL_S)
            sum(range(10**6))
        time.sleep(3 * POLL_S)
        watch.check()
    assert watch.requested


def test_outside_the_main_thread_the_watch_only_records(tmp_path):
    cancel, seen = tmp_path / "cancel", {}

    def work() -> None:
        with CancelWatch(cancel) as watch:
            cancel.write_text("")
            deadline = time.monotonic() + LIMIT_S
            while not watch.requested and time.monotonic() < deadline:
                time.sleep(0.01)
            try:
                watch.check()
            except Cancelled as exc:
                seen["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5 * LIMIT_S)
    assert isinstance(seen.get("error"), Cancelled)


def test_from_environment_reads_what_the_job_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL3D_CANCEL_FILE", str(tmp_path / "cancel"))
    monkeypatch.setenv("SSL3D_JOB_TOKEN", "abc")
    watch = CancelWatch.from_environment()
    assert (watch.cancel_file, watch.token) == (tmp_path / "cancel", "abc")
    monkeypatch.delenv("SSL3D_CANCEL_FILE")
    assert CancelWatch.from_environment().cancel_file is None


def test_poll_sees_the_cancel_file_at_once(tmp_path):
    """The training loop asks between steps: a file written during a step counts at the next one, not POLL_S later."""
    cancel = tmp_path / "cancel"
    with CancelWatch(cancel, interrupt=False) as watch:
        assert not watch.poll()
        cancel.write_text("")
        assert watch.poll() and watch.reason == f"cancel file {cancel}"
