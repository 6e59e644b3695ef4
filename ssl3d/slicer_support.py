"""Which 3D Slicer the modules support, and one message when this one is older (standard library only).

Slicer 5.8 ships Python 3.9, on which the engine cannot even import its configs (``float | None`` hints);
5.10 and 5.12 ship Python 3.12.10 (``Slicer_REQUIRED_PYTHON_VERSION`` in Slicer's ``CMakeLists.txt``). The
modules call :func:`unsupported` at setup and, when it returns a message, show it and disable their buttons
instead of failing later inside a job. The pip package itself keeps its Python 3.10 floor for GPU servers.

Example::

    message = unsupported(slicer.app.applicationVersion)     # "5.8.1" -> "SSL3D needs 3D Slicer 5.10 ..."
    if message:
        slicer.util.errorDisplay(message)
"""

from __future__ import annotations

import re
import sys
from typing import Optional, Sequence, Union

__all__ = ["MINIMUM_SLICER", "MINIMUM_PYTHON", "SUPPORTED", "slicer_version", "unsupported"]

#: Oldest Slicer release the modules support: the first one with Python 3.12.
MINIMUM_SLICER: tuple[int, int] = (5, 10)

#: The engine's own floor (pyproject's requires-python). Those releases ship 3.12; a custom Slicer build with a
#: Python older than this is refused as well.
MINIMUM_PYTHON: tuple[int, int] = (3, 10)

#: The sentence that README, help text and extension metadata repeat.
SUPPORTED = "3D Slicer 5.10 or newer (Python 3.12)"


def slicer_version(version: Union[str, Sequence[int]]) -> tuple[int, int]:
    """(major, minor) of a Slicer version.

    Takes ``slicer.app.applicationVersion`` (``"5.10.0"``, a nightly's ``"5.11.0-2026-03-02"``) or
    ``(slicer.app.majorVersion, slicer.app.minorVersion)``.

    Raises:
        ValueError: the text has no ``major.minor`` at its start.
    """
    if isinstance(version, str):
        match = re.match(r"\s*v?(\d+)\.(\d+)", version)
        if match is None:
            raise ValueError(f"slicer_version: expected 'major.minor[...]', got {version!r}.")
        return int(match.group(1)), int(match.group(2))
    major, minor = tuple(version)[:2]
    return int(major), int(minor)


def unsupported(
    version: Union[str, Sequence[int]],
    python: Sequence[int] = sys.version_info,
) -> Optional[str]:
    """None on a supported Slicer, else one message saying what SSL3D needs and what it found.

    Args:
        version: this Slicer's version (see :func:`slicer_version`).
        python: the Python running inside it (``sys.version_info``, or any (major, minor, micro) tuple).
    """
    found_slicer = slicer_version(version)
    found_python = tuple(int(part) for part in tuple(python)[:3])
    if found_slicer >= MINIMUM_SLICER and found_python[:2] >= MINIMUM_PYTHON:
        return None
    shown_python = ".".join(str(part) for part in found_python)
    shown_slicer = version.strip() if isinstance(version, str) else ".".join(map(str, found_slicer))
    return (f"SSL3D needs {SUPPORTED}; this is 3D Slicer {shown_slicer} with Python {shown_python}. "
            "Install a newer Slicer from https://download.slicer.org to use SSL3D.")
