"""Device selection: ``auto`` picks CUDA when present and, given what a job needs, when its memory is free.

:func:`resolve_device` turns a spec into a torch.device. :func:`choose_device` adds the memory check:
``auto`` takes the GPU only when its free memory covers the job's estimated need (else the CPU, with a
message saying why); an explicit ``cuda``/``cuda:N`` keeps the GPU the user asked for, with a warning
when it looks too small. Free memory is read from NVML when this process has no CUDA context yet, so the
check creates none (a context holds about half a gigabyte of the GPU for the life of the process, e.g.
Slicer's); else from ``torch.cuda.mem_get_info`` plus what torch's cache holds unused.

Example::

    choice = choose_device("auto", need_bytes=3_400_000_000)
    choice.device     # "cuda:0", or "cpu" when less than 3.4 GB is free
    choice.message    # "" or "cuda:0 has 1.2 GB free but the model needs about 3.4 GB: using the CPU (slower)."
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError

__all__ = ["CUDA_CONTEXT_BYTES", "DeviceChoice", "choose_device", "format_bytes", "gpu_free_bytes", "resolve_device"]

#: GPU memory a process's CUDA context (driver state, kernels of torch, cuBLAS and cuDNN) takes: 0.3-0.5 GB.
CUDA_CONTEXT_BYTES = 500 * 2**20


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


@dataclass(frozen=True)
class DeviceChoice:
    """Where a job runs and why.

    Attributes:
        device: ``"cpu"`` or ``"cuda:N"`` (``torch.device(choice.device)``).
        need_bytes: the job's estimated GPU memory; None when no GPU was considered (``cpu`` asked, no CUDA)
            or no estimate was given.
        free_bytes: the GPU's free memory; None when it was not read.
        message: one line for the user when something is notable (a fallback to the CPU, a GPU that may be
            too small, a check that could not be made); empty otherwise.
    """

    device: str
    need_bytes: int | None = None
    free_bytes: int | None = None
    message: str = ""


def choose_device(requested: str = "auto", need_bytes: int | Callable[[], int | None] | None = None,
                  other_process: bool = False) -> DeviceChoice:
    """The device for a job that needs ``need_bytes`` of GPU memory (module docstring).

    Args:
        requested: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        need_bytes: the estimate, or a function computing it (called only when a GPU is in play), or None
            to skip the check (``auto`` then takes the GPU, as :func:`resolve_device`).
        other_process: the job runs in another process (e.g. Slicer starting ``ssl3d segment``): see
            :func:`gpu_free_bytes`.

    Raises:
        ConfigError: an unknown spec, or ``cuda`` asked where there is none (as :func:`resolve_device`).
    """
    device = resolve_device(requested)
    if device.type == "cpu":
        return DeviceChoice("cpu")
    name = f"cuda:{device.index or 0}"
    auto = (requested or "auto").strip().lower() == "auto"
    try:
        need = need_bytes() if callable(need_bytes) else need_bytes
        if need is None:
            return DeviceChoice(name)
        free = gpu_free_bytes(device.index or 0, other_process)
    except Exception as exc:  # the check is advisory: when it cannot be made, the GPU is used as before
        return DeviceChoice(name, message=f"could not check the memory of {name} ({type(exc).__name__}: {exc}); using it.")
    if free >= need:
        return DeviceChoice(name, int(need), free)
    sizes = f"{name} has {format_bytes(free)} free but the model needs about {format_bytes(need)}"
    if auto:
        return DeviceChoice("cpu", int(need), free, f"{sizes}: using the CPU (slower).")
    return DeviceChoice(name, int(need), free, f"{sizes}; it may run out of GPU memory.")


def format_bytes(n: int) -> str:
    """Decimal units, as a user compares them with nvidia-smi or a spec sheet: 1.2 GB, 350 MB."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def gpu_free_bytes(index: int = 0, other_process: bool = False) -> int:
    """Free memory of CUDA device ``index`` that a new job could use.

    For a job in this process: with a CUDA context already here, CUDA's figure plus what torch's cache
    holds unused; else NVML's, which creates no context; else CUDA's (creating the context the job needs
    anyway). For a job in ``other_process``: NVML only (this process's cache is no use to it, and a context
    created here, e.g. in Slicer, would hold about half a gigabyte of the GPU for nothing).

    Raises:
        RuntimeError: the free memory could not be read that way.
    """
    import torch

    if not other_process and torch.cuda.is_initialized():
        free, _ = torch.cuda.mem_get_info(index)
        return int(free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index))
    free = _nvml_free_bytes(index)
    if free is not None:
        return int(free)
    if other_process:
        raise RuntimeError("NVML cannot report it (no NVML library, or several GPUs without CUDA_DEVICE_ORDER=PCI_BUS_ID)")
    return int(torch.cuda.mem_get_info(index)[0])


def _nvml_free_bytes(index: int) -> int | None:
    """Free bytes of CUDA device ``index`` from NVML (the driver's management library); None when unavailable.

    NVML numbers devices by PCI bus, CUDA fastest first: they agree with one visible device or with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; otherwise None (the caller asks CUDA).
    """
    import ctypes

    import torch

    class Memory(ctypes.Structure):  # nvmlMemory_t
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    try:
        if torch.cuda.device_count() > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            return None
        nvml_index = torch.cuda._get_nvml_device_index(index)  # honours CUDA_VISIBLE_DEVICES (private: guarded)
        library = ctypes.CDLL("nvml.dll" if sys.platform == "win32" else "libnvidia-ml.so.1")
        if library.nvmlInit_v2() != 0:
            return None
    except Exception:  # no NVML, or a driver without these entry points
        return None
    try:
        handle, memory = ctypes.c_void_p(), Memory()
        if library.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(nvml_index), ctypes.byref(handle)) != 0:
            return None
        if library.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None
        return int(memory.free)
    finally:
        library.nvmlShutdown()
