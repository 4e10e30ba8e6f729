"""Hostile input without a server (docs/security.md): tampered descriptions and artifacts, special files given to
`extract`, and seeded fuzzing of the wire decoder and the description reader.

Every case must end in a one-line VitdeployError (or a valid result), never a traceback, and nothing outside the
artifact may be opened. The fuzz loops are seeded (reproducible) and bounded in count and memory.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import socket
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitdeploy.artifact import load_artifact
from vitdeploy.description import Description
from vitdeploy.description_rules import MAX_DEPTH, decode
from vitdeploy.errors import VitdeployError
from vitdeploy.serve import wire
from vitdeploy.serve.extract import ExtractOptions, ShardExtractor, collect_images, shard_path, write_index

FUZZ_CASES = 400


def one_line_error(action) -> str:
    with pytest.raises(VitdeployError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture()
def tampered(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    """A copy of the artifact (model.onnx hard-linked, not a symlink out) whose vitdeploy.json a test rewrites."""
    directory = tmp_path / "artifact"
    directory.mkdir()
    os.link(vit_tiny_dynamic_artifact / "model.onnx", directory / "model.onnx")
    original = json.loads((vit_tiny_dynamic_artifact / "vitdeploy.json").read_text())

    def write(edit=None, raw: bytes | None = None) -> Path:
        data = copy.deepcopy(original)
        if edit:
            edit(data)
        (directory / "vitdeploy.json").write_bytes(raw if raw is not None else json.dumps(data).encode())
        return directory

    return write


def _rename_file(name: str):
    def edit(data):
        files = data["export"]["files"]
        files[name] = files.pop("model.onnx")
    return edit


def _deep(levels: int) -> bytes:
    return b'{"format": "vitdeploy.pyramid", "x": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize(("edit", "raw", "reason"), [
    (_rename_file("/etc/passwd"), None, "(export.files file '/etc/passwd' is not a plain name"),
    (_rename_file("../outside.onnx"), None, "(export.files file '../outside.onnx' is not a plain name"),
    (lambda d: d["export"].update(onnx_file="../model.onnx"), None, "(export.onnx_file '../model.onnx' is not a plain"),
    (lambda d: d["outputs"][0].update(name="../x"), None, "(outputs[0].name '../x' is not a plain name"),
    (lambda d: d["input"].update(channels="3"), None, '(input.channels is a string ("3"): expected an integer)'),
    (lambda d: d["input"]["batch"].update(max=True), None,
     "(input.batch.max is a boolean (true): expected an integer)"),
    (lambda d: d["input"].update(max_hw=[100000, 100000]), None, "(input.max_hw[0] is 100000: expected 1..16384)"),
    (lambda d: d["input"].update(mean=[0.5, 0.5]), None, "(input.mean has 2 items: expected 3)"),
    (lambda d: d.update(input=None), None, "(input is null: expected a value)"),
    (lambda d: d.update(outputs={"a": 1}), None, "(outputs is a dict: expected a list)"),
    (lambda d: d["export"]["files"]["model.onnx"].update(size_bytes=2**70), None,
     "(export.files['model.onnx'].size_bytes is 1180591620717411303424: expected 0..17592186044416)"),
    (None, b"\xff\xfe" + b"{}", "is not UTF-8 text (byte 0): expected a JSON description"),
    (None, _deep(100_000), "is not valid JSON (nested too deep)"),
    (None, _deep(MAX_DEPTH + 1), f"nests objects and lists more than {MAX_DEPTH} deep"),
    (None, b'{"format_version": ' + b"9" * 5000 + b"}", "is not valid JSON (Exceeds the limit (4300 digits)"),
])
def test_tampered_description_is_one_line(tampered, edit, raw: bytes | None, reason: str):
    directory = tampered(edit, raw)
    message = one_line_error(lambda: load_artifact(directory))
    assert message.startswith(str(directory / "vitdeploy.json")) and reason in message, message


def test_symlink_out_of_the_artifact_is_refused_before_it_is_read(tampered, tmp_path: Path):
    directory = tampered()
    outside = tmp_path / "secret.onnx"
    shutil.copy(directory / "model.onnx", outside)
    (directory / "model.onnx").unlink()
    (directory / "model.onnx").symlink_to(outside)
    message = one_line_error(lambda: load_artifact(directory))
    assert message == (f"{directory / 'model.onnx'} is a symbolic link out of {directory}: expected the file itself "
                       "inside the artifact directory; copy it in place of the link")
    (directory / "model.onnx").unlink()
    (directory / "model.onnx").symlink_to(directory / "vitdeploy.json")  # a link inside: allowed, then sized
    assert "is " in one_line_error(lambda: load_artifact(directory))  # the size differs: one line, not a read


def test_extract_lists_special_files_without_opening_them(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    """A FIFO (which would block a reader forever), a socket and a broken link named like images are listed in
    the index as unreadable; the real image beside them is extracted."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "b_pipe.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "c_socket.png"))
    (folder / "d_link.jpg").symlink_to(folder / "missing.jpg")
    paths = collect_images([folder])
    assert [Path(p).name for p in paths] == ["a.png", "b_pipe.png", "c_socket.png", "d_link.jpg"]
    artifact = load_artifact(vit_tiny_dynamic_artifact)
    fixed = replace(artifact.input, mode="fixed", min_hw=(64, 64), opt_hw=(64, 64), max_hw=(64, 64))
    extractor = ShardExtractor(str(vit_tiny_dynamic_artifact), ExtractOptions(backend="onnxruntime_cpu", threads=1),
                               fixed, {"block1": [192, 4, 4]}, batch=1)
    result: list[bytes] = []
    worker = threading.Thread(target=lambda: result.append(extractor.shard(paths)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert result, "extracting hung: a special file was opened"
    out = tmp_path / "out"
    out.mkdir()
    shard_path(out, 0).write_bytes(result[0])
    assert write_index(out, paths, shard_size=8) == (1, 3)
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert index[0] == {"path": paths[0], "shard": 0, "row": 0}
    assert [entry["error"] for entry in index[1:]] == [
        f"{paths[1]} is a FIFO, not a regular file (not opened): expected a PNG or JPEG file",
        f"{paths[2]} is a socket, not a regular file (not opened): expected a PNG or JPEG file",
        f"image {paths[3]} does not exist: expected a PNG or JPEG file"]
    server.close()


# Values a fuzzer puts where a field was: wrong types, huge and negative numbers, paths, deep nesting.
HOSTILE_VALUES = [None, True, False, 0, -1, 2**31, 2**70, 10**400, 1e308, -1e-300, float("nan"), "", "3", "../x",
                  "/etc/passwd", "a" * 10_000, [], [1], [[[[]]]], {}, {"a": {"b": {}}}, [2**70, 0], [1.5, 2]]


def _leaves(value, path=()):
    """Every (path, value) of a JSON value, containers included."""
    yield path, value
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _leaves(child, (*path, key))


def _mutated(data, rng: random.Random):
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        path, _ = rng.choice(list(_leaves(data))[1:])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    return data


def _bounded(action, limit_bytes: int):
    """Run `action` under tracemalloc; its peak Python allocation must stay within `limit_bytes`."""
    tracemalloc.start()
    try:
        return action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= limit_bytes, f"{peak} bytes allocated: expected at most {limit_bytes}"


def test_fuzzed_descriptions_are_valid_or_one_line(vit_tiny_dynamic_artifact: Path):
    """Seeded mutations of a real description (values replaced by hostile ones, fields deleted) and of its bytes:
    each is a Description or one VitdeployError line; no other exception, and a few MiB at most."""
    text = (vit_tiny_dynamic_artifact / "vitdeploy.json").read_bytes()
    original, rng, outcomes = json.loads(text), random.Random(28), {"valid": 0, "refused": 0}

    def read(raw: bytes) -> None:
        try:
            Description.from_dict(decode(raw, "fuzz.json"), "fuzz.json")
            outcomes["valid"] += 1
        except VitdeployError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1

    for case in range(FUZZ_CASES):
        if case % 2:
            raw = json.dumps(_mutated(original, rng)).encode()
        else:
            raw = bytearray(text)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw[:rng.randint(len(raw) // 2, len(raw))] if rng.random() < 0.2 else raw)
        _bounded(lambda: read(raw), 8 * 2**20)
    assert outcomes["refused"] > FUZZ_CASES // 2 and outcomes["valid"] > 0, outcomes


def test_fuzzed_wire_messages_decode_or_are_one_line():
    """Seeded mutations of a valid message's header (hostile values, offsets off the 64-byte grid, booleans) and
    bytes: each decodes (arrays inside the message, offsets multiples of 64) or is one line; decoding allocates
    little beyond the header whatever the shapes declare (arrays are views)."""
    arrays = {"a": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "b": np.zeros((0, 3), np.uint8),
              "c": np.ones((5,), np.float16)}
    message = wire.encode(arrays, {"replica": "r"})
    length = int.from_bytes(message[8:12], "little")
    header, data = json.loads(message[12:12 + length]), message[12 + length:]
    rng, outcomes = random.Random(7), {"valid": 0, "refused": 0}

    def decode_one(body: bytes) -> None:
        try:
            decoded, _ = wire.decode(body)
        except VitdeployError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"malformed {wire.MEDIA_TYPE} message: ")
            outcomes["refused"] += 1
            return
        for array in decoded.values():
            assert array.base is not None and array.nbytes <= len(body)  # a view of the message, inside it
        outcomes["valid"] += 1

    for case in range(FUZZ_CASES):
        if case % 2:
            mutated = _mutated(header, rng)
            text = json.dumps(mutated).encode()
            body = b"VDARRAYS" + len(text).to_bytes(4, "little") + text + data
        else:
            body = bytearray(message)
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            body = bytes(body)
        _bounded(lambda: decode_one(body), 2**20 + 64 * len(body))
    assert outcomes["refused"] > FUZZ_CASES // 4 and outcomes["valid"] > 0, outcomes


@pytest.mark.parametrize(("entry", "reason"), [
    ({"offset": True}, "has offset True and nbytes 96: expected an integer offset >= 0, a multiple of 64"),
    ({"offset": 32}, "has offset 32 and nbytes 96"),
    ({"nbytes": 96.0}, "has offset 0 and nbytes 96.0"),
    ({"shape": [2**70, 0]}, "has shape [1180591620717411303424, 0]: expected up to 8 integers 0..2147483647"),
    ({"shape": [2**31 - 1] * 3 + [0], "nbytes": 0},
     "has shape [2147483647, 2147483647, 2147483647, 0]: expected up to 8 integers 0..2147483647 whose product is "
     "at most 2**48"),
    ({"dtype": ["float32"]}, "has dtype ['float32']: expected one of float32, float16, uint8"),
])
def test_wire_decoder_spec(entry: dict, reason: str):
    """The rules docs/security.md states for each array entry."""
    item = {"name": "x", "dtype": "float32", "shape": [2, 12], "offset": 0, "nbytes": 96} | entry
    text = json.dumps({"arrays": [item]}).encode()
    body = b"VDARRAYS" + len(text).to_bytes(4, "little") + text + bytes(96)
    message = one_line_error(lambda: wire.decode(body))
    assert message.startswith(f"malformed {wire.MEDIA_TYPE} message: array 'x' {reason}"), message
    huge = b"VDARRAYS" + (wire.MAX_HEADER_BYTES + 1).to_bytes(4, "little") + b" " * (wire.MAX_HEADER_BYTES + 1)
    assert one_line_error(lambda: wire.decode(huge)).endswith(f"expected at most {wire.MAX_HEADER_BYTES}")
    deep = b"[" * 100_000
    deep_message = b"VDARRAYS" + len(deep).to_bytes(4, "little") + deep
    assert "its header is not JSON (RecursionError" in one_line_error(lambda: wire.decode(deep_message))
