"""The artifact directory: its file names, and loading it with its description and integrity checks.

See docs/ARTIFACT_FORMAT.md for the format; vitdeploy.atomic writes every file of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from vitdeploy import description_rules
from vitdeploy.description import Description, ExportRecord, InputSpec, OutputLevel
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import check_files

ONNX_FILE = "model.onnx"
DESCRIPTION_FILE = "vitdeploy.json"
REPORT_FILE = "verify_report.json"
METADATA_KEY = "vitdeploy"  # the description's key in the ONNX file's metadata_props
REMEDY = "re-export the artifact"


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact: its ONNX file and description; a bare .onnx unless it is an `ArtifactDirectory`."""

    onnx_path: Path
    description: Description
    directory: Path | None

    @cached_property
    def checked_onnx(self) -> Path:
        """`onnx_path` as everything that reads the ONNX graph opens it: checked (see ArtifactDirectory)."""
        return self.onnx_path  # a bare .onnx was parsed whole for its description

    @property
    def input(self) -> InputSpec:
        return self.description.input

    @property
    def outputs(self) -> tuple[OutputLevel, ...]:
        return self.description.outputs

    @property
    def output_names(self) -> list[str]:
        return self.description.output_names

    @property
    def name(self) -> str:
        return self.directory.name if self.directory else self.onnx_path.stem


@dataclass(frozen=True)
class ArtifactDirectory(Artifact):
    """An artifact directory: its description has the export record (files, sizes, sha256), and engines go in it."""

    directory: Path
    export: ExportRecord = field(kw_only=True)  # the description's, which load_artifact found there

    @cached_property
    def checked_onnx(self) -> Path:
        """`onnx_path` once its files' sha256 match their records. Loading checks their sizes only, so a model
        served by an engine never hashes the ONNX."""
        check_files(self.directory, self.export.files, REMEDY)
        return self.onnx_path


def read_onnx_description(path: Path) -> Description:
    """The description stored in an ONNX file's metadata_props (weights are not loaded)."""
    import onnx  # here: an artifact directory is read without it (onnx takes a second to import)

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for a damaged file
        raise VitdeployError(f"{path} is not a readable ONNX file (corrupt or truncated?): "
                             f"{type(exc).__name__}") from None
    props = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in props:
        raise VitdeployError(f"{path} has no '{METADATA_KEY}' metadata: expected an ONNX file exported by vitdeploy")
    return Description.from_dict(description_rules.decode(props[METADATA_KEY], f"{path}'s {METADATA_KEY} metadata"),
                                 path)


def load_artifact(path: Path) -> Artifact:
    """An artifact directory (an ArtifactDirectory: its ONNX files checked against their recorded sizes here,
    their sha256 by `checked_onnx` when the graph is read) or a bare vitdeploy .onnx file (parsed for its
    description)."""
    path = Path(path)
    if path.is_file():
        return Artifact(onnx_path=path, description=read_onnx_description(path), directory=None)
    description_path, onnx_path = path / DESCRIPTION_FILE, path / ONNX_FILE
    if not description_path.is_file() or not onnx_path.is_file():
        raise VitdeployError(f"{path} is not a vitdeploy artifact: expected {DESCRIPTION_FILE} and {ONNX_FILE} in it")
    description = Description.read(description_path)
    if description.export is None:
        raise VitdeployError(f"{description_path} has no 'export' section: {REMEDY}")
    check_files(path, description.export.files, REMEDY, contents=False)
    return ArtifactDirectory(onnx_path=onnx_path, description=description, directory=path, export=description.export)


def load_artifact_directory(path: Path) -> ArtifactDirectory:
    """`load_artifact` for commands that write into the artifact or need all of it (build, quantize, triton,
    extract): a bare .onnx is refused."""
    artifact = load_artifact(path)
    if not isinstance(artifact, ArtifactDirectory):
        raise VitdeployError(f"{path} is a file: expected an artifact directory (with {DESCRIPTION_FILE})")
    return artifact
