"""The artifact description, typed: what `vitdeploy.json` (and each engine's description) says.

One module reads and writes it, and checks its format and version once; everything else uses the
attributes. An artifact's description is `vitdeploy.json` (also inside the ONNX file's
`metadata_props`); an engine's description is `<engine file>.json` beside the engine: the same
description plus an `engine` section. docs/ARTIFACT_FORMAT.md is the specification.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from vitdeploy import description_rules
from vitdeploy.errors import VitdeployError

FORMAT = "vitdeploy.pyramid"
FORMAT_VERSION = 2  # 2: `files` records (size, sha256) cover external data and every engine file
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # how a runtime computes; each has a tolerance


@dataclass(frozen=True)
class Tolerance:
    """Per-output pass criteria of a parity check: max abs error (None: not gated, as for int8), minimum
    per-sample cosine similarity, and (None: not gated) maximum per-sample relative L2 error
    ||actual - expected|| / ||expected||."""

    max_abs: float | None
    min_cosine: float
    max_rel: float | None = None


@dataclass(frozen=True)
class BatchRange:
    min: int
    opt: int
    max: int

    def batch_error(self, batch: int) -> str | None:
        """Why one call cannot hold `batch` images; None if it can (the one batch check)."""
        if self.min <= batch <= self.max:
            return None
        return f"batch {batch} is outside the artifact's batch range {self.min}..{self.max}"


def size_within(hw: tuple[int, int], low: tuple[int, int], high: tuple[int, int]) -> bool:
    """low <= hw <= high for height and width (the one size-range check)."""
    return low[0] <= hw[0] <= high[0] and low[1] <= hw[1] <= high[1]


@dataclass(frozen=True)
class InputSpec:
    """The one input: layout and dtype, the size rule and range, the batch range, normalisation."""

    name: str
    layout: str  # NCHW (normalised float32) or NHWC (uint8 pixels, normalised in the graph)
    dtype: str
    normalised_in_graph: bool
    channels: int
    color: str
    mode: str  # fixed | dynamic
    size_multiple: int
    min_hw: tuple[int, int]
    opt_hw: tuple[int, int]
    max_hw: tuple[int, int]
    batch: BatchRange
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixel_scale: float

    @property
    def dynamic(self) -> bool:
        return self.mode == "dynamic"

    def axis_names(self) -> list[str]:
        """The names of the four axes, in the layout."""
        return ["batch", "height", "width", "channels"] if self.layout == "NHWC" else \
            ["batch", "channels", "height", "width"]

    def shape(self, batch: Any, height: Any, width: Any) -> list[Any]:
        """[batch, height, width] with the channel axis where the layout puts it."""
        return [batch, height, width, self.channels] if self.layout == "NHWC" else \
            [batch, self.channels, height, width]

    def hw(self, shape: Any) -> tuple[int, int]:
        """(height, width) of a batch shape in the layout."""
        axes = self.axis_names()
        return int(shape[axes.index("height")]), int(shape[axes.index("width")])

    def size_error(self, height: int, width: int) -> str | None:
        """Why (height, width) breaks the size rule or range; None if it is valid."""
        (min_h, min_w), (max_h, max_w) = self.min_hw, self.max_hw
        if height % self.size_multiple or width % self.size_multiple:
            return f"size {height}x{width} is not a multiple of {self.size_multiple} (the backbone's size rule)"
        if not size_within((height, width), self.min_hw, self.max_hw):
            if not self.dynamic:
                return f"size {height}x{width} differs from the artifact's fixed size {min_h}x{min_w}"
            return f"size {height}x{width} is outside the artifact's range {min_h}x{min_w} .. {max_h}x{max_w}"
        return None

    def value_hint(self) -> str:
        """What the input's values are, for error messages."""
        if self.normalised_in_graph:
            return "raw RGB pixels 0..255: the artifact normalises them itself"
        return "normalised pixels; see vitdeploy.preprocess"


