"""The training loop: exact resume after SIGKILL, cancel, atomic checkpoints, DDP equality, schedules,
best-checkpoint selection, TensorBoard scalars, no partial run folder after a user error."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl3d.cli import main as cli_main
from ssl3d.config import apply_overrides, get_preset, save_config
from ssl3d.data.phantoms import write_phantom_dataset
from ssl3d.events import read_events
from ssl3d.train.checkpoint import load_checkpoint, remove_stale_temporaries, restore_rank_rng, rng_state, save_checkpoint
from ssl3d.train.loop import Task, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("seg"), range(4), shape=(24, 32, 32))


def _config(folder: Path, **overrides) -> Path:
    preset = apply_overrides(
        get_preset("seg-cpu"),
        {"train.steps": 10, "train.checkpoint_every": 3, "train.log_every": 1, "train.val_every": 0, "train.batch_size": 2,
         "network.kwargs": {"channels": [4, 8, 16]}, "preprocess.resize": [16, 16, 16],
         # SGD: updates proportional to the gradients, so DDP's different summation order stays within float noise
         "optim.name": "sgd", "optim.lr": 0.01, **overrides},
    )
    return save_config(preset, folder / "preset.yaml")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return _config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def rare_checkpoints(tmp_path_factory):
    """Checkpoints only at the end: a last.pt after a cancel can only come from the cancel."""
    return _config(tmp_path_factory.mktemp("cfg-rare"), **{"train.checkpoint_every": 1000})


def _finetune(dataset, config, out, *extra, wait=True):
    command = [sys.executable, "-m", "ssl3d", "finetune", "--data", str(dataset), "--out", str(out), "--config", str(config), "--val-fraction", "0", *extra]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    return proc


def _losses(run: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"]["total"] for e in events if e["event"] == "progress" and "loss" in e}


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


@pytest.mark.parametrize("how", ["file", "SIGTERM", "SIGINT"])
def test_cancel_saves_the_current_step_and_resume_finishes(tmp_path, dataset, rare_checkpoints, how):
    from ssl3d.jobs import Job

    run = tmp_path / "run"
    args = ["finetune", "--data", str(dataset), "--out", str(run), "--config", str(rare_checkpoints), "--val-fraction", "0", "--steps", "400"]
    job = Job.engine(args, run_dir=run, env={"OMP_NUM_THREADS": "1"})
    _wait_for_step(run, 2)
    if how == "file":
        (run / "cancel").write_text("")
    else:
        os.kill(job.pid, getattr(signal, how))  # SIGINT: what Ctrl-C sends
    code = job.wait(timeout=120)
    assert code == 130, job.error_message
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    checkpoints = [e for e in job.events if e["event"] == "checkpoint"]
    progress = [e for e in job.events if e["event"] == "progress"]
    assert 2 <= state["step"] < 400
    assert checkpoints[-1]["step"] == state["step"] == progress[-1]["step"]  # saved at the cancel, not before
    logs = [e["message"] for e in job.events if e["event"] == "log"]
    assert logs[-1] == f"cancelled at step {state['step']}; resume with --resume"
    if how != "file":
        return  # resuming does not depend on how the run was cancelled
    resumed = _finetune(dataset, rare_checkpoints, run, "--resume", "--steps", str(state["step"] + 2))
    assert resumed.returncode == 0
    assert (run / "bundle" / "model.safetensors").is_file()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals to the own process")
def test_first_ctrl_c_asks_for_a_checkpoint_the_second_aborts(tmp_path):
    from ssl3d.cancel_watch import CancelWatch

    before = signal.getsignal(signal.SIGINT)
    with CancelWatch(tmp_path / "cancel", interrupt=False, ctrl_c=True) as watch:  # the training loop's watch
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert watch.requested and "SIGINT" in watch.reason
        with pytest.raises(KeyboardInterrupt), watch.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is before


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


def _save_forever(path: Path, done_fd: int) -> None:
    """Child: save ever newer 32 MB states; after each save write its step to ``done_fd``, then save the next."""
    torch.set_num_threads(1)
    weights = torch.ones(8 * 2**20)
    for step in range(1, 200):
        save_checkpoint({"step": step, "w": weights}, path)
        weights.fill_(step + 1)
        os.write(done_fd, f"{step}\n".encode())
    os._exit(0)


def _partial_writes(folder: Path) -> list[Path]:
    """save_checkpoint's temporary files that already hold some bytes."""
    found = []
    for path in folder.glob(".last.pt-*.tmp"):
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            if path.stat().st_size > 0:
                found.append(path)
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="forks a child and SIGKILLs it")
def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path):
    import multiprocessing

    save_checkpoint({"step": 0}, tmp_path / "warm-up.pt")  # torch.save's lazy imports done before the fork
    path, size, truncated = tmp_path / "last.pt", 0, []
    for _ in range(3):  # a kill that falls after the write completed proves nothing: try again
        read_fd, write_fd = os.pipe()
        child = multiprocessing.get_context("fork").Process(target=_save_forever, args=(path, write_fd), daemon=True)
        child.start()
        os.close(write_fd)
        with os.fdopen(read_fd) as done:
            done.readline()  # the first save is complete
            size = path.stat().st_size
            deadline = time.monotonic() + 10
            while not _partial_writes(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.001)
            os.kill(child.pid, signal.SIGKILL)  # the next save is writing
            child.join(10)
            saved = [int(step) for step in done.read().split()] or [1]
        leftovers = sorted(tmp_path.glob(".last.pt-*.tmp"))
        truncated = [p for p in leftovers if 0 < p.stat().st_size < size]
        if truncated:
            break
        remove_stale_temporaries(tmp_path)
    assert truncated, "the child was never killed in the middle of a write"
    state = load_checkpoint(path)
    assert state["step"] == saved[-1]  # the last save that completed, whole
    assert torch.equal(state["w"], torch.full((8 * 2**20,), float(saved[-1])))
    assert remove_stale_temporaries(tmp_path) == leftovers and not list(tmp_path.glob("*.tmp"))


