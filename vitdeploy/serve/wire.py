"""The binary format of named arrays on the wire: served pyramids, array requests, and the client.

One message: the 8 bytes `VDARRAYS`, the header's length N as a little-endian uint32, N bytes of JSON
(UTF-8, padded with spaces so that the data starts at a multiple of 64 bytes), then the data. The
header is `{"arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...], "meta": {...}}`; each array
is C-ordered and little-endian at data start + `offset` (a multiple of 64). A reader in any language
needs a JSON parser and pointer arithmetic, nothing from vitdeploy (README, "Serving").
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from vitdeploy.errors import VitdeployError

MAGIC = b"VDARRAYS"
MEDIA_TYPE = "application/x-vitdeploy-arrays"
DTYPES = ("float32", "float16", "uint8")  # what a pyramid or an image batch is made of
ALIGN = 64
_PREFIX = len(MAGIC) + 4
_MAX_RANK = 8


def _aligned(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def encode(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """One message holding `arrays` in the given order, with `meta` in its header."""
    entries, offset, end, buffers = [], 0, 0, []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in DTYPES:
            raise VitdeployError(f"array {name!r} has dtype {array.dtype}: expected one of {', '.join(DTYPES)}")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        entries.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape), "offset": offset,
                        "nbytes": array.nbytes})
        buffers.append((offset, array))
        end = offset + array.nbytes
        offset = _aligned(end)
    header = json.dumps({"arrays": entries, "meta": dict(meta or {})}, separators=(",", ":")).encode()
    header += b" " * (_aligned(_PREFIX + len(header)) - _PREFIX - len(header))
    start = _PREFIX + len(header)
    message = bytearray(start + end)
    message[:_PREFIX] = MAGIC + struct.pack("<I", len(header))
    message[_PREFIX:start] = header
    for at, array in buffers:
        message[start + at:start + at + array.nbytes] = array.tobytes()
    return bytes(message)


def _malformed(reason: str) -> VitdeployError:
    return VitdeployError(f"malformed {MEDIA_TYPE} message: {reason}")


def _entry(item: Any, data_size: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _malformed("an array entry has no name")
    name, dtype, shape = item["name"], item.get("dtype"), item.get("shape")
    if dtype not in DTYPES:
        raise _malformed(f"array {name!r} has dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > _MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _malformed(f"array {name!r} has shape {shape!r}: expected up to {_MAX_RANK} non-negative integers")
    offset, nbytes = item.get("offset"), item.get("nbytes")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if not isinstance(offset, int) or offset < 0 or nbytes != expected:
        raise _malformed(f"array {name!r} has offset {offset!r} and nbytes {nbytes!r}: expected an offset >= 0 and "
                         f"{expected} bytes for {dtype} {shape}")
    if offset + expected > data_size:
        raise _malformed(f"array {name!r} ends at byte {offset + expected} of data, but only {data_size} bytes follow "
                         "the header (truncated?)")
    return name, np.dtype(dtype).newbyteorder("<"), tuple(shape), offset


def decode(message: bytes | bytearray | memoryview) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(name -> array, meta) of one message; arrays are views of `message` (writable if it is). Every
    defect is one line saying what is wrong."""
    view = memoryview(message)
    if len(view) < _PREFIX or bytes(view[:len(MAGIC)]) != MAGIC:
        raise _malformed(f"it does not start with {MAGIC.decode()!r}")
    (length,) = struct.unpack("<I", view[len(MAGIC):_PREFIX])
    if _PREFIX + length > len(view):
        raise _malformed(f"its header is {length} bytes but the message has {len(view)} bytes (truncated?)")
    try:
        header = json.loads(bytes(view[_PREFIX:_PREFIX + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(f"its header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise _malformed("its header has no 'arrays' list")
    data = view[_PREFIX + length:]
    arrays: dict[str, np.ndarray] = {}
    for item in header["arrays"]:
        name, dtype, shape, offset = _entry(item, len(data))
        if name in arrays:
            raise _malformed(f"array {name!r} appears twice")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    meta = header.get("meta", {})
    return arrays, meta if isinstance(meta, dict) else {}
