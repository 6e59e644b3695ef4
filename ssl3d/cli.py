"""The ``ssl3d`` command (also ``python -m ssl3d``): subcommands registered by features.

A user error (a typed :class:`~ssl3d.errors.InputError`, or an ``OSError`` about a path the user gave) prints
one ``error: ...`` line and exits 2; a cancelled or interrupted (Ctrl-C) job exits 130. The ``--events``
target is the error channel: whatever failed, it receives an ``error`` event (after the ``start`` and
``progress`` events the command had written); nothing else is written on a user error.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled, InputError, SSL3DError

__all__ = ["main", "register_command", "add_common_options", "COMMANDS", "EXIT_USER_ERROR", "EXIT_CANCELLED"]

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130

# Modules that register subcommands when imported (kept lazy: heavy imports happen inside each command).
_FEATURE_MODULES = ("ssl3d.info", "ssl3d.demo.commands", "ssl3d.train.commands", "ssl3d.pretext.commands", "ssl3d.weights.commands", "ssl3d.infer.commands", "ssl3d.inspect.commands", "ssl3d.serve.commands", "ssl3d.data.commands", "ssl3d.study.commands")


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
        sys.stderr.write(f"error: {_with_suggestion(message)} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USER_ERROR)


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


def _with_suggestion(message: str) -> str:
    """argparse's "invalid choice" with a "did you mean" (Python 3.14 argparse has it; 3.10-3.13 do not)."""
    match = _INVALID_CHOICE.search(message)
    if not match:
        return message
    choices = re.findall(r"'([^']*)'", match.group(2)) or [c.strip() for c in match.group(2).split(",")]
    close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.6)
    return message + (f"; did you mean '{close[0]}'?" if close else "")


# A coordinate list that starts with a minus (``-52.7,95.7,-255``): argparse would take it for an option.
_NEGATIVE_LIST = re.compile(r"^-(\d|\.\d)[\d.eE+-]*(,[-+]?[\d.eE+-]*)+$")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--point -52.7,95.7,-255`` as ``--point=-52.7,95.7,-255``, so values with R < 0 parse as written."""
    out: list[str] = []
    for arg in argv:
        if out and _NEGATIVE_LIST.match(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def add_common_options(parser: argparse.ArgumentParser, preset: bool = True, seed: int | None = None) -> None:
    """Options every job shares: device, events, seed and, with ``preset``, config file and preset.

    ``seed``: the default of ``--seed`` for a command without presets (else the preset's seed applies).
    """
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N [auto]")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")
    default = "the preset's" if seed is None else seed
    parser.add_argument("--seed", type=int, default=seed, help=f"random seed of the job [{default}]")
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
    """The ``error`` event on the ``--events`` target (best effort: that target may be what failed)."""
    target = getattr(args, "events", None)
    if target:
        from .events import EventWriter

        try:
            with EventWriter(target) as events:
                events.emit("error", message=message)
        except (OSError, SSL3DError):
            pass


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    message = " ".join(message.split())
    _emit_error(args, message)
    sys.stderr.write(f"error: {message}\n")
    return code


def _user_paths(args: argparse.Namespace) -> list[str]:
    """Absolute forms of every string option value (the paths the user gave, among other strings)."""
    values = [v for v in vars(args).values() if isinstance(v, str)]
    values += [x for v in vars(args).values() if isinstance(v, list) for x in v if isinstance(x, str)]
    return [os.path.abspath(v) for v in values if v and v != "-"]


def _user_path_error(exc: OSError, args: argparse.Namespace) -> str | None:
    """``FILE: reason`` when ``exc`` is about a user path (it, a file inside it, or a folder above it).

    Anything else, e.g. a file of the package itself, is a bug and keeps its traceback.
    """
    def related(a: str, b: str) -> bool:
        try:
            return os.path.commonpath([a, b]) in (a, b)
        except ValueError:  # different drives (Windows)
            return False

    paths = _user_paths(args)
    for name in (exc.filename, exc.filename2):
        if not isinstance(name, (str, os.PathLike)):
            continue
        if any(related(os.path.abspath(os.fspath(name)), p) for p in paths):
            return f"{os.fspath(name)}: {exc.strerror or exc}."
    return None


def main(argv: list[str] | None = None) -> int:
    with _stop_signal_cancels():
        try:
            return _main(argv)
        except Cancelled as exc:  # stopped while the parser's modules were imported
            sys.stderr.write(f"cancelled: {exc}\n")
            return EXIT_CANCELLED


@contextlib.contextmanager
def _stop_signal_cancels():
    """SIGTERM (CTRL-BREAK) before a command watches for it (while torch imports, say) is a cancel too: exit
    130 with a line, not a silent death. Each command's own watch takes over while it runs."""
    def stop(signum, frame):
        raise Cancelled(f"stopped by {signal.Signals(signum).name} while starting")

    previous = {}
    for name in ("SIGTERM", "SIGBREAK"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            with contextlib.suppress(ValueError):  # not the main thread: leave the signals alone
                previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        from .events import check_events_target

        check_events_target(getattr(args, "events", None))  # before the command writes anything
        return int(args._run(args) or 0)
    except Cancelled as exc:
        sys.stderr.write(f"cancelled: {exc}\n")
        return EXIT_CANCELLED
    except InputError as exc:
        return _fail(args, str(exc), EXIT_USER_ERROR)
    except SSL3DError as exc:
        return _fail(args, str(exc), 1)
    except OSError as exc:
        message = _user_path_error(exc, args)
        if message is None:
            _emit_error(args, f"internal error: {type(exc).__name__}: {exc}")
            raise
        return _fail(args, message, EXIT_USER_ERROR)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_CANCELLED
    except Exception as exc:  # a bug: the traceback stays, the events target still hears of it
        _emit_error(args, f"internal error: {type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
