"""The one training loop, built from named phases, and the :class:`Task` hooks methods plug into.

Per step::

    batch  = task.batch(ctx, step, indices)        # generated on the device from cached volumes
    losses = task.losses(ctx, batch, step)          # dict of terms, "total" is optimised
    backward (AMP scaler)
    task.after_forward(ctx, step)                   # e.g. an EMA update (before the optimizer step)
    clip -> optimizer.step -> scheduler.step
    every log_every: progress event; every val_every: task.validate -> metric events, best checkpoint;
    every checkpoint_every: last.pt; cancel (SIGTERM, Ctrl-C or a ``cancel`` file) -> last.pt and Cancelled

Cancel (:class:`~ssl3d.cancel_watch.CancelWatch`): in one process a cancel stops the cache build of
``setup`` (the entries built so far stay) and, in a step slower than :data:`IN_STEP_CANCEL_S`, the batch,
forward and backward passes: the partial step is dropped (what it changed outside the optimizer, such as
BatchNorm statistics, an EMA teacher and the RNG, is put back) and ``last.pt`` holds the last completed
step, so a resume is exact. From the optimizer update to the end of a step nothing is cut. Under DDP the
cancel is agreed on by all ranks between steps.

Randomness: each sample of each step draws from its own generator seeded by (seed, step, global index)
(:meth:`TrainContext.generator`), so a resumed run, or the same global batch split over several
processes, sees exactly the same samples; the global torch RNG (dropout) of every rank is saved in
checkpoints.

A user error (:class:`~ssl3d.errors.InputError`) before the first checkpoint removes what the run created
in its folder (never what was there before), so a failed start leaves nothing partial behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..cancel_watch import ENV_JOB_TOKEN, CancelWatch, cancel_file_names_token
from ..config import Preset, to_dict
from ..errors import Cancelled, ConfigError, InputError
from ..events import write_run_json
from .checkpoint import load_checkpoint, remove_stale_temporaries, restore_rank_rng, rng_state, save_checkpoint, set_rng_state, state_bytes
from .distributed import DistInfo, all_reduce_flag, cleanup_distributed, gather_objects, init_distributed
from .logger import RunLogger
from .optim import build_optimizer, build_scheduler
from .run_lock import RunFolderBusy, RunLock

__all__ = ["Task", "TrainContext", "train", "CANCEL_FILE"]

CANCEL_FILE = "cancel"
IN_STEP_CANCEL_S = 2.0  # a step slower than this may be cut by a cancel (one process)


@dataclass
class TrainContext:
    """What a task sees of the run."""

    preset: Preset
    run_dir: Path
    device: torch.device
    dist: DistInfo
    logger: RunLogger
    seed: int
    state: dict = field(default_factory=dict)  # the task's own state, saved in checkpoints
    cache_workers: int | None = None  # processes per rank that build the cache (None: as many as fit)
    find_unused: bool = False  # DDP: some parameters get no gradient (e.g. PCT-Net's unused heads)

    def generator(self, step: int, index: int, salt: int = 0) -> torch.Generator:
        """A CPU generator for sample ``index`` (global) of ``step``: same draws whatever the world size."""
        seed = int(np.random.SeedSequence([self.seed, step, index, salt]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP-wrap a trained module when distributed (call once per module, in ``setup``)."""
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=self.find_unused)

    def build_cache(self, cache):
        """Build a :class:`~ssl3d.data.datasets.VolumeCache` for this run and return it built.

        One process: with ``cache_workers`` processes. DDP: every rank builds its shard, then waits for the
        others' entries on the file system (no collective waits for a build: see
        :mod:`ssl3d.data.cache_build`), then all agree in one collective and read the whole cache.
        """
        from ..data.cache_build import clear_failure_notes, leave_failure_note, wait_for_entries

        shown = self.logger.text_progress("cache", "volume")

        last = [0.0]

        def progress(done: int, total: int) -> None:  # events at most once a second: 160k volumes are not 160k events
            now = time.monotonic()
            if now - last[0] >= 1.0 or done == total:
                last[0] = now
                eta = (now - started) / done * (total - done) if done else None
                self.logger.emit("progress", phase="cache", step=done, total=total, eta_s=None if eta is None else round(eta, 1),
                                 message=f"cache: {done} of {total} volumes preprocessed")
            shown.update(done, total)

        started = time.monotonic()
        with shown:
            if not self.dist.enabled:
                return cache.build(self.cache_workers, progress)
            if self.dist.is_main:
                clear_failure_notes(cache.dir)  # an earlier run's
            gather_objects(None, self.dist)  # the notes are cleared before any rank builds
            try:
                cache.build_shard(self.dist.rank, self.dist.world_size, self.cache_workers, progress if self.dist.is_main else None)
                wait_for_entries(cache)
            except Exception as exc:
                leave_failure_note(cache.dir, self.dist.rank, f"rank {self.dist.rank}: {exc}")
                raise
            gather_objects(None, self.dist)  # every entry exists: one quick collective, then all read them
            return cache.build(1)

    @property
    def amp(self) -> bool:
        return bool(self.preset.train.amp and self.device.type == "cuda")


