"""The engine's arrows go one way: no import cycle among the modules of ``ssl3d/`` (imports inside functions
count: a lazy import is still an arrow a reader follows), and no module uses another module's private
(``_underscore``) name, neither imported by name nor reached as an attribute of an imported module."""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssl3d"


@dataclass
class ImportGraph:
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> the package modules it imports
    private: list[str] = field(default_factory=list)  # "importer: module._name"

    def cycles(self) -> list[list[str]]:
        """The strongly connected components with more than one module (Tarjan, iterative)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        for root in sorted(self.edges):
            if root in index:
                continue
            work = [(root, iter(sorted(self.edges[root])))]
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is not None:
                    if child not in index:
                        index[child] = low[child] = len(index)
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(self.edges.get(child, ())))))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
        return found


def _modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _base(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if not level:
        return name or ""
    parts = module.split(".")
    parts = parts if is_package else parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_graph(package: Path) -> ImportGraph:
    modules = _modules(package)
    graph = ImportGraph({name: set() for name in modules})
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> package module, for attribute checks
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        graph.edges[name].add(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = _base(name, is_package, node.level, node.module)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    if target in modules:  # a submodule: `from . import volume_fusion as vf`
                        graph.edges[name].add(target)
                        aliases[alias.asname or alias.name] = target
                    elif base in modules:
                        graph.edges[name].add(base)
                        if _private(alias.name):
                            graph.private.append(f"{name}: {base}.{alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if _private(node.attr) and aliases[node.value.id] != name:
                    graph.private.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
        graph.edges[name].discard(name)
    return graph


def test_the_engine_has_no_import_cycle():
    cycles = import_graph(PACKAGE).cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_uses_another_modules_private_names():
    private = import_graph(PACKAGE).private
    assert not private, "private names used across modules:\n" + "\n".join(sorted(set(private)))


def test_the_checks_find_a_planted_cycle_and_private_names(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .b import public\n",
        "b.py": "def f():\n    from . import a  # a lazy import closes the circle\n\npublic = 1\n_hidden = 2\n",
        "c.py": "from .b import _hidden\nfrom . import b as bee\n\nprint(bee._hidden, bee.public)\n",
        "sub/__init__.py": "from .d import x\n",
        "sub/d.py": "from . import x as y  # the package's own __init__: a circle through it\nx = 1\n",
        "e.py": "from pkg import c\n",
    }
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    graph = import_graph(package)
    assert sorted(graph.cycles()) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.d"]]
    assert graph.private == ["pkg.c: pkg.b._hidden"] * 2  # imported by name, and reached as bee._hidden
    assert graph.edges["pkg.e"] == {"pkg.c"}
