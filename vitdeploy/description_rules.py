"""What a description may hold, checked as data before anything is computed from it or opened by it.

Descriptions travel between machines (`vitdeploy.json`, an engine's description, the ONNX file's metadata,
a server's /v1/metadata), so they are read as untrusted input: UTF-8 JSON of at most MAX_BYTES nested at
most MAX_DEPTH deep; every field of its JSON type (booleans are not numbers); numbers finite and within
sane bounds (MAX_SIDE, MAX_BATCH, ...); every name a file or tensor is called by a plain name (SAFE_NAME:
no path separator, no `..`, no leading dot), so that the files a description names lie in its artifact
directory (vitdeploy.integrity.inside then refuses a symlink out). Each problem is one line naming the field
by its path, such as `input.min_hw[0] is a string ('64'): expected an integer`. docs/security.md lists the
bounds; the C++ demo's reader (cpp_demo/src/description.cpp) applies the same ones.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from typing import Any

from vitdeploy.errors import VitdeployError

MAX_BYTES = 16 * 2**20  # a description is a few KB; an int8 engine's calibration record a few hundred
MAX_DEPTH = 32  # objects and lists within each other
MAX_SIDE = 16384  # pixels of an input side (min_hw, opt_hw, max_hw)
MAX_BATCH = 4096
MAX_CHANNELS = 65536
MAX_STRIDE = 4096
MAX_OUTPUTS = 256
MAX_FILE_BYTES = 2**44  # 16 TiB: any real model file
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")  # a file or tensor name usable as a file name
_SHA256 = re.compile(r"[0-9a-f]{64}")


def decode(raw: bytes | str, where: object) -> Any:
    """The JSON value of a description's text, refused in one line if it is too large, not UTF-8, not JSON (a
    5000-digit number included) or nested too deep."""
    if len(raw) > MAX_BYTES:
        raise VitdeployError(f"{where} is {len(raw)} bytes: expected a description of at most {MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise VitdeployError(f"{where} is not UTF-8 text (byte {exc.start}): expected a JSON description; "
                             "re-export the artifact or rebuild the engine") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError, as is a 5000-digit integer
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deep"
        raise VitdeployError(f"{where} is not valid JSON ({' '.join(reason.split())[:200]}): re-export the artifact "
                             "or rebuild the engine") from None
    depth, level = 0, [data]
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise VitdeployError(f"{where} nests objects and lists more than {MAX_DEPTH} deep: expected a vitdeploy "
                                 "description")
        level = [child for value in level if isinstance(value, (dict, list))
                 for child in (value.values() if isinstance(value, dict) else value)]
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    text = json.dumps(value)[:40]
    return f"{names.get(type(value), type(value).__name__)} ({text})"


_EXPECTED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def type_problem(value: Any, hint: Any) -> str | None:
    """Why a JSON value does not have the type of a field's annotation (str, int, float, bool, X | None,
    tuple[...], dict[str, X], Any); None if it has. Nested descriptions are checked by their own fields."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [arg for arg in args if arg is not type(None)]
        return type_problem(value, others[0]) if len(others) == 1 else None
    if origin is tuple:
        if not isinstance(value, list):
            return f"is {_kind(value)}: expected a list"
        hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(value) != len(hints):
            return f"has {len(value)} items: expected {len(hints)}"
        for i, (item, item_hint) in enumerate(zip(value, hints)):
            problem = type_problem(item, item_hint)
            if problem:
                return f"[{i}] {problem}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"is {_kind(value)}: expected an object"
        for key, item in value.items():
            problem = type_problem(item, args[1])
            if problem:
                return f"[{key[:40]!r}] {problem}"
        return None
    if hint not in _EXPECTED:
        return None
    ok = (isinstance(value, bool) if hint is bool else
          isinstance(value, int) and not isinstance(value, bool) if hint is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) if hint is float
          else isinstance(value, str))
    return None if ok else f"is {_kind(value)}: expected {_EXPECTED[hint]}"


def _name(name: str, what: str) -> list[str]:
    if not SAFE_NAME.fullmatch(name):
        return [f"{what} {name[:60]!r} is not a plain name: expected 1 to 128 letters, digits and _.+- not "
                "starting with a dot (no path)"]
    return []


def _within(value: float, low: float, high: float, what: str) -> list[str]:
    return [] if low <= value <= high else [f"{what} is {value}: expected {low}..{high}"]


def _files(files: dict[str, Any], where: str) -> list[str]:
    problems = []
    for name, record in files.items():
        problems += _name(name, f"{where} file")
        problems += _within(record.size_bytes, 0, MAX_FILE_BYTES, f"{where}[{name[:60]!r}].size_bytes")
        if not _SHA256.fullmatch(record.sha256):
            problems.append(f"{where}[{name[:60]!r}].sha256 is {record.sha256[:70]!r}: expected 64 lower-case hex "
                            "digits")
    return problems


