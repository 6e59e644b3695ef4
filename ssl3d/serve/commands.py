"""``ssl3d serve``: run the click server (local child of Slicer's module, or a GPU machine for a Slicer without one).

The first line on stdout is one JSON object, ``{"event": "serving", "url", "port", "limits"}`` plus ``"token"``
when the server made a fresh one (not with ``--token-file``); the client reads it. The server ends when its
``--parent-pid`` is gone, after ``--idle-timeout`` seconds without a request, or on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import threading
import time
from pathlib import Path

from ..cli import register_command
from ..errors import InputError

__all__: list[str] = []

_HELP = """\
Serve click-to-segment sessions (warm models, one per volume, bundle and device) to SSL3D's Slicer module.

Slicer's SSLSegment starts one itself on this computer (127.0.0.1, a port chosen by the OS, a fresh token).
On a GPU machine, for a Slicer without a GPU:
  ssl3d serve --models /data/bundles --host 127.0.0.1 --port 8765 --token-file ~/.ssl3d-token
and from the Slicer computer: ssh -N -L 8765:127.0.0.1:8765 gpu-box, then Server = http://127.0.0.1:8765 and
the token in SSLSegment. The token is the only protection: keep the server on loopback behind an SSH tunnel,
or behind a TLS reverse proxy; --host 0.0.0.0 exposes it to the network.
"""


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, metavar="DIR", help="folder of bundle folders; requests name a bundle by its folder name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1: this computer only]")
    parser.add_argument("--port", type=int, default=0, help="port [0: chosen by the OS, printed on the first line]")
    parser.add_argument("--token-file", metavar="FILE", help="read the token from FILE (else a fresh random token is printed)")
    parser.add_argument("--max-request-mb", type=float, default=2048.0, help="largest request (a volume) in MiB [2048]")
    parser.add_argument("--max-sessions", type=int, default=4, help="sessions held at once [4]")
    parser.add_argument("--idle-timeout", type=float, default=0.0, metavar="S", help="exit after S seconds without a request [0: never]")
    parser.add_argument("--parent-pid", type=int, default=0, metavar="PID", help="exit when process PID is gone (Slicer's module sets it)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of the model [0: torch's default]")


def _token(args: argparse.Namespace) -> tuple[str, bool]:
    from .server import make_token

    if not args.token_file:
        return make_token(), True
    path = Path(args.token_file).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the token file ({exc.strerror or exc}).") from None
    if len(token) < 16:
        raise InputError(f"{path}: the token must have at least 16 characters, it has {len(token)}.")
    return token, False


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _run(args: argparse.Namespace) -> int:
    models = Path(args.models).expanduser()
    if not models.is_dir():
        raise InputError(f"{models}: --models must be a folder of bundle folders.")
    if args.max_sessions < 1 or args.max_request_mb <= 0:
        raise InputError("--max-sessions and --max-request-mb must be positive.")
    token, fresh = _token(args)
    import torch  # warm start: the first click pays only for its model, not for these imports

    import monai  # noqa: F401

    from ..infer import interactive  # noqa: F401
    from .server import ClickServer, Limits

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = Limits(int(args.max_request_mb * 2**20), args.max_sessions)
    try:
        server = ClickServer((args.host, args.port), token, models, limits)
    except OSError as exc:
        raise InputError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}).") from None
    host, port = server.server_address[:2]
    ready = {"event": "serving", "url": f"http://{host}:{port}", "port": port, "limits": limits.__dict__}
    if fresh:
        ready["token"] = token
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    sys.stderr.write(f"ssl3d serve: {ready['url']}, bundles in {models}, {limits.describe()}\n")
    if not _loopback(host):
        sys.stderr.write(f"warning: listening on {host}: anyone who can reach this port and has the token can use the "
                         "server; the token is its only protection (prefer an SSH tunnel or a TLS reverse proxy).\n")
    threading.Thread(target=_watch, args=(server, args.parent_pid, args.idle_timeout), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _watch(server, parent_pid: int, idle_timeout: float) -> None:
    """End the server when Slicer is gone or nobody asked for a while."""
    while True:
        time.sleep(1.0)
        if parent_pid and not _alive(parent_pid):
            break
        if idle_timeout and time.monotonic() - server.last_request > idle_timeout:
            break
    server.shutdown()


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil missing or the process went meanwhile
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


register_command("serve", "serve click-to-segment sessions to Slicer (local, or a GPU machine)", _add, _run, _HELP)