class Task:
    """The hooks a method implements. ``modules`` are checkpointed; ``parameters`` are optimised."""

    name = "task"
    cache_info: dict | None = None  # VolumeCache.info() of the training data, set in setup (goes into run.json)

    def setup(self, ctx: TrainContext) -> None:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.modules()["model"].parameters()

    def batch(self, ctx: TrainContext, step: int, indices: range) -> Any:
        raise NotImplementedError

    def losses(self, ctx: TrainContext, batch: Any, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_forward(self, ctx: TrainContext, step: int) -> None:
        """After the backward pass, before the optimizer step (an EMA of the pre-step weights); never cut by a cancel."""

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        """Metrics dict; its ``score`` (higher is better) selects the best checkpoint."""
        return None

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        """Write the run's outputs (a bundle) from a checkpoint's modules; returns {name: path}."""
        return {}


# ---------------------------------------------------------------------------------------------- phases


class _StepStart:
    """What a step changes outside the optimizer (BatchNorm statistics, an EMA teacher: every module tensor
    that is not an optimised parameter) and the global RNG, taken before a step a cancel may cut."""

    def __init__(self, task: Task, params: list[nn.Parameter], step: int) -> None:
        optimised = {p.data_ptr() for p in params}
        self.step = step
        self.rng = rng_state()
        with torch.no_grad():  # kept in host memory: an EMA teacher's copy must not take the GPU's room
            self.tensors = [(t, t.to("cpu", copy=True)) for module in task.modules().values() for t in module.state_dict().values()
                            if torch.is_tensor(t) and t.data_ptr() not in optimised]

    def restore(self) -> None:
        """Put the step's start back: the partial step is dropped."""
        with torch.no_grad():
            for live, saved in self.tensors:
                live.copy_(saved)
        set_rng_state(self.rng)


def _out_problem(run_dir: Path, resume: bool) -> str | None:
    """Why ``--out`` cannot take this run (checked on rank 0 before anything is written), or None."""
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        return f"{run_dir}: --out must be a folder, but this is a file."
    if not resume and (run_dir / "checkpoints" / "last.pt").exists():
        return f"{run_dir}: holds a previous run; pass --resume to continue it or choose another --out."
    return None


def _prepare_run(preset: Preset, run_dir: Path, events: str | None, dist: DistInfo, extra: dict) -> RunLogger:
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        token = os.environ.get(ENV_JOB_TOKEN)  # a cancel of this very job, sent before it got here, stays
        if not (token and cancel_file_names_token(run_dir / CANCEL_FILE, token)):
            (run_dir / CANCEL_FILE).unlink(missing_ok=True)  # an earlier job's
        remove_stale_temporaries(run_dir / "checkpoints")  # left by a save that was killed mid-write
        from ..config import save_config

        save_config(preset, run_dir / "config.yaml")
        write_run_json(run_dir, to_dict(preset), **extra)
    return RunLogger(run_dir, events, dist.is_main, preset.train.steps)


def _snapshot(run_dir: Path) -> tuple[Path, set[str] | None] | None:
    """What exists before the run: (the topmost folder it will create, None) or (run_dir, its entries);
    None when ``run_dir`` is something other than a folder (the run may remove nothing then)."""
    if run_dir.is_dir():
        return run_dir, {entry.name for entry in run_dir.iterdir()}
    if os.path.lexists(run_dir):
        return None
    top = run_dir
    while not os.path.lexists(top.parent):
        top = top.parent
    return top, None


def _remove_partial(run_dir: Path, snapshot: tuple[Path, set[str] | None]) -> None:
    """After a user error: remove what this run created, unless a checkpoint makes the run resumable."""
    if (run_dir / "checkpoints" / "last.pt").exists():
        return
    top, before = snapshot
    if before is None:
        created = [top] if top.is_dir() and not top.is_symlink() else []  # only a folder the run made
    else:
        created = [entry for entry in run_dir.iterdir() if entry.name not in before] if run_dir.is_dir() else []
    for path in created:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _agree_to_start(preset: Preset, dist: DistInfo, problem: str | None) -> None:
    """All ranks learn rank 0's ``--out`` problem and must train with one preset (on several nodes each
    resolves its own command line): one collective, and every rank raises the same error or none."""
    digest = hashlib.sha256(json.dumps(to_dict(preset), sort_keys=True, default=str).encode()).hexdigest()
    found = gather_objects((digest, problem), dist)
    if found[0][1] is not None:
        raise InputError(found[0][1])
    differ = [rank for rank, (d, _) in enumerate(found) if d != found[0][0]]
    if differ:
        raise ConfigError(
            f"ranks {differ} resolved other settings than rank 0 (preset {preset.name!r}); give every node the same "
            "command line and, with --resume, the same run folder (--out) on shared storage."
        )


def _lock_run(run_dir: Path, dist: DistInfo) -> RunLock | None:
    """Rank 0 takes the run folder's lock (one live owner, see run_lock.py); its refusal reaches every rank."""
    lock, problem = None, None
    if dist.is_main:
        try:
            lock = RunLock.acquire(run_dir)
        except RunFolderBusy as exc:
            problem = str(exc)
    found = gather_objects(problem, dist)
    if found[0] is not None:
        raise RunFolderBusy(found[0])
    return lock


def _check_resumable(path: Path, dist: DistInfo) -> None:
    """Every rank loads the ``last.pt`` that rank 0 wrote: decide together, so no rank waits for one that failed."""
    found = gather_objects((path.is_file(), socket.gethostname()), dist)
    if not found[0][0]:
        raise InputError(f"{path}: no checkpoint to resume from.")
    missing = [f"rank {rank} on {host}" for rank, (ok, host) in enumerate(found) if not ok]
    if missing:
        raise InputError(
            f"{path}: not found by {', '.join(missing)}; --resume on several nodes needs the run folder (--out) "
            "on storage that every node sees (a shared file system)."
        )


def _write_cache_line(task: Task, ctx: TrainContext) -> None:
    """run.json again, now with where the preprocessed volumes are cached and how big they are; every field
    written at the start is kept."""
    cache = getattr(task, "cache_info", None)
    if ctx.dist.is_main and cache:
        keys = ("dir", "bytes", "dtype", "entries", "skipped")
        record = json.loads((ctx.run_dir / "run.json").read_text(encoding="utf-8"))
        record.pop("schema", None)  # written afresh
        config, command = record.pop("config"), record.pop("command")
        write_run_json(ctx.run_dir, config, command, **{**record, "cache": {k: cache.get(k) for k in keys}})


_OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}  # tensors per parameter in the optimizer's state (at most)