def _input_problems(spec: Any) -> list[str]:
    problems = _name(spec.name, "input.name")
    if spec.layout not in ("NCHW", "NHWC") or spec.dtype not in ("float32", "uint8"):
        problems.append(f"input is {spec.dtype[:20]} {spec.layout[:20]}: expected float32 NCHW or uint8 NHWC")
    if spec.mode not in ("fixed", "dynamic"):
        problems.append(f"input.mode is {spec.mode[:20]!r}: expected 'fixed' or 'dynamic'")
    problems += _within(spec.channels, 1, 64, "input.channels")
    problems += _within(spec.size_multiple, 1, MAX_SIDE, "input.size_multiple")
    for key in ("min_hw", "opt_hw", "max_hw"):
        for axis, side in enumerate(getattr(spec, key)):
            problems += _within(side, 1, MAX_SIDE, f"input.{key}[{axis}]")
    if not all(a <= b <= c for a, b, c in zip(spec.min_hw, spec.opt_hw, spec.max_hw)):
        problems.append(f"input sizes {list(spec.min_hw)}, {list(spec.opt_hw)}, {list(spec.max_hw)}: expected min_hw "
                        "<= opt_hw <= max_hw")
    batch = spec.batch
    for key in ("min", "opt", "max"):
        problems += _within(getattr(batch, key), 1, MAX_BATCH, f"input.batch.{key}")
    if not batch.min <= batch.opt <= batch.max:
        problems.append(f"input.batch is {batch.min}, {batch.opt}, {batch.max}: expected min <= opt <= max")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std, default=0) <= 0 or spec.pixel_scale <= 0:
        problems.append("input mean, std and pixel_scale: expected 3 means, 3 positive stds and a positive scale")
    return problems


def _output_problems(outputs: tuple[Any, ...]) -> list[str]:
    problems = _within(len(outputs), 1, MAX_OUTPUTS, "the number of outputs")
    names = [output.name for output in outputs]
    if len(set(names)) != len(names):
        problems.append(f"outputs name {names[:8]}: expected each name once")
    for i, output in enumerate(outputs):
        where = f"outputs[{i}]"
        problems += _name(output.name, f"{where}.name")
        problems += _within(output.channels, 1, MAX_CHANNELS, f"{where}.channels")
        spatial = output.kind in ("feature", "position")
        if output.kind not in ("feature", "position", "embedding") or output.layout != ("NCHW" if spatial else "NC"):
            problems.append(f"{where} is a {output.kind[:20]!r} of layout {output.layout[:20]!r}: expected a feature "
                            "or position of layout NCHW, or an embedding of layout NC")
        if spatial and (output.stride is None or not 1 <= output.stride <= MAX_STRIDE):
            problems.append(f"{where}.stride is {output.stride}: expected 1..{MAX_STRIDE}")
    return problems


def _engine_problems(engine: Any) -> list[str]:
    problems = _name(engine.file, "engine.file") + _files(engine.files, "engine.files")
    if engine.file not in engine.files:
        problems.append(f"engine.files does not list the engine file {engine.file[:60]!r}: expected it among them")
    for name, profile in engine.profile.items():
        ranks = {len(profile.min), len(profile.opt), len(profile.max)}
        if len(ranks) != 1 or not all(0 <= d <= 2**31 - 1 for shape in (profile.min, profile.opt, profile.max)
                                      for d in shape):
            problems.append(f"engine.profile[{name[:60]!r}]: expected min, opt and max shapes of one rank with "
                            "dimensions 0..2**31-1")
    for name, tensor in engine.io.items():
        if not all(-1 <= d <= 2**31 - 1 for d in tensor.shape):
            problems.append(f"engine.io[{name[:60]!r}].shape is {list(tensor.shape)[:8]}: expected dimensions -1 "
                            "(dynamic) or 0..2**31-1")
    return problems


def problems(description: Any) -> list[str]:
    """Every range and name problem of a parsed description (its types are checked while it is parsed)."""
    found = _input_problems(description.input) + _output_problems(description.outputs)
    export = description.export
    if export is not None:
        found += _name(export.onnx_file, "export.onnx_file") + _files(export.files, "export.files")
        if export.onnx_file not in export.files:
            found.append(f"export.files does not list {export.onnx_file[:60]!r}: expected the ONNX file among them")
    if description.engine is not None:
        found += _engine_problems(description.engine)
    for name, tolerance in description.tolerance.items():
        values = [tolerance.max_abs, tolerance.min_cosine, tolerance.max_rel]
        if any(value is not None and value < 0 for value in values):
            found.append(f"tolerance[{name[:60]!r}] has a negative bound: expected bounds >= 0")
    return found
