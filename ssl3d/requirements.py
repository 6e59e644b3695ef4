"""What the engine needs from the Python environment, and what is missing (standard library only).

Slicer's modules call this on first use, before anything imports numpy-heavy or torch-heavy parts of
``ssl3d``, to show one dialog that lists what is missing and asks before installing it. The floors are
those of ``pyproject.toml``; ``Testing/test_requirements.py`` keeps :data:`REQUIREMENTS` and
:data:`TORCH` in step with it. torch and SimpleITK are not in :data:`REQUIREMENTS`: Slicer ships
SimpleITK, and torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA build
that fits the driver; a plain ``pip install`` would pull the wrong build.

Example::

    missing = missing_requirements()          # [] when everything is there
    print(describe(missing))                  # "monai >=1.4 (not installed)\\n..."
    slicer.util.pip_install(pip_args(missing))
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional, Sequence

__all__ = [
    "Requirement",
    "REQUIREMENTS",
    "TORCH",
    "PROVIDED_BY_SLICER",
    "installed_version",
    "parse_version",
    "missing_requirements",
    "torch_missing",
    "pip_args",
    "describe",
    "Outcome",
    "ensure",
]


@dataclass(frozen=True)
class Requirement:
    """One distribution the engine needs.

    Args:
        name: distribution name as pip knows it (``PyYAML``, not ``yaml``).
        minimum: lowest acceptable version (``>=``), or ``None``.
        below: first unacceptable version (``<``), or ``None``.
        installed: the version found by :func:`missing_requirements`; ``None`` when not installed.
        module: the top-level module it provides, when that is not the lower-cased ``name``.
    """

    name: str
    minimum: Optional[str] = None
    below: Optional[str] = None
    installed: Optional[str] = None
    module: Optional[str] = None

    @property
    def import_name(self) -> str:
        """The top-level module it provides (``yaml`` for PyYAML)."""
        return self.module or self.name.lower().replace("-", "_")

    @property
    def specifier(self) -> str:
        """pip's form of the version range, e.g. ``>=1.24,<3``."""
        parts = ([f">={self.minimum}"] if self.minimum else []) + ([f"<{self.below}"] if self.below else [])
        return ",".join(parts)

    @property
    def pip_arg(self) -> str:
        """``name`` plus :attr:`specifier`, one pip argument."""
        return f"{self.name}{self.specifier}"

    def satisfied_by(self, version: Optional[str]) -> bool:
        """True when ``version`` is installed and inside the range."""
        if version is None:
            return False
        found = parse_version(version)
        if self.minimum and found < parse_version(self.minimum):
            return False
        return not (self.below and found >= parse_version(self.below))


#: The engine's runtime dependencies that Slicer's Python may lack (pyproject.toml minus torch, SimpleITK).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("monai", "1.4"),
    Requirement("einops", "0.7"),
    Requirement("nibabel", "5.0"),
    Requirement("numpy", "1.24", below="3"),
    Requirement("scipy", "1.10"),
    Requirement("safetensors", "0.4"),
    Requirement("PyYAML", "6.0", module="yaml"),
    Requirement("psutil", "5.9"),
    Requirement("tensorboard", "2.14"),
    Requirement("pillow", "10.0", module="PIL"),
    Requirement("tqdm", "4.60"),
    Requirement("slicerio", "1.1"),
    Requirement("pynrrd", "1.0", module="nrrd"),
)

#: torch: installed through Slicer's PyTorch extension, never by a plain pip install from the module.
TORCH = Requirement("torch", "2.8")

#: Distributions in pyproject.toml that Slicer (or its PyTorch extension) provides.
PROVIDED_BY_SLICER = ("torch", "SimpleITK")