def _check_free_space(task: Task, ctx: TrainContext, params: list[nn.Parameter]) -> None:
    """Refuse to start (every rank, with rank 0's numbers) when two checkpoints and a bundle will not fit in
    the run folder: the modules' tensors, plus the optimizer's per-parameter state, twice, plus the modules."""
    from ..disk_space import DiskSpaceError, human_bytes, require

    problem = None
    if ctx.dist.is_main:
        modules = sum(state_bytes(module.state_dict()) for module in task.modules().values())
        optimizer = _OPTIMIZER_STATES.get(ctx.preset.optim.name, 2) * sum(p.numel() * p.element_size() for p in params)
        try:
            require(ctx.run_dir, 2 * (modules + optimizer) + modules,
                    f"this run's two checkpoints ({human_bytes(modules + optimizer)} each) and its bundle")
        except DiskSpaceError as exc:
            problem = str(exc)
    found = gather_objects(problem, ctx.dist)
    if found[0] is not None:
        raise DiskSpaceError(found[0])


def _checkpoint_state(task: Task, ctx: TrainContext, step: int, optimizer, scheduler, scaler, best: dict, rng: list) -> dict:
    return {
        "step": step,
        "modules": {name: module.state_dict() for name, module in task.modules().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "task": ctx.state,
        "best": best,
    }


def _restore(task: Task, ctx: TrainContext, path: Path, optimizer, scheduler, scaler) -> tuple[int, dict]:
    state = load_checkpoint(path, map_location=ctx.device)
    for name, module in task.modules().items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    step = int(state["step"])
    if not restore_rank_rng(state["rng"], ctx.dist.rank, ctx.dist.world_size):
        saved = 1 if isinstance(state["rng"], dict) else len(state["rng"])
        seed = int(np.random.SeedSequence([ctx.seed, step, ctx.dist.rank]).generate_state(1, np.uint64)[0] >> 1)
        torch.manual_seed(seed)
        ctx.logger.log(f"{path} holds the random generators of {saved} process(es), this run has {ctx.dist.world_size}: "
                       "they are seeded afresh, so this resume is not bit-exact", level="warning")
    ctx.state.update(state.get("task", {}))
    return step, state.get("best", {})


def _rank_indices(step_batch: int, dist: DistInfo) -> range:
    """This rank's slice of the global batch (global sample indices)."""
    return range(dist.rank * step_batch, (dist.rank + 1) * step_batch)


def _optimizer_update(optimizer, scaler, params: list, clip: float | None) -> None:
    """Clip (unscaled) gradients, step and update the AMP scaler; the backward pass came before."""
    if clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(optimizer)
    scaler.update()


def train(
    task: Task,
    preset: Preset,
    run_dir: str | Path,
    device: torch.device,
    events: str | None = None,
    resume: bool = False,
    run_info: dict | None = None,
    cache_workers: int | None = None,
) -> dict[str, Path]:
    """Run a training job to the end (or to a cancel, which raises :class:`Cancelled` after a checkpoint)."""
    run_dir = Path(run_dir)
    dist, device = init_distributed(device)
    torch.manual_seed(preset.train.seed + dist.rank)
    snapshot = lock = None  # snapshot: taken only once --out is known to be usable: a failed check removes nothing
    logger, together = None, False  # together: every rank reached the same point, leave the process group in step
    try:
        _agree_to_start(preset, dist, _out_problem(run_dir, resume) if dist.is_main else None)
        if resume:  # before setup builds the cache
            _check_resumable(run_dir / "checkpoints" / "last.pt", dist)
        # left to right: the snapshot is taken before the lock creates anything; a refusal leaves it None
        snapshot, lock = (_snapshot(run_dir) if dist.is_main else None), _lock_run(run_dir, dist)
        logger = _prepare_run(preset, run_dir, events, dist, run_info or {})
        ctx = TrainContext(preset, run_dir, device, dist, logger, preset.train.seed, cache_workers=cache_workers)
        # one process: a cancel is raised where the main thread is (setup, a slow step); DDP: agreed between steps
        with CancelWatch(run_dir / CANCEL_FILE, interrupt=not dist.enabled, ctrl_c=True) as watch:
            outputs = _run(task, ctx, resume, watch)
        together = True
        return outputs
    except Cancelled as exc:
        together = True  # the cancel flag is all-reduced, so every rank raises it at the same step
        if logger is not None and not str(exc).startswith("cancelled at step"):
            exc = Cancelled(f"cancelled before training started ({exc}); the cache entries built so far are kept")
            logger.log(str(exc))  # a follower of the events learns it too
            raise exc from None
        raise
    except Exception as exc:  # any failure, not only a user error: an OSError or a bug leaves no half run folder either
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            exc = _os_error(exc)  # a read-only --cache-dir, a full disk: the user's location, not a bug
        if logger is not None:
            logger.fail(str(exc) if isinstance(exc, InputError) else f"internal error: {type(exc).__name__}: {exc}")
            logger.close()  # closed before its files are removed
            logger = None
        if lock is not None:
            lock.release()
        if snapshot is not None:
            _remove_partial(run_dir, snapshot)
        if isinstance(exc, InputError):
            raise exc from None
        raise
    finally:
        if logger is not None:
            logger.close()
        if lock is not None:
            lock.release()
        cleanup_distributed(barrier=together)


def _os_error(exc: OSError) -> InputError:
    """The file and the reason of an OSError (read-only folder, full disk, no permission) as one user error."""
    from ..disk_space import full_disk_error, is_disk_full

    if is_disk_full(exc) and exc.filename:
        return full_disk_error(exc.filename)
    where = exc.filename or "the run's files"
    return InputError(f"{where}: {exc.strerror or exc}; check that this location is writable and has free space.")


def _run(task: Task, ctx: TrainContext, resume: bool, watch: CancelWatch) -> dict[str, Path]:
    preset, logger, dist = ctx.preset, ctx.logger, ctx.dist
    task.setup(ctx)  # a cancel here stops the cache build between (or inside) volumes
    _write_cache_line(task, ctx)
    params = [p for p in task.parameters() if p.requires_grad]
    _check_free_space(task, ctx, params)
    optimizer = build_optimizer(params, preset.optim)
    scheduler = build_scheduler(optimizer, preset.schedule, preset.train.steps)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.amp)
    ckpt_dir = ctx.run_dir / "checkpoints"
    step, best = 0, {}
    if resume:
        step, best = _restore(task, ctx, ckpt_dir / "last.pt", optimizer, scheduler, scaler)
        logger.log(f"resumed from step {step}")
    logger.emit("start", step=step, total=preset.train.steps, schema=1, config={"preset": preset.name, "world_size": dist.world_size})
    start_step, local_batch = step, preset.train.batch_size
    for module in task.modules().values():
        module.train()

    def save(name: str, best: dict, every_rank: bool = True) -> None:
        """``every_rank``: all ranks call it here, so each rank's generator states go into the checkpoint."""
        rng = gather_objects(rng_state(), dist) if every_rank else [rng_state()]
        if dist.is_main:
            path = save_checkpoint(_checkpoint_state(task, ctx, step, optimizer, scheduler, scaler, best, rng), ckpt_dir / name)
            logger.emit("checkpoint", step=step, total=preset.train.steps, path=str(path))

    slow = True  # the first step's length is unknown (and often the longest)
    while step < preset.train.steps:
        start: _StepStart | None = None
        try:
            with watch.shielded():
                if all_reduce_flag(watch.poll(), dist, ctx.device):
                    raise Cancelled(watch.reason or "cancelled")
                start = _StepStart(task, params, step) if slow and not dist.enabled else None
            began = time.monotonic()
            with contextlib.nullcontext() if start is not None else watch.shielded():  # cut here, or not at all
                batch = task.batch(ctx, step, _rank_indices(local_batch, dist))
                with torch.autocast(ctx.device.type, enabled=ctx.amp):
                    losses = task.losses(ctx, batch, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["total"]).backward()
            with watch.shielded():  # the update: never cut halfway
                task.after_forward(ctx, step)
                _optimizer_update(optimizer, scaler, params, preset.train.grad_clip)
                scheduler.step()
                step += 1
                slow = time.monotonic() - began > IN_STEP_CANCEL_S
                if step % preset.train.log_every == 0 or step == preset.train.steps:
                    values = {k: float(v.detach()) for k, v in losses.items()}
                    logger.progress(step, values, optimizer.param_groups[0]["lr"], local_batch * dist.world_size, start_step)
                if preset.train.val_every and (step % preset.train.val_every == 0 or step == preset.train.steps):
                    best = _validate(task, ctx, step, best, save)
                if step % preset.train.checkpoint_every == 0 or step == preset.train.steps:
                    save("last.pt", best)
        except Cancelled:
            with watch.final():  # the checkpoint of the last completed step is written whole
                if start is not None and start.step == step:
                    start.restore()  # cut inside the step: drop it
                optimizer.zero_grad(set_to_none=True)
                save("last.pt", best)
                message = f"cancelled at step {step}; resume with --resume"
                logger.log(message)  # a follower of the events learns it too
            raise Cancelled(message) from None
    with watch.final():  # every step is done: a cancel now changes nothing
        return _finish(task, ctx, best, ckpt_dir)


