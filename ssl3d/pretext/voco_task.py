"""VoCo pretraining on the one training loop: ``ssl3d pretrain --method voco``, the CLI network choices
and the import entry point (the demo's VoCo stage lives in :mod:`ssl3d.demo`).

One step (v1 "10k" recipe; v2 differs where noted)::

    batch   per volume of the batch: its own generator ctx.generator(step, index) draws (v2: a random
            window of the cached volume, then) centres, flips, rot90, shifts; the crops are cut on the
            device; v1 base crops are resized once per volume and cached
    student one forward over all B*(n_random + n_base) crops (BatchNorm over the whole step, per rank)
            (v2: Dropout1d-like whole-row dropout of the shared backbone's features before the head)
    EMA     teacher <- m*teacher + (1-m)*student (v1: backbone + head; v2: head only), parameters only
    teacher forward of the same crops without gradient (v2: the teacher head on the shared features)
    loss    voco_v1_loss (pos + neg + reg) / voco_v2_loss (intra + inter + reg)

The EMA runs inside :meth:`VoCoTask.losses`, between the student and the teacher forward pass, because
that is the official order: the teacher that scores step t already holds the pre-step student of step t.
The loop's ``after_forward`` hook comes after ``losses`` and would make the teacher lag one step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..config import NetworkConfig, Preset, look_up
from ..errors import ConfigError, DatasetError
from ..train.loop import Task, TrainContext
from .voco import voco_v1_loss, voco_v2_loss
from .voco_bundle import (
    SWIN_NAMES,
    VoCoNetwork,
    VoCoScorer,
    check_network,
    cut_window,
    pad_to_window,
    sample_spec,
    voco_bundle_meta,
)
from .voco_samples import (
    BaseCropCache,
    SampleDraws,
    VocoBatch,
    assemble_samples,
    base_crop_views,
    base_crops,
    draw_samples,
    random_cuts,
)

if TYPE_CHECKING:
    from ..data.mapped import OpenMaps

__all__ = ["VoCoTask", "apply_network_choice", "V2_PIPELINES"]

_NETWORKS = ("swin-b", "swin-l", "swin-h", "swinunetr", "cnn-small")
_CNN_DEFAULT = {"channels": [8, 16, 32, 64]}

OPEN_MAPS = 256
"""Cached volumes kept memory-mapped at a time (each map holds a file descriptor and a kernel mapping)."""

V2_PIPELINES = {
    "abdomen": "the preset's own pipeline: spacing 1.5 mm, HU -175..250, foreground crop (> 0), pad to the window",
    "chest": "spacing 1.25 x 1.25 x 5 mm, HU -1000..500, foreground crop (> 0), pad to the window",
    "resize": "spacing 1.5 mm, HU -175..250, foreground crop (> 0), pad to 64³, then the whole volume resized to the "
              "window (192 x 192 x 64, trilinear, align_corners=True)",
}
"""The voco-v2 data pipelines of ``--v2-pipeline`` (sizes scale with the window on the *-cpu preset)."""


# ----------------------------------------------------------------------------------------------- presets


def apply_network_choice(preset: Preset, network: str | None = None, feature_size: int | None = None,
                         v2_pipeline: str | None = None) -> Preset:
    """Apply ``--network``, ``--feature-size`` and ``--v2-pipeline`` to a VoCo preset (a changed copy).

    Args:
        preset: a VoCo preset.
        network: ``swin-b|swin-l|swin-h`` (SwinUNETR-v2 with feature size 48/96/192), ``swinunetr`` (feature
            size from ``feature_size`` or the preset, default 48) or ``cnn-small``; ``None`` keeps the preset's.
        feature_size: SwinUNETR feature size, a positive multiple of 12 (Swin networks only).
        v2_pipeline: ``abdomen|chest|resize`` (:data:`V2_PIPELINES`), voco-v2 presets only.

    Raises:
        ConfigError: a non-VoCo preset, an unknown name ("did you mean"), a feature size on cnn-small or one
            contradicting swin-b/l/h, a pipeline on a v1 preset, or crops the network cannot take.

    Example::

        apply_network_choice(get_preset("voco-v2"), "swin-l", None, "chest").network.kwargs["feature_size"]  # 96
    """
    if preset.voco is None:
        raise ConfigError(f"preset {preset.name!r} is not a VoCo preset; use one of the voco-* presets.")
    preset = copy.deepcopy(preset)
    if network is not None:
        preset.network = _network_record(preset.network, look_up(network, _NETWORKS, "--network"))
    elif preset.network.name in ("swin-b", "swin-l", "swin-h"):
        preset.network = _network_record(preset.network, preset.network.name)
    if feature_size is not None:
        _set_feature_size(preset, network, feature_size)
    if v2_pipeline is not None:
        preset.preprocess = _v2_preprocess(preset, look_up(v2_pipeline, list(V2_PIPELINES), "--v2-pipeline"))
    check_network(preset.network, preset.voco.crop_out)
    sample_spec(preset)
    return preset


def _network_record(current: NetworkConfig, name: str) -> NetworkConfig:
    if name == "cnn-small":
        return NetworkConfig("cnn-small", dict(current.kwargs) if current.name == "cnn-small" else dict(_CNN_DEFAULT))
    kwargs = dict(current.kwargs) if current.name in SWIN_NAMES else {}
    kwargs.pop("channels", None)
    size = SWIN_NAMES[name] or kwargs.get("feature_size", SWIN_NAMES.get(current.name) or 48)
    kwargs.setdefault("use_checkpoint", True)  # official use_checkpoint=True (memory only; numbers unchanged)
    kwargs.setdefault("merging", "v1.3")  # the official MONAI 1.3.0 token merge (ssl3d.nets.swin_merging)
    return NetworkConfig("swinunetr", {**kwargs, "feature_size": size, "use_v2": True})


def _set_feature_size(preset: Preset, network: str | None, feature_size: int) -> None:
    if preset.network.name != "swinunetr":
        raise ConfigError(f"--feature-size applies to Swin networks (swin-b, swin-l, swin-h, swinunetr); the network is {preset.network.name!r}.")
    if isinstance(feature_size, bool) or not isinstance(feature_size, int) or feature_size < 12 or feature_size % 12:
        raise ConfigError(f"--feature-size must be a positive multiple of 12 (48 = B, 96 = L, 192 = H), got {feature_size!r}.")
    fixed = SWIN_NAMES.get(network or "")
    if fixed is not None and fixed != feature_size:
        raise ConfigError(f"--feature-size {feature_size} contradicts --network {network} (feature size {fixed}); use --network swinunetr.")
    preset.network.kwargs["feature_size"] = feature_size


def _v2_preprocess(preset: Preset, pipeline: str):
    from ..config import PRESETS

    if preset.voco.version != 2 or preset.voco.window is None:
        raise ConfigError(f"--v2-pipeline applies to voco-v2 presets only; preset {preset.name!r} is VoCo v{preset.voco.version}.")
    pre = copy.deepcopy(preset.preprocess)
    window = tuple(preset.voco.window)
    scale = 192.0 / window[0]  # 1 for voco-v2; 4 for voco-v2-cpu's 48 x 48 x 16 window
    registered = PRESETS.get(preset.name)
    abdomen = copy.deepcopy(registered.preprocess) if registered is not None and registered.voco is not None else None
    if pipeline == "abdomen":
        return abdomen if abdomen is not None else pre
    if pipeline == "chest":
        pre.spacing = (1.25 * scale, 1.25 * scale, 5.0 * scale)
        pre.intensity, pre.foreground_threshold, pre.pad_to, pre.resize = "window:-1000,500", 0.0, window, None
        return pre
    # official (unlabelled abdomen and head-neck sets): the abdomen steps (spacing, window, foreground crop,
    # pad to the 64³ roi), then Resized to the window; ssl3d's preprocessing runs its steps in that order
    if abdomen is not None:
        pre = abdomen
    else:
        pre.spacing, pre.intensity, pre.foreground_threshold = (1.5 * scale,) * 3, "window:-175,250", 0.0
    roi = max(1, round(64 / scale))
    pre.pad_to, pre.resize, pre.resize_mode, pre.align_corners = (roi, roi, roi), window, "trilinear", True
    return pre


# ----------------------------------------------------------------------------------------------- task


def _to_device(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """Host crops/windows as float32 on ``device``: one pinned staging copy and one asynchronous transfer on
    CUDA; on the CPU the float32 tensors themselves (views of the cache, no copy) or their float32 copies."""
    if device.type == "cpu":
        return [t if t.dtype == torch.float32 else t.to(torch.float32) for t in tensors]
    staging = torch.empty((len(tensors), *tensors[0].shape), dtype=torch.float32, pin_memory=device.type == "cuda")
    for dst, src in zip(staging, tensors):
        dst.copy_(src)  # also float16 -> float32
    return staging.to(device, non_blocking=True)  # the host allocator keeps the buffer until the copy is done


@dataclass
class _StepBatch:
    samples: VocoBatch  # crops (B*(n_random + n_base), 1, out, out, out) and labels (B, n_random, n_base)
    dropout_seed: int  # seeds the v2 crop dropout of this step (resumable, per rank)


class VoCoTask(Task):
    """VoCo pretraining (v1 or v2 by ``preset.voco``) on cached, preprocessed volumes.

    Volumes stay host memory maps of the cache (``(1, D, H, W)`` CPU tensors; nothing is loaded up front,
    on any rank); each step moves to the device only what it cuts from: v2 the random windows, v1 the
    random crops, plus the whole volume when its base crops are not in the bounded :class:`BaseCropCache`
    (pinned host memory and asynchronous copies on CUDA). Device memory thus does not grow with the dataset.

    Args:
        data: a folder of volumes, an imagesTr folder or a datalist (images only).
        cache_dir: where the preprocessed volumes are cached.
        strict: fail on an unreadable volume instead of skipping it.
        val_crops: random crops scored by :meth:`validate` (when ``train.val_every`` > 0), drawn with a
            fixed seed from the first ``batch_size`` volumes: top-1 position accuracy is the ``score``.
        base_cache_bytes: device bytes for v1's cached base crops (16 MiB per volume for voco-v1); ``None``:
            a quarter of the free device memory at setup, at most 4 GiB, on CUDA; 2 GiB on CPU.
    """

    name = "voco"

    def __init__(self, data: str | Path, cache_dir: str | Path, strict: bool = False, val_crops: int = 64,
                 base_cache_bytes: int | None = None) -> None:
        if base_cache_bytes is not None and (isinstance(base_cache_bytes, bool) or not isinstance(base_cache_bytes, int) or base_cache_bytes < 0):
            raise ConfigError(f"base_cache_bytes must be an integer >= 0 or None, got {base_cache_bytes!r}.")
        self.data, self.cache_dir, self.strict, self.val_crops = data, Path(cache_dir), strict, val_crops
        self.base_cache_bytes = base_cache_bytes

    # -- setup

    def setup(self, ctx: TrainContext) -> None:
        preset = ctx.preset
        self.spec = sample_spec(preset)
        check_network(preset.network, self.spec.out)
        if preset.train.ema is None or not 0.0 <= preset.train.ema <= 1.0:
            raise ConfigError(f"train.ema is VoCo's teacher momentum and must be in [0, 1] (official 0.9), got {preset.train.ema!r}.")
        self.setup_samples(ctx)
        with torch.random.fork_rng(devices=[]):  # same init on every rank (the teacher is not broadcast by DDP)
            torch.manual_seed(preset.train.seed)
            self.net = VoCoNetwork(preset.network, preset.voco).to(ctx.device)
        self.student = ctx.wrap(self.net.student)
        self.scorer = VoCoScorer(self.net, self.spec, preset.voco.version, self.window, preset.train.batch_size)

    def setup_samples(self, ctx: TrainContext) -> None:
        """The sample side of :meth:`setup` (volumes, base-crop cache; no network): enough for :meth:`batch`."""
        self.spec = sample_spec(ctx.preset)
        self.window = tuple(ctx.preset.voco.window) if ctx.preset.voco.window else None
        self.volumes, self.cache_info, weights = self._load_volumes(ctx)
        # an epoch draws volume v weights[v] times (a datalist's "weight", as ConcatDataset repeats)
        self._slots = torch.repeat_interleave(torch.arange(len(self.volumes)), torch.tensor(weights))
        self.base_cache = BaseCropCache(self.spec, max_bytes=self._base_cache_budget(ctx.device))
        self._buffer: torch.Tensor | None = None
        self._order: tuple[int, torch.Tensor] | None = None

    def _base_cache_budget(self, device: torch.device) -> int:
        if self.base_cache_bytes is not None:
            return self.base_cache_bytes
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(min(free // 4, 4 << 30))  # the rest is the network's activations
        return 2 << 30

    def _load_volumes(self, ctx: TrainContext) -> tuple[OpenMaps, dict, list[int]]:
        """The cached images as read-only memory maps, ``(1, D, H, W)`` CPU tensors in the cache's dtype (at most
        :data:`OPEN_MAPS` open at a time, so a folder of 160k volumes stays within the process's limits), the
        cache's info and each volume's datalist weight."""
        from ..data.datasets import VolumeCache, find_cases
        from ..data.mapped import OpenMaps

        cache = VolumeCache(find_cases(self.data, labels=False), ctx.preset.preprocess, self.cache_dir, self.strict, ctx.logger)
        ctx.build_cache(cache)
        if not len(cache):
            raise DatasetError(f"{self.data}: no readable volume to pretrain on (see skipped.txt in {cache.dir}).")
        window = self.window
        # volumes smaller than the window are padded when their map opens (the padded copy lives while it is open)
        volumes = OpenMaps([cache.image_file(i) for i in range(len(cache))], (lambda v: pad_to_window(v, window)) if window else None, OPEN_MAPS)
        if window is None:
            shapes = [tuple(cache.image(i).shape) for i in range(len(cache))]  # one map at a time, released at once
            wrong = [(name, (1, *shape)) for name, shape in zip(cache.names, shapes) if (1, *shape) != tuple(self.spec.volume_shape)]
            if wrong:
                raise DatasetError(f"{self.data}: VoCo v1 needs preprocessed volumes (1, D, H, W) = {self.spec.volume_shape} "
                                   f"(preprocess.resize), got {wrong[0][1]} for {wrong[0][0]}.")
        return volumes, cache.info(), cache.weights

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.net.student.parameters()  # the teacher moves by EMA only

    # -- batch

    def _volume_index(self, ctx: TrainContext, step: int, index: int) -> int:
        """Epochs over a seeded permutation of the weighted slots: sample ``step * global_batch + index`` -> a volume."""
        n = len(self._slots)
        epoch, position = divmod(step * ctx.preset.train.batch_size * ctx.dist.world_size + index, n)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(n, generator=ctx.generator(epoch, 0, salt=1)))
        return int(self._slots[self._order[1][position]])

    def batch(self, ctx: TrainContext, step: int, indices: range) -> _StepBatch:
        picks, draws = [], []
        for index in indices:
            g = ctx.generator(step, index)
            v = self._volume_index(ctx, step, index)
            # v2: the window is drawn first (from the same generator), then centres and augmentations
            picks.append((v, cut_window(self.volumes[v], self.window, g) if self.window else None))
            draws.append(draw_samples(self.spec, 1, g))
        merged = SampleDraws(*(np.concatenate([getattr(d, f) for d in draws]) for f in ("centres", "labels", "flips", "rot_k", "shift")))
        if self.window is not None:
            windows = _to_device([w for _, w in picks], ctx.device)
            cuts = random_cuts(windows, merged.centres, self.spec)
            if (self.spec.depth, self.spec.base) == (self.spec.out, self.spec.out):
                bases = [base_crop_views(w, self.spec) for w in windows]  # copied once, into the batch
            else:
                bases = list(base_crops(torch.stack(list(windows)), self.spec))
        else:  # v1: only the random crops travel; the whole volume only when its base crops are not cached
            host = random_cuts([self.volumes[v] for v, _ in picks], merged.centres, self.spec)
            cuts = _to_device(host, ctx.device)
            bases = [self.base_cache.get(v, lambda v=v: _to_device([self.volumes[v]], ctx.device)[0]) for v, _ in picks]
        shape = (len(picks) * (self.spec.n_random + self.spec.n_base), 1, *(self.spec.out,) * 3)
        if self._buffer is None or tuple(self._buffer.shape) != shape or self._buffer.device != cuts[0].device:
            self._buffer = torch.empty(shape, dtype=torch.float32, device=cuts[0].device)
        crops = assemble_samples(cuts, bases, merged, self.spec, out=self._buffer)
        seed = int(ctx.generator(step, indices[0], salt=2).initial_seed())
        return _StepBatch(crops, seed)

    # -- losses

    def losses(self, ctx: TrainContext, batch: _StepBatch, step: int) -> dict[str, torch.Tensor]:
        samples = batch.samples
        if self.net.student.dropout:
            self.net.student.generator = torch.Generator(device=ctx.device).manual_seed(batch.dropout_seed)
        features, student = self.student(samples.crops)
        self.net.ema(float(ctx.preset.train.ema))  # official order: after the student, before the teacher forward
        teacher = self.net.teacher_embed(samples.crops, features)
        b, n, k = samples.labels.shape
        x_s, b_s = student[: b * n].reshape(b, n, -1), student[b * n :].reshape(b, k, -1)
        x_t, b_t = teacher[: b * n].reshape(b, n, -1), teacher[b * n :].reshape(b, k, -1)
        loss = voco_v1_loss if ctx.preset.voco.version == 1 else voco_v2_loss
        return loss(x_s, x_t, b_s, b_t, samples.labels)

    # -- validation and export

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        if self.val_crops < 1:
            return None
        held = self.volumes[: max(1, ctx.preset.train.batch_size)]
        result = self.scorer.accuracy(held, self.val_crops, seed=ctx.seed + 12345)
        return {"score": result["top1"], "top1": result["top1"], "chance": result["chance"]}

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        from ..bundle import write_bundle

        provenance = {"data": str(self.data), "steps": int(checkpoint["step"]), "cache": self.cache_info, "world_size": ctx.dist.world_size}
        metrics = {"validation": checkpoint.get("best", {})}
        meta = voco_bundle_meta(ctx.preset, self.net, provenance, metrics)
        bundle = write_bundle(ctx.run_dir / "bundle", checkpoint["modules"]["model"], meta)
        return {"bundle": bundle.path}
