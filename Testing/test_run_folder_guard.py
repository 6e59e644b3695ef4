"""A training run never takes the folder of a run whose process still lives, on start and on --resume, and
leaves that run's ``cancel`` file alone (Slicer's Start pressed again while the cancelled run still saves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from ssl3d.train.run_lock import RunLock; RunLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)"


@pytest.fixture
def old_run(tmp_path):
    """A live process that owns ``tmp_path/run`` (the old job, still writing its checkpoint)."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        (run / "cancel").write_text("cancelled at 1.0 by job old\n")
        yield run, holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_training_refuses_a_live_runs_folder_and_keeps_its_cancel_file(old_run, resume):
    import torch

    from ssl3d.config import get_preset
    from ssl3d.train.loop import train
    from ssl3d.train.run_lock import RunFolderBusy

    run, pid = old_run
    if resume:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"the old run's checkpoint")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(RunFolderBusy, match=rf"pid {pid} on"):
        train(object(), get_preset("vf-v1-cpu"), run, torch.device("cpu"), resume=resume)  # refused before the task is used
    assert sorted(p.name for p in run.iterdir()) == before  # cancel file kept, nothing written or removed
    assert (run / "cancel").read_text() == "cancelled at 1.0 by job old\n"


def test_job_board_refuses_it_before_starting_a_process(old_run):
    from ssl3d.jobs import JobBoard, live_job
    from ssl3d.train.run_lock import RunFolderBusy

    run, pid = old_run
    assert live_job(run)["pid"] == pid
    board = JobBoard()
    with pytest.raises(RunFolderBusy, match=rf"pid {pid} on"):
        board.start("pretrain", ["pretrain", "--out", str(run)], run_dir=run)
    assert board.job("pretrain") is None and (run / "cancel").is_file()