def _validate(task: Task, ctx: TrainContext, step: int, best: dict, save) -> dict:
    modules = task.modules().values()
    for module in modules:
        module.eval()
    with torch.no_grad():
        metrics = task.validate(ctx, step)
    for module in modules:
        module.train()
    if not metrics:
        return best
    for name, value in metrics.items():
        if name != "per_class" and isinstance(value, (int, float)):
            ctx.logger.metric(step, name, float(value), metrics.get("per_class") if name == "score" else None)
    score = float(metrics.get("score", float("-inf")))
    if not best or score > best.get("score", float("-inf")):
        best = {"score": score, "step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}}
        save("best.pt", best, every_rank=False)  # ranks may disagree on "better"; best.pt is never resumed
    return best


def _finish(task: Task, ctx: TrainContext, best: dict, ckpt_dir: Path) -> dict[str, Path]:
    outputs: dict[str, Path] = {}
    if ctx.dist.is_main:
        chosen = ckpt_dir / ("best.pt" if best and (ckpt_dir / "best.pt").exists() else "last.pt")
        outputs = task.export(ctx, load_checkpoint(chosen))
        outputs["checkpoint"] = chosen
    ctx.logger.emit("done", step=ctx.preset.train.steps, total=ctx.preset.train.steps, outputs={k: str(v) for k, v in outputs.items()}, best=best)
    return outputs
