"""The binary format of named arrays on the wire: served pyramids, array requests, and the client.

One message: the 8 bytes `VDARRAYS`, the header's length N as a little-endian uint32, N bytes of JSON
(UTF-8, padded with spaces so that the data starts at a multiple of 64 bytes), then the data. The
header is `{"arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...], "meta": {...}}`; each array
is C-ordered and little-endian at data start + `offset` (a multiple of 64). A reader in any language
needs a JSON parser and pointer arithmetic, nothing from vitdeploy (docs/serving.md, "Wire format").

What a decoder accepts (docs/security.md, "Wire decoder"): a header of at most MAX_HEADER_BYTES of UTF-8
JSON; per array a string `name` (unique), a `dtype` of DTYPES, a `shape` of at most 8 integers 0..2**31-1
whose product (a zero counted as 1) is at most 2**48, an integer `offset` >= 0 that is a multiple of 64 and
an integer `nbytes` equal to the shape's size, the whole array inside the data. JSON booleans are not
integers. Everything else is one line, and nothing is copied: the arrays are views of the message.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np

from vitdeploy.errors import VitdeployError

MAGIC = b"VDARRAYS"
MEDIA_TYPE = "application/x-vitdeploy-arrays"
DTYPES = ("float32", "float16", "uint8")  # what a pyramid or an image batch is made of
ALIGN = 64
_PREFIX = len(MAGIC) + 4
_MAX_RANK = 8
MAX_HEADER_BYTES = 1 << 20  # a pyramid's header is a few hundred bytes; this bounds what parsing one may cost
_MAX_DIM = 2**31 - 1
_MAX_ELEMENTS = 2**48  # the product of the dimensions, zeros counted as 1 (numpy's own limit is near 2**63)


def _aligned(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def encode(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    """One message holding `arrays` in the given order, with `meta` in its header."""
    entries, offset, end, buffers = [], 0, 0, []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in DTYPES:
            raise VitdeployError(f"array {name!r:.60} has dtype {array.dtype}: expected one of {', '.join(DTYPES)}")
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


def _integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(item: Any, data_size: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _malformed("an array entry has no name")
    name, dtype, shape = item["name"], item.get("dtype"), item.get("shape")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _malformed(f"array {name!r:.60} has dtype {dtype!r:.40}: expected one of {', '.join(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > _MAX_RANK
            or not all(_integer(d) and 0 <= d <= _MAX_DIM for d in shape)
            or math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS):
        raise _malformed(f"array {name!r:.60} has shape {str(shape):.80}: expected up to {_MAX_RANK} integers "
                         f"0..{_MAX_DIM} whose product is at most 2**48")
    offset, nbytes = item.get("offset"), item.get("nbytes")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if not _integer(offset) or offset < 0 or offset % ALIGN or not _integer(nbytes) or nbytes != expected:
        raise _malformed(f"array {name!r:.60} has offset {str(offset):.40} and nbytes {str(nbytes):.40}: expected an "
                         f"integer offset >= 0, a multiple of {ALIGN}, and {expected} bytes for {dtype} {shape}")
    if offset + expected > data_size:
        raise _malformed(f"array {name!r:.60} ends at byte {offset + expected} of data, but only {data_size} bytes "
                         "follow the header (truncated?)")
    return name, np.dtype(dtype).newbyteorder("<"), tuple(shape), offset


def decode(message: bytes | bytearray | memoryview) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(name -> array, meta) of one message; arrays are views of `message` (writable if it is). Every
    defect is one line saying what is wrong."""
    view = memoryview(message)
    if len(view) < _PREFIX or bytes(view[:len(MAGIC)]) != MAGIC:
        raise _malformed(f"it does not start with {MAGIC.decode()!r}")
    (length,) = struct.unpack("<I", view[len(MAGIC):_PREFIX])
    if length > MAX_HEADER_BYTES:
        raise _malformed(f"its header is {length} bytes: expected at most {MAX_HEADER_BYTES}")
    if _PREFIX + length > len(view):
        raise _malformed(f"its header is {length} bytes but the message has {len(view)} bytes (truncated?)")
    try:
        header = json.loads(bytes(view[_PREFIX:_PREFIX + length]))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, a 5000-digit number, deep nesting
        raise _malformed(f"its header is not JSON ({type(exc).__name__}: {str(exc):.200})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise _malformed("its header has no 'arrays' list")
    data = view[_PREFIX + length:]
    arrays: dict[str, np.ndarray] = {}
    for item in header["arrays"]:
        name, dtype, shape, offset = _entry(item, len(data))
        if name in arrays:
            raise _malformed(f"array {name!r:.60} appears twice")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    meta = header.get("meta", {})
    return arrays, meta if isinstance(meta, dict) else {}