@dataclass(frozen=True)
class OutputLevel:
    """One output: a feature map [B, channels, H/stride, W/stride] or the pooled embedding [B, channels]."""

    name: str
    kind: str  # feature | position | embedding
    index: int | None  # timm's feature index (Hiera stage, ViT block; SAM2: neck level); None for the embedding
    channels: int
    stride: int | None
    layout: str  # NCHW | NC

    @property
    def spatial(self) -> bool:
        """A map [B, C, H/stride, W/stride] (a feature level or its position encoding), not a vector [B, C]."""
        return self.layout == "NCHW"

    def feature_index(self) -> int:
        """timm's feature index of a feature level or its position encoding (only the embedding has none)."""
        if self.index is None:
            raise VitdeployError(f"output '{self.name}' ({self.kind}) has no feature index: expected a feature level")
        return self.index

    def feature_stride(self) -> int:
        """The stride of a feature level or its position encoding (only the embedding has none)."""
        if self.stride is None:
            raise VitdeployError(f"output '{self.name}' ({self.kind}) has no stride: expected a feature level")
        return self.stride

    def shape(self, batch: Any, height: int, width: int) -> list[Any]:
        if not self.spatial:
            return [batch, self.channels]
        return [batch, self.channels, height // self.feature_stride(), width // self.feature_stride()]


PYRAMID_KINDS = ("simple",)


@dataclass(frozen=True)
class PyramidSpec:
    """What a recipe's `[pyramid]` (or `--pyramid`) asks for: single-scale outputs resampled to `strides` in the
    graph (vitdeploy.pyramid); the export describes what it made as the `SimplePyramid` section below."""

    kind: str
    strides: tuple[int, ...]


@dataclass(frozen=True)
class SimplePyramid:
    """A simple feature pyramid built in the graph from a single-scale backbone (vitdeploy.pyramid)."""

    kind: str
    source_stride: int
    strides: tuple[int, ...]
    upsample: str
    downsample: str


@dataclass(frozen=True)
class Neck:
    """Modules with weights of their own between the timm trunk and the outputs (SAM2's FPN neck)."""

    kind: str  # sam2_fpn
    trunk_channels: tuple[int, ...]  # the trunk levels the neck reads, fine to coarse
    d_model: int  # channels of every neck output
    fpn_top_down_levels: tuple[int, ...]  # levels that add the coarser level, upsampled
    scalp: int  # coarsest levels computed (and feeding the top-down path) but not output
    upsample: str
    fuse: str
    position_encoding: str
    reference: str  # the implementation parity is checked against


@dataclass(frozen=True)
class WeightsRecord:
    """Where the weights came from, their fingerprint, and what loading a checkpoint changed."""

    source: str  # random | checkpoint | pretrained
    seed: int
    checkpoint: str | None
    sha256: str
    checkpoint_key: str | None = None
    filter: str | None = None
    adapted: tuple[dict[str, Any], ...] = ()
    classifier_skipped: tuple[str, ...] = ()
    used_prefixes: tuple[str, ...] = ()  # a checkpoint of a larger model (SAM2): the key prefixes loaded
    ignored_prefixes: dict[str, int] = field(default_factory=dict)  # ... and those left out, with their key counts


@dataclass(frozen=True)
class FileRecord:
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportRecord:
    opset: int
    exporter: str
    precision: str
    onnx_file: str
    files: dict[str, FileRecord]  # model.onnx and its external data, if any
    seconds: float


@dataclass(frozen=True)
class Profile:
    """An engine's optimisation profile for one input: shapes in the input's layout."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class TensorIO:
    mode: str  # input | output
    dtype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension


@dataclass(frozen=True)
class EngineSection:
    """The `engine` section of an engine's description; fields past `build_seconds` belong to one builder."""

    file: str
    backend: str  # tensorrt | tensorrt_rtx | openvino | onnxruntime (int8) | aoti
    backend_version: str
    precision: str
    device: str  # cuda | CPU (OpenVINO) | cpu (AOTInductor)
    profile: dict[str, Profile]
    io: dict[str, TensorIO]
    files: dict[str, FileRecord]
    build_seconds: float
    compute_capability: str | None = None  # TensorRT, AOTInductor: the GPU it was built for; None: portable (RTX)
    fp32_ops: tuple[str, ...] = ()  # TensorRT: ONNX op types kept in float32 at fp16/bf16
    inference_precision: str | None = None  # OpenVINO: the CPU plugin's INFERENCE_PRECISION_HINT
    quantization: dict[str, Any] | None = None  # int8: how it was quantised, what it measured (engine/onnxruntime.py)
    kept_fp32: dict[str, Any] | None = None  # fp16/bf16: nodes kept fp32 for their range (engine/precision.py)
    cpu_capability: str | None = None  # AOTInductor on a CPU: the instruction set its code is for (AVX512+AMX)

    @property
    def size_bytes(self) -> int:
        return sum(record.size_bytes for record in self.files.values())


@dataclass(frozen=True)
class Description:
    """The pyramid description of an artifact (or, with `engine`, of one of its engines)."""

    recipe: str | None  # None: exported by timm name, without a recipe (see `inferred`)
    timm_name: str
    family: str
    timm_kwargs: dict[str, Any]
    weights: WeightsRecord
    input: InputSpec
    outputs: tuple[OutputLevel, ...]
    pyramid: SimplePyramid | None
    tolerance: dict[str, Tolerance]
    versions: dict[str, str]
    neck: Neck | None = None  # null unless the family adds a neck (SAM2)
    inferred: dict[str, Any] | None = None  # without a recipe: what was taken from timm, and from where
    export: ExportRecord | None = None  # absent inside the ONNX file, which cannot hold its own sha256
    created_utc: str | None = None
    engine: EngineSection | None = None

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self.outputs]

    def with_engine(self, engine: EngineSection) -> EngineDescription:
        return EngineDescription(**{**{spec.name: getattr(self, spec.name) for spec in fields(self)}, "engine": engine})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: `format` and `format_version` first, optional sections only when present."""
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **_plain(asdict(self))}
        for key in ("inferred", "export", "created_utc", "engine"):
            if data[key] is None:
                del data[key]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: Path | str) -> Description:
        """Parse and check a description; `where` names its source in every error."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise VitdeployError(f"{where} describes format {found!r}: expected {FORMAT!r} (a vitdeploy artifact)")
        if data.get("format_version") != FORMAT_VERSION:
            raise VitdeployError(f"{where} is format version {data.get('format_version')!r}, this vitdeploy reads "
                                 f"version {FORMAT_VERSION}: re-export the artifact with this vitdeploy")
        try:
            description = parse(cls, {k: v for k, v in data.items() if k not in ("format", "format_version")})
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"no field {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
            raise VitdeployError(f"{where} is not a valid vitdeploy description ({reason}): re-export the "
                                 "artifact") from None
        problems = description_rules.problems(description)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VitdeployError(f"{where} is not a valid vitdeploy description ({problems[0]}){more}: re-export the "
                                 "artifact")
        return description

    @classmethod
    def read(cls, path: Path) -> Description:
        try:
            with open(path, "rb") as handle:  # at most one byte more than a description may hold
                raw = handle.read(description_rules.MAX_BYTES + 1)
        except OSError as exc:
            raise VitdeployError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_dict(description_rules.decode(raw, path), path)


