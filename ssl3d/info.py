"""``ssl3d info``: versions, devices, CUDA, threads, presets."""

from __future__ import annotations

import argparse
import json
import platform

from .cli import register_command

__all__ = ["collect_info"]


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # missing or broken optional package
        return "not installed"


def collect_info() -> dict:
    import torch

    from . import __version__
    from .config import preset_names

    cuda = torch.cuda.is_available()
    return {
        "ssl3d": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": _version("monai"),
        "SimpleITK": _version("SimpleITK"),
        "numpy": _version("numpy"),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "devices": ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "threads": torch.get_num_threads(),
        "presets": preset_names(),
    }


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.add_argument("--presets", action="store_true", help="list the presets with their descriptions")
    parser.add_argument("--events", metavar="FILE|-", help="also write the information as a 'done' event")


def _run(args: argparse.Namespace) -> int:
    if args.presets:
        from .config import PRESETS

        for name in sorted(PRESETS):
            print(f"{name:16s} {PRESETS[name].method:11s} {PRESETS[name].description}")
        return 0
    info = collect_info()
    if args.events:
        from .events import EventWriter

        with EventWriter(args.events) as events:
            events.emit("done", outputs={}, info=info)
        if args.events == "-":
            return 0
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:15s} {', '.join(value) if isinstance(value, list) else value}")
    return 0


register_command("info", "versions, devices, CUDA, threads and presets", _add, _run)
