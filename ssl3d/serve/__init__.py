"""``ssl3d serve``: warm click-to-segment sessions in their own process, and the client that Slicer uses.

Inside Slicer a Python thread barely runs (PythonQt keeps the GIL while the event loop waits), so the model must
not run in Slicer's process. The server (:mod:`.server`) holds :class:`~ssl3d.infer.interactive.InteractiveSession`
objects, one per volume, bundle and device; the client (:mod:`.client`, standard library and numpy only) talks to
it with non-blocking sockets that the module's timer advances. The wire format is :mod:`.protocol`.
"""
