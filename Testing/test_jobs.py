"""ssl3d.jobs against a real subprocess: helpers/fake_job.py stands in for a training job."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from ssl3d.errors import Cancelled, JobError
from ssl3d.jobs import CANCELLED_EXIT_CODE, Job, follow_run

FAKE_JOB = Path(__file__).parent / "helpers" / "fake_job.py"
TIMEOUT = 20.0


def fake_job(*args: str, **kwargs) -> Job:
    return Job.start([sys.executable, str(FAKE_JOB), *args], **kwargs)


def wait_for_event(job: Job, kind: str, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in job.events if e["event"] == kind]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no {kind} event within {timeout} s; events: {job.events}, stderr: {job.stderr}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def test_events_stream_in_order_to_callback():
    received, threads = [], set()

    def on_event(event: dict) -> None:
        received.append(event)
        threads.add(threading.current_thread())

    job = fake_job("--steps", "5", on_event=on_event)
    assert job.wait(TIMEOUT) == 0
    assert [e["event"] for e in received] == ["start"] + ["progress"] * 5 + ["done"]
    assert [e["step"] for e in received if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert received == job.events
    assert threading.main_thread() not in threads  # the reader thread calls back
    assert job.error_message is None and not job.cancelled and not job.running
    assert job.raise_for_status() is job
    assert job.name == "fake_job.py"


def test_plain_stdout_lines_become_log_events():
    job = fake_job("--steps", "2", "--noise")
    job.wait(TIMEOUT)
    kinds = [(e["event"], e.get("message", e.get("step"))) for e in job.events]
    assert kinds[1:5] == [("log", "plain line before step 1"), ("progress", 1), ("log", "plain line before step 2"), ("progress", 2)]


def test_user_error_reports_the_error_event_message():
    job = fake_job("--fail", "user")
    assert job.wait(TIMEOUT) == 2
    message = "data/case_001.nii.gz: not a 3D volume (shape (4, 4))."
    assert job.error_message == message
    with pytest.raises(JobError, match=r"case_001\.nii\.gz: not a 3D volume"):
        job.raise_for_status()


def test_error_line_on_stderr_without_event():
    code = "import sys; print('usage: ssl3d', file=sys.stderr); print('ssl3d: error: unknown preset vox', file=sys.stderr); sys.exit(2)"
    job = Job.start([sys.executable, "-c", code])
    assert job.wait(TIMEOUT) == 2
    assert job.error_message == "unknown preset vox"


def test_crash_reports_one_line_with_exit_code():
    job = fake_job("--fail", "crash")
    assert job.wait(TIMEOUT) == 1
    assert job.error_message == "fake_job.py failed with exit code 1: ZeroDivisionError: integer division or modulo by zero"
    assert "Traceback" in job.stderr
    with pytest.raises(JobError, match="exit code 1"):
        job.raise_for_status()


def test_cancel_by_file_saves_checkpoint(tmp_path):
    # the job ignores the stop signal here, so only the cancel file can stop it
    job = fake_job("--steps", "10000", "--run-dir", str(tmp_path), "--ignore-term", run_dir=tmp_path)
    wait_for_event(job, "progress")
    job.cancel(grace_s=TIMEOUT)
    assert job.wait(TIMEOUT) == CANCELLED_EXIT_CODE
    assert job.cancelled and (tmp_path / "cancel").is_file()
    assert (tmp_path / "checkpoint.json").is_file()
    assert [e["event"] for e in job.events][-2:] == ["checkpoint", "log"]  # checkpoint, then "cancelled at step"
    assert job.state == "cancelled" and job.last_checkpoint == str(tmp_path / "checkpoint.json")
    assert [e["event"] for e in follow_run(tmp_path).poll()] == [e["event"] for e in job.events]
    with pytest.raises(Cancelled, match="cancelled"):
        job.raise_for_status()


def test_cancel_by_signal_saves_checkpoint(tmp_path):
    # no run_dir for the Job: no cancel file, the signal alone stops the job
    job = fake_job("--steps", "10000", "--run-dir", str(tmp_path))
    wait_for_event(job, "progress")
    started = time.monotonic()
    job.cancel(grace_s=TIMEOUT)
    assert time.monotonic() - started < 1.0  # returns at once
    assert job.wait(TIMEOUT) == CANCELLED_EXIT_CODE
    assert job.cancelled and not (tmp_path / "cancel").exists()
    assert (tmp_path / "checkpoint.json").is_file()


# A job that ignores the stop signal and starts a child in a session of its own (as a worker pool or a
# torchrun agent may): killing the job's process group misses the child, only the psutil tree kill gets it.
TREE_JOB = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_cancel_kills_the_tree_of_a_job_that_ignores_the_signal():
    job = Job.start([sys.executable, "-c", TREE_JOB])
    child_pid = int(wait_for_event(job, "log")["message"])
    try:
        assert not gone(child_pid)
        if os.name != "nt":
            assert os.getsid(child_pid) != os.getsid(job.pid)  # out of reach of the job's process group
        started = time.monotonic()
        job.cancel(grace_s=0.5, wait=True)
        assert time.monotonic() - started >= 0.5
        assert gone(child_pid) and gone(job.pid)
        assert job.returncode == (1 if os.name == "nt" else -signal.SIGKILL)
        assert job.cancelled and "cancelled" in job.error_message
    finally:
        if not gone(child_pid):
            psutil.Process(child_pid).kill()


def test_leaving_the_with_block_cancels(tmp_path):
    with fake_job("--steps", "10000", "--run-dir", str(tmp_path), run_dir=tmp_path) as job:
        wait_for_event(job, "progress")
    assert job.returncode == CANCELLED_EXIT_CODE and job.cancelled


def test_cancel_after_exit_changes_nothing():
    job = fake_job("--steps", "1")
    job.wait(TIMEOUT)
    job.cancel()
    assert not job.cancelled and job.returncode == 0


def test_failing_callback_does_not_stop_the_reader():
    def on_event(event: dict) -> None:
        raise RuntimeError("broken widget")

    job = fake_job("--steps", "3", on_event=on_event)
    assert job.wait(TIMEOUT) == 0
    assert job.events[-1]["event"] == "done"


def test_missing_program_raises_job_error(tmp_path):
    with pytest.raises(JobError, match="cannot start"):
        Job.start([str(tmp_path / "no-such-program")])


@pytest.mark.skipif(importlib.util.find_spec("ssl3d.__main__") is None, reason="the ssl3d CLI is not there yet")
def test_engine_info():
    job = Job.engine(["info"])
    assert job.wait(60) == 0, job.error_message
    assert job.name == "ssl3d info"


@pytest.mark.skipif(importlib.util.find_spec("ssl3d.__main__") is None, reason="the ssl3d CLI is not there yet")
def test_job_board_one_job_per_role_events_then_finished(tmp_path):
    from ssl3d.jobs import JobBoard

    board = JobBoard()
    job = board.start("info", ["info"])
    with pytest.raises(RuntimeError, match="already running"):
        board.start("info", ["info"])
    events, finished, deadline = [], None, time.monotonic() + 60
    while finished is None and time.monotonic() < deadline:  # as a GUI timer polls
        events += board.take_events("info")
        finished = board.finished("info")
        time.sleep(0.02)
    assert finished is job and job.returncode == 0 and not board.running("info")
    assert events and events == job.events  # every event, in order, through the queue
    assert board.finished("info") is None and board.take_events("info") == []  # handed over once
    with pytest.raises(JobError):
        board.run(["segment", "--model", str(tmp_path / "missing"), "--input", "x.nii.gz", "--output", "y.nii.gz"])
    board.cancel_all()  # nothing running: nothing to do


# ------------------------------------------------------------------------------ a launcher like PythonSlicer
LAUNCHER = Path(__file__).parent / "helpers" / "fake_launcher.py"


def launched_fake_job(*args: str, **kwargs) -> Job:
    """fake_job.py run by a launcher that forwards no signal (as PythonSlicer runs python-real)."""
    return Job.start([sys.executable, str(LAUNCHER), sys.executable, str(FAKE_JOB), *args], **kwargs)


def engine_pid(job: Job) -> int:
    pid = wait_for_event(job, "start")["pid"]
    assert pid != job.pid  # the engine is the launcher's child
    return pid


def test_state_of_jobs_that_end_by_themselves():
    done, failed = fake_job("--steps", "1"), fake_job("--fail", "user")
    done.wait(TIMEOUT), failed.wait(TIMEOUT)
    assert (done.state, failed.state) == ("done", "failed")


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_cancel_through_a_launcher_reaches_the_engine(tmp_path):
    # no run folder for the Job: only the signal can stop the engine, as for a segment job before this issue
    job = launched_fake_job("--steps", "10000", "--run-dir", str(tmp_path))
    engine = engine_pid(job)
    wait_for_event(job, "progress")
    job.cancel(grace_s=TIMEOUT)
    assert job.state == "cancelling"  # not "cancelled" before the checkpoint is written
    job.wait(TIMEOUT)
    assert gone(engine) and gone(job.pid)
    assert (tmp_path / "checkpoint.json").is_file()  # the engine itself got SIGTERM and saved
    assert job.state == "cancelled"  # the launcher died of SIGTERM, the engine's own stop is what counts
    assert job.last_checkpoint == str(tmp_path / "checkpoint.json")


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_poll_reports_the_end_only_when_the_launchers_child_has_exited(tmp_path, monkeypatch):
    import ssl3d.jobs

    monkeypatch.setattr(ssl3d.jobs, "_DRAIN_S", 0.3)  # the old poll gave up waiting for the pipes after this
    job = launched_fake_job("--steps", "10000", "--run-dir", str(tmp_path))
    engine = engine_pid(job)
    try:
        os.kill(job.pid, signal.SIGKILL)  # the launcher alone dies
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert job.poll() is None and job.running, "the engine still runs"
            time.sleep(0.05)
        assert not gone(engine)
        job.cancel(grace_s=TIMEOUT, wait=True)  # found and stopped although its launcher is gone
        assert gone(engine) and job.state == "cancelled" and (tmp_path / "checkpoint.json").is_file()
    finally:
        if not gone(engine):
            psutil.Process(engine).kill()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_kill_after_the_grace_period_kills_the_launchers_child():
    job = launched_fake_job("--steps", "10000", "--ignore-term")
    engine = engine_pid(job)
    try:
        job.cancel(grace_s=0.5, wait=True)
        assert gone(engine) and gone(job.pid)
        assert job.state == "killed"  # no checkpoint: the module must not say "cancelled, resumable"
    finally:
        if not gone(engine):
            psutil.Process(engine).kill()


def test_the_cancel_file_names_the_job_and_the_job_knows_its_file(tmp_path):
    from ssl3d.cancel_watch import ENV_CANCEL_FILE, ENV_JOB_TOKEN

    code = "import os; print(os.environ['%s'], os.environ['%s'], flush=True)" % (ENV_CANCEL_FILE, ENV_JOB_TOKEN)
    job = Job.start([sys.executable, "-c", code], run_dir=tmp_path)
    assert job.wait(TIMEOUT) == 0
    assert job.events[0]["message"] == f"{tmp_path / 'cancel'} {job.token}"
    slow = fake_job("--steps", "10000", "--ignore-term", run_dir=tmp_path / "b")
    slow.cancel(grace_s=0, wait=True)
    assert slow.token in (tmp_path / "b" / "cancel").read_text() and slow.token != job.token


# ------------------------------------------------------------------------------ run folders: lock and re-attach
def test_attach_follows_a_run_after_a_reload_and_cancels_it(tmp_path):
    from ssl3d.jobs import JobBoard, live_job

    first = launched_fake_job("--steps", "10000", "--interval", "0.05", "--run-dir", str(tmp_path), "--lock")
    engine = engine_pid(first)
    wait_for_event(first, "progress")
    assert live_job(tmp_path)["pid"] == engine  # the engine owns the folder, not the launcher
    try:
        board = JobBoard()  # the reloaded module's board
        job = board.attach("pretrain", tmp_path)
        with pytest.raises(RuntimeError, match="already running"):
            board.attach("pretrain", tmp_path)
        events, deadline = [], time.monotonic() + TIMEOUT
        while sum(e["event"] == "progress" for e in events) < 3 and time.monotonic() < deadline:
            events += board.take_events("pretrain")
            time.sleep(0.05)
        assert events[0]["event"] == "start" and board.running("pretrain") and job.state == "running"
        board.cancel("pretrain")
        finished = None
        while finished is None and time.monotonic() < deadline:  # as the module's timer
            events += board.take_events("pretrain")
            finished = board.finished("pretrain")
            time.sleep(0.05)
        assert finished is job and gone(engine)
        assert job.state == "cancelled" and job.returncode == CANCELLED_EXIT_CODE
        assert job.last_checkpoint == str(tmp_path / "checkpoint.json") and events[-1]["event"] == "log"
        assert live_job(tmp_path) is None
        with pytest.raises(JobError, match="no running job"):
            board.attach("pretrain", tmp_path)
    finally:
        first.cancel(grace_s=0, wait=True)


def test_detach_all_forgets_without_cancelling(tmp_path):
    from ssl3d.jobs import JobBoard

    job = fake_job("--steps", "10000", "--run-dir", str(tmp_path), "--lock", run_dir=tmp_path)
    try:
        wait_for_event(job, "progress")
        board = JobBoard()
        board.attach("pretrain", tmp_path)
        kept = board.detach_all()
        assert kept == {"pretrain": str(tmp_path)}  # what the module keeps over a reload
        assert not board.running("pretrain") and board.job("pretrain") is None
        time.sleep(0.3)
        assert job.running and not (tmp_path / "cancel").exists()
        assert board.detach_all() == {}
        again = JobBoard().reattach({**kept, "segment": str(tmp_path / "ended")})
        assert list(again) == ["pretrain"] and again["pretrain"].running
    finally:
        job.cancel(grace_s=0, wait=True)
