"""ssl3d: self-supervised learning for 3D medical images (VoCo, Volume Fusion), the engine of the SSL3D
Slicer extension.

Its shape: leaf modules at the top (io, errors, config, events, bundle, ...) that every package uses; the
packages data/ -> nets/ -> pretext/, train/ -> infer/, inspect/, study/, weights/, serve/, each with a
``commands.py`` that the CLI (cli.py) imports to register its subcommands; demo/ on top, importing the
features it shows; mrml (the only Slicer-facing code) and jobs for the Slicer modules. Imports point one
way: Testing/test_import_graph.py fails on a cycle or a private name used across modules.

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
