"""ssl3d: self-supervised learning for 3D medical images (VoCo, Volume Fusion), the engine of the SSL3D
Slicer extension.

``import ssl3d`` stays light: torch, SimpleITK and MONAI are imported by the modules that use them.
"""

from .errors import (
    BundleError,
    Cancelled,
    ConfigError,
    DatasetError,
    InputError,
    JobError,
    SSL3DError,
    VolumeReadError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "Cancelled",
    "ConfigError",
    "DatasetError",
    "InputError",
    "JobError",
    "SSL3DError",
    "VolumeReadError",
    "WeightsError",
    "__version__",
]