@dataclass(frozen=True)
class EngineDescription(Description):
    """An engine's description, whose `engine` section is always there (made by `Description.with_engine`)."""

    engine: EngineSection = field(kw_only=True)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (JSON has arrays only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# How each typed field is read from JSON: nested descriptions, tuples, and maps of records.
_NESTED: dict[tuple[type, str], Any] = {
    (Description, "weights"): WeightsRecord, (Description, "input"): InputSpec,
    (Description, "outputs"): (tuple, OutputLevel), (Description, "pyramid"): SimplePyramid, (Description, "neck"): Neck,
    (Description, "tolerance"): (dict, Tolerance), (Description, "export"): ExportRecord,
    (Description, "engine"): EngineSection, (InputSpec, "batch"): BatchRange,
    (ExportRecord, "files"): (dict, FileRecord), (EngineSection, "files"): (dict, FileRecord),
    (EngineSection, "profile"): (dict, Profile), (EngineSection, "io"): (dict, TensorIO),
}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse(cls: type, data: Any, at: str = "") -> Any:
    """One of this module's dataclasses from its JSON form (without format checks: see Description.from_dict).
    Every field must have its annotated JSON type (description_rules.type_problem); `at` is the JSON path of
    `data`, which each error names."""
    if not isinstance(data, dict):
        raise ValueError(f"{at or 'the description'} is a {type(data).__name__}: expected an object")
    values: dict[str, Any] = {}
    for spec in fields(cls):
        path = f"{at}.{spec.name}" if at else spec.name
        if spec.name not in data:
            if spec.default is not MISSING or spec.default_factory is not MISSING:
                continue  # optional, and absent
            raise KeyError(path)
        value, nested = data[spec.name], _NESTED.get((cls, spec.name))
        hint = _hints(cls)[spec.name]
        if value is None:
            if type(None) not in typing.get_args(hint):
                raise ValueError(f"{path} is null: expected a value")
            values[spec.name] = None
        elif isinstance(nested, tuple) and nested[0] is tuple:
            if not isinstance(value, list):
                raise ValueError(f"{path} is a {type(value).__name__}: expected a list")
            values[spec.name] = tuple(parse(nested[1], item, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(nested, tuple):
            if not isinstance(value, dict):
                raise ValueError(f"{path} is a {type(value).__name__}: expected an object")
            values[spec.name] = {key: parse(nested[1], item, f"{path}[{key[:40]!r}]") for key, item in value.items()}
        elif nested is not None:
            values[spec.name] = parse(nested, value, path)
        elif problem := description_rules.type_problem(value, hint):
            raise ValueError(f"{path} {problem}")
        elif isinstance(value, list):
            values[spec.name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            values[spec.name] = value
    return cls(**values)