def test_a_previous_run_is_not_overwritten(tmp_path, dataset, config):
    _finetune(dataset, config, tmp_path / "run", "--steps", "2")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    cache = record["cache"]  # written after the cache is built
    assert cache["dtype"] == "float16" and cache["bytes"] > 0 and cache["entries"] == 4 and cache["skipped"] == 0
    assert Path(cache["dir"]).is_dir() and record["config"]["name"] == "seg-cpu" and record["device"] == "cpu"
    proc = _finetune(dataset, config, tmp_path / "run", "--steps", "2", wait=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "pass --resume" in err


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, dataset, config):
    steps = ["--steps", "3"]
    _finetune(dataset, config, tmp_path / "one", *steps, "--batch-size", "4")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ssl3d", "finetune",
               "--data", str(dataset), "--out", str(tmp_path / "two"), "--config", str(config), "--val-fraction", "0", *steps,
               "--batch-size", "2", "--cache-dir", str(tmp_path / "two-cache"), "--cache-workers", "2"]  # 2 ranks x 2 workers
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-1000:]  # a rank's own message comes first
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["modules"]["model"]
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["modules"]["model"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    first = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert first["step"] == 3
    rng = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # each rank's own generator
    # each rank built its shard of the cache with 2 workers: the files are the one-process build's, byte for byte
    serial, sharded = (next(p for p in (tmp_path / sub).iterdir() if p.is_dir()) for sub in ("one/cache", "two-cache"))
    files = lambda folder: {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".npy", ".json")}  # noqa: E731
    assert serial.name == sharded.name and files(serial) == files(sharded) and len(files(serial)) == 12


