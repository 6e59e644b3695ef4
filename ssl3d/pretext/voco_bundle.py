"""VoCo networks built from a preset, pretext bundles and position scores (released weights come in by
:mod:`ssl3d.weights.voco`).

State-dict layout of a VoCo network (and of its pretext bundle), in the order the official code nests it:

======================  ==========================================  ==============================
prefix                  v1 (``teacher="full"``)                     v2 (``teacher="head"``)
======================  ==========================================  ==============================
``student.backbone.``   student encoder                             the one shared encoder
``student.head.``       student projection head                     student projection head
``teacher.backbone.``   EMA teacher encoder (independent init)      (absent)
``teacher.head.``       EMA teacher projection head                 EMA teacher projection head
======================  ==========================================  ==============================

Under a backbone prefix the encoder's own module follows: ``net.`` for SwinUNETR (``net.swinViT.*``,
``net.encoder{1,2,3,4,10}.*``: MONAI names, decoders removed) and ``encoder.`` for ``cnn-small``
(``encoder.levels.*``: :class:`~ssl3d.nets.unet.UNetEncoder` names). A bundle's ``pretext.backbone.prefix``
names the full prefix to fine-tune from (v1: the teacher, as the official release exports; v2: the shared
backbone; imported release weights: ``backbone.net.``), so ``build_network(**bundle.network)`` loads
``{key[len(prefix):]: value}`` (:func:`voco_backbone_state`).

Example::

    scorer = load_voco_bundle("run/bundle")
    scorer.scores(volume, [[24, 40], [8, 8]])          # (2, 16) position scores for a v1-cpu volume (1, 32, 64, 64)
    position_accuracy("run/bundle", "held_out/imagesTr", n_crops=200, seed=0)   # {"top1": ..., "chance": 0.0625, ...}
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bundle import Bundle, as_bundle, mismatch_details
from ..config import NetworkConfig, Preset, VoCoConfig, from_dict, to_dict
from ..errors import BundleError, ConfigError, InputError
from ..nets.builders import size_multiple
from .voco import (
    ProjectionHead,
    SwinPooledEncoder,
    crop_dropout,
    ema_update,
    freeze_teacher,
    pooled_features,
    position_labels,
    position_scores_v1,
    position_scores_v2,
    swin_feature_dim,
)
from .voco_samples import SampleDraws, SampleSpec, base_crops, cut_samples

__all__ = [
    "SWIN_NAMES",
    "sample_spec",
    "check_network",
    "build_backbone",
    "build_head",
    "PooledCNN",
    "VoCoBranch",
    "VoCoNetwork",
    "cut_window",
    "pad_to_window",
    "voco_bundle_meta",
    "voco_backbone_state",
    "VoCoScorer",
    "load_voco_bundle",
    "position_accuracy",
]

SWIN_NAMES = {"swin-b": 48, "swin-l": 96, "swin-h": 192, "swinunetr": None}
"""Swin backbone names (``None``: the feature size comes from the network kwargs, default 48)."""

_SWIN_DECODERS = ("decoder5", "decoder4", "decoder3", "decoder2", "decoder1", "out")


# ----------------------------------------------------------------------------------------------- from presets


def sample_spec(preset: Preset) -> SampleSpec:
    """The :class:`SampleSpec` of a VoCo preset.

    The volume the crops are cut from is ``preset.voco.window`` (x, y, z) when set (v2: a random window
    per sample), else the whole preprocessed volume, ``preset.preprocess.resize`` (v1). Either must be
    ``(grid*base, grid*base, depth)``. voco-v1: ``(384, 384, 96)`` -> volumes ``(1, 96, 384, 384)``.

    Raises:
        ConfigError: not a VoCo preset, or sizes that do not tile the grid.
    """
    cfg = preset.voco
    if cfg is None:
        raise ConfigError(f"preset {preset.name!r} has no 'voco' section; use one of the voco-* presets.")
    size = cfg.window if cfg.window is not None else preset.preprocess.resize
    where = "voco.window" if cfg.window is not None else "preprocess.resize"
    if size is None:
        raise ConfigError(f"preset {preset.name!r}: VoCo needs voco.window (random window) or preprocess.resize (whole volume), got neither.")
    side = cfg.grid * cfg.base_crop
    if tuple(size[:2]) != (side, side):
        raise ConfigError(f"preset {preset.name!r}: {where} must start with grid*base_crop = {side} twice (x, y), got {list(size)}.")
    return SampleSpec(
        grid=cfg.grid, base=cfg.base_crop, crop=cfg.random_crop, out=cfg.crop_out, depth=int(size[2]),
        n_random=cfg.num_random, flip_p=cfg.flip_p, rot90_p=cfg.rot90_p, shift_p=cfg.shift_p, shift_offset=cfg.shift_offset,
    )


def check_network(network: NetworkConfig, crop_out: int) -> None:
    """Check that the backbone can take ``crop_out**3`` crops (Swin: multiple of 32; cnn-small: of 2^(levels-1)).

    Raises:
        ConfigError: an unsupported backbone name or a crop size it cannot take.
    """
    if not (network.name in SWIN_NAMES or network.name == "cnn-small"):
        raise ConfigError(f"network {network.name!r} cannot be a VoCo backbone; use one of swin-b, swin-l, swin-h, swinunetr, cnn-small.")
    factor = size_multiple("swinunetr" if network.name in SWIN_NAMES else network.name, network.kwargs)
    if crop_out % factor:
        raise ConfigError(
            f"network {network.name!r} needs crops whose side is a multiple of {factor}, got voco.crop_out {crop_out}; "
            "Swin backbones go with voco-v1/voco-v2 (64³ crops), cnn-small with the *-cpu presets."
        )


class PooledCNN(nn.Module):
    """``cnn-small`` as a VoCo backbone: the UNet encoder's levels, average-pooled and concatenated.

    Shapes: ``(N, 1, 16, 16, 16) -> (N, 8 + 16 + 32 + 64) = (N, 120)`` for channels (8, 16, 32, 64).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def out_dim(self) -> int:
        return int(self.encoder.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return pooled_features(self.encoder(x))


def build_backbone(network: NetworkConfig | dict) -> tuple[nn.Module, int, str]:
    """A pooled VoCo backbone from a network record.

    Args:
        network: ``NetworkConfig`` or ``{"name", "kwargs"}``: swin-b/l/h or swinunetr (MONAI SwinUNETR-v2,
            decoders removed), or cnn-small.

    Returns:
        ``(module, feature width, prefix of the encoder inside the module)``; e.g. swin-b:
        ``(SwinPooledEncoder, 1152, "net.")``, cnn-small: ``(PooledCNN, 120, "encoder.")``.
    """
    from ..nets.builders import build_network

    name, kwargs = (network.name, dict(network.kwargs)) if isinstance(network, NetworkConfig) else (network["name"], dict(network.get("kwargs", {})))
    kwargs.pop("in_channels", None)
    kwargs.pop("out_channels", None)
    if name in SWIN_NAMES:
        size = int(kwargs.get("feature_size", SWIN_NAMES[name] or 48))
        net = build_network(name, 1, 2, **kwargs)
        for part in _SWIN_DECODERS:  # never called by VoCo: no unused parameters under DDP, bundle = encoder only
            delattr(net, part)
        return SwinPooledEncoder(net), swin_feature_dim(size), "net."
    if name == "cnn-small":
        encoder = build_network(name, 1, None, **kwargs)
        return PooledCNN(encoder), int(encoder.out_dim), "encoder."
    raise ConfigError(f"network {name!r} cannot be a VoCo backbone; use one of swin-b, swin-l, swin-h, swinunetr, cnn-small.")


def build_head(in_dim: int, cfg: VoCoConfig) -> nn.Module:
    """The projection head: ``head_layers`` linears, each but the last followed by BN1d(affine=False) and ReLU.

    ``head_layers=3`` is the official :class:`ProjectionHead` (v1: ``in -> 2048 -> 2048 -> 2048``).
    Shapes: ``(N, in_dim) -> (N, head_out)``.
    """
    if cfg.head_layers < 1:
        raise ConfigError(f"voco.head_layers must be >= 1, got {cfg.head_layers}.")
    if cfg.head_layers == 3:
        return ProjectionHead(in_dim, cfg.head_hidden, cfg.head_out)
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(cfg.head_layers - 1):
        layers += [nn.Linear(width, cfg.head_hidden), nn.BatchNorm1d(cfg.head_hidden, affine=False, track_running_stats=False), nn.ReLU(inplace=True)]
        width = cfg.head_hidden
    return nn.Sequential(*layers, nn.Linear(width, cfg.head_out))


class VoCoBranch(nn.Module):
    """Backbone (optional) + projection head, with the v2 crop dropout between them.

    ``forward(crops) -> (features (N, F), embeddings (N, D))``; the dropout (whole rows, p = ``dropout``)
    acts in training mode only and draws from ``self.generator`` when set.
    """

    def __init__(self, backbone: nn.Module | None, head: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        if backbone is not None:
            self.backbone = backbone
        self.head = head
        self.dropout = dropout
        self.generator: torch.Generator | None = None

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        if not hasattr(self, "backbone"):
            raise InputError("this branch is a head only (the v2 teacher): call .head on the shared backbone's features.")
        features = self.backbone(crops)
        dropped = crop_dropout(features, self.dropout, self.generator) if self.training and self.dropout else features
        return features, self.head(dropped)


class VoCoNetwork(nn.Module):
    """Student and EMA teacher of a VoCo preset (layout in the module docstring).

    Args:
        network: the backbone record (``preset.network``).
        cfg: ``preset.voco``; ``teacher="full"`` (v1) builds a second, independently initialised backbone
            and head; ``teacher="head"`` (v2) only a second head on the shared backbone.
    """

    def __init__(self, network: NetworkConfig | dict, cfg: VoCoConfig) -> None:
        super().__init__()
        if cfg.teacher not in ("full", "head"):
            raise ConfigError(f"voco.teacher must be 'full' or 'head', got {cfg.teacher!r}.")
        backbone, in_dim, self.encoder_prefix = build_backbone(network)
        self.full_teacher = cfg.teacher == "full"
        self.student = VoCoBranch(backbone, build_head(in_dim, cfg), cfg.student_dropout)
        teacher_backbone = build_backbone(network)[0] if self.full_teacher else None
        self.teacher = freeze_teacher(VoCoBranch(teacher_backbone, build_head(in_dim, cfg)))

    def teacher_embed(self, crops: Tensor, features: Tensor) -> Tensor:
        """Teacher embeddings ``(N, D)`` without gradient: its own backbone (v1) or the shared features (v2)."""
        with torch.no_grad():
            if self.full_teacher:
                return self.teacher(crops)[1]
            return self.teacher.head(features.detach())

    def ema(self, momentum: float) -> None:
        """EMA of the teacher's parameters towards the student's: the whole branch (v1) or the head (v2)."""
        if self.full_teacher:
            ema_update(self.teacher, self.student, momentum)
        else:
            ema_update(self.teacher.head, self.student.head, momentum)

    @property
    def finetune_prefix(self) -> str:
        """Prefix of the backbone to fine-tune from: the v1 teacher, or the v2 shared backbone."""
        return ("teacher.backbone." if self.full_teacher else "student.backbone.") + self.encoder_prefix


# ----------------------------------------------------------------------------------------------- windows


def pad_to_window(volume: Tensor, window: Sequence[int]) -> Tensor:
    """Pad ``(1, D, H, W)`` with zeros (centred, like MONAI ``SpatialPad``) to at least ``window`` (x, y, z)."""
    need = [max(0, int(w) - s) for w, s in zip(tuple(window)[::-1], volume.shape[1:])]  # (z, y, x)
    if not any(need):
        return volume
    pads = [p for n in reversed(need) for p in (n // 2, n - n // 2)]  # F.pad order: x, y, z
    return F.pad(volume, pads)


def cut_window(volume: Tensor, window: Sequence[int], generator: torch.Generator) -> Tensor:
    """A random ``window`` (x, y, z) view of ``(1, D, H, W)``; the start is uniform on each axis.

    Example: ``cut_window(torch.zeros(1, 80, 200, 210), (192, 192, 64), g).shape == (1, 64, 192, 192)``.
    """
    size = tuple(int(w) for w in window)[::-1]  # (z, y, x)
    if any(s < w for s, w in zip(volume.shape[1:], size)):
        raise InputError(f"volume (1, D, H, W) = {tuple(volume.shape)} is smaller than the window (z, y, x) {size}; pad it first.")
    starts = [int(torch.randint(0, s - w + 1, (1,), generator=generator)) for s, w in zip(volume.shape[1:], size)]
    return volume[:, starts[0] : starts[0] + size[0], starts[1] : starts[1] + size[1], starts[2] : starts[2] + size[2]]


# ----------------------------------------------------------------------------------------------- bundles


def voco_bundle_meta(preset: Preset, net: VoCoNetwork, provenance: dict, metrics: dict | None = None) -> dict:
    """``bundle.json`` sections of a trained VoCo network (see the module docstring for the weights' layout)."""
    spec = sample_spec(preset)
    kwargs = {k: v for k, v in preset.network.kwargs.items() if k not in ("in_channels", "out_channels")}
    name = "swinunetr" if preset.network.name in SWIN_NAMES else preset.network.name
    if name == "swinunetr":
        kwargs.setdefault("feature_size", SWIN_NAMES[preset.network.name] or 48)
    heads = {"student": "student.head.", "teacher": "teacher.head.", "layers": preset.voco.head_layers,
             "hidden": preset.voco.head_hidden, "out": preset.voco.head_out}
    return {
        "network": {"name": name, "kwargs": {**kwargs, "in_channels": 1}},
        "task": "pretext",
        "preprocessing": to_dict(preset.preprocess),
        "pretext": {
            "method": "voco", "preset": preset.name, "version": preset.voco.version, "grid": spec.grid, "heads": heads,
            "teacher": preset.voco.teacher,
            "backbone": {"prefix": net.finetune_prefix, "student": "student.backbone." + net.encoder_prefix,
                         "teacher": net.finetune_prefix if net.full_teacher else None},
            "samples": dataclasses.asdict(spec), "window": list(preset.voco.window) if preset.voco.window else None,
        },
        "provenance": provenance,
        "metrics": metrics or {},
        "preset": to_dict(preset),
    }


def _voco_bundle(bundle: Bundle | str | os.PathLike) -> Bundle:
    bundle = as_bundle(bundle)
    pretext = bundle.meta.get("pretext") or {}
    if bundle.task != "pretext" or pretext.get("method") != "voco":
        raise BundleError(f"{bundle.path}: not a VoCo pretext bundle (task {bundle.task!r}, method {pretext.get('method')!r}).")
    return bundle


def voco_backbone_state(bundle: Bundle | str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """The backbone to fine-tune from: ``(network record, state dict with the encoder's own key names)``.

    ``build_network(rec["name"], **rec["kwargs"])`` takes the state (SwinUNETR: ``strict=False``, the
    decoders are not pretrained). Works for trained and imported VoCo bundles.
    """
    bundle = _voco_bundle(bundle)
    prefix = (bundle.meta["pretext"].get("backbone") or {}).get("prefix")
    if not isinstance(prefix, str):
        raise BundleError(f"{bundle.path}: pretext.backbone.prefix is missing; cannot tell which weights are the backbone.")
    state = {k[len(prefix) :]: v for k, v in bundle.state_dict().items() if k.startswith(prefix)}
    if not state:
        raise BundleError(f"{bundle.path}: no weights under the backbone prefix {prefix!r}.")
    return bundle.network, state


class VoCoScorer:
    """Position scores of a VoCo network on model-space volumes (no augmentation, no gradient).

    BatchNorm in the heads normalises over the crops of each forward pass, as in training: one call of
    :meth:`scores` forwards the random crops and the base crops of all the volumes it is given together,
    so give it the training layout (``group`` volumes of ``n_random`` crops) for training-like numbers.

    Args:
        net: the network (from :func:`load_voco_bundle` or a running task).
        spec: the sample sizes; volumes passed to :meth:`scores` must be ``spec.volume_shape``.
        version: 1 (``0.5 (relu cos(x_s, b_t) + relu cos(x_t, b_s))``) or 2 (``relu cos(x_s, b_t)``).
        window: v2 window (x, y, z): :meth:`accuracy` cuts a random window from larger volumes.
        group: volumes per forward pass in :meth:`accuracy` (the preset's batch size).
        meta: the bundle metadata, when loaded from one.
    """

    def __init__(self, net: VoCoNetwork, spec: SampleSpec, version: int, window=None, group: int = 2, meta: dict | None = None) -> None:
        self.net, self.spec, self.version = net, spec, version
        self.window = tuple(window) if window else None
        self.group, self.meta = max(1, int(group)), meta or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def embed(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """Student and teacher embeddings ``(N, D)`` of ``(N, 1, out, out, out)`` crops, in one BN batch."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                crops = crops.to(self.device)
                features, student = self.net.student(crops)
                return student, self.net.teacher_embed(crops, features)
        finally:
            self.net.train(was_training)

    def scores(self, volumes: Tensor | Sequence[Tensor], centers: Any) -> Tensor:
        """Predicted overlap of random crops with each base cell.

        Args:
            volumes: ``(1, D, H, W)``, ``(B, 1, D, H, W)`` or a list of ``(1, D, H, W)`` model-space tensors of
                ``spec.volume_shape`` (v1-cpu: ``(1, 32, 64, 64)``).
            centers: integer ``(cx, cy)`` in voxels: ``(n, 2)`` for one volume or ``(B, n, 2)``, inside
                ``spec.centre_range`` on both axes.

        Returns:
            ``(n, grid*grid)`` (one volume) or ``(B, n, grid*grid)`` float32 scores in [0, 1] on the CPU,
            cell ``ix*grid + iy`` (comparable with :func:`~ssl3d.pretext.voco.position_labels`).
        """
        single = isinstance(volumes, Tensor) and volumes.ndim == 4
        vols = [volumes] if single else list(volumes)
        c = np.asarray(centers)
        c = c[None] if c.ndim == 2 else c
        low, high = self.spec.centre_range
        if c.ndim != 3 or c.shape[0] != len(vols) or c.shape[2] != 2 or not np.issubdtype(c.dtype, np.integer):
            raise InputError(f"centers must be integer (n, 2) or (B={len(vols)}, n, 2) as (cx, cy), got shape {c.shape} ({c.dtype}).")
        if c.size and (c.min() < low or c.max() >= high):
            raise InputError(f"centers must lie in [{low}, {high}) on x and y (the crop stays in the grid), got {c.min()}..{c.max()}.")
        spec = dataclasses.replace(self.spec, n_random=int(c.shape[1]))
        vols = [v.to(self.device, torch.float32) for v in vols]
        bases = [base_crops(v, spec) for v in vols]
        n_crops = spec.n_random + spec.n_base
        none = np.zeros((len(vols), n_crops), dtype=np.int64)
        labels = position_labels(c.reshape(-1, 2), spec.crop, spec.base, spec.grid).reshape(len(vols), spec.n_random, spec.n_base)
        draws = SampleDraws(c.astype(np.int64), labels, np.zeros((len(vols), n_crops, 3), bool), none, none.astype(np.float32))
        batch = cut_samples(vols, bases, draws, spec)
        student, teacher = self.embed(batch.crops)
        b, n, k = len(vols), spec.n_random, spec.n_base
        x_s, b_s = student[: b * n].reshape(b, n, -1), student[b * n :].reshape(b, k, -1)
        x_t, b_t = teacher[: b * n].reshape(b, n, -1), teacher[b * n :].reshape(b, k, -1)
        out = position_scores_v1(x_s, x_t, b_s, b_t) if self.version == 1 else position_scores_v2(x_s, b_t)
        out = out.float().cpu()
        return out[0] if single else out

    def prepare(self, volume) -> tuple[Tensor, Any]:
        """Preprocess a :class:`~ssl3d.io.Volume` with the bundle's preprocessing.

        Returns:
            ``(tensor (1, D, H, W), GridMapping)``; the mapping pastes model-space maps back onto the input grid.
        """
        from ..data.preprocess import PreprocessConfig, preprocess

        if "preprocessing" not in self.meta:
            raise InputError("this scorer was not loaded from a bundle, so it has no preprocessing; pass model-space tensors.")
        config = PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.meta["preprocessing"].items()})
        tensor, mapping = preprocess(volume, config)
        return tensor[0], mapping

    def load_volumes(self, data: str | os.PathLike) -> list[Tensor]:
        """Every volume of a folder / datalist / file, preprocessed: ``[(1, D, H, W)]`` in dataset order."""
        from ..data.datasets import find_cases
        from ..io import read_volume

        if "preprocessing" not in self.meta:
            raise InputError(f"volumes given as a path ({data}) need the bundle's preprocessing; this scorer has no preprocessing: pass model-space tensors.")
        return [self.prepare(read_volume(case.image))[0] for case in find_cases(data, labels=False)]

    def accuracy(self, volumes: Sequence[Tensor] | str | os.PathLike, n_crops: int = 200, seed: int = 0) -> dict:
        """Top-1 position accuracy on seeded random crops (see :func:`position_accuracy`)."""
        if isinstance(volumes, (str, os.PathLike)):
            volumes = self.load_volumes(volumes)
        vols = [pad_to_window(v, self.window) if self.window else v for v in volumes]
        if not vols or n_crops < 1:
            raise InputError(f"position accuracy needs at least one volume and n_crops >= 1, got {len(vols)} volumes, n_crops {n_crops}.")
        g = torch.Generator().manual_seed(int(seed))
        low, high = self.spec.centre_range
        correct, total, start = 0, 0, 0
        while total < n_crops:
            chosen = [vols[(start + i) % len(vols)] for i in range(min(self.group, len(vols)))]
            start += len(chosen)
            if self.window:
                chosen = [cut_window(v, self.window, g) for v in chosen]
            centres = torch.randint(low, high, (len(chosen), self.spec.n_random, 2), generator=g).numpy()
            pred = self.scores(chosen, centres).argmax(-1).numpy()
            labels = position_labels(centres.reshape(-1, 2), self.spec.crop, self.spec.base, self.spec.grid)
            hit = labels[np.arange(len(labels)), pred.reshape(-1)] == labels.max(1)
            correct, total = correct + int(hit.sum()), total + hit.size
        return {"top1": correct / total, "chance": 1.0 / self.spec.n_base, "n": total}


def load_voco_bundle(bundle: Bundle | str | os.PathLike, device: str | torch.device = "cpu") -> VoCoScorer:
    """Rebuild the student and teacher of a trained VoCo bundle for inspection.

    Raises:
        BundleError: not a VoCo pretext bundle, no heads (an imported backbone), or weights that do not fit.
    """
    bundle = _voco_bundle(bundle)
    if not bundle.meta["pretext"].get("heads"):
        raise BundleError(f"{bundle.path}: holds no VoCo heads (imported backbone weights); position scores need a bundle from 'ssl3d pretrain --method voco'.")
    if "preset" not in bundle.meta:
        raise BundleError(f"{bundle.path}: the 'preset' section is missing; cannot rebuild the VoCo heads.")
    try:
        preset = from_dict(bundle.meta["preset"])
        net = VoCoNetwork(preset.network, preset.voco)
    except ConfigError as exc:
        raise bundle.network_error(exc) from None
    try:
        net.load_state_dict(bundle.state_dict())
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path}: the weights do not fit the recorded VoCo network ({mismatch_details(exc)}).") from None
    net.to(device).eval()
    return VoCoScorer(net, sample_spec(preset), preset.voco.version, preset.voco.window, preset.train.batch_size, bundle.meta)


def position_accuracy(bundle: Bundle | VoCoScorer | str | os.PathLike, volumes: Sequence[Tensor] | str | os.PathLike,
                      n_crops: int = 200, seed: int = 0) -> dict:
    """Top-1 accuracy of the predicted base cell of seeded random crops.

    Crops are drawn as in training (``n_random`` per volume, ``batch_size`` volumes per forward pass, v2:
    a random window per volume), without augmentation. A crop counts as correct when the predicted cell
    has the crop's largest overlap (ties: any of them).

    Args:
        bundle: a VoCo pretext bundle (path or loaded) or a :class:`VoCoScorer`.
        volumes: model-space ``(1, D, H, W)`` tensors, or a data folder/datalist preprocessed with the bundle's
            preprocessing.
        n_crops: at least this many crops are scored.
        seed: the draws' seed.

    Returns:
        ``{"top1": float, "chance": 1 / grid², "n": crops scored}``.
    """
    scorer = bundle if isinstance(bundle, VoCoScorer) else load_voco_bundle(bundle)
    return scorer.accuracy(volumes, n_crops, seed)
