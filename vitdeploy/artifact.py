"""The artifact directory: file names, the pyramid description, atomic writes, and loading with checks.

See docs/ARTIFACT_FORMAT.md for the format. Everything is written under a temporary name and renamed
when complete, so an interrupted export or verify never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitdeploy.errors import VitdeployError

FORMAT = "vitdeploy.pyramid"
FORMAT_VERSION = 1
ONNX_FILE = "model.onnx"
SIDECAR_FILE = "vitdeploy.json"
REPORT_FILE = "verify_report.json"
METADATA_KEY = "vitdeploy"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write beside the final name, then rename: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide artifacts from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


@contextmanager
def staged_directory(final: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside `final` that replaces it only if the block completes."""
    if final.exists() and not force:
        raise VitdeployError(f"output directory {final} already exists: pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact: its directory (None for a bare .onnx) and pyramid description."""

    onnx_path: Path
    meta: dict[str, Any]
    directory: Path | None

    @property
    def input(self) -> dict[str, Any]:
        return self.meta["input"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.meta["outputs"]

    @property
    def output_names(self) -> list[str]:
        return [output["name"] for output in self.outputs]

    @property
    def dynamic(self) -> bool:
        return self.input["mode"] == "dynamic"

    @property
    def name(self) -> str:
        return self.directory.name if self.directory else self.onnx_path.stem


def _read_onnx_metadata(path: Path) -> dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for a damaged file
        raise VitdeployError(f"{path} is not a readable ONNX file (corrupt or truncated?): "
                             f"{type(exc).__name__}") from None
    props = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in props:
        raise VitdeployError(f"{path} has no '{METADATA_KEY}' metadata: expected an ONNX file exported by vitdeploy")
    return json.loads(props[METADATA_KEY])


def _check_format(meta: dict[str, Any], where: Path) -> None:
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise VitdeployError(f"{where} describes format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r}: expected {FORMAT!r} version {FORMAT_VERSION}")


def load_artifact(path: Path) -> Artifact:
    """An artifact directory (checked against its sidecar's sha256) or a bare vitdeploy .onnx file."""
    if path.is_file():
        meta = _read_onnx_metadata(path)
        _check_format(meta, path)
        return Artifact(onnx_path=path, meta=meta, directory=None)
    sidecar, onnx_path = path / SIDECAR_FILE, path / ONNX_FILE
    if not sidecar.is_file() or not onnx_path.is_file():
        raise VitdeployError(f"{path} is not a vitdeploy artifact: expected {SIDECAR_FILE} and {ONNX_FILE} in it")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise VitdeployError(f"{sidecar} is not valid JSON: {exc}") from None
    _check_format(meta, sidecar)
    expected = meta["export"]["onnx_sha256"]
    if sha256_file(onnx_path) != expected:
        raise VitdeployError(f"{onnx_path} does not match the sha256 recorded in {SIDECAR_FILE} "
                             "(file changed, truncated or corrupt): re-export the artifact")
    _read_onnx_metadata(onnx_path)  # also proves the file parses
    return Artifact(onnx_path=onnx_path, meta=meta, directory=path)
