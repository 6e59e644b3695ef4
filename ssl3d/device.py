"""Device selection: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

from .errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str = "auto"):
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> torch.device; a missing GPU is a ConfigError."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA device is available; use --device cpu or auto.")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices.")
        return torch.device(spec)
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}.")