def test_a_cache_build_longer_than_the_process_group_timeout_still_starts(tmp_path, dataset, config):
    """Rank 0 building alone while rank 1 waited at a barrier died on gloo's timeout; now each builds its
    shard and waits on the file system: a 2 s timeout, a build of several seconds, and training starts."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ssl3d", "finetune",
               "--data", str(dataset), "--out", str(tmp_path / "run"), "--config", str(config), "--val-fraction", "0", "--steps", "1",
               "--batch-size", "1", "--spacing", "0.2,0.2,0.2", "--cache-workers", "1"]  # 4 volumes resampled ~8x: seconds each
    result = subprocess.run(command, env={**ENV, "SSL3D_DIST_TIMEOUT_S": "2"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[:2000] + "\n...\n" + result.stderr[-1000:]
    events = read_events(tmp_path / "run" / "events.jsonl")
    cache = [e for e in events if e["event"] == "progress" and str(e.get("message", "")).startswith("cache:")]
    assert cache[-1]["time"] - events[0]["time"] > 2  # rank 0's shard alone outlasted the timeout
    assert cache and cache[-1]["message"] == "cache: 2 of 2 volumes preprocessed"  # rank 0's shard of the 4
    assert events[-1]["event"] == "done"


def test_each_rank_restores_its_own_generator_and_old_checkpoints_load():
    states = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        states.append(rng_state())
    expected = torch.rand(3, generator=torch.Generator().set_state(states[1]["torch"]))
    assert restore_rank_rng(states, rank=1, world_size=2)
    assert torch.equal(torch.rand(3), expected)
    assert restore_rank_rng(states[0], rank=0, world_size=1)  # single-process checkpoints of the old format
    assert torch.equal(torch.get_rng_state(), states[0]["torch"])
    assert not restore_rank_rng(states, rank=0, world_size=3)  # another number of processes: re-seeded by the loop
    assert torch.equal(torch.get_rng_state(), states[0]["torch"])  # nothing was set


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


# ---------------------------------------------------------------------------------------------- in-process loop


class ScriptedTask(Task):
    """A linear model on random batches whose validation returns the given scores in turn."""

    name = "scripted"

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.exported = list(scores), None

    def setup(self, ctx) -> None:
        self.model = torch.nn.Linear(3, 1)

    def modules(self) -> dict:
        return {"model": self.model}

    def batch(self, ctx, step, indices):
        return torch.randn(len(indices), 3, generator=ctx.generator(step, indices[0]))

    def losses(self, ctx, batch, step) -> dict:
        return {"total": self.model(batch).pow(2).mean()}

    def validate(self, ctx, step):
        return {"score": self.scores.pop(0)} if self.scores else None

    def export(self, ctx, checkpoint: dict) -> dict:
        self.exported = checkpoint
        return {}


@pytest.mark.parametrize("scores, chosen", [([0.2, 0.9, 0.5], 4), ([], 6)])
def test_best_checkpoint_is_exported_and_scalars_reach_tensorboard(tmp_path, one_thread, scores, chosen):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    preset = apply_overrides(get_preset("seg-cpu"), {"train.steps": 6, "train.val_every": 2, "train.log_every": 1,
                                                     "train.checkpoint_every": 1000, "optim.name": "sgd"})
    stale = tmp_path / "checkpoints" / ".last.pt-killed.tmp"  # a save killed in an earlier attempt
    stale.parent.mkdir()
    stale.write_bytes(b"partial")
    task = ScriptedTask(scores)
    outputs = train(task, preset, tmp_path, torch.device("cpu"))
    assert not stale.exists()
    assert task.exported["step"] == chosen  # the bundle comes from best.pt when validation scores, else from last.pt
    assert outputs["checkpoint"].name == ("best.pt" if scores else "last.pt")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6
    if scores:
        assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["best"] == {"score": 0.9, "step": 4}
        assert [(e["step"], e["value"]) for e in read_events(tmp_path / "events.jsonl") if e["event"] == "metric"] == [(2, 0.2), (4, 0.9), (6, 0.5)]
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("loss/total")] == [1, 2, 3, 4, 5, 6]
    assert len(board.Scalars("lr")) == 6
    if scores:
        assert [round(e.value, 3) for e in board.Scalars("val/score")] == scores
    else:
        assert "val/score" not in board.Tags()["scalars"]


def test_warnings_are_shown_above_the_progress_bar(tmp_path, monkeypatch):
    import io

    from ssl3d.train.logger import RunLogger

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    logger = RunLogger(tmp_path, None, True, 10, tensorboard=False)
    try:
        assert logger._text._bar is not None
        logger.emit("log", message="skipped unreadable volume a.nii.gz: truncated", level="warning")  # as VolumeCache does
        logger.log("resumed from step 3")  # info: events only
    finally:
        logger.close()
    shown = terminal.getvalue()
    assert "warning: skipped unreadable volume a.nii.gz: truncated\n" in shown and "resumed" not in shown


# ---------------------------------------------------------------------------------------------- user errors


def test_a_user_error_leaves_no_partial_run_folder(tmp_path, capsys, config):
    out = tmp_path / "new" / "run"
    assert cli_main(["finetune", "--data", str(tmp_path / "nonexistent"), "--out", str(out), "--config", str(config)]) == 2
    assert "nonexistent: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder the user made: what was there stays, what the run added goes
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert cli_main(["finetune", "--data", str(tmp_path / "nonexistent"), "--out", str(kept), "--config", str(config)]) == 2
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_preset_and_config_must_agree(tmp_path, capsys, config):
    args = ["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(config)]
    assert cli_main([*args, "--preset", "interactive-cpu"]) == 2
    err = capsys.readouterr().err
    assert "--preset interactive-cpu disagrees with --config" in err and "'seg-cpu'" in err
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    save_config(get_preset("seg-cpu"), tmp_path / "run" / "config.yaml")  # a run to resume
    assert cli_main([*args[:-2], "--resume", "--preset", "interactive-cpu"]) == 2
    assert "disagrees with the run to resume" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys, dataset, config):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli_main(["finetune", "--data", str(dataset), "--out", str(notes), "--config", str(config), "--val-fraction", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out must be a folder" in err and str(notes) in err
    assert notes.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


class _SetupCounter(ScriptedTask):
    """Counts ``setup`` calls: a run that cannot start must stop before it (setup builds the cache)."""

    def __init__(self) -> None:
        super().__init__([])
        self.setups = 0

    def setup(self, ctx) -> None:
        self.setups += 1
        super().setup(ctx)


class _SlowStepTask(ScriptedTask):
    """Steps of ~``seconds`` that change a buffer (+1 per step, as BatchNorm statistics change) and draw from
    the global RNG (as dropout does) before their slow part."""

    def __init__(self, seconds: float) -> None:
        super().__init__([])
        self.seconds = seconds

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.model.register_buffer("running", torch.zeros(3))

    def losses(self, ctx, batch, step) -> dict:
        self.model.running.add_(1.0)
        torch.rand(3)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return super().losses(ctx, batch, step)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals to the own process")
def test_a_cancel_cuts_a_slow_step_and_the_checkpoint_is_the_last_completed_step(tmp_path, one_thread):
    """A step of 4 s, SIGTERM 1 s into the second: Cancelled within 2 s, last.pt = the state after step 1
    (buffer and RNG put back), and a resume gives what an uninterrupted run gives."""
    from ssl3d.errors import Cancelled

    preset = apply_overrides(_tiny_preset(3), {"train.log_every": 1})
    train(_SlowStepTask(0.05), preset, tmp_path / "reference", torch.device("cpu"))
    train(_SlowStepTask(0.05), apply_overrides(preset, {"train.steps": 1}), tmp_path / "one", torch.device("cpu"))
    task = _SlowStepTask(4.0)
    events = tmp_path / "run" / "events.jsonl"
    sent = []

    def cancel_in_step_2() -> None:
        while not any(e["event"] == "progress" for e in (read_events(events) if events.exists() else [])):
            time.sleep(0.05)
        time.sleep(1.0)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    import threading

    threading.Thread(target=cancel_in_step_2, daemon=True).start()
    with pytest.raises(Cancelled, match="cancelled at step 1"):
        train(task, preset, tmp_path / "run", torch.device("cpu"))
    assert time.monotonic() - sent[0] < 2.0
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert state["step"] == 1 and state["modules"]["model"]["running"].tolist() == [1.0] * 3  # the cut step: dropped
    assert torch.equal(state["rng"][0]["torch"], one["rng"][0]["torch"])  # the generator as after step 1
    assert all(torch.equal(state["modules"]["model"][k], one["modules"]["model"][k]) for k in ("weight", "bias"))
    train(_SlowStepTask(0.05), preset, tmp_path / "run", torch.device("cpu"), resume=True)
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    reference = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    for key, value in reference["modules"]["model"].items():
        assert torch.equal(final["modules"]["model"][key], value), key
    assert torch.equal(final["rng"][0]["torch"], reference["rng"][0]["torch"])
    assert [e["message"] for e in read_events(events) if e["event"] == "log"][0] == "cancelled at step 1; resume with --resume"


def test_a_cut_step_restores_the_rng_and_every_non_optimised_tensor(one_thread):
    from ssl3d.train.loop import _StepStart

    task = _SlowStepTask(0.0)
    task.setup(None)
    params = list(task.model.parameters())
    start = _StepStart(task, params, step=7)
    expected, weight = torch.rand(4), task.model.weight.detach().clone()
    with torch.no_grad():
        task.model.running.add_(1.0)
        task.model.weight.add_(1.0)  # an optimised parameter: the optimizer has not touched it in a cut step
    start.restore()
    assert torch.equal(torch.rand(4), expected) and torch.equal(task.model.running, torch.zeros(3))
    assert torch.equal(task.model.weight, weight + 1) and start.step == 7 and len(start.tensors) == 1


def _slow_cache_task(cases, cache_dir):
    from ssl3d.data.datasets import VolumeCache
    from ssl3d.data.preprocess import PreprocessConfig

    class CachingTask(ScriptedTask):
        def setup(self, ctx) -> None:
            VolumeCache(cases, PreprocessConfig(orientation=None, intensity="none"), cache_dir).build()
            super().setup(ctx)

    return CachingTask([])


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals to the own process")
@pytest.mark.parametrize("how", ["SIGTERM", "file"])
def test_a_cancel_during_the_cache_build_stops_it_and_keeps_the_built_entries(tmp_path, dataset, monkeypatch, how):
    import threading

    import ssl3d.data.datasets as datasets
    from ssl3d.data.datasets import find_cases
    from ssl3d.errors import Cancelled

    real = datasets.preprocess

    def slow(*args, **kwargs):
        time.sleep(0.6)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "preprocess", slow)
    cases = find_cases(dataset, labels=False)
    run = tmp_path / "run"
    sent = []

    def cancel() -> None:
        time.sleep(1.0)
        sent.append(time.monotonic())
        if how == "file":
            (run / "cancel").write_text("")
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=cancel, daemon=True).start()
    with pytest.raises(Cancelled, match="cancelled before training started"):
        train(_slow_cache_task(cases, tmp_path / "cache"), _tiny_preset(), run, torch.device("cpu"))
    assert time.monotonic() - sent[0] < 2.0
    built = sorted((tmp_path / "cache").glob("*/*.json"))
    assert 1 <= len(built) < len(cases)  # the entries made before the cancel stay, the rest were never made
    assert not list((tmp_path / "cache").glob("*/.*tmp*"))
    logs = [e["message"] for e in read_events(run / "events.jsonl") if e["event"] == "log"]
    assert logs[-1].startswith("cancelled before training started") and not (run / "checkpoints" / "last.pt").exists()
    monkeypatch.setattr(datasets, "preprocess", real)
    (run / "cancel").unlink(missing_ok=True)
    train(_slow_cache_task(cases, tmp_path / "cache"), _tiny_preset(), run, torch.device("cpu"))  # starts again, reusing them


def _tiny_preset(steps: int = 2):
    return apply_overrides(get_preset("seg-cpu"), {"train.steps": steps, "train.val_every": 0, "train.checkpoint_every": 1000, "optim.name": "sgd"})


def test_resume_without_a_checkpoint_fails_before_setup(tmp_path):
    from ssl3d.errors import InputError

    task = _SetupCounter()
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train(task, _tiny_preset(), tmp_path / "run", torch.device("cpu"), resume=True)
    assert task.setups == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["file", "previous run"])
def test_every_rank_raises_rank_0s_out_error(tmp_path, monkeypatch, case):
    """Two ranks played in turn: rank 1 gets what rank 0 sent through the gather, so it must stop with the same
    error before setup (else it would wait in a collective for a rank 0 that has left)."""
    import ssl3d.train.loop as loop
    from ssl3d.errors import InputError
    from ssl3d.train.distributed import DistInfo

    out = tmp_path / "out"
    if case == "file":
        out.write_text("mine")
    else:
        save_checkpoint({"step": 1}, out / "checkpoints" / "last.pt")
    sent: list = []

    def play(rank: int) -> tuple[str, _SetupCounter]:
        calls = iter(range(100))
        monkeypatch.setattr(loop, "init_distributed", lambda device: (DistInfo(rank, 2, rank), device))
        monkeypatch.setattr(loop, "gather_objects", lambda value, info: (sent.append(value) or [value, value]) if rank == 0
                            else [sent[next(calls)], value])
        task = _SetupCounter()
        with pytest.raises(InputError) as error:
            train(task, _tiny_preset(), out, torch.device("cpu"))
        return str(error.value), task

    message0, task0 = play(0)
    message1, task1 = play(1)
    assert message1 == message0 and ("--out must be a folder" if case == "file" else "pass --resume") in message0
    assert task0.setups == task1.setups == 0
    if case == "file":
        assert out.read_text() == "mine"
    else:
        assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "last.pt"]  # nothing written, nothing removed


def test_run_json_keeps_its_first_fields_when_the_cache_line_is_added(tmp_path):
    class Cached(ScriptedTask):
        def setup(self, ctx) -> None:
            super().setup(ctx)
            self.cache_info = {"dir": str(tmp_path / "cache"), "bytes": 10, "dtype": "float16", "entries": 1, "skipped": 0, "extra": 1}

    train(Cached([]), _tiny_preset(), tmp_path / "run", torch.device("cpu"), run_info={"device": "cpu", "note": "kept"})
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"schema", "command", "config", "device", "note", "cache"} <= set(record)
    assert record["note"] == "kept" and record["config"]["name"] == "seg-cpu" and record["command"]
    assert record["cache"] == {"dir": str(tmp_path / "cache"), "bytes": 10, "dtype": "float16", "entries": 1, "skipped": 0}


def test_stale_temporaries_are_named_as_save_checkpoint_names_them(tmp_path, monkeypatch):
    import tempfile

    made: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        handle, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        return handle, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    save_checkpoint({"step": 1}, tmp_path / "best.pt")
    left = Path(made[0])
    left.write_bytes(b"partial")  # as a killed save leaves it
    (tmp_path / "notes.tmp").write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "notes.tmp"]


def test_off_a_terminal_training_prints_a_line_every_30_s(tmp_path, monkeypatch):
    """A cluster log or nohup file gets the first step, then a line per LINE_EVERY_S, and the last step."""
    import io

    import ssl3d.progress as progress
    from ssl3d.train.logger import RunLogger

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    logger = RunLogger(tmp_path, None, True, 100, tensorboard=False)
    try:
        for step in range(1, 101):
            clock[0] += 1.0  # a step a second
            logger.progress(step, {"total": 1.0 / step}, 1e-3, 2, 0)
    finally:
        logger.close()
    lines = log.getvalue().splitlines()
    assert [line.split(" steps")[0] for line in lines] == ["train: 1/100", "train: 31/100", "train: 61/100", "train: 91/100", "train: 100/100"]
    assert lines[1] == "train: 31/100 steps, 31 s, about 1 min 09 s left, total 0.0323"
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    logger = RunLogger(tmp_path / "b", "-", True, 10, tensorboard=False)  # --events -: a program reads the events
    logger.progress(10, {"total": 1.0}, 1e-3, 2, 0)
    logger.close()
    assert quiet.getvalue() == ""


def test_a_cancel_of_this_job_sent_before_it_started_is_kept_an_earlier_ones_is_not(tmp_path, monkeypatch):
    from ssl3d.errors import Cancelled

    run = tmp_path / "run"
    run.mkdir()
    (run / "cancel").write_text("cancelled at 1.0 by job old-token\n")  # an earlier job of this folder
    monkeypatch.setenv("SSL3D_JOB_TOKEN", "this-job")
    train(ScriptedTask([]), _tiny_preset(), run, torch.device("cpu"))  # runs to its end
    (run / "checkpoints" / "last.pt").unlink()
    (run / "cancel").write_text("cancelled at 2.0 by job this-job\n")  # Slicer cancelled before the engine got here
    with pytest.raises(Cancelled, match="cancelled (before training started|at step 0)"):
        train(ScriptedTask([]), _tiny_preset(), run, torch.device("cpu"))
