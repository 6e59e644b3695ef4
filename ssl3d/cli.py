"""The ``ssl3d`` command (also ``python -m ssl3d``): subcommands registered by features.

A user error prints one ``error: ...`` line (and an ``error`` event) and exits 2; a cancelled job exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled, InputError, SSL3DError

__all__ = ["main", "register_command", "add_common_options", "COMMANDS", "EXIT_USER_ERROR", "EXIT_CANCELLED"]

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130

# Modules that register subcommands when imported (kept lazy: heavy imports happen inside each command).
_FEATURE_MODULES = ("ssl3d.info", "ssl3d.demo", "ssl3d.train.commands", "ssl3d.pretext.commands", "ssl3d.infer.commands", "ssl3d.inspect.commands")


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, add_arguments, run, description: str = "") -> None:
    COMMANDS[name] = Command(name, help, add_arguments, run, description or help)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line ``error:`` and exit code 2 for usage mistakes."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USER_ERROR)


def add_common_options(parser: argparse.ArgumentParser, preset: bool = True) -> None:
    """Options every job shares: device, events, seed, config file and preset."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N [auto]")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")
    parser.add_argument("--seed", type=int, help="random seed of the job [the preset's]")
    if preset:
        parser.add_argument("--preset", help="named preset (see 'ssl3d info --presets')")
        parser.add_argument("--config", metavar="FILE", help="a JSON/YAML preset file (e.g. a run's config.yaml); options given on the command line override it")


def build_parser() -> argparse.ArgumentParser:
    for module in _FEATURE_MODULES:
        importlib.import_module(module)
    parser = _Parser(prog="ssl3d", description="SSL3D: self-supervised pretraining (VoCo, Volume Fusion), fine-tuning and segmentation of 3D medical images.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ssl3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.description, formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def _emit_error(args: argparse.Namespace, message: str) -> None:
    target = getattr(args, "events", None)
    if target:
        from .events import EventWriter

        try:
            with EventWriter(target) as events:
                events.emit("error", message=message)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args._run(args) or 0)
    except Cancelled as exc:
        sys.stderr.write(f"cancelled: {exc}\n")
        return EXIT_CANCELLED
    except InputError as exc:
        message = " ".join(str(exc).split())
        _emit_error(args, message)
        sys.stderr.write(f"error: {message}\n")
        return EXIT_USER_ERROR
    except SSL3DError as exc:
        message = " ".join(str(exc).split())
        _emit_error(args, message)
        sys.stderr.write(f"error: {message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_CANCELLED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
