"""What a study runs: its inits, the numbers of labelled cases, the seeds, the held-out split and the cells.

Everything here is decided before any training, from the command line and the dataset's file list:

- the **held-out split** is drawn once (a fixed seed, :data:`SPLIT_SEED`) and evaluates every cell;
- the **training subsets** are drawn once per seed from the remaining cases and shared by every init, and
  they are nested: the first ``n`` cases of one seeded order, so the 1-case subset lies inside the 2-case one;
- a **cell** is one (init, number of labelled cases, seed), trained in ``STUDY/cells/<init>-<cases>-s<seed>/``.

Example::

    parse_init("voco=runs/voco/bundle")        # InitSpec('voco', bundle=Path('runs/voco/bundle'))
    parse_cases("1,2,5,all", pool=12)           # [1, 2, 5, 12]
    training_subset(pool, seed=0, n=2)          # the first 2 cases of seed 0's order
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DatasetError

__all__ = ["RANDOM", "SPLIT_SEED", "InitSpec", "Cell", "parse_init", "parse_cases", "held_out_split", "training_subset", "plan_cells"]

RANDOM = "random"
SPLIT_SEED = 0  # the held-out split never changes with --seeds
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class InitSpec:
    """One initialisation: random, a pretext bundle (trained or imported), or a preset pretrained first on ``data``."""

    name: str
    bundle: Path | None = None
    preset: str | None = None
    data: Path | None = None

    @property
    def pretrains(self) -> bool:
        return self.preset is not None

    def to_dict(self) -> dict:
        return {"name": self.name, "bundle": _text(self.bundle), "preset": self.preset, "data": _text(self.data)}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())


def parse_init(text: str) -> InitSpec:
    """``random``, ``NAME=BUNDLE`` or ``NAME=PRESET:UNLABELLED_DATA`` (pretrained with that preset first).

    A value that exists as a path is a bundle (so a Windows ``C:\\...`` is never read as a preset).

    Raises:
        ConfigError: a malformed item, a bad name, or a PRESET that is not a pretext preset.
        BundleError: ``NAME=BUNDLE`` where BUNDLE does not exist.
    """
    from ..errors import BundleError

    if text == RANDOM:
        return InitSpec(RANDOM)
    name, sep, value = text.partition("=")
    if not sep or not value:
        raise ConfigError(f"--init {text!r} must be 'random', NAME=BUNDLE or NAME=PRESET:UNLABELLED_DATA (e.g. voco=runs/voco/bundle).")
    if not _NAME.match(name) or name == RANDOM:
        raise ConfigError(f"--init {text!r}: the name {name!r} must start with a letter and hold only letters, digits, '_' and '.', "
                          f"and not be {RANDOM!r}.")
    if Path(value).exists():
        return InitSpec(name, bundle=Path(value))
    preset, sep, data = value.partition(":")
    if sep and data:
        _check_pretext_preset(preset, text)
        return InitSpec(name, preset=preset, data=Path(data))
    raise BundleError(f"--init {text}: {value}: no such bundle folder (or give NAME=PRESET:UNLABELLED_DATA to pretrain first).")


def _check_pretext_preset(name: str, text: str) -> None:
    from ..config import get_preset

    method = get_preset(name).method  # an unknown name: ConfigError with "did you mean"
    if method not in ("voco", "vf"):
        raise ConfigError(f"--init {text}: {name} is a {method!r} preset; pretraining takes a VoCo or Volume Fusion preset (e.g. voco-v1-cpu).")


def check_init_names(inits: Sequence[InitSpec]) -> None:
    """Raises ConfigError when two inits share a name (their cells would share folders)."""
    names = [init.name for init in inits]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--init names must be unique; given more than once: {', '.join(repeated)}.")


def parse_cases(text: str, pool: int) -> list[int]:
    """``"1,2,5,all"`` -> sorted distinct numbers of labelled cases; ``all`` is the whole training pool.

    Raises:
        ConfigError: an item that is neither a positive integer nor ``all``.
        DatasetError: more labelled cases than the pool holds.
    """
    numbers = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "all":
            numbers.add(pool)
        elif item.isdigit() and int(item) >= 1:
            numbers.add(int(item))
        else:
            raise ConfigError(f"--cases item {item!r} must be a positive integer or 'all', e.g. --cases 1,2,5,all.")
    if not numbers:
        raise ConfigError(f"--cases {text!r} names no number of labelled cases; use e.g. --cases 1,2,5,all.")
    if max(numbers) > pool:
        raise DatasetError(f"--cases asks for {max(numbers)} labelled cases, but only {pool} remain for training after the held-out split; "
                           f"ask for fewer, hold out fewer (--held-out) or add labelled cases.")
    return sorted(numbers)


def held_out_split(cases: Sequence, held_out: int | None) -> tuple[list, list]:
    """(held-out cases, training pool): ``held_out`` cases (default a fifth, at least one) drawn with :data:`SPLIT_SEED`.

    Raises:
        DatasetError: the held-out split would be empty, or it would leave no case to train on.
    """
    total = len(cases)
    count = max(1, round(total / 5)) if held_out is None else held_out
    if count < 1 or total < 2:
        raise DatasetError(f"the held-out split would be empty ({total} labelled case(s), --held-out {count}); "
                           "a study needs at least 1 held-out case and 1 training case.")
    if count >= total:
        raise DatasetError(f"--held-out {count} leaves no training case of the {total} labelled cases.")
    order = np.random.default_rng(SPLIT_SEED).permutation(total)
    return [cases[i] for i in sorted(order[:count])], [cases[i] for i in sorted(order[count:])]


def training_subset(pool: Sequence, seed: int, n: int) -> list:
    """The first ``n`` cases of seed ``seed``'s order of the pool: nested in ``n``, the same for every init."""
    order = np.random.default_rng([1, seed]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


@dataclass(frozen=True)
class Cell:
    init: str
    cases: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.init}-{self.cases}-s{self.seed}"


def plan_cells(inits: Sequence[str], cases: Sequence[int], seeds: Sequence[int]) -> list[Cell]:
    """Every (init, cases, seed), seed-major: an interrupted study has whole seeds of every init done first."""
    return [Cell(init, n, seed) for seed in seeds for n in cases for init in inits]
