"""The SAM2 decoder graph's description (`decoder.json` beside `decoder.onnx` in a SAM2 artifact), read and checked.

Torch-free: the Predictor, the server and verify read it. The decoder belongs to one encoder: it records the
sha256 of the image-encoder weights it was exported with (the artifact's `weights.sha256`, from the same
checkpoint), and the size and sha256 of its ONNX file, so a decoder copied from another artifact or a damaged
one is one line before anything runs. docs/sam2.md describes the graph.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vitdeploy.description import Description, FileRecord
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import check_files

FORMAT = "vitdeploy.sam2_decoder"
FORMAT_VERSION = 1
DECODER_FILE = "decoder.onnx"
DECODER_DESCRIPTION = "decoder.json"
FEATURES = ("stride4", "stride8", "stride16")  # the encoder outputs the decoder reads
PROMPT_INPUTS = ("point_coords", "point_labels", "mask_input", "has_mask_input")
OUTPUTS = ("masks", "iou_predictions", "mask", "iou_prediction")  # multimask (3) and single (1)
BOX_LABELS = (2, 3)  # SAM2 encodes a box as its top-left and bottom-right corners with these labels
POINT_LABELS = (0, 1)  # background, foreground
REMEDY = "re-export the artifact with --decoder"


@dataclass(frozen=True)
class GraphIO:
    """A graph input or output: dtype and shape, a string for a dynamic dimension."""

    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class DecoderDescription:
    """What `decoder.json` says: sizes, IO, where the weights came from and which encoder they belong to."""

    image_size: int  # SAM2's image_size: the encoder input is image_size x image_size
    embedding_hw: tuple[int, int]  # the stride-16 grid
    mask_hw: tuple[int, int]  # the low-resolution masks (4x the grid), also the size of mask_input
    inputs: dict[str, GraphIO]
    outputs: dict[str, GraphIO]
    checkpoint: str
    checkpoint_key: str | None
    used_prefixes: dict[str, int]  # checkpoint key prefix -> tensors loaded from it
    weights_sha256: str  # the decoder graph's own tensors
    encoder_weights_sha256: str  # the artifact's weights.sha256 these belong with
    multimask: dict[str, Any]  # SAM2's single-mask selection (dynamic_multimask_via_stability, delta, thresh)
    mask_threshold: float
    reference: str
    file: FileRecord
    opset: int
    versions: dict[str, str]
    export_seconds: float

    @property
    def max_points(self) -> int:
        """The most prompt points (box corners included) the graph takes: its dynamic axis's upper bound."""
        return int(self.multimask["max_points"])

    def to_json(self) -> str:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> DecoderDescription:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('format_version')!r}")
            return cls(
                **{**{k: v for k, v in data.items() if k not in ("format", "format_version")},
                   "embedding_hw": tuple(data["embedding_hw"]), "mask_hw": tuple(data["mask_hw"]),
                   "inputs": {k: GraphIO(v["dtype"], tuple(v["shape"])) for k, v in data["inputs"].items()},
                   "outputs": {k: GraphIO(v["dtype"], tuple(v["shape"])) for k, v in data["outputs"].items()},
                   "file": FileRecord(**data["file"])})
        except OSError as exc:
            raise VitdeployError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VitdeployError(f"{path} is not a vitdeploy SAM2 decoder description ({type(exc).__name__}: "
                                 f"{exc}): {REMEDY}") from None


def decoder_path(directory: Path) -> Path:
    return directory / DECODER_FILE


def read_decoder(directory: Path, encoder: Description, contents: bool = True) -> DecoderDescription:
    """The artifact's decoder description, after checking that the decoder belongs to this encoder (same
    weights sha256) and that its ONNX file is the one described (size; sha256 if `contents`)."""
    path = directory / DECODER_DESCRIPTION
    if encoder.family != "sam2":
        raise VitdeployError(f"{directory} is a {encoder.family} artifact: expected a SAM2 artifact "
                             "(recipe sam2.1_hiera_*) exported with --decoder")
    if not path.is_file():
        raise VitdeployError(f"{directory} has no SAM2 decoder ({DECODER_DESCRIPTION}, {DECODER_FILE}): "
                             f"{REMEDY} (and --checkpoint, SAM2's whole checkpoint)")
    decoder = DecoderDescription.read(path)
    if decoder.encoder_weights_sha256 != encoder.weights.sha256:
        raise VitdeployError(
            f"{path} belongs to an image encoder with weights sha256 {decoder.encoder_weights_sha256[:12]}.. (from "
            f"{decoder.checkpoint}), but this artifact's encoder has {encoder.weights.sha256[:12]}..: expected the "
            f"decoder of the same SAM2 checkpoint; {REMEDY}")
    check_files(directory, {DECODER_FILE: decoder.file}, REMEDY, contents)
    size = encoder.input.opt_hw
    if encoder.input.dynamic:
        lo, hi = encoder.input.min_hw, encoder.input.max_hw
        fits = lo[0] <= decoder.image_size <= hi[0] and lo[1] <= decoder.image_size <= hi[1]
    else:
        fits = size == (decoder.image_size, decoder.image_size)
    if not fits:
        raise VitdeployError(f"{path} is SAM2's decoder for {decoder.image_size}x{decoder.image_size} images, which "
                             f"the artifact's encoder does not take: {REMEDY}")
    return decoder