def parse_version(version: str) -> tuple[int, ...]:
    """Numeric release part of a version string, for comparisons.

    ``"2.13.0+cpu"`` -> ``(2, 13, 0)``, ``"1.6.1rc1"`` -> ``(1, 6, 1)``, ``"6.0"`` -> ``(6, 0)``. A
    pre-release counts as its release, which is good enough for floors. Trailing zeros are dropped, so
    ``"6"`` and ``"6.0"`` compare equal.
    """
    numbers = []
    for part in version.strip().lstrip("vV").split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def installed_version(name: str) -> Optional[str]:
    """Installed version of distribution ``name`` (case and ``-``/``_`` insensitive), or ``None``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_requirements(
    requirements: Iterable[Requirement] = REQUIREMENTS,
    version_of: Callable[[str], Optional[str]] = installed_version,
) -> list[Requirement]:
    """The requirements that are not installed or whose version is outside the range.

    Each returned record has :attr:`Requirement.installed` set to what was found (``None``: absent).
    ``version_of`` looks a distribution up; tests pass a dict's ``get``.
    """
    missing = []
    for requirement in requirements:
        version = version_of(requirement.name)
        if not requirement.satisfied_by(version):
            missing.append(replace(requirement, installed=version))
    return missing


def torch_missing(version_of: Callable[[str], Optional[str]] = installed_version) -> Optional[Requirement]:
    """:data:`TORCH` with the version found when torch is absent or too old, else ``None``."""
    found = missing_requirements((TORCH,), version_of)
    return found[0] if found else None


def pip_args(missing: Sequence[Requirement]) -> list[str]:
    """pip arguments that install ``missing``, e.g. ``["monai>=1.4", "numpy>=1.24,<3"]``.

    Raises:
        ValueError: ``missing`` holds torch, which must come from the PyTorch extension.
    """
    for requirement in missing:
        if requirement.name.lower() in (name.lower() for name in PROVIDED_BY_SLICER):
            raise ValueError(f"pip_args: {requirement.name} is provided by Slicer or its PyTorch extension; "
                             "do not pip-install it from the module.")
    return [requirement.pip_arg for requirement in missing]


def describe(missing: Sequence[Requirement]) -> str:
    """One line per requirement for a dialog: ``monai >=1.4 (installed: 1.3.2)`` or ``(not installed)``."""
    lines = []
    for requirement in missing:
        found = f"installed: {requirement.installed}" if requirement.installed else "not installed"
        lines.append(f"{requirement.name} {requirement.specifier} ({found})")
    return "\n".join(lines)


@dataclass
class Outcome:
    """What :func:`ensure` achieved.

    Attributes:
        ready: everything is installed and usable in this session.
        declined: the user said no; nothing was installed.
        restart: a package that this Python session had already imported was replaced; restart Slicer.
        missing: what is still missing (after a refusal, a failed install, or before a restart).
    """

    ready: bool
    declined: bool = False
    restart: bool = False
    missing: list = field(default_factory=list)


def ensure(
    confirm: Callable[[str], bool],
    install_torch: Callable[[Requirement], None],
    pip_install: Callable[[list], None],
    version_of: Callable[[str], Optional[str]] = installed_version,
    loaded: Callable[[str], bool] = lambda module: module in sys.modules,
) -> Outcome:
    """Check the engine's requirements and, with the user's consent, install what is missing.

    The Slicer modules call this on first use (never at import). The decisions live here; the dialogs and
    installers are the callbacks, so this runs without Slicer in tests.

    Args:
        confirm: shows the text (one line per missing package, see :func:`describe`) and returns
            whether the user agrees to install. Called once, and only when something is missing.
        install_torch: installs torch satisfying the given requirement (in Slicer: the PyTorch
            extension's ``PyTorchUtilsLogic().installTorch``); called before ``pip_install`` so that
            pip never pulls a torch build from PyPI as a dependency.
        pip_install: installs a list of pip arguments (see :func:`pip_args`).
        version_of: looks an installed distribution up (tests pass a dict's ``get``).
        loaded: whether a module is already imported in this session (an upgrade then needs a restart).

    Returns:
        An :class:`Outcome`. Errors raised by the callbacks propagate.
    """
    torch = torch_missing(version_of)
    missing = missing_requirements(REQUIREMENTS, version_of)
    wanted = ([torch] if torch else []) + missing
    if not wanted:
        return Outcome(ready=True)
    if not confirm(describe(wanted)):
        return Outcome(ready=False, declined=True, missing=wanted)
    if torch:
        install_torch(torch)
    if missing:
        pip_install(pip_args(missing))
    importlib.invalidate_caches()
    restart = any(r.installed is not None and loaded(r.import_name) for r in wanted)
    torch_left = torch_missing(version_of)
    still = ([torch_left] if torch_left else []) + missing_requirements(REQUIREMENTS, version_of)
    return Outcome(ready=not still and not restart, restart=restart, missing=still)
