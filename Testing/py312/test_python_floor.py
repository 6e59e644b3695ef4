"""The engine stays at its pip floor, Python 3.10; Slicer 5.8's Python 3.9 is refused with a message.

Static: every file under ``ssl3d/`` and the two modules parse at 3.10 and use no standard-library name that
is newer (see ``python_floor.py``, whose checker is tested here on planted snippets). Dynamic, with pyenv's
interpreters: every file compiles in Python 3.10, and Python 3.9 shows why 3.10 is the floor
(``get_type_hints`` on ``float | None``, as ``ssl3d.config`` does) while ``ssl3d.slicer_support`` still
imports there, so a module on Slicer 5.8 can say what it needs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from bare_python import ROOT, run_code
from python_floor import newer_than

FLOOR = (3, 10)
MODULES = ("SSLPretrain", "SSLSegment")


def _sources() -> list[Path]:
    return sorted((ROOT / "ssl3d").rglob("*.py")) + [p for module in MODULES for p in sorted((ROOT / module).rglob("*.py"))]


@pytest.mark.parametrize("snippet, expected", [
    ("import tomllib\n", "1: tomllib is Python 3.11+"),
    ("from tomllib import loads\n", "tomllib is Python 3.11+"),
    ("from typing import Optional, Self\n", "typing.Self is Python 3.11+"),
    ("import typing as t\ndef f() -> 't.Self':\n    return t.Self\n", "3: typing.Self is Python 3.11+"),
    ("from typing import override\n", "typing.override is Python 3.12+"),
    ("import enum\nclass Mode(enum.StrEnum):\n    A = 'a'\n", "2: enum.StrEnum is Python 3.11+"),
    ("from datetime import UTC\n", "datetime.UTC is Python 3.11+"),
    ("import datetime\nnow = datetime.datetime.now(datetime.UTC)\n", "datetime.UTC is Python 3.11+"),
    ("from itertools import batched\n", "itertools.batched is Python 3.12+"),
    ("import asyncio\nasync def f():\n    async with asyncio.TaskGroup() as g:\n        pass\n", "asyncio.TaskGroup"),
    ("raise ExceptionGroup('x', [ValueError()])\n", "ExceptionGroup is Python 3.11+"),
    ("from typing import Never, assert_never, reveal_type, LiteralString, Unpack\n", "typing.Unpack is Python 3.11+"),
    ("import contextlib\nwith contextlib.chdir('/'):\n    pass\n", "contextlib.chdir is Python 3.11+"),
    ("import hashlib\nhashlib.file_digest(open('f', 'rb'), 'sha256')\n", "hashlib.file_digest is Python 3.11+"),
    ("from pathlib import Path\nfor top, dirs, files in Path('.').walk():\n    pass\n", "2: .walk() is Python 3.12+"),
    ("from pathlib import Path\nPath.walk(Path('.'))\n", "pathlib.Path.walk is Python 3.12+"),
    ("import shutil\nshutil.rmtree('d', onexc=print)\n", "rmtree(onexc=...) is Python 3.12+"),
    ("try:\n    pass\nexcept ValueError as error:\n    error.add_note('why')\n", ".add_note() is Python 3.11+"),
    ("def first[T](items: list[T]) -> T:\n    return items[0]\n", "syntax newer than Python 3.10"),
    ("type Pair = tuple[int, int]\n", "syntax newer than Python 3.10"),
])
def test_checker_finds_what_is_newer_than_the_floor(snippet, expected):
    found = newer_than(snippet, FLOOR, "planted.py")
    assert any(expected in line for line in found), found


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* parses only on Python 3.11+")
def test_checker_finds_except_star():
    assert any("except*" in line or "syntax newer" in line
               for line in newer_than("try:\n    pass\nexcept* ValueError:\n    pass\n", FLOOR))


@pytest.mark.parametrize("snippet", [
    "import os\nfor top, dirs, files in os.walk('.'):\n    pass\n",
    "import ast\nnodes = list(ast.walk(ast.parse('x')))\n",
    "import os as system\nsystem.walk('.')\n",
    "from __future__ import annotations\nfrom typing import Optional\nx: int | None = None\n",
    "match command:\n    case 'go':\n        pass\n",  # 3.10 syntax: at the floor
    "import itertools\npairs = itertools.pairwise([1, 2, 3])\n",  # 3.10
    "import shutil, tempfile\nshutil.rmtree('d', onerror=print)\ntempfile.NamedTemporaryFile(delete=False)\n",
])
def test_checker_accepts_what_the_floor_has(snippet):
    assert newer_than(snippet, FLOOR) == []


def test_match_is_newer_than_3_9():
    assert newer_than("match x:\n    case 1:\n        pass\n", (3, 9))


def test_engine_and_modules_stay_at_the_floor():
    found = []
    for path in _sources():
        found += newer_than(path.read_text(encoding="utf-8"), FLOOR, str(path.relative_to(ROOT)))
    assert found == []


def test_pyproject_floor_is_3_10():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^requires-python\s*=\s*">=3\.10"', text, re.M)


def test_every_file_compiles_and_the_light_modules_import_in_python_3_10(python310):
    paths = [str(path) for path in _sources()]
    done = run_code(python310, f"""
        import json, sys
        assert sys.version_info[:2] == (3, 10), sys.version
        failed = []
        for path in {paths!r}:
            try:
                compile(open(path, encoding="utf-8").read(), path, "exec", dont_inherit=True)
            except SyntaxError as error:
                failed.append(f"{{path}}:{{error.lineno}}: {{error.msg}}")
        import ssl3d.requirements, ssl3d.slicer_support, ssl3d.events, ssl3d.jobs, ssl3d.infer.click_worker
        print(json.dumps({{"failed": failed, "missing": [r.name for r in ssl3d.requirements.missing()][:1]}}))
    """)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["failed"] == []
    assert result["missing"] == ["torch"]  # a bare 3.10: the requirements check itself runs there


def test_python_3_9_of_slicer_5_8_cannot_run_the_engine_but_gets_the_message(python39):
    done = run_code(python39, """
        import json, sys
        from dataclasses import dataclass
        from typing import get_type_hints
        assert sys.version_info[:2] == (3, 9), sys.version
        namespace = {}
        exec("from __future__ import annotations\\n"
             "from dataclasses import dataclass\\n"
             "@dataclass\\nclass Config:\\n    lr: float | None = None\\n", namespace)
        try:
            get_type_hints(namespace["Config"])  # what ssl3d.config does to load a preset
            hints = "ok"
        except TypeError as error:
            hints = str(error)
        try:
            exec("from typing import Mapping\\nLabels = Mapping[int, str] | str | None\\n", {})  # ssl3d.evaluate
            alias = "ok"
        except TypeError as error:
            alias = str(error)
        from ssl3d.slicer_support import unsupported
        print(json.dumps({"hints": hints, "alias": alias, "message": unsupported("5.8.1")}))
    """)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "unsupported operand" in result["hints"]  # the reasons the floor is 3.10
    assert "unsupported operand" in result["alias"]
    assert result["message"].startswith("SSL3D needs 3D Slicer 5.10 or newer (Python 3.12)")
    assert "5.8.1" in result["message"] and "Python 3.9." in result["message"]
