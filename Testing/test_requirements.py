"""ssl3d.requirements: the table agrees with pyproject.toml, versions compare right, stdlib only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from ssl3d import requirements
from ssl3d.requirements import PROVIDED_BY_SLICER, REQUIREMENTS, TORCH, Requirement

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")


def _pyproject_dependencies() -> dict[str, tuple[str | None, str | None]]:
    """{normalised name: (minimum, below)} from pyproject.toml's [project] dependencies."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    table = {}
    for spec in dependencies:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", spec)
        assert match, f"unparsed dependency {spec!r}"
        name, rest = match.groups()
        minimum = below = None
        for clause in filter(None, (c.strip() for c in rest.split(","))):
            operator, version = re.fullmatch(r"(>=|<)\s*([0-9][0-9a-zA-Z.]*)", clause).groups()
            minimum, below = (version, below) if operator == ">=" else (minimum, version)
        table[_normalise(name)] = (minimum, below)
    return table


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_table_matches_pyproject():
    expected = _pyproject_dependencies()
    provided = {_normalise(name) for name in PROVIDED_BY_SLICER}
    table = {_normalise(r.name): (r.minimum, r.below) for r in REQUIREMENTS}
    assert table == {name: spec for name, spec in expected.items() if name not in provided}
    assert expected[_normalise(TORCH.name)] == (TORCH.minimum, TORCH.below)
    assert provided <= set(expected), "PROVIDED_BY_SLICER names a distribution pyproject.toml does not list"


def test_module_uses_only_the_standard_library():
    tree = ast.parse((ROOT / "ssl3d" / "requirements.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2.13.0+cpu", (2, 13)),
        ("1.6.1rc1", (1, 6, 1)),
        ("6.0", (6,)),
        ("6", (6,)),
        ("v1.24.4", (1, 24, 4)),
        ("2.0.0.dev20240101", (2,)),
    ],
)
def test_parse_version(text, expected):
    assert requirements.parse_version(text) == expected


@pytest.mark.parametrize(
    "version, ok",
    [(None, False), ("1.23.5", False), ("1.24", True), ("1.24.0", True), ("2.4.6", True), ("3.0.0", False)],
)
def test_satisfied_by_range(version, ok):
    assert Requirement("numpy", "1.24", below="3").satisfied_by(version) is ok


def test_missing_requirements_reports_what_was_found():
    found = {"monai": "1.3.2", "numpy": "2.4.6"}
    table = (Requirement("monai", "1.4"), Requirement("numpy", "1.24", "3"), Requirement("einops", "0.7"))
    missing = requirements.missing_requirements(table, found.get)
    assert [(r.name, r.installed) for r in missing] == [("monai", "1.3.2"), ("einops", None)]
    assert requirements.pip_args(missing) == ["monai>=1.4", "einops>=0.7"]
    assert requirements.describe(missing).splitlines() == [
        "monai >=1.4 (installed: 1.3.2)",
        "einops >=0.7 (not installed)",
    ]


def test_missing_requirements_in_this_environment_is_empty():
    # the test environment is installed from pyproject.toml, so nothing may be missing
    assert requirements.missing_requirements() == []
    assert requirements.torch_missing() is None


def test_torch_missing_and_never_pip_installed():
    assert requirements.torch_missing({}.get) == TORCH
    assert requirements.torch_missing({"torch": "2.1.0"}.get).installed == "2.1.0"
    with pytest.raises(ValueError, match="PyTorch extension"):
        requirements.pip_args([TORCH])


def test_distribution_names_are_case_and_separator_insensitive():
    assert requirements.installed_version("pyyaml") == requirements.installed_version("PyYAML") is not None
    assert requirements.installed_version("no-such-distribution-ssl3d") is None


def test_import_names_are_importable_here():
    import importlib.util

    for requirement in REQUIREMENTS:
        assert importlib.util.find_spec(requirement.import_name) is not None, requirement


