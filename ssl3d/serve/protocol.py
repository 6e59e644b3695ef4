"""The click server's wire format: an HTTP body that is a JSON header followed by raw arrays (no pickle).

Body = 4-byte big-endian length of the header, the header (UTF-8 JSON object), then the arrays' bytes one after
the other. ``header["arrays"]`` lists each array as ``{"name", "dtype", "shape"}`` in that order; arrays are C
order, little-endian. Requests carry the token in the ``X-SSL3D-Token`` header. Standard library, and numpy where arrays cross.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TOKEN_HEADER", "DTYPES", "ProtocolError", "encode", "decode"]

TOKEN_HEADER = "X-SSL3D-Token"
#: The array types that may cross the wire (volumes, masks); anything else is refused.
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 1 << 20


class ProtocolError(ValueError):
    """A body that does not follow the format (one line, for the error answer)."""


def encode(header: Mapping, arrays: Mapping[str, np.ndarray] | None = None) -> list:
    """The body as a list of byte chunks (arrays as memoryviews of their data: no copy of a large volume)."""
    import numpy as np  # only where arrays cross: the module stays importable with the standard library alone

    listed, chunks = [], []
    for name, array in (arrays or {}).items():
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.view(np.uint8)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        if array.dtype.name not in DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {array.dtype} cannot be sent; use one of {', '.join(DTYPES)}.")
        listed.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
        chunks.append(memoryview(array).cast("B"))
    text = json.dumps({**header, "arrays": listed}).encode("utf-8")
    return [_LENGTH.pack(len(text)), text, *chunks]


def decode(body: bytes | bytearray | memoryview) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, {name: array}) of a body; arrays are read-only views of ``body``.

    Raises:
        ProtocolError: truncated body, a header that is not a JSON object, unknown dtypes, sizes that disagree.
    """
    import numpy as np

    view = memoryview(body)
    if len(view) < _LENGTH.size:
        raise ProtocolError("the body is shorter than its 4-byte header length.")
    (size,) = _LENGTH.unpack(view[:_LENGTH.size])
    if size > _MAX_HEADER or _LENGTH.size + size > len(view):
        raise ProtocolError(f"the header length {size} does not fit the body of {len(view)} bytes.")
    try:
        header = json.loads(bytes(view[_LENGTH.size:_LENGTH.size + size]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the header is not JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise ProtocolError("the header must be a JSON object.")
    offset, arrays = _LENGTH.size + size, {}
    for entry in header.get("arrays") or []:
        try:
            name, dtype, shape = str(entry["name"]), np.dtype(str(entry["dtype"])).newbyteorder("<"), tuple(int(s) for s in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"bad array entry {entry!r}.") from None
        if dtype.name not in DTYPES or any(s < 0 for s in shape):
            raise ProtocolError(f"array {name!r}: dtype {dtype.name} or shape {list(shape)} is not allowed.")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + nbytes > len(view):
            raise ProtocolError(f"array {name!r} needs {nbytes} bytes; the body ends before.")
        arrays[name] = np.frombuffer(view[offset:offset + nbytes], dtype=dtype).reshape(shape)
        offset += nbytes
    if offset != len(view):
        raise ProtocolError(f"{len(view) - offset} bytes follow the last array.")
    return header, arrays
