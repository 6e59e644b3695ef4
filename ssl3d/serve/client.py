"""The click server's client: the standard library (numpy where arrays cross), so Slicer imports it at once.

:class:`ServerClickWorker` has :class:`~ssl3d.infer.click_worker.ClickWorker`'s interface and result dicts, but the
model runs in an ``ssl3d serve`` process: on this computer (started on the first click with Slicer's PythonSlicer,
ended with Slicer) or on a GPU machine (``url`` and ``token``). Nothing blocks and no thread of the caller's process
computes: each request is a non-blocking socket exchange that :meth:`take` advances from the module's timer, which
works even where the host keeps the GIL between timer calls, as PythonQt does inside Slicer.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .protocol import TOKEN_HEADER, ProtocolError, decode, encode

__all__ = ["ServerClickWorker", "ServerError", "Exchange"]

_POLL_BUDGET_S = 0.02  # the longest one take() spends on sockets (the GUI stays responsive)
_START_TIMEOUT_S = 180.0
_REQUEST_TIMEOUT_S = 600.0
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, getattr(errno, "WSAEWOULDBLOCK", -1)}


class ServerError(RuntimeError):
    """The server answered with an error, or could not be reached; ``gone`` when it is not there any more."""

    def __init__(self, message: str, status: int | None = None, gone: bool = False) -> None:
        super().__init__(message)
        self.status, self.gone = status, gone


class Exchange:
    """One POST on a non-blocking socket; :meth:`poll` moves it on without blocking and says when it is done."""

    def __init__(self, host: str, port: int, path: str, token: str, header: dict, arrays: dict | None = None,
                 timeout: float = _REQUEST_TIMEOUT_S) -> None:
        chunks = encode(header, arrays)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{TOKEN_HEADER}: {token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {sum(len(c) for c in chunks)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        self._out = collections.deque([memoryview(head), *chunks])
        self._in = bytearray()
        self._sent_any = False  # a pending socket error before any byte went out: no server there
        self._deadline = time.monotonic() + timeout
        self.result: tuple[dict, dict] | None = None
        self.error: ServerError | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setblocking(False)
        code = self._sock.connect_ex((host, port))
        if code not in (0, *_IN_PROGRESS):
            self._fail(f"cannot reach the click server at {host}:{port} ({os.strerror(code)})", gone=True)

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def poll(self, budget_s: float = _POLL_BUDGET_S) -> bool:
        end = time.monotonic() + budget_s
        while not self.done:
            if time.monotonic() > self._deadline:
                self._fail("the click server did not answer in time")
                break
            try:
                readable, writable, _ = select.select([self._sock], [self._sock] if self._out else [], [], 0)
            except (OSError, ValueError) as exc:
                self._fail(f"the connection to the click server broke ({exc})", gone=True)
                break
            moved = False
            if writable:
                moved |= self._send()
            if readable and not self.done:
                moved |= self._receive()
            if not moved or time.monotonic() > end:
                break
        return self.done

    def _send(self) -> bool:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code and not self._sent_any:
            self._fail(f"cannot reach the click server ({os.strerror(code)})", gone=True)
            return False
        if code:  # connected, then closed by the server mid-request (a refused, too large one): read its answer
            self._out.clear()
            return True
        try:
            sent = self._sock.send(self._out[0][:1 << 22])
        except BlockingIOError:
            return False
        except OSError:  # the server closed early (e.g. a refused, too large request): read its answer
            self._out.clear()
            return True
        self._sent_any = self._sent_any or sent > 0
        if sent == len(self._out[0]):
            self._out.popleft()
        else:
            self._out[0] = self._out[0][sent:]
        return sent > 0

    def _receive(self) -> bool:
        try:
            data = self._sock.recv(1 << 22)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._finish_or_fail(f"the click server dropped the connection ({exc.strerror or exc})")
            return False
        if not data:
            self._finish_or_fail("the click server closed the connection before answering")
            return False
        self._in += data
        self._try_parse(final=False)
        return True

    def _finish_or_fail(self, message: str) -> None:
        if not self._try_parse(final=True):
            self._fail(message, gone=True)

    def _try_parse(self, final: bool) -> bool:
        end = self._in.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._in[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self._fail(f"the click server sent a bad status line {lines[0][:80]!r}")
            return True
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        length = int(next((v for k, v in fields.items() if k.strip().lower() == "content-length"), "-1"))
        body = memoryview(self._in)[end + 4:]
        if length < 0 and not final or len(body) < length:
            return False
        try:
            header, arrays = decode(body if length < 0 else body[:length])
        except ProtocolError as exc:
            self._fail(f"the click server's answer is malformed ({exc})")
            return True
        if status != 200:
            self._fail(str(header.get("error") or f"HTTP {status}"), status=status)
        else:
            self.result = (header, {name: a.copy() for name, a in arrays.items()})
        return True

    def _fail(self, message: str, status: int | None = None, gone: bool = False) -> None:
        self.error = ServerError(message, status=status, gone=gone)
        self.close()

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def wait(self, timeout: float = _REQUEST_TIMEOUT_S) -> tuple[dict, dict]:
        """Block until done (scripts and tests; the module only polls)."""
        deadline = time.monotonic() + timeout
        while not self.poll(0.05):
            if time.monotonic() > deadline:
                self._fail("the click server did not answer in time")
            else:
                select.select([self._sock], [self._sock] if self._out else [], [], 0.05)
        if self.error is not None:
            raise self.error
        return self.result


class _LocalServer:
    """``python -m ssl3d serve`` as a child of this process, on loopback; its first stdout line read without blocking."""

    def __init__(self, python: str, models: Path, threads: int = 0, idle_timeout: float = 3600.0) -> None:
        self.models = models
        self._log = tempfile.NamedTemporaryFile(prefix="ssl3d-serve-", suffix=".log", delete=False)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
               "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
        command = [python, "-m", "ssl3d", "serve", "--models", str(models), "--parent-pid", str(os.getpid()),
                   "--idle-timeout", str(idle_timeout)] + (["--threads", str(threads)] if threads else [])
        options = {"start_new_session": True} if os.name != "nt" else {"creationflags": 0x08000000}  # CREATE_NO_WINDOW
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                        env=env, **options)
        self._buffer = b""
        self._started = time.monotonic()
        self.address: tuple[str, int] | None = None
        self.token = ""
        if os.name != "nt":
            os.set_blocking(self.process.stdout.fileno(), False)
        else:  # Windows pipes cannot be polled: one short reader thread takes the first line
            import threading

            threading.Thread(target=self._read_line_blocking, daemon=True).start()

    def _read_line_blocking(self) -> None:
        self._buffer = self.process.stdout.readline()

    def ready(self) -> bool:
        """True once the server has said where it listens; raises ServerError when it ended or took too long."""
        if self.address is not None:
            return True
        if os.name != "nt":
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                self._buffer += chunk
            except BlockingIOError:
                pass
        if b"\n" in self._buffer:
            line = self._buffer.split(b"\n", 1)[0]
            try:
                ready = json.loads(line)
                self.address, self.token = ("127.0.0.1", int(ready["port"])), str(ready["token"])
            except (ValueError, KeyError, TypeError):
                self.stop()
                raise ServerError(f"the click server did not start: {line[:200]!r}", gone=True) from None
            return True
        if self.process.poll() is not None:
            raise ServerError(f"the click server did not start: {self.last_log_line() or 'exit code %s' % self.process.returncode}", gone=True)
        if time.monotonic() - self._started > _START_TIMEOUT_S:
            self.stop()
            raise ServerError(f"the click server did not start within {_START_TIMEOUT_S:.0f} s", gone=True)
        return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in Path(self._log.name).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.process.stdout.close()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


class ServerClickWorker:
    """ClickWorker's interface (``submit``, ``take``, ``pending``, ``busyFor``, ``stop``), backed by ``ssl3d serve``.

    Args:
        python: the interpreter that runs a local server (Slicer passes PythonSlicer); default this one.
        url, token: a remote server (``http://host:port``) and its token; None: a local server on loopback.
        threads: CPU threads of a local server's model (0: torch's default).

    Requests and results are those of :class:`~ssl3d.infer.click_worker.ClickWorker`. A server that stopped gives
    one ``error`` result; the next click starts a new local server and sends the volume again.
    """

    def __init__(self, python: str | None = None, url: str | None = None, token: str | None = None,
                 threads: int = 0) -> None:
        self.python, self.threads = python or sys.executable, threads
        self._remote = _parse_url(url) if url else None
        self._token = token or ""
        if self._remote is not None and not self._token:
            raise ValueError("a remote click server needs its token.")
        self._server: _LocalServer | None = None
        self._queue: collections.deque = collections.deque()
        self._results: list[dict] = []
        self._current = None  # (generator, kind, request, tag, started, exchange or None)
        self._since: float | None = None
        self._session = self._sessionKey = self._volumeKey = None
        self._held = (None, None)  # (volumeKey, Volume) last given, to send again to a new server
        self._openNote = ""
        self.status = ""

    # ------------------------------------------------------------------------------------- interface
    def submit(self, kind: str, **request) -> None:
        if self._session is None and not self._queue and self._current is None and kind in ("restart", "forget"):
            if kind == "forget":
                self._volumeKey, self._held = None, (None, None)
            return  # nothing to forget yet
        self._queue.append((kind, request))
        self._since = self._since or time.monotonic()

    def take(self) -> list:
        self._advance()
        results, self._results = self._results, []
        return results

    def pending(self) -> bool:
        return self._current is not None or bool(self._queue) or bool(self._results)

    def busyFor(self):
        """Seconds the oldest unfinished request has waited, None when idle."""
        return None if self._since is None else time.monotonic() - self._since

    def stop(self) -> None:
        self._queue.clear()
        self._current = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        elif self._remote is not None and self._session is not None:
            try:  # free the remote session now rather than at its timeout
                Exchange(*self._remote, "/close", self._token, {"session": self._session}).wait(1.0)
            except ServerError:
                pass
        self._session = self._sessionKey = None

    # -------------------------------------------------------------------------------------- progress
    def _advance(self) -> None:
        end = time.monotonic() + _POLL_BUDGET_S
        while time.monotonic() <= end:
            if self._current is None:
                if not self._queue:
                    break
                kind, request = self._queue.popleft()
                request = dict(request)
                tag = request.pop("tag", None)
                self._current = [self._run(kind, **request), kind, request, tag, time.monotonic(), None]
                self._step(None)
                continue
            exchange = self._current[5]
            if exchange is None:  # waiting for the local server to start
                try:
                    if not self._server.ready():
                        break
                except ServerError as error:
                    self._step(error)
                    continue
                self._step(None)
            elif exchange.poll(max(0.0, end - time.monotonic())):
                self._step(exchange.error, exchange.result)
            else:
                if self._server is not None and not self._server.alive():
                    exchange.close()
                    self._step(ServerError("the click server stopped", gone=True))
                break
        if self._current is None and not self._queue:
            self._since = None

    def _step(self, error: Exception | None, value: Any = None) -> None:
        generator, kind, request, tag, started = self._current[:5]
        try:
            waited = generator.throw(error) if error is not None else generator.send(value)
            self._current[5] = waited
            return
        except StopIteration as stop:
            result = stop.value
        except ServerError as failure:
            result = {"kind": kind, "error": self._describe(failure), "target": request.get("target")}
            if failure.gone:
                self._lost_server()
        except Exception as failure:  # reported to the module as the request's error
            result = {"kind": kind, "error": str(failure) or type(failure).__name__, "target": request.get("target")}
        self._current = None
        if result is not None:
            result["seconds"], result["tag"] = time.monotonic() - started, tag
            self._results.append(result)
        self._since = time.monotonic() if self._queue else None

    def _describe(self, failure: ServerError) -> str:
        if failure.gone and self._remote is None:
            log = self._server.last_log_line() if self._server is not None else ""
            return f"{failure} ({log})" if log and log not in str(failure) else f"{failure}; the next click starts a new one."
        return str(failure)

    def _lost_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._session = self._sessionKey = None
        self.status = ""

    # -------------------------------------------------------------------------------------- requests
    def _call(self, path: str, header: dict, arrays: dict | None = None):
        address = self._remote or self._server.address
        token = self._token if self._remote else self._server.token
        header, arrays = yield Exchange(*address, path, token, header, arrays)
        return header, arrays

    def _start_server(self, bundle: Path):
        if self._remote is not None:
            return
        models = bundle.parent.resolve()
        if self._server is not None and (self._server.models != models or not self._server.alive()):
            self._lost_server()
        if self._server is None:
            self.status = "starting the click server"
            self._server = _LocalServer(self.python, models, self.threads)
            yield None  # _advance waits for the ready line
            self.status = ""

    def _open(self, bundle, device, volumeKey):
        """A session for (bundle, device) on the server (started when needed); the held volume comes along when
        it is ``volumeKey``'s. Returns (device note, whether the volume was sent)."""
        import numpy as np

        path = Path(bundle)
        yield from self._start_server(path)
        if self._session is not None:
            try:
                yield from self._call("/close", {"session": self._session})
            except ServerError:
                pass
        self._session = self._sessionKey = None
        self.status = "loading the model"
        heldKey, held = self._held
        header, arrays = {"bundle": path.name, "device": device}, None
        if volumeKey is not None and held is not None and heldKey == volumeKey:  # one round trip less
            header["ijkToRas"], arrays = np.asarray(held.ijk_to_ras).tolist(), {"volume": held.array}
        answer, _ = yield from self._call("/open", header, arrays)
        self.status = ""
        self._session, self._sessionKey = answer["session"], (bundle, device)
        self._volumeKey = volumeKey if arrays is not None else None
        note = answer.get("note") or ""
        self._openNote = note if volumeKey is None else ""  # a warm-up's note goes with the first click
        return note, arrays is not None

    def _run(self, kind, bundle=None, device="auto", volume=None, volumeKey=None, ras=None, positive=True, target=None):
        import numpy as np  # arrays come and go only here (Slicer has numpy); importing this module needs none

        if kind == "forget":
            self._volumeKey, self._held = None, (None, None)
            return None
        if kind == "restart":
            if self._session is not None and self._volumeKey is not None:
                yield from self._call("/reset", {"session": self._session})
            return None
        note = ""
        if kind == "warm":  # the click section opened: start the server and load the model before the first click
            if (bundle, device) != self._sessionKey or self._session is None:
                yield from self._open(bundle, device, None)
            return None
        if kind == "point":
            if volume is not None:
                self._held = (volumeKey, volume)
            if (bundle, device) != self._sessionKey or self._session is None:
                note, sent = yield from self._open(bundle, device, volumeKey)
                if sent:
                    volume = None
            elif self._openNote:
                note, self._openNote = self._openNote, ""
            if volume is not None or volumeKey != self._volumeKey:
                heldKey, sent = self._held
                if sent is None or heldKey != volumeKey:
                    raise ValueError("the volume changed; place the point again")
                yield from self._call("/volume", {"session": self._session, "ijkToRas": np.asarray(sent.ijk_to_ras).tolist()},
                                      {"volume": sent.array})
                self._volumeKey = volumeKey
        elif self._session is None or self._volumeKey is None:
            return None
        header = {"session": self._session}
        if kind == "point":
            header.update(ras=[float(v) for v in ras], positive=bool(positive))
        elif kind not in ("undo", "reset"):
            raise ValueError(f"unknown request {kind!r}")
        answer, arrays = yield from self._call(f"/{kind}", header)
        result = {"kind": kind, "target": target, "note": note, "box": tuple(answer["box"]) if answer.get("box") else None,
                  "clicks": answer.get("clicks", 0), "label": answer.get("label"), "ijkToRas": np.asarray(answer.get("ijkToRas"))}
        if result["box"] is not None:
            result["values"], result["changed"] = arrays["values"], arrays["changed"].astype(bool)
        return result


def _parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"the click server's URL must be http://HOST:PORT (an SSH tunnel or a TLS proxy in front), got {url!r}.")
    return parts.hostname, parts.port
