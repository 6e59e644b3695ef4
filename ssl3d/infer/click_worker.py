"""The click-to-segment worker thread behind Slicer's SSLSegment module (no MRML, no Qt: testable here).

Clicks must not freeze the GUI, and the model must stay warm between them; nnInteractive's Slicer client works
the same way. The main thread converts the volume node to a :class:`~ssl3d.io.Volume` once, submits requests, and
polls :meth:`ClickWorker.take` from a timer; it writes only the returned changed voxels into the segment.
Standard library only, so the module can create it before the engine's heavy packages are installed.
"""

from __future__ import annotations

import queue
import threading
import time

__all__ = ["ClickWorker"]


class ClickWorker:
    """One persistent thread for all click-to-segment work; it never touches MRML or Qt.

    The session (model on the device, warm) is kept per (bundle, device) and set to a volume only when the
    main thread sends a new one, so a click costs one prediction. Requests run in order:

    - ``point`` (bundle, device, volume or None, volumeKey, ras, positive, target): add a click;
    - ``undo`` / ``reset`` (target): take back the last click / all clicks;
    - ``warm`` (bundle, device): load the model now, before the first click; nothing to write;
    - ``restart``: forget the clicks, nothing to write (a new structure starts);
    - ``forget``: drop the volume (the scene was closed).

    Each request but ``restart``/``forget`` gives one result dict: ``box`` (half-open k0, k1, j0, j1, i0, i1 on the
    volume's grid, None when nothing changed), ``values`` (the mask in the box), ``changed`` (the voxels the
    request changed in the box), ``ijkToRas``, ``clicks``, ``label``, ``seconds``, ``target``, ``note`` (the new
    session's device message, else empty), ``tag`` (the request's ``tag``, given back as it came); or ``error``.
    Only the changed voxels are written into the segment, so painting between clicks is kept except where a
    later click predicts those voxels differently, and Undo restores what the click changed.
    """

    def __init__(self, sessionFactory=None) -> None:
        self._factory = sessionFactory  # (bundle, device) -> session; default: ssl3d.infer.InteractiveSession
        self._requests = queue.Queue()
        self._results = queue.Queue()
        self._thread = None
        self._inFlight = 0
        self._since = None
        self._lock = threading.Lock()
        self._session, self._sessionKey, self._volumeKey = None, None, None
        self._note = ""

    def submit(self, kind: str, **request) -> None:
        if self._thread is None or not self._thread.is_alive():
            if kind in ("restart", "forget"):
                self._volumeKey = None if kind == "forget" else self._volumeKey
                return  # nothing to forget yet
            self._thread = threading.Thread(target=self._run, name="SSLSegment clicks", daemon=True)
            self._thread.start()
        with self._lock:
            self._inFlight += 1
            self._since = self._since or time.monotonic()
        self._requests.put((kind, request))

    def take(self) -> list:
        results = []
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                return results

    def pending(self) -> bool:
        return self._inFlight > 0 or not self._results.empty()

    def busyFor(self):
        """Seconds the oldest unfinished request has waited, None when idle."""
        since = self._since
        return None if since is None else time.monotonic() - since

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._requests.put(None)

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                self._session = None
                return
            kind, request = item
            tag = request.pop("tag", None)
            started = time.monotonic()
            try:
                result = self._handle(kind, **request)
            except Exception as error:  # reported on the main thread
                result = {"kind": kind, "error": str(error) or type(error).__name__, "target": request.get("target")}
            if result is not None:  # queued before the count drops, so pending() never reads False in between
                result["seconds"], result["tag"] = time.monotonic() - started, tag
                self._results.put(result)
            with self._lock:
                self._inFlight -= 1
                self._since = time.monotonic() if self._inFlight else None

    def _handle(self, kind, bundle=None, device="auto", volume=None, volumeKey=None, ras=None, positive=True,
                target=None):
        if kind == "forget":
            self._volumeKey = None
            return None
        session, note = self._session, ""
        if kind == "restart":
            if session is not None and self._volumeKey is not None:
                session.reset()
            return None
        if kind in ("point", "warm"):
            if (bundle, device) != self._sessionKey:
                self._session = self._sessionKey = self._volumeKey = None  # free the old model first
                self._session = session = self._newSession(bundle, device)
                self._sessionKey = (bundle, device)
                choice = getattr(session, "device_choice", None)  # e.g. "the GPU is too small: using the CPU"
                self._note = choice.message if choice is not None else ""
            if kind == "warm":
                return None
            note, self._note = self._note, ""  # the new session's device message goes with its first click
            if volume is not None or volumeKey != self._volumeKey:
                if volume is None:
                    raise ValueError("the volume changed; place the point again")
                session.set_volume(volume)
                self._volumeKey = volumeKey
        elif session is None or self._volumeKey is None:
            return None
        before = session.mask.array.copy()
        if kind == "point":
            session.add_point(ras, positive=positive)
        elif kind == "undo":
            session.undo()
        elif kind == "reset":
            session.reset()
        else:
            raise ValueError(f"unknown request {kind!r}")
        mask = session.mask
        result = {"kind": kind, "target": target, "note": note, "box": session.last_changed, "clicks": len(session.clicks),
                  "label": getattr(session, "label_name", None), "ijkToRas": mask.ijk_to_ras}
        if result["box"] is not None:
            k0, k1, j0, j1, i0, i1 = result["box"]
            region = (slice(k0, k1), slice(j0, j1), slice(i0, i1))
            result["values"] = mask.array[region].copy()
            result["changed"] = result["values"] != before[region]
        return result

    def _newSession(self, bundle, device):
        if self._factory is not None:
            return self._factory(bundle, device)
        from .interactive import InteractiveSession

        return InteractiveSession(bundle, device=device, warmup=True)
