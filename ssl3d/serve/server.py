"""The click server: warm :class:`~ssl3d.infer.interactive.InteractiveSession` objects behind a token-checked
HTTP endpoint (the standard library's ``ThreadingHTTPServer``; one thread per request, one lock per session).

Every request is a POST of a :mod:`.protocol` body to one path; the answer is a body too (or a JSON error line):

- ``/open`` {bundle, device[, ijkToRas]} [+ array ``volume``] -> {session, note, label[, shape]}: a bundle *by
  name* from the ``--models`` folder (and the volume, when it comes along);
- ``/volume`` {session, ijkToRas} + array ``volume`` -> {shape}: the volume the clicks are on (sent once);
- ``/point`` {session, ras, positive}, ``/undo`` {session}, ``/reset`` {session} -> the click result: {box,
  clicks, label, ijkToRas} + arrays ``values`` and ``changed`` (the mask in the changed box, and which of its
  voxels this request changed), exactly what :class:`~ssl3d.infer.click_worker.ClickWorker` results hold;
- ``/close`` {session}; ``/health`` -> {sessions, limits}.

The server never opens a path that a request names, nothing is unpickled, request size and session count are
bounded, and a bad request gets a one-line error while the server goes on serving.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SSL3DError
from .protocol import TOKEN_HEADER, ProtocolError, decode, encode

__all__ = ["ClickServer", "Limits", "make_token"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 2 << 30  # a 1024x1024x1000 int16 CT fits
    max_sessions: int = 4

    def describe(self) -> str:
        return f"requests up to {self.max_request_bytes / 2**20:.0f} MiB, {self.max_sessions} sessions at once"


@dataclass
class _Held:
    session: Any
    bundle: str
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    has_volume: bool = False


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_token() -> str:
    return secrets.token_urlsafe(32)


class ClickServer(ThreadingHTTPServer):
    """Holds the sessions; ``session_factory(bundle_path, device)`` makes one (default: InteractiveSession)."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], token: str, models: Path | None, limits: Limits = Limits(),
                 session_factory: Callable[[Path, str], Any] | None = None) -> None:
        super().__init__(address, _Handler)
        self.token, self.models, self.limits = token, models, limits
        self.session_factory = session_factory or _interactive_session
        self.sessions: dict[str, _Held] = {}
        self.sessions_lock = threading.Lock()
        self.last_request = time.monotonic()

    # --------------------------------------------------------------------------------------- requests
    def answer(self, path: str, header: dict, arrays: dict) -> tuple[dict, dict]:
        if path == "/health":
            return {"sessions": len(self.sessions), "limits": self.limits.__dict__}, {}
        if path == "/open":
            return self._open(header, arrays), {}
        held = self._held(header)
        with held.lock:
            if path == "/volume":
                return self._volume(held, header, arrays), {}
            if path == "/close":
                with self.sessions_lock:
                    self.sessions.pop(str(header["session"]), None)
                return {}, {}
            if path in ("/point", "/undo", "/reset"):
                return self._click(held, path[1:], header)
        raise _Refused(HTTPStatus.NOT_FOUND, f"unknown request {path!r}")

    def _open(self, header: dict, arrays: dict) -> dict:
        name, device = str(header.get("bundle", "")), str(header.get("device", "auto"))
        bundle = self._bundle_path(name)
        with self.sessions_lock:
            if len(self.sessions) >= self.limits.max_sessions:
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"the server holds {self.limits.max_sessions} sessions, its limit; close one first")
        session = self.session_factory(bundle, device)
        choice = getattr(session, "device_choice", None)
        key, held = secrets.token_urlsafe(16), _Held(session, name, device)
        answer = {"session": key, "note": choice.message if choice is not None else "", "label": getattr(session, "label_name", None)}
        if "volume" in arrays:  # the first click's volume comes with the open: one round trip less
            answer.update(self._volume(held, header, arrays))
        with self.sessions_lock:
            self.sessions[key] = held
        return answer

    def _bundle_path(self, name: str) -> Path:
        if self.models is None:
            raise _Refused(HTTPStatus.BAD_REQUEST, "this server has no --models folder")
        if not _NAME.match(name) or name in (".", ".."):
            raise _Refused(HTTPStatus.BAD_REQUEST, f"bundle names are plain folder names of the --models folder, got {name!r}")
        path = self.models / name
        if not (path / "bundle.json").is_file():
            available = sorted(p.name for p in self.models.iterdir() if (p / "bundle.json").is_file())
            raise _Refused(HTTPStatus.NOT_FOUND, f"no bundle {name!r} in the --models folder; it has {available}")
        return path

    def _held(self, header: dict) -> _Held:
        held = self.sessions.get(str(header.get("session", "")))
        if held is None:
            raise _Refused(HTTPStatus.NOT_FOUND, "unknown session (closed, or the server was restarted)")
        return held

    def _volume(self, held: _Held, header: dict, arrays: dict) -> dict:
        from ..io import Volume

        if "volume" not in arrays or np.asarray(arrays["volume"]).ndim != 3:
            raise ProtocolError("a 3D array named 'volume' is needed.")
        affine = np.asarray(header.get("ijkToRas"), dtype=float)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ProtocolError("ijkToRas must be a finite 4x4 matrix.")
        held.session.set_volume(Volume(np.array(arrays["volume"]), affine))  # a copy: the body buffer goes
        held.has_volume = True
        return {"shape": list(arrays["volume"].shape)}

    def _click(self, held: _Held, kind: str, header: dict) -> tuple[dict, dict]:
        session = held.session
        if not held.has_volume:
            if kind == "point":
                raise _Refused(HTTPStatus.CONFLICT, "the session has no volume yet; send it first")
            return {"box": None}, {}
        before = session.mask.array.copy()
        if kind == "point":
            ras = [float(v) for v in header.get("ras", ())]
            if len(ras) != 3 or not np.isfinite(ras).all():
                raise ProtocolError("ras must be three finite numbers (R, A, S in mm).")
            session.add_point(ras, positive=bool(header.get("positive", True)))
        elif kind == "undo":
            session.undo()
        else:
            session.reset()
        mask = session.mask
        box = session.last_changed
        answer = {"box": [int(b) for b in box] if box is not None else None, "clicks": len(session.clicks),
                  "label": getattr(session, "label_name", None), "ijkToRas": np.asarray(mask.ijk_to_ras).tolist()}
        if box is None:
            return answer, {}
        k0, k1, j0, j1, i0, i1 = box
        values = mask.array[k0:k1, j0:j1, i0:i1]
        return answer, {"values": values, "changed": values != before[k0:k1, j0:j1, i0:i1]}


