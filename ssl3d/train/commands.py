"""Shared plumbing of the training commands (preset resolution, run folder, device) and ``ssl3d finetune``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..cli import add_common_options, register_command
from ..config import Preset, apply_overrides, fine_tune_preset, get_preset, load_config

__all__ = ["add_training_options", "resolve_preset", "run_training_command"]


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options every training job has (on top of the common ones)."""
    parser.add_argument("--data", required=True, help="a folder of volumes, an imagesTr/labelsTr folder, or a dataset.json")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, events.jsonl, TensorBoard logs, run.json, the bundle")
    parser.add_argument("--steps", type=int, help="training iterations [the preset's]")
    parser.add_argument("--batch-size", type=int, help="volumes per step and per process [the preset's]")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, exactly")
    parser.add_argument("--cache-dir", help="where preprocessed volumes are cached [RUN/cache]")
    parser.add_argument("--cache-workers", type=int, metavar="N",
                        help="processes per rank that build the cache [this rank's share of the cores, bounded by memory]")
    parser.add_argument("--strict", action="store_true", help="fail on an unreadable volume instead of skipping it")
    add_common_options(parser)


def resolve_preset(args: argparse.Namespace, default: str, extra: dict | None = None) -> Preset:
    """--config FILE, else --preset NAME (else ``default``), then command-line overrides.

    ``--resume`` reads the run's own ``config.yaml``. A ``--preset`` next to a config file must name the
    preset the file holds: it would otherwise be ignored without a word.
    """
    from ..errors import ConfigError

    saved = Path(args.out) / "config.yaml"
    if getattr(args, "resume", False) and not args.config and saved.is_file():
        preset = load_config(saved)  # a resumed run keeps its resolved settings
        source, advice = f"the run to resume ({saved})", "drop --preset to continue the run, or start a new one in another --out"
    elif args.config:
        preset = load_config(args.config)
        source, advice = f"--config {args.config}", "give only one of them"
    else:
        preset, source, advice = get_preset(args.preset or default), "", ""
    if source and args.preset and args.preset != preset.name:
        raise ConfigError(f"--preset {args.preset} disagrees with {source}, which holds preset {preset.name!r}; {advice}.")
    overrides = {"train.steps": args.steps, "train.batch_size": args.batch_size, "train.seed": args.seed, **(extra or {})}
    preset = apply_overrides(preset, overrides)
    for name in ("steps", "batch_size"):
        if getattr(preset.train, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(preset.train, name)}.")
    return preset


def run_training_command(args: argparse.Namespace, preset: Preset, make_task: Callable[[Path], object]) -> int:
    """Build the task and run the loop; prints where the outputs are."""
    from ..device import resolve_device
    from .loop import train

    device = resolve_device(args.device)
    run_dir = Path(args.out)
    cache_dir = Path(args.cache_dir) if args.cache_dir else run_dir / "cache"
    task = make_task(cache_dir)
    if args.cache_workers is not None and args.cache_workers < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--cache-workers must be >= 1, got {args.cache_workers}.")
    outputs = train(task, preset, run_dir, device, events=args.events, resume=args.resume, run_info={"device": str(device)},
                    cache_workers=args.cache_workers)
    if args.events != "-":
        for name, path in outputs.items():
            print(f"{name}: {path}")
    return 0


def _add_finetune(parser: argparse.ArgumentParser) -> None:
    add_training_options(parser)
    parser.add_argument("--labels", help='label names, e.g. "1:liver,2:spleen" [from dataset.json or "label N"]')
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out for validation [0.2]")
    parser.add_argument("--task", choices=["segmentation", "interactive"], default="segmentation",
                        help="segmentation: all labels; interactive: a class-agnostic click-to-segment model [segmentation]")
    parser.add_argument("--init", metavar="PRETEXT_BUNDLE", help="start from a VoCo or Volume Fusion pretext bundle (load report printed)")
    parser.add_argument("--network", help="unet-small | swinunetr | pctnet [the pretext bundle's, else the preset's]")
    parser.add_argument("--train-cases", type=int, help="train on the first N cases of the seeded split (label-efficiency studies)")
    parser.add_argument("--freeze-encoder", action="store_true", help="train only what the pretext bundle did not initialise (linear-probe style)")
    parser.add_argument("--spacing", metavar="median|X,Y,Z", help="resample to this spacing in mm, or the dataset's median spacing (as nnU-Net) [the preset's]")


def _run_finetune(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .segmentation import SegmentationTask

    if not 0 <= args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}.")
    if args.task == "interactive":
        from .interactive import InteractiveTask

        preset = fine_tune_preset(resolve_preset(args, "interactive-cpu"), "interactive")
        return run_training_command(args, preset, lambda cache: InteractiveTask(args.data, cache, args.strict, args.val_fraction))
    preset = _with_init(fine_tune_preset(resolve_preset(args, "seg-cpu"), "segmentation"), args)
    return run_training_command(
        args,
        preset,
        lambda cache: SegmentationTask(args.data, cache, args.strict, args.val_fraction, args.labels, init=args.init,
                                       train_cases=args.train_cases, freeze_encoder=args.freeze_encoder),
    )


def _spacing(text: str, data: str) -> tuple[float, float, float]:
    from ..data.datasets import find_cases, median_spacing
    from ..errors import ConfigError

    if text == "median":
        return median_spacing(find_cases(data, labels=True))
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(f"--spacing must be 'median' or three positive numbers X,Y,Z in mm, got {text!r}.")
    return values  # type: ignore[return-value]


def _with_init(preset, args: argparse.Namespace):
    """Network and intensity from the pretext bundle (spacing stays the fine-tune preset's; never a whole-volume resize)."""
    from ..config import NetworkConfig
    from ..errors import ConfigError
    from .init import preset_for_init

    if args.spacing:
        preset.preprocess.spacing = _spacing(args.spacing, args.data)
    if args.freeze_encoder and not args.init:
        raise ConfigError("--freeze-encoder needs --init PRETEXT_BUNDLE (there is no pretrained encoder to freeze).")
    if args.init:
        preset = preset_for_init(preset, args.init, args.network)
    elif args.network:
        name = "unet-small" if args.network == "unet" else args.network
        preset.network = NetworkConfig(name, preset.network.kwargs if name == preset.network.name else {})
    return preset


register_command(
    "finetune",
    "train a segmentation model on labelled volumes",
    _add_finetune,
    _run_finetune,
    "Train a segmentation model (imagesTr/labelsTr folder or dataset.json) with the one training loop.\n"
    "Several GPUs/nodes: torchrun --nproc-per-node N -m ssl3d finetune ...",
)