class _Installer:
    """Fake Slicer: a dict of installed versions that the installers update."""

    def __init__(self, installed: dict, agree: bool = True):
        self.installed = dict(installed)
        self.agree = agree
        self.calls = []
        self.scan = requirements.Scan(self.installed.get)

    def confirm(self, text):
        self.calls.append(("confirm", text))
        return self.agree

    def install_torch(self, requirement):
        self.calls.append(("torch", requirement.pip_arg))
        self.installed["torch"] = "2.13.0+cu126"

    def pip_install(self, args):
        self.calls.append(("pip", list(args)))
        for arg in args:
            name, pinned = re.match(r"([A-Za-z0-9_.\-]+)(==)?", arg).groups()
            if not pinned:  # a pin keeps what is installed
                self.installed[name] = "99.0"

    def run(self, loaded=(), testing=False):
        return requirements.ensure(self.confirm, self.install_torch, self.pip_install, self.scan,
                                   loaded=lambda module: module in loaded, testing=testing)


def _everything():
    versions = {r.name: r.minimum for r in REQUIREMENTS}
    versions["numpy"] = "2.0"
    versions["torch"] = "2.8.0"
    return versions


def test_ensure_nothing_missing_asks_nothing():
    fake = _Installer(_everything())
    assert fake.run() == requirements.Outcome(ready=True)
    assert fake.calls == []


def test_ensure_installs_torch_first_then_the_rest_with_dependencies():
    versions = _everything()
    del versions["torch"], versions["monai"]
    versions["SimpleITK"] = "2.4.1"
    fake = _Installer(versions)
    outcome = fake.run()
    assert outcome.ready and not outcome.restart and outcome.missing == []
    assert [call[0] for call in fake.calls] == ["confirm", "torch", "pip"]
    assert fake.calls[0][1].splitlines() == ["torch >=2.8 (not installed)", "monai >=1.4 (not installed)"]
    assert fake.calls[1] == ("torch", "torch>=2.8")
    # no --no-deps: pip resolves monai's dependencies around the PyTorch extension's torch, pinned as installed
    assert fake.calls[2] == ("pip", ["monai>=1.4", "torch==2.13.0", "SimpleITK==2.4.1"])


def test_ensure_stops_before_pip_when_torch_is_still_missing():
    versions = _everything()
    del versions["torch"], versions["monai"]
    fake = _Installer(versions)
    fake.install_torch = lambda requirement: fake.calls.append(("torch", requirement.pip_arg))  # user closed it
    outcome = fake.run()
    assert [call[0] for call in fake.calls] == ["confirm", "torch"]  # pip would pull torch from PyPI
    assert not outcome.ready and [r.name for r in outcome.missing] == ["torch", "monai"]


def test_ensure_declined_installs_nothing():
    versions = _everything()
    versions["PyYAML"] = "5.4"
    fake = _Installer(versions, agree=False)
    outcome = fake.run()
    assert outcome.declined and not outcome.ready
    assert [(r.name, r.installed) for r in outcome.missing] == [("PyYAML", "5.4")]
    assert [call[0] for call in fake.calls] == ["confirm"]


def test_ensure_in_testing_mode_never_asks_nor_installs():
    versions = _everything()
    del versions["torch"], versions["einops"]
    fake = _Installer(versions)
    outcome = fake.run(testing=True)
    assert outcome.testing and not outcome.ready and not outcome.declined
    assert [r.name for r in outcome.missing] == ["torch", "einops"]
    assert fake.calls == []
    assert _Installer(_everything()).run(testing=True) == requirements.Outcome(ready=True)


def test_ensure_upgrade_of_a_loaded_module_needs_a_restart():
    versions = _everything()
    versions["PyYAML"] = "5.4"
    outcome = _Installer(versions).run(loaded={"yaml"})
    assert outcome.restart and not outcome.ready and outcome.missing == []
    assert _Installer(versions).run(loaded={"numpy"}).ready  # numpy was not touched


def test_ensure_reports_what_the_installer_could_not_install():
    versions = _everything()
    del versions["einops"]
    fake = _Installer(versions)
    fake.pip_install = lambda args: None  # pip "succeeded" but nothing changed
    outcome = fake.run()
    assert not outcome.ready and [r.name for r in outcome.missing] == ["einops"]


