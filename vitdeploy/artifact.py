"""The artifact directory: file names, the pyramid description, and loading with checks.

See docs/ARTIFACT_FORMAT.md for the format; vitdeploy.atomic writes every file of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitdeploy.integrity import check_files
from vitdeploy.errors import VitdeployError

FORMAT = "vitdeploy.pyramid"
FORMAT_VERSION = 2  # 2: `files` records (size, sha256) cover external data and every engine file
ONNX_FILE = "model.onnx"
SIDECAR_FILE = "vitdeploy.json"
REPORT_FILE = "verify_report.json"
METADATA_KEY = "vitdeploy"


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


def check_format(meta: dict[str, Any], where: Path) -> None:
    if meta.get("format") != FORMAT:
        raise VitdeployError(f"{where} describes format {meta.get('format')!r}: expected {FORMAT!r} "
                             "(a vitdeploy artifact)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise VitdeployError(f"{where} is format version {meta.get('format_version')!r}, this vitdeploy reads "
                             f"version {FORMAT_VERSION}: re-export the artifact with this vitdeploy")


def load_artifact(path: Path) -> Artifact:
    """An artifact directory (checked against its sidecar's sha256) or a bare vitdeploy .onnx file."""
    if path.is_file():
        meta = _read_onnx_metadata(path)
        check_format(meta, path)
        return Artifact(onnx_path=path, meta=meta, directory=None)
    sidecar, onnx_path = path / SIDECAR_FILE, path / ONNX_FILE
    if not sidecar.is_file() or not onnx_path.is_file():
        raise VitdeployError(f"{path} is not a vitdeploy artifact: expected {SIDECAR_FILE} and {ONNX_FILE} in it")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise VitdeployError(f"{sidecar} is not valid JSON: {exc}") from None
    check_format(meta, sidecar)
    check_files(path, meta["export"]["files"], "re-export the artifact")
    _read_onnx_metadata(onnx_path)  # also proves the file parses
    return Artifact(onnx_path=onnx_path, meta=meta, directory=path)
