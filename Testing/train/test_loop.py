"""The training loop: exact resume after SIGKILL, cancel, atomic checkpoints, DDP equality, schedules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl3d.config import apply_overrides, get_preset, save_config
from ssl3d.demo import write_phantom_dataset
from ssl3d.train.checkpoint import load_checkpoint, save_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("seg"), range(4), shape=(24, 32, 32))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    preset = apply_overrides(
        get_preset("seg-cpu"),
        {"train.steps": 10, "train.checkpoint_every": 3, "train.log_every": 1, "train.val_every": 0, "train.batch_size": 2,
         "network.kwargs": {"channels": [4, 8, 16]}, "preprocess.resize": [16, 16, 16],
         # SGD: updates proportional to the gradients, so DDP's different summation order stays within float noise
         "optim.name": "sgd", "optim.lr": 0.01},
    )
    return save_config(preset, tmp_path_factory.mktemp("cfg") / "preset.yaml")


def _finetune(dataset, config, out, *extra, wait=True):
    command = [sys.executable, "-m", "ssl3d", "finetune", "--data", str(dataset), "--out", str(out), "--config", str(config), "--val-fraction", "0", *extra]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    return proc


def _losses(run: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"]["total"] for e in events if e["event"] == "progress"}


def _wait_for_step(run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "events.jsonl").exists() and max(_losses(run) or {0: 0}) >= step:
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


def test_resume_after_sigkill_reproduces_losses_exactly(tmp_path, dataset, config):
    _finetune(dataset, config, tmp_path / "full")
    reference = _losses(tmp_path / "full")
    assert sorted(reference) == list(range(1, 11))
    proc = _finetune(dataset, config, tmp_path / "killed", wait=False)
    _wait_for_step(tmp_path / "killed", 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed_from = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"]
    assert 3 <= resumed_from < 10
    _finetune(dataset, config, tmp_path / "killed", "--resume")
    after = _losses(tmp_path / "killed")
    for step in range(resumed_from + 1, 11):
        assert after[step] == reference[step], step  # bit-exact on CPU
    final_a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["modules"]["model"]
    final_b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["modules"]["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.parametrize("how", ["file", "signal"])
def test_cancel_leaves_a_valid_checkpoint_and_resume_finishes(tmp_path, dataset, config, how):
    from ssl3d.jobs import Job

    run = tmp_path / "run"
    args = ["finetune", "--data", str(dataset), "--out", str(run), "--config", str(config), "--val-fraction", "0", "--steps", "400"]
    job = Job.engine(args, run_dir=run, env={"OMP_NUM_THREADS": "1"})
    _wait_for_step(run, 2)
    if how == "file":
        (run / "cancel").write_text("")
    else:
        os.kill(job.pid, signal.SIGTERM)
    code = job.wait(timeout=120)
    assert code == 130, job.error_message
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 2 <= state["step"] < 400
    assert any(e["event"] == "checkpoint" for e in job.events)
    resumed = _finetune(dataset, config, run, "--resume", "--steps", str(state["step"] + 2))
    assert resumed.returncode == 0
    assert (run / "bundle" / "model.safetensors").is_file()


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")
    real_save = torch.save

    def broken_save(obj, stream):
        stream.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_previous_run_is_not_overwritten(tmp_path, dataset, config):
    _finetune(dataset, config, tmp_path / "run", "--steps", "2")
    proc = _finetune(dataset, config, tmp_path / "run", "--steps", "2", wait=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "pass --resume" in err


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, dataset, config):
    steps = ["--steps", "3"]
    _finetune(dataset, config, tmp_path / "one", *steps, "--batch-size", "4")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ssl3d", "finetune",
               "--data", str(dataset), "--out", str(tmp_path / "two"), "--config", str(config), "--val-fraction", "0", *steps,
               "--batch-size", "2", "--cache-dir", str(tmp_path / "two-cache")]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-1000:]  # a rank's own message comes first
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["modules"]["model"]
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["modules"]["model"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    first = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert first["step"] == 3


def test_schedules():
    from ssl3d.config import ScheduleConfig
    from ssl3d.train.optim import lr_factor

    cosine = ScheduleConfig("warmup_cosine", warmup_steps=10)
    assert lr_factor(0, cosine, 110) == 0 and lr_factor(5, cosine, 110) == 0.5 and lr_factor(10, cosine, 110) == 1.0
    assert lr_factor(60, cosine, 110) == pytest.approx(0.5)
    step = ScheduleConfig("step", step_size=40_000, gamma=0.5)
    assert [lr_factor(s, step, 120_000) for s in (0, 39_999, 40_000, 80_000)] == [1, 1, 0.5, 0.25]
    poly = ScheduleConfig("poly", power=0.8, interval=250)
    assert lr_factor(249, poly, 6000) == 1.0 and lr_factor(250, poly, 6000) == pytest.approx((1 - 250 / 6000) ** 0.8)
