"""The one exception hierarchy of ssl3d.

    SSL3DError                 base of everything ssl3d raises on purpose
    ├── InputError             a user-given file or value is wrong (CLI: `error: ...`, exit 2)
    │   ├── VolumeReadError    a volume file is missing, unreadable, truncated or malformed
    │   ├── DatasetError       a dataset folder / dataset.json is inconsistent
    │   └── ConfigError        an unknown preset / option, or an invalid setting
    ├── BundleError            a model bundle is missing, invalid or does not fit (also an InputError)
    ├── WeightsError           a foreign checkpoint does not match the network (also an InputError)
    ├── JobError               a launched engine job failed
    └── Cancelled              a run was cancelled by the user (checkpoint written)

Messages name the file or argument, the rule that was broken, and the offending value.
"""

from __future__ import annotations

__all__ = [
    "SSL3DError",
    "InputError",
    "VolumeReadError",
    "DatasetError",
    "ConfigError",
    "BundleError",
    "WeightsError",
    "JobError",
    "Cancelled",
]


class SSL3DError(Exception):
    """Base class of every error ssl3d raises on purpose."""


class InputError(SSL3DError):
    """A user-given file, folder or value is invalid."""


class VolumeReadError(InputError):
    """A volume file is missing, unreadable, truncated or not a 3D scalar image."""


class DatasetError(InputError):
    """A dataset folder or dataset.json is inconsistent."""


class ConfigError(InputError):
    """An unknown preset or option, or an invalid configuration value."""


class BundleError(InputError):
    """A model bundle is missing, invalid, or does not fit what was asked of it."""


class WeightsError(InputError):
    """A foreign checkpoint cannot be mapped onto the requested network."""


class JobError(SSL3DError):
    """An engine job launched as a subprocess failed."""


class Cancelled(SSL3DError):
    """The run was cancelled by the user; a checkpoint was written."""
