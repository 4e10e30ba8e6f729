"""Size and sha256 records of the files an artifact or engine consists of, and their check before loading.

A record covers every file a runtime reads: `model.onnx` and its external data (models over 2 GB),
an engine, an OpenVINO IR's .xml and .bin. The size is checked first (a truncated copy is told apart
from a corrupt one), then the sha256, each as one line naming the file and what to do.

The directory is a closed world: a recorded name must be a plain file name that resolves inside it (`inside`),
or it is refused before it is looked at, so a tampered description cannot make vitdeploy open, hash or size a
file elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from vitdeploy.description import FileRecord
from vitdeploy.errors import VitdeployError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(paths: Iterable[Path]) -> dict[str, FileRecord]:
    """File name -> its size and sha256, for files that live side by side in one directory."""
    return {path.name: FileRecord(size_bytes=path.stat().st_size, sha256=sha256_file(path)) for path in paths}


def inside(directory: Path, name: str) -> Path:
    """`directory / name`, refused in one line unless `name` is one plain path component that does not resolve
    (through a symlink) to a place outside `directory`; nothing is opened."""
    path = directory / name
    if not name or Path(name).name != name or name in (".", "..") or "\\" in name or "\0" in name:
        raise VitdeployError(f"the description of {directory} names the file {name[:80]!r}: expected a plain file "
                             "name inside the artifact directory (no path, no '..'); the description was tampered with")
    if path.is_symlink() and not path.resolve().is_relative_to(directory.resolve()):
        raise VitdeployError(f"{path} is a symbolic link out of {directory}: expected the file itself inside the "
                             "artifact directory; copy it in place of the link")
    return path


def check_files(directory: Path, files: dict[str, FileRecord], remedy: str, contents: bool = True) -> None:
    """Every recorded file exists in `directory` (`inside` it) with its recorded size and (if `contents`)
    sha256; `remedy` ends each error. Sizes alone are for choosing among engines: the bytes are hashed once, by
    the loader."""
    for name, record in files.items():
        path = inside(directory, name)
        if not path.is_file():
            raise VitdeployError(f"{path} is missing: expected {record.size_bytes} bytes; {remedy}")
        size, expected = path.stat().st_size, record.size_bytes
        if size != expected:
            what = "truncated" if size < expected else "longer than written"
            raise VitdeployError(f"{path} is {size} bytes, {what}: expected {expected} bytes (interrupted copy?); "
                                 f"{remedy}")
        if contents and sha256_file(path) != record.sha256:
            raise VitdeployError(f"{path} is corrupt: its sha256 differs from the one recorded when it was written "
                                 f"(same size, changed bytes); {remedy}")
