"""``ssl3d pretrain``: VoCo or Volume Fusion on the one loop."""

from __future__ import annotations

import argparse

from ..cli import register_command
from ..train.commands import add_training_options, resolve_preset, run_training_command

__all__: list[str] = []

_DEFAULT_PRESET = {"voco": "voco-v1", "vf": "vf-v1"}


def _add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=["voco", "vf"], help="VoCo (volume contrast) or Volume Fusion")
    add_training_options(parser)
    parser.add_argument("--network", help="voco: swin-b|swin-l|swin-h|swinunetr|cnn-small; vf: pctnet|unet|swinunetr [the preset's]")
    parser.add_argument("--feature-size", type=int, help="SwinUNETR feature size (48 = B, 96 = L, 192 = H) [the preset's]")
    parser.add_argument("--v2-pipeline", choices=["abdomen", "chest", "resize"], help="voco-v2 data pipeline [abdomen]")


def _run_pretrain(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    preset = resolve_preset(args, _DEFAULT_PRESET[args.method])
    if preset.method != args.method:
        raise ConfigError(f"--preset {preset.name} is a {preset.method!r} preset, not {args.method!r}; choose one of the {args.method}-* presets.")
    if args.method == "voco":
        from .voco_task import VoCoTask, apply_network_choice

        preset = apply_network_choice(preset, args.network, args.feature_size, args.v2_pipeline)
        return run_training_command(args, preset, lambda cache: VoCoTask(args.data, cache, args.strict))
    from .vf_task import FusionTask, apply_network_choice as vf_network

    preset = vf_network(preset, args.network, args.feature_size)
    return run_training_command(args, preset, lambda cache: FusionTask(args.data, cache, args.strict))


register_command(
    "pretrain",
    "self-supervised pretraining: VoCo or Volume Fusion",
    _add_pretrain,
    _run_pretrain,
    "Pretrain with VoCo (--method voco) or Volume Fusion (--method vf) on a folder of volumes or a datalist.\n"
    "Several GPUs/nodes: torchrun --nproc-per-node N [--nnodes M ...] -m ssl3d pretrain ...",
)
