"""Run a study's cells: one after another on one device, or one process per device (``--devices cuda:0,cuda:1``),
each taking the next unfinished cell from a shared queue, so every device runs one cell at a time.

A cancel (SIGTERM, Ctrl-C or the study's ``cancel`` file) reaches the cell that is running: in one process
the cell's training loop turns it into a checkpoint (the study's cancel file reaches it through
:class:`~ssl3d.study.cancel_relay.CancelRelay`); with several processes each worker is sent SIGTERM,
writes its cell's checkpoint and exits, and the study raises :class:`~ssl3d.errors.Cancelled` once all have.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Callable, Iterator, Sequence

from ..errors import Cancelled, JobError, SSL3DError
from .cancel_relay import CancelRelay
from .cells import CellSetup, cell_dir, run_cell
from .plan import Cell

__all__ = ["run_cells"]

_GRACE_S = 60.0  # a worker's time to write its checkpoint after SIGTERM


def run_cells(setup: CellSetup, cells: Sequence[Cell], devices: Sequence[str], relay: CancelRelay) -> Iterator[tuple[Cell, dict]]:
    """Yield (cell, evaluation summary) as each cell finishes (in finishing order with several devices).

    Raises:
        Cancelled: the study was cancelled; the running cells have written their checkpoints.
    """
    if len(devices) == 1 or len(cells) <= 1:
        import torch

        device = torch.device(devices[0])
        for cell in cells:
            try:
                with relay.running(cell_dir(setup.out, cell)):
                    summary = run_cell(setup, cell, device)
            except Cancelled:  # the loop's "resume with --resume" is for finetune: a study resumes by running again
                raise Cancelled(f"cell {cell.name} stopped with a checkpoint; run the same ssl3d study command again to continue") from None
            yield cell, summary
        return
    yield from _in_processes(setup, cells, devices, relay)


def _worker(setup: CellSetup, device: str, todo, done) -> None:
    """One device's loop: take a cell, run it, report; stops at the end of the queue."""
    import torch

    while (cell := todo.get()) is not None:  # one None per worker ends the queue
        try:
            done.put(("done", cell, run_cell(setup, cell, torch.device(device))))
        except Cancelled as exc:
            done.put(("cancelled", cell, str(exc)))
            return
        except SSL3DError as exc:
            done.put(("error", cell, f"{type(exc).__name__}: {exc}"))
            return
        except Exception as exc:  # a bug: the study must not wait for a worker that died
            done.put(("error", cell, f"internal error: {type(exc).__name__}: {exc}"))
            raise


def _in_processes(setup: CellSetup, cells: Sequence[Cell], devices: Sequence[str], relay: CancelRelay) -> Iterator[tuple[Cell, dict]]:
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    todo, done = context.Queue(), context.Queue()
    workers = [context.Process(target=_worker, args=(setup, device, todo, done), name=f"ssl3d-study-{device}", daemon=False)
               for device in devices[: len(cells)]]
    for item in [*cells, *[None] * len(workers)]:
        todo.put(item)
    for worker in workers:
        worker.start()
    try:
        yield from _collect(done, len(cells), lambda: any(w.is_alive() for w in workers), relay)
    finally:
        _stop(workers)


def _collect(done, expected: int, alive: Callable[[], bool], relay: CancelRelay) -> Iterator[tuple[Cell, dict]]:
    for _ in range(expected):
        while True:
            try:
                kind, cell, payload = done.get(timeout=0.5)
                break
            except queue.Empty:
                if relay.requested:  # the workers get SIGTERM from _stop and checkpoint
                    raise Cancelled("the study was cancelled; run the same ssl3d study command again to continue") from None
                if not alive():
                    raise JobError("every study worker stopped before the cells were done; see the cells' events.jsonl") from None
        if kind == "cancelled":
            raise Cancelled(f"cell {cell.name} stopped with a checkpoint; run the same ssl3d study command again to continue")
        if kind == "error":
            raise JobError(f"cell {cell.name} failed: {payload}")
        yield cell, payload


def _stop(workers) -> None:
    """SIGTERM to every live worker (each writes its cell's checkpoint), then wait; kill what is left."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(_GRACE_S)
        if worker.is_alive():
            worker.kill()
            worker.join()
