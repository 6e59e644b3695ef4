"""Find syntax and standard-library names newer than a Python floor in source text (a static check).

``ast.parse(feature_version=...)`` rejects newer syntax that the parser knows by version (``match`` before
3.10, ``except*``, type parameters); this adds what it cannot see: names that a newer standard library
added (``tomllib``, ``typing.Self``, ``Path.walk``...) and keywords that newer functions accept.

Example::

    newer_than("import tomllib\\n", (3, 10))   # ["<source>:1: tomllib is Python 3.11+"]
"""

from __future__ import annotations

import ast
from typing import Iterator

#: Modules added after 3.10.
NEWER_MODULES = {"tomllib": (3, 11), "wsgiref.types": (3, 11), "sys.monitoring": (3, 12)}

#: Module attributes added after 3.10, by dotted name.
NEWER_NAMES = {
    **{f"typing.{name}": (3, 11) for name in (
        "Self", "Unpack", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
        "NotRequired", "TypeVarTuple", "dataclass_transform", "get_overloads", "clear_overloads")},
    **{f"typing.{name}": (3, 12) for name in ("override", "TypeAliasType")},
    **{f"enum.{name}": (3, 11) for name in (
        "StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember", "global_enum",
        "property", "show_flag_values")},
    "datetime.UTC": (3, 11),
    "itertools.batched": (3, 12),
    **{f"asyncio.{name}": (3, 11) for name in ("TaskGroup", "Runner", "Barrier", "timeout", "timeout_at", "Timeout")},
    "contextlib.chdir": (3, 11),
    "hashlib.file_digest": (3, 11),
    "operator.call": (3, 11),
    "math.cbrt": (3, 11), "math.exp2": (3, 11), "math.sumprod": (3, 12),
    "re.NOFLAG": (3, 11),
    "logging.getLevelNamesMapping": (3, 11),
    "inspect.getmembers_static": (3, 11), "inspect.markcoroutinefunction": (3, 12),
    "sys.exception": (3, 11), "sys.last_exc": (3, 12),
    "os.path.splitroot": (3, 12), "os.path.isjunction": (3, 12), "os.listdrives": (3, 12),
    "types.get_original_bases": (3, 12),
    "collections.abc.Buffer": (3, 12),
    "pathlib.Path.walk": (3, 12), "pathlib.Path.is_junction": (3, 12), "pathlib.Path.with_segments": (3, 12),
}

#: Built-in names added after 3.10.
NEWER_BUILTINS = {"ExceptionGroup": (3, 11), "BaseExceptionGroup": (3, 11)}

#: Methods added after 3.10 that are called on objects (the receiver's type is unknown statically).
#: ``walk`` is Path.walk (3.12) unless called on the ``os`` or ``ast`` module.
NEWER_METHODS = {"walk": (3, 12), "add_note": (3, 11), "is_junction": (3, 12), "with_segments": (3, 12)}
_OLD_WALKS = {"os", "ast"}

#: (function name, keyword) pairs added after 3.10.
NEWER_KEYWORDS = {
    ("rmtree", "onexc"): (3, 12),
    ("relative_to", "walk_up"): (3, 12),
    ("NamedTemporaryFile", "delete_on_close"): (3, 12),
    ("TemporaryDirectory", "delete"): (3, 12),
    ("dataclass", "weakref_slot"): (3, 11),
}


def newer_than(source: str, floor: tuple[int, int] = (3, 10), filename: str = "<source>") -> list[str]:
    """Every use in ``source`` of syntax or standard library newer than ``floor``: ``"file:line: what"``.

    A syntax error at ``floor`` (``ast.parse(feature_version=floor)``) is one finding; the name checks then
    run on the tree parsed by this interpreter.
    """
    findings = []
    try:
        ast.parse(source, filename, feature_version=floor)
    except SyntaxError as error:
        findings.append(f"{filename}:{error.lineno}: syntax newer than Python {floor[0]}.{floor[1]}: {error.msg}")
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:  # newer than this interpreter too: the finding above says so
        return findings
    findings += [f"{filename}:{line}: {what} is Python {version[0]}.{version[1]}+"
                 for line, what, version in _uses(tree) if version > floor]
    return findings


def _uses(tree: ast.AST) -> Iterator[tuple[int, str, tuple[int, int]]]:
    """(line, name, version) for every post-3.10 name in ``tree``; imports tracked through aliases."""
    bound: dict[str, str] = {}  # local name -> dotted name it stands for
    for node in ast.walk(tree):  # imports first: a name may be used above a function-level import
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        yield from _node_uses(node, bound)


def _node_uses(node: ast.AST, bound: dict[str, str]) -> Iterator[tuple[int, str, tuple[int, int]]]:
    line = getattr(node, "lineno", 0)
    if type(node).__name__ == "TryStar":  # only this interpreter's ast knows it (3.11+)
        yield line, "except*", (3, 11)
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from _module(line, alias.name)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        yield from _module(line, node.module)
        for alias in node.names:
            yield from _name(line, f"{node.module}.{alias.name}")
    elif isinstance(node, ast.Attribute):
        dotted = _dotted(node, bound)
        if dotted in NEWER_NAMES or dotted in NEWER_MODULES:
            yield from _name(line, dotted)
        elif node.attr in NEWER_METHODS and not (node.attr == "walk" and _dotted(node.value, bound) in _OLD_WALKS):
            yield line, f".{node.attr}()", NEWER_METHODS[node.attr]
    elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS and node.id not in bound:
        yield line, node.id, NEWER_BUILTINS[node.id]
    elif isinstance(node, ast.Call):
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        for keyword in node.keywords:
            version = NEWER_KEYWORDS.get((function, keyword.arg))
            if version:
                yield line, f"{function}({keyword.arg}=...)", version


def _module(line: int, module: str) -> Iterator[tuple[int, str, tuple[int, int]]]:
    for name, version in NEWER_MODULES.items():
        if module == name or module.startswith(name + "."):
            yield line, name, version


def _name(line: int, dotted: str) -> Iterator[tuple[int, str, tuple[int, int]]]:
    if dotted in NEWER_NAMES:
        yield line, dotted, NEWER_NAMES[dotted]
    elif dotted in NEWER_MODULES:
        yield line, dotted, NEWER_MODULES[dotted]


def _dotted(node: ast.AST, bound: dict[str, str]) -> str | None:
    """``typing.Self`` for ``t.Self`` after ``import typing as t``; None when the base is not an import."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in bound:
        return None
    return ".".join([bound[node.id], *reversed(parts)])