def test_ensure_scans_once_per_session_and_again_after_an_install():
    versions = _everything()
    del versions["einops"]
    fake = _Installer(versions)
    assert fake.run().ready and fake.scan.scans == 2  # before and after the install
    for _ in range(5):  # one job per click: the kept answer, no metadata read
        assert fake.run().ready
    assert fake.scan.scans == 2
    fake.scan.invalidate()
    assert fake.run().ready and fake.scan.scans == 3


def test_a_failed_install_forgets_the_kept_scan():
    versions = _everything()
    del versions["einops"]
    fake = _Installer(versions)

    def broken(args):
        fake.installed["einops"] = "0.8"  # half done, then pip fails
        raise RuntimeError("pip failed")

    fake.pip_install = broken
    with pytest.raises(RuntimeError, match="pip failed"):
        fake.run()
    assert fake.scan.missing() == [] and fake.scan.scans == 2


def test_a_package_installed_elsewhere_is_seen_at_the_next_call():
    versions = _everything()
    del versions["torch"]
    scan = requirements.Scan(versions.get)
    assert [r.name for r in scan.missing()] == ["torch"]
    versions["torch"] = "2.9.0"  # e.g. from the PyTorch module's own Install button
    assert scan.missing() == [] and scan.scans == 2
    assert scan.missing() == [] and scan.scans == 2  # all there: kept from now on


def test_session_scan_is_kept_until_invalidate(monkeypatch):
    lookups = []

    def counting(name):
        lookups.append(name)
        return _everything().get(name)

    monkeypatch.setattr(requirements, "SESSION", requirements.Scan())
    monkeypatch.setattr(requirements, "installed_version", counting)
    assert requirements.missing() == [] and requirements.missing() == []
    assert requirements.SESSION.scans == 1 and len(lookups) == len(REQUIREMENTS) + 1
    requirements.invalidate()
    assert requirements.missing() == [] and requirements.SESSION.scans == 2
    assert requirements.missing(cache=False) == [] and requirements.SESSION.scans == 3


def test_install_steps_order_and_pins():
    monai, numpy = Requirement("monai", "1.4"), Requirement("numpy", "1.24", "3")
    steps = requirements.install_steps([TORCH, monai, numpy])
    assert [(s.via_pytorch, s.requirements) for s in steps] == [(True, (TORCH,)), (False, (monai, numpy))]
    assert steps[1].pip_arguments({"torch": "2.9.1+cu126"}.get) == ["monai>=1.4", "numpy>=1.24,<3", "torch==2.9.1"]
    assert steps[1].pip_arguments({"torch": "2.10.0.dev20260101+cpu", "SimpleITK": "2.4.0-g1a2b3c"}.get) == [
        "monai>=1.4", "numpy>=1.24,<3", "torch==2.10.0.dev20260101"]  # no pin from a version pip cannot read
    assert [s.via_pytorch for s in requirements.install_steps([monai])] == [False]
    assert requirements.install_steps([]) == []
    with pytest.raises(ValueError, match="SimpleITK"):
        requirements.install_steps([Requirement("SimpleITK", "2.2")])


def test_skip_reason_names_what_is_missing():
    versions = _everything()
    del versions["torch"]
    reason = requirements.skip_reason(requirements.Scan(versions.get))
    assert reason.startswith("SSL3D's Python packages are missing: torch >=2.8 (not installed).")
    assert "\n" not in reason
    assert requirements.skip_reason(requirements.Scan(_everything().get)) is None


MODULES = ("SSLPretrain/SSLPretrain.py", "SSLSegment/SSLSegment.py")


@pytest.mark.parametrize("forbidden", [
    "slicer.pydeps",  # exists in no Slicer release
    "skip_packages",  # Slicer's "discouraged workaround": --no-deps and rewritten metadata
    "assertTrue(ensureEngineRequirements()",  # installs (5.10) or fails (5.12) under --testing
    "sys.executable is the application",  # Slicer sets sys.executable to PythonSlicer
])
def test_modules_install_the_way_slicer_supports(forbidden):
    found = [path for path in MODULES if forbidden in (ROOT / path).read_text(encoding="utf-8")]
    assert found == []
