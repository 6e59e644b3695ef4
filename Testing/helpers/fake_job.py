"""A stand-in for an engine training job, for the tests of ssl3d.jobs.

It writes events to stdout (and to RUN_DIR/events.jsonl with --run-dir), steps every --interval seconds,
and on cancel (a ``cancel`` file in RUN_DIR, or SIGTERM / CTRL_BREAK) writes RUN_DIR/checkpoint.json,
emits a ``checkpoint`` event and exits with CANCELLED_EXIT_CODE, as the training loop does.

    python fake_job.py --steps 5                  # start, progress 1..5, done; exit 0
    python fake_job.py --noise                    # plain print() lines between the events
    python fake_job.py --fail user                # error event + "error: ..." on stderr; exit 2
    python fake_job.py --fail crash               # an uncaught exception (traceback); exit 1
    python fake_job.py --ignore-term --child      # ignores SIGTERM and starts a child that ignores it too
    python fake_job.py --run-dir R --lock         # owns R/run.lock while it runs, as a training run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's ssl3d

from ssl3d.events import EventWriter  # noqa: E402
from ssl3d.jobs import CANCEL_FILE, CANCELLED_EXIT_CODE, EVENTS_FILE  # noqa: E402

STOP_SIGNAL = signal.SIGBREAK if os.name == "nt" else signal.SIGTERM
CHILD_CODE = "import signal, time; signal.signal(signal.{}, signal.SIG_IGN); time.sleep(120)"
stop_requested = False


def on_stop_signal(signum: int, frame: object) -> None:
    global stop_requested
    stop_requested = True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds per step")
    parser.add_argument("--run-dir", type=Path, help="events.jsonl, cancel file and checkpoint live here")
    parser.add_argument("--noise", action="store_true", help="print plain lines between the events")
    parser.add_argument("--fail", choices=("user", "crash"), help="fail after the first step")
    parser.add_argument("--ignore-term", action="store_true", help="ignore the stop signal")
    parser.add_argument("--child", action="store_true", help="start a child process that ignores the stop signal")
    parser.add_argument("--lock", action="store_true", help="hold RUN_DIR/run.lock while running, as a training run")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not args.lock:
        return run(args)
    from ssl3d.train.run_lock import RunLock

    with RunLock.acquire(args.run_dir):
        return run(args)


def run(args: argparse.Namespace) -> int:
    signal.signal(STOP_SIGNAL, signal.SIG_IGN if args.ignore_term else on_stop_signal)
    writers = [EventWriter("-")]
    if args.run_dir is not None:
        writers.append(EventWriter(args.run_dir / EVENTS_FILE))

    def emit(event: str, **fields: object) -> None:
        for writer in writers:
            writer.emit(event, **fields)

    emit("start", total=args.steps, pid=os.getpid())
    if args.child:
        child = subprocess.Popen([sys.executable, "-c", CHILD_CODE.format(STOP_SIGNAL.name)])
        emit("log", message=f"started child {child.pid}", child_pid=child.pid)
    for step in range(1, args.steps + 1):
        if cancel_requested(args.run_dir):
            return save_and_exit(args.run_dir, step - 1, emit)
        if args.noise:
            print(f"plain line before step {step}", flush=True)
        emit("progress", step=step, total=args.steps, loss={"total": 1.0 / step})
        if args.fail == "user":
            message = "data/case_001.nii.gz: not a 3D volume (shape (4, 4))."
            emit("error", message=message)
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 2
        if args.fail == "crash":
            return step // 0
        time.sleep(args.interval)
    emit("done", outputs={"model": "model/"})
    return 0


def cancel_requested(run_dir: Path | None) -> bool:
    return stop_requested or (run_dir is not None and (run_dir / CANCEL_FILE).exists())


def save_and_exit(run_dir: Path | None, step: int, emit) -> int:
    path = (run_dir or Path.cwd()) / "checkpoint.json"
    path.write_text(json.dumps({"step": step}), encoding="utf-8")
    emit("checkpoint", step=step, path=path)
    emit("log", message=f"cancelled at step {step}; resume with --resume")  # as the training loop
    print(f"cancelled: cancelled at step {step}", file=sys.stderr, flush=True)  # as the ssl3d CLI
    return CANCELLED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