def _interactive_session(bundle: Path, device: str):
    from ..infer.interactive import InteractiveSession

    return InteractiveSession(bundle, device=device, warmup=True)


class _Handler(BaseHTTPRequestHandler):
    server: ClickServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.server.last_request = time.monotonic()
        started = time.monotonic()
        try:
            if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, "").encode(), self.server.token.encode()):
                raise _Refused(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise _Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            if int(length) > self.server.limits.max_request_bytes:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the request has {int(length)} bytes; this server takes {self.server.limits.max_request_bytes}")
            body = self._read(int(length))
            header, arrays = decode(body) if body else ({}, {})
            answer, out = self.server.answer(self.path, header, arrays)
            answer["seconds"] = time.monotonic() - started
            self._send(HTTPStatus.OK, encode(answer, out))
        except _Refused as refusal:
            self._error(refusal.status, str(refusal))
        except (ProtocolError, SSL3DError, ValueError, TypeError, KeyError) as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error) or type(error).__name__)
        except Exception as error:  # the server keeps serving; the client shows the message
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _read(self, length: int) -> bytearray:
        body, view = bytearray(length), None
        view = memoryview(body)
        got = 0
        while got < length:
            n = self.rfile.readinto(view[got:])
            if not n:
                raise ProtocolError(f"the request ended after {got} of {length} bytes.")
            got += n
        return body

    def _send(self, status: HTTPStatus, chunks: list) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
        self.close_connection = True

    def _error(self, status: HTTPStatus, message: str) -> None:
        line = " ".join(message.split())[:500]
        if status != HTTPStatus.UNAUTHORIZED:
            sys.stderr.write(f"ssl3d serve: {self.path}: {line}\n")
        self.close_connection = True
        try:
            self._send(status, encode({"error": line}))
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per error only
        pass
