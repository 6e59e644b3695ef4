"""What the engine needs from the Python environment, what is missing, and how Slicer installs it (stdlib only).

Slicer's modules call this on first use, before anything imports numpy-heavy or torch-heavy parts of
``ssl3d``, to show one dialog that lists what is missing and asks before installing it. The floors are
those of ``pyproject.toml``; ``Testing/test_requirements.py`` keeps :data:`REQUIREMENTS` and
:data:`TORCH` in step with it. torch and SimpleITK are not in :data:`REQUIREMENTS`: Slicer ships
SimpleITK, and torch comes from the PyTorch extension (``PyTorchUtils``), which picks the CUDA build
that fits the driver; a plain ``pip install`` would pull the wrong build.

The install plan (:func:`install_steps`) is torch first, through the PyTorch extension, then everything
else with its dependencies through Slicer's pip, with torch and SimpleITK pinned at the versions already
installed so that pip resolves around them instead of replacing them (no ``--no-deps``, no
``skip_packages``). The metadata scan runs once per session (:func:`missing`) and again only after an
install or :func:`invalidate`. In ``Slicer --testing`` nothing is installed: :func:`skip_reason` tells a
test why it skips.

Example::

    missing()                                 # [] when everything is there (scanned once per session)
    print(describe(missing()))                # "torch >=2.8 (not installed)\\nmonai >=1.4 (not installed)"
    outcome = ensure(confirm, install_torch, slicer.util.pip_install, testing=slicer.app.testingEnabled())
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
    "Scan",
    "SESSION",
    "missing",
    "invalidate",
    "skip_reason",
    "InstallStep",
    "install_steps",
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


class Scan:
    """What is missing (torch first); once nothing is, that answer is kept until :meth:`invalidate`.

    Scanning the metadata of every installed distribution takes tens of milliseconds in Slicer's Python,
    which has many; the modules ask before every job and every click, so "all there" is kept for the
    session. While something is missing every call looks again: the user may have installed it meanwhile
    (from the PyTorch module, or with pip in the Python console), and a dialog follows anyway.

    Args:
        version_of: looks an installed distribution up; ``None`` means :func:`installed_version`
            (looked up at scan time, so tests can replace it). Tests pass a dict's ``get``.

    Attributes:
        scans: how many times the metadata was read (tests check the cache with it).
    """

    def __init__(self, version_of: Optional[Callable[[str], Optional[str]]] = None) -> None:
        self._version_of = version_of
        self._missing: Optional[list[Requirement]] = None
        self.scans = 0

    def version_of(self, name: str) -> Optional[str]:
        """The installed version of ``name``, read now (never cached)."""
        return (self._version_of or installed_version)(name)

    def missing(self, cache: bool = True) -> list[Requirement]:
        """torch (when missing) then the other missing requirements; scans unless "none" is kept."""
        if self._missing != [] or not cache:
            torch = torch_missing(self.version_of)
            self._missing = ([torch] if torch else []) + missing_requirements(REQUIREMENTS, self.version_of)
            self.scans += 1
        return list(self._missing)

    def invalidate(self) -> None:
        """Forget the kept result: the next :meth:`missing` scans again (call it after any install)."""
        self._missing = None


#: This Python session's scan; :func:`missing`, :func:`invalidate` and :func:`ensure` share it.
SESSION = Scan()


def missing(cache: bool = True) -> list[Requirement]:
    """What this Python lacks (torch first), scanned once per session; ``cache=False`` scans again."""
    return SESSION.missing(cache)


def invalidate() -> None:
    """Scan again on the next :func:`missing` (after packages were installed some other way)."""
    SESSION.invalidate()


def skip_reason(scan: Optional[Scan] = None) -> Optional[str]:
    """Why a test inside Slicer must skip (the engine's packages are missing), or None when it can run.

    In ``Slicer --testing`` the modules never install anything, so their tests call this first and skip
    with the message, e.g. ``"SSL3D's Python packages are missing: torch >=2.8 (not installed); ..."``.
    """
    wanted = (scan or SESSION).missing()
    if not wanted:
        return None
    return ("SSL3D's Python packages are missing: " + describe(wanted).replace("\n", "; ")
            + ". Install them from the module's first-use dialog (outside --testing), then run the test again.")


#: A PEP 440 public version that pip accepts after ``==``.
_PUBLIC_VERSION = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", re.IGNORECASE)


@dataclass(frozen=True)
class InstallStep:
    """One step of the install plan.

    Attributes:
        via_pytorch: True: install ``requirements[0]`` (torch) with the PyTorch extension; False: pip.
        requirements: what this step installs.
    """

    via_pytorch: bool
    requirements: tuple[Requirement, ...]

    def pip_arguments(self, version_of: Callable[[str], Optional[str]] = installed_version) -> list[str]:
        """pip arguments for a pip step: the requirements, then what Slicer provides pinned as installed.

        The pins are read when the step runs (after torch was installed) so that pip, which installs each
        requirement with its dependencies, keeps the PyTorch extension's torch build and Slicer's SimpleITK
        (``torch==2.9.1`` also accepts the installed ``2.9.1+cu126``) and fails instead of replacing them.
        """
        pins = []
        for name in PROVIDED_BY_SLICER:
            version = (version_of(name) or "").split("+")[0]
            if _PUBLIC_VERSION.fullmatch(version):  # a build's odd version string would make pip refuse all
                pins.append(f"{name}=={version}")
        return pip_args(self.requirements) + pins


def install_steps(wanted: Sequence[Requirement]) -> list[InstallStep]:
    """The order in which Slicer installs ``wanted``: torch through the PyTorch extension, then one pip step.

    Raises:
        ValueError: ``wanted`` holds SimpleITK, which Slicer ships and the module must not replace.
    """
    torch = [r for r in wanted if r.name.lower() == TORCH.name]
    rest = [r for r in wanted if r.name.lower() != TORCH.name]
    pip_args(rest)  # raises on anything else that Slicer provides
    steps = [InstallStep(True, (torch[0],))] if torch else []
    return steps + ([InstallStep(False, tuple(rest))] if rest else [])


@dataclass
class Outcome:
    """What :func:`ensure` achieved.

    Attributes:
        ready: everything is installed and usable in this session.
        declined: the user said no; nothing was installed.
        restart: a package that this Python session had already imported was replaced; restart Slicer.
        missing: what is still missing (after a refusal, a failed install, in testing mode, before a restart).
        testing: Slicer runs its tests (``--testing``): nothing was asked or installed; see :func:`skip_reason`.
    """

    ready: bool
    declined: bool = False
    restart: bool = False
    missing: list = field(default_factory=list)
    testing: bool = False


def ensure(
    confirm: Callable[[str], bool],
    install_torch: Callable[[Requirement], None],
    pip_install: Callable[[list], None],
    scan: Optional[Scan] = None,
    loaded: Callable[[str], bool] = lambda module: module in sys.modules,
    testing: bool = False,
) -> Outcome:
    """Check the engine's requirements and, with the user's consent, install what is missing.

    The Slicer modules call this before each job; it reads the packages' metadata once per session (see
    :class:`Scan`). The decisions live here; the dialogs and installers are the callbacks, so this runs
    without Slicer in tests.

    Args:
        confirm: shows the text (one line per missing package, see :func:`describe`) and returns
            whether the user agrees to install. Called once, and only when something is missing.
        install_torch: installs torch satisfying the given requirement (in Slicer: the PyTorch
            extension's ``PyTorchUtilsLogic().installTorch(torchVersionRequirement=r.specifier)``);
            runs before ``pip_install``, and when torch is still missing afterwards pip is not run, so
            that pip never pulls a torch build from PyPI as a dependency.
        pip_install: installs a list of pip arguments, dependencies included (in Slicer:
            ``slicer.util.pip_install``); see :meth:`InstallStep.pip_arguments`.
        scan: whose kept result to use and refresh; ``None``: this session's (:data:`SESSION`).
        loaded: whether a module is already imported in this session (an upgrade then needs a restart).
        testing: Slicer runs in testing mode: report what is missing, never ask, never install.

    Returns:
        An :class:`Outcome`. Errors raised by the callbacks propagate (the kept scan is dropped first).
    """
    scan = scan or SESSION
    wanted = scan.missing()
    if not wanted:
        return Outcome(ready=True)
    if testing:
        return Outcome(ready=False, missing=wanted, testing=True)
    if not confirm(describe(wanted)):
        return Outcome(ready=False, declined=True, missing=wanted)
    try:
        _install(install_steps(wanted), install_torch, pip_install, scan)
    finally:
        importlib.invalidate_caches()
        scan.invalidate()
    restart = any(r.installed is not None and loaded(r.import_name) for r in wanted)
    still = scan.missing()
    return Outcome(ready=not still and not restart, restart=restart, missing=still)


def _install(steps: Sequence[InstallStep], install_torch: Callable, pip_install: Callable, scan: Scan) -> None:
    """Run the plan in order; stop before pip when the PyTorch extension left torch missing."""
    for step in steps:
        if step.via_pytorch:
            install_torch(step.requirements[0])
            importlib.invalidate_caches()
            if torch_missing(scan.version_of) is not None:
                return
        else:
            pip_install(step.pip_arguments(scan.version_of))
