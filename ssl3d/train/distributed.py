"""One code path for one process and torchrun: detect the launcher, init DDP (NCCL on GPU, gloo on CPU).

Only rank 0 writes files and events. BatchNorm statistics stay per rank, as in the official codes.
Every rank reads what rank 0 wrote (``--resume`` loads ``last.pt`` on each rank), so on several nodes
the run folder must lie on storage that every node sees.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_reduce_flag", "gather_objects"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when started by torchrun; returns the info and this rank's device."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_timeout())
    return info, device


def _timeout():
    """The process group's timeout: ``$SSL3D_DIST_TIMEOUT_S`` seconds, else PyTorch's default."""
    import datetime

    value = os.environ.get("SSL3D_DIST_TIMEOUT_S")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"SSL3D_DIST_TIMEOUT_S must be a number of seconds, got {value!r}.") from None
    if seconds <= 0:
        raise ConfigError(f"SSL3D_DIST_TIMEOUT_S must be > 0, got {value!r}.")
    return datetime.timedelta(seconds=seconds)


def cleanup_distributed(barrier: bool = False) -> None:
    """Destroy the process group; ``barrier`` first when every rank is known to get here (normal end, cancel).

    A rank that tears gloo down while its peer is still exporting can abort ("terminate called without an active
    exception"); after an error on one rank a barrier would hang, so it is skipped then.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        except Exception as error:  # a peer already gone: the job's own outcome matters more than this
            _log.warning("barrier before leaving the process group failed: %s", error)
        finally:
            dist.destroy_process_group()


def all_reduce_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when any rank says True (cancel requests reach all ranks together)."""
    if not info.enabled:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def gather_objects(value: Any, info: DistInfo) -> list:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` in one process.

    Every rank must call it at the same point (a collective), so call it only where all ranks are.
    """
    if not info.enabled:
        return [value]
    import torch.distributed as dist

    values: list = [None] * info.world_size
    dist.all_gather_object(values, value)
    return values
