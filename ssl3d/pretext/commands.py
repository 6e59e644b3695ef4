"""``ssl3d pretrain`` (VoCo or Volume Fusion on the one loop) and ``ssl3d import-weights``."""

from __future__ import annotations

import argparse
from pathlib import Path

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


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the released checkpoint (.pt/.pth), read with torch.load(weights_only=True)")
    parser.add_argument("--format", required=True, choices=["voco", "mis-fm", "swinunetr-seg"], help="checkpoint layout")
    parser.add_argument("--preset", help="preset whose network and preprocessing the weights belong to: voco-v1|voco-v2 for voco, vf-v1|vf-v2 (PCT-Net) for mis-fm [voco-v1 / vf-v1]")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--branch", choices=["teacher", "student"], default="teacher", help="VoCo: which branch of a student/teacher file [teacher]")
    parser.add_argument("--labels", help='swinunetr-seg: label names: "btcv" or "1:liver,2:spleen,..." [label N]')
    parser.add_argument("--allow-partial", action="store_true", help="accept a file that fills only part of the network (reported)")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events")


def _import(args: argparse.Namespace):
    if args.format == "voco":
        from .voco_task import import_voco_weights

        return import_voco_weights(Path(args.file), args.preset or "voco-v1", Path(args.out), args.branch, args.allow_partial)
    if args.format == "mis-fm":
        from .vf_task import import_misfm_weights

        return import_misfm_weights(Path(args.file), args.preset or "vf-v1", Path(args.out), args.allow_partial)
    from ..seg_import import import_swinunetr_segmentation

    return import_swinunetr_segmentation(Path(args.file), Path(args.out), args.labels, args.allow_partial)


def _run_import(args: argparse.Namespace) -> int:
    from ..events import EventWriter

    with EventWriter(args.events) as events:
        events.emit("start", step=0, total=1, message=f"import-weights {args.file}")
        report = _import(args)
        lines = [report.summary(), *report.details()]  # details name what --allow-partial let through
        for line in lines:
            events.emit("log", level="info", message=line)
        events.emit("done", step=1, total=1, outputs={"bundle": str(args.out)})
    if args.events != "-":
        print("\n".join(lines))
        print(f"bundle: {args.out}")
    return 0


register_command(
    "pretrain",
    "self-supervised pretraining: VoCo or Volume Fusion",
    _add_pretrain,
    _run_pretrain,
    "Pretrain with VoCo (--method voco) or Volume Fusion (--method vf) on a folder of volumes or a datalist.\n"
    "Several GPUs/nodes: torchrun --nproc-per-node N [--nnodes M ...] -m ssl3d pretrain ...",
)
register_command("import-weights", "turn a released VoCo, MIS-FM or SwinUNETR segmentation checkpoint into a bundle", _add_import, _run_import)
