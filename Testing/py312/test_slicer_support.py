"""ssl3d.slicer_support: which Slicer is supported, and the one message an older one gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssl3d import slicer_support
from ssl3d.slicer_support import MINIMUM_PYTHON, MINIMUM_SLICER, SUPPORTED, slicer_version, unsupported

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("given, expected", [
    ("5.10.0", (5, 10)),
    ("5.11.0-2026-03-02", (5, 11)),  # a nightly (Preview) build's applicationVersion
    ("v5.12.3", (5, 12)),
    (" 6.0", (6, 0)),
    ((5, 8), (5, 8)),  # (slicer.app.majorVersion, slicer.app.minorVersion)
    ([5, 12, 3], (5, 12)),
])
def test_slicer_version(given, expected):
    assert slicer_version(given) == expected


@pytest.mark.parametrize("bad", ["", "five", "5", "Slicer 5.10"])
def test_slicer_version_refuses_text_without_major_minor(bad):
    with pytest.raises(ValueError, match="major.minor"):
        slicer_version(bad)


@pytest.mark.parametrize("version, python", [
    ("5.10.0", (3, 12, 10)),
    ("5.12.3", (3, 12, 10)),
    ("5.11.0-2026-03-02", (3, 12, 10)),
    ((6, 0), (3, 13, 1)),
])
def test_supported_slicers_get_no_message(version, python):
    assert unsupported(version, python) is None


def test_slicer_5_8_gets_one_message_with_what_is_needed_and_found():
    message = unsupported("5.8.1", (3, 9, 10))
    assert message == ("SSL3D needs 3D Slicer 5.10 or newer (Python 3.12); this is 3D Slicer 5.8.1 with Python 3.9.10. "
                       "Install a newer Slicer from https://download.slicer.org to use SSL3D.")
    assert "\n" not in message


def test_a_custom_build_with_an_older_python_is_refused_too():
    message = unsupported((5, 10), (3, 9, 7))
    assert message is not None and "5.10 with Python 3.9.7" in message
    assert unsupported((5, 10), (3, 11, 7)) is None  # the engine runs on 3.10+


def test_default_python_is_this_one():
    import sys

    expected = None if sys.version_info[:2] >= MINIMUM_PYTHON else unsupported("5.10.0", sys.version_info)
    assert unsupported("5.10.0") == expected


def test_the_sentence_matches_the_minimums():
    assert f"{MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer" in SUPPORTED
    assert "Python 3.12" in SUPPORTED and MINIMUM_PYTHON == (3, 10)  # what Slicer ships; what the engine needs
    assert sorted(slicer_support.__all__) == ["MINIMUM_PYTHON", "MINIMUM_SLICER", "SUPPORTED", "slicer_version",
                                              "unsupported"]


def test_readme_and_modules_name_the_supported_slicer():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "5.8 or newer" not in readme and "5.10 or newer" in readme
    for module in ("SSLPretrain/SSLPretrain.py", "SSLSegment/SSLSegment.py"):
        text = (ROOT / module).read_text(encoding="utf-8")
        assert re.search(r"slicer_support\b.*unsupported|unsupported\(|showUnsupportedSlicer\(", text), f"{module} does not check the version"
