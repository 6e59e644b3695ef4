"""Permissions of outputs written through ``tempfile``: the umask's, like any file ``open`` creates.

``mkstemp`` makes 0600 files and ``mkdtemp`` 0700 folders (private by design); a result renamed from one
would be unreadable to the group on a shared server, unlike every other output.
"""

from __future__ import annotations

import os

__all__ = ["current_umask", "give_umask_mode"]


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (``os.umask`` is process-wide:
    setting it, even briefly, races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Set ``path`` to 0666 (0777 for a folder) less the umask, as a newly created file would get."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
