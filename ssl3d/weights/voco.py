"""``import-weights --format voco``: a released VoCo checkpoint (v1 ``VoCo_10k.pt``, v2
``VoCo_{B,L,H}_SSL_head.pt``) as a VoCo pretext bundle holding the Swin backbone (no heads).

Example::

    report = import_voco_weights("VoCo_10k.pt", "voco-v1", "voco_bundle")   # then finetune --init voco_bundle
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..config import NetworkConfig, Preset, get_preset, to_dict
from ..errors import ConfigError, WeightsError
from ..pretext.voco_bundle import SWIN_NAMES, build_backbone
from .checkpoint import read_checkpoint, stated_merging, unwrap_state
from .imported_bundle import check_out_dir, write_imported_bundle
from .keymap import MatchReport, match_state, voco_keys

__all__ = ["PATCH_EMBED", "import_voco_weights"]

PATCH_EMBED = "swinViT.patch_embed.proj.weight"
"""The tensor whose shape gives the feature size and input channels of a Swin checkpoint."""


def import_voco_weights(path: str | os.PathLike, preset_name: str, out_dir: str | os.PathLike, branch: str = "teacher",
                        allow_partial: bool = False) -> MatchReport:
    """Turn a released VoCo checkpoint into a pretext bundle (backbone only, ``heads: null``).

    Layouts: v1 ``VoCo_10k.pt`` (``module.``, ``student.``/``teacher.``, ``backbone.``, ``swin_vit``) and v2
    ``VoCo_{B,L,H}_SSL_head.pt`` (145 tensors ``swinViT.*`` + ``encoder*``); see :func:`~ssl3d.weights.keymap.voco_keys`.
    The feature size is read from ``swinViT.patch_embed.proj.weight``; the preset's preprocessing is
    recorded in ``provenance.assumed`` with its source. Nothing is written unless the match succeeds.

    Args:
        path: the checkpoint, read with ``torch.load(weights_only=True)``.
        preset_name: a Swin VoCo preset (``voco-v1`` or ``voco-v2``).
        out_dir: bundle folder to write (an existing bundle there is replaced).
        branch: ``teacher`` or ``student`` for files holding both.
        allow_partial: accept a file that fills only part of the encoder (the rest keeps its random init).

    Returns:
        The :class:`MatchReport` (also stored in ``provenance.match``).

    Raises:
        WeightsError: unreadable file, wrong shapes, nothing matched, or a partial match not allowed.
        ConfigError: not a Swin VoCo preset, or a bad branch. InputError: ``out_dir`` is not a bundle folder.
    """
    preset = get_preset(preset_name)
    if preset.voco is None or preset.network.name not in SWIN_NAMES:
        raise ConfigError(f"--preset {preset.name} cannot take released VoCo weights: it needs a Swin VoCo preset (voco-v1 or voco-v2), "
                          f"this one is {preset.method!r} with network {preset.network.name!r}.")
    path, out_dir = Path(path), Path(out_dir)
    check_out_dir(out_dir)  # before reading a multi-GB file
    checkpoint = read_checkpoint(path)
    foreign = unwrap_state(checkpoint, path)
    size, channels = _file_feature_size(foreign, branch, path)
    stated = stated_merging(checkpoint, path)
    network = NetworkConfig("swinunetr", {"merging": "v1.3", **preset.network.kwargs, "feature_size": size})
    if stated:
        network.kwargs["merging"] = stated
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the init of what a partial file leaves unfilled is reproducible
        backbone, _, prefix = build_backbone(network)
    target = backbone.net.state_dict()
    state, report = match_state(target, foreign, lambda key: voco_keys(key, branch), allow_partial, source=path.name)
    full = {**target, **state}
    meta = _imported_meta(preset, network, branch, size, channels, stated is not None)
    write_imported_bundle(out_dir, {"backbone." + prefix + k: v for k, v in full.items()}, meta, path, "voco", report)
    return report


def _file_feature_size(foreign: dict[str, Tensor], branch: str, path: Path) -> tuple[int, int]:
    """Feature size and input channels from the file's patch embedding (after the key map)."""
    embed = [t for k, t in foreign.items() if voco_keys(k, branch) == PATCH_EMBED]
    if not embed:
        raise WeightsError(f"{path}: no {PATCH_EMBED} (after the VoCo key map, branch {branch!r}); not a VoCo Swin checkpoint.")
    shape = tuple(embed[0].shape)
    if len(shape) != 5 or shape[0] % 12:
        raise WeightsError(f"{path}: {PATCH_EMBED} must be (feature_size, in_channels, 2, 2, 2) with feature_size a multiple of 12, got {list(shape)}.")
    return int(shape[0]), int(shape[1])


def _imported_meta(preset: Preset, network: NetworkConfig, branch: str, size: int, channels: int, merging_stated: bool = False) -> dict:
    """bundle.json sections of an imported VoCo backbone (the file, hash and match come from the writer)."""
    source = f"preset {preset.name} ({preset.source})"
    merging_from = ("the file's 'merging' entry" if merging_stated else
                    f"{source}: the official code pins MONAI 1.3.0 (its 3-D PatchMerging order); the file records no variant")
    return {
        "network": {"name": "swinunetr", "kwargs": {**network.kwargs, "in_channels": 1}},
        "task": "pretext",
        "preprocessing": to_dict(preset.preprocess),
        "pretext": {"method": "voco", "preset": preset.name, "version": preset.voco.version, "grid": preset.voco.grid,
                    "heads": None, "backbone": {"prefix": "backbone.net.", "student": None, "teacher": None}},
        "provenance": {
            "data": None, "steps": None, "branch": branch,
            "licence": "not stated in the file; see the release (Luffy03/VoCo, Luffy03/Large-Scale-Medical)",
            "assumed": {
                "preprocessing": {"value": to_dict(preset.preprocess), "from": source},
                "feature_size": {"value": size, "from": f"shape of {PATCH_EMBED} in the file ({channels} input channel(s))"},
                "network": {"value": "MONAI SwinUNETR(use_v2=True) encoder", "from": source},
                "merging": {"value": network.kwargs["merging"], "from": merging_from},
            },
        },
        "metrics": {},
        "preset": to_dict(preset),
    }
