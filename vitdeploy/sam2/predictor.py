"""`vitdeploy.sam2.Predictor`: SAM2ImagePredictor's `set_image` / `predict` on an artifact's two graphs.

Set an image once (the encoder graph runs), then prompt it many times (the decoder graph runs per prompt set).
Numpy only at runtime (no torch): SAM2's preprocessing (vitdeploy.sam2.imaging: antialiased bilinear resize
to S x S, ImageNet mean/std), prompts mapped to the S x S frame, masks upsampled to the original size
(bilinear, half-pixel centres, as F.interpolate(align_corners=False)) and thresholded at 0.
The encoder runs through `vitdeploy.load` (any runtime and engine it offers), the decoder through ONNX
Runtime or OpenVINO (its engine if built, else decoder.onnx).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitdeploy.api import Model
from vitdeploy.artifact import ArtifactDirectory, load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.sam2.graph import FEATURES, DecoderDescription, read_decoder
from vitdeploy.sam2.imaging import load_rgb, sam2_input, upsample_masks
from vitdeploy.sam2.runtime import DecoderSession, open_decoder

LOGIT_CLAMP = 32.0  # SAM2 clamps the low-resolution logits it returns for the next prompt


@dataclass(frozen=True)
class Prompt:
    """Prompts in the encoder input's S x S frame, as the decoder graph takes them."""

    coords: np.ndarray  # [1, N, 2] float32
    labels: np.ndarray  # [1, N] int32
    mask_input: np.ndarray  # [1, 1, 4h, 4w] float32
    has_mask: np.ndarray  # [1] float32

    def feed(self) -> dict[str, np.ndarray]:
        return {"point_coords": self.coords, "point_labels": self.labels, "mask_input": self.mask_input,
                "has_mask_input": self.has_mask}


def _array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """`value` as float64 of `shape` (-1: any length), or a one-line error naming the prompt."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise VitdeployError(f"{name} is not numeric: expected numbers of shape {shape}") from None
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape)):
        want = "x".join("N" if d == -1 else str(d) for d in shape)
        raise VitdeployError(f"{name} has shape {list(array.shape)}: expected {want}")
    if not np.isfinite(array).all():
        raise VitdeployError(f"{name} holds NaN or infinity: expected finite numbers")
    return array


def prepare_prompt(decoder: DecoderDescription, orig_hw: tuple[int, int], point_coords: Any = None,
                   point_labels: Any = None, box: Any = None, mask_input: Any = None) -> Prompt:
    """Check prompts given in original-image pixels (x, y) and map them to the decoder's frame as SAM2 does
    (box corners first, labels 2 and 3). Each mistake is one line."""
    height, width = orig_hw
    coords, labels = np.zeros((0, 2)), np.zeros(0)
    if (point_coords is None) != (point_labels is None):
        raise VitdeployError("point_coords and point_labels: expected both or neither")
    if point_coords is not None:
        coords = _array(point_coords, "point_coords", (-1, 2))
        labels = _array(point_labels, "point_labels", (len(coords),))
        wrong = sorted(set(labels.tolist()) - {0.0, 1.0})
        if wrong:
            raise VitdeployError(f"point label {wrong[0]:g}: expected 1 (foreground) or 0 (background)")
    if box is not None:
        corners = _array(box, "box", (4,))
        x0, y0, x1, y1 = corners
        if not (x0 <= x1 and y0 <= y1):
            raise VitdeployError(f"box {x0:g},{y0:g},{x1:g},{y1:g}: expected X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1")
        coords = np.concatenate([corners.reshape(2, 2), coords])
        labels = np.concatenate([[2.0, 3.0], labels])
    if not len(coords):
        raise VitdeployError("no prompt: expected points (point_coords and point_labels) or a box")
    outside = [(x, y) for x, y in coords if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        x, y = outside[0]
        raise VitdeployError(f"prompt point ({x:g}, {y:g}) is outside the image ({width}x{height}): expected "
                             f"0 <= x <= {width} and 0 <= y <= {height}")
    if len(coords) > decoder.max_points:
        raise VitdeployError(f"{len(coords)} prompt points: expected at most {decoder.max_points} (box corners "
                             "count as two)")
    size = decoder.image_size
    scaled = (coords / np.array([width, height]) * size).astype(np.float32)  # SAM2's transform_coords
    mask_hw = decoder.mask_hw
    if mask_input is None:
        previous, has = np.zeros((1, 1, *mask_hw), np.float32), 0.0
    else:
        array = np.asarray(mask_input, dtype=np.float32)
        if array.shape[-2:] != mask_hw or array.size != mask_hw[0] * mask_hw[1]:
            raise VitdeployError(f"mask_input has shape {list(array.shape)}: expected one low-resolution mask "
                                 f"{mask_hw[0]}x{mask_hw[1]} (a previous predict's third result, one mask of it)")
        previous, has = array.reshape(1, 1, *mask_hw), 1.0
    return Prompt(coords=scaled[None], labels=labels.astype(np.int32)[None], mask_input=previous,
                  has_mask=np.array([has], np.float32))


@dataclass(frozen=True)
class Embedding:
    """One image's encoder outputs the decoder reads, and the image's size."""

    features: dict[str, np.ndarray]
    orig_hw: tuple[int, int]


class Predictor:
    """SAM2 on an artifact exported with --decoder: `set_image(image)` once, then `predict(...)` per prompt.

    backend: the encoder's runtime as for `vitdeploy.load` (auto, onnxruntime_cpu, openvino, ...); the decoder
    runs on OpenVINO when the encoder does (its OpenVINO engine of the same precision if built, else
    decoder.onnx), else on ONNX Runtime (CPU)."""

    def __init__(self, artifact: str | os.PathLike[str], backend: str = "auto", precision: str | None = None,
                 threads: int | None = None):
        loaded = load_artifact(Path(artifact))
        if not isinstance(loaded, ArtifactDirectory):
            raise VitdeployError(f"{artifact} is a file: expected a SAM2 artifact directory exported with --decoder")
        self.decoder = read_decoder(loaded.directory, loaded.description)
        if loaded.input.normalised_in_graph:
            raise VitdeployError(f"{artifact} takes uint8 pixels (--bake-preprocessing): expected a SAM2 artifact "
                                 "taking normalised float32 input (SAM2 resizes float pixels with antialiasing)")
        self.encoder = Model(loaded, backend, precision, threads)
        self.session: DecoderSession = open_decoder(loaded.directory, self.decoder, self.encoder.backend,
                                                    self.encoder.engine, threads)
        self._embedding: Embedding | None = None

    @property
    def image_size(self) -> int:
        return self.decoder.image_size

    def embed(self, image: np.ndarray | str | os.PathLike[str]) -> Embedding:
        """Run the encoder on an RGB image (uint8 HxWx3, or a path): what `decode` prompts (a server keeps
        several)."""
        pixels = load_rgb(image)
        batch = sam2_input(pixels, self.image_size, self.encoder.input.mean, self.encoder.input.std)
        pyramid = self.encoder.run(batch)
        return Embedding({name: pyramid[name] for name in FEATURES}, (pixels.shape[0], pixels.shape[1]))

    def set_image(self, image: np.ndarray | str | os.PathLike[str]) -> None:
        """Run the encoder on an RGB image (uint8 HxWx3, or a path) and keep its pyramid for `predict`."""
        self._embedding = self.embed(image)

    def predict(self, point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask_output: bool = True, return_logits: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SAM2ImagePredictor.predict for one image: points (x, y) with labels 1/0 and/or a box X0,Y0,X1,Y1 in
        the original image's pixels, optionally a previous low-resolution mask. Returns masks [C, H, W] at the
        original size (bool, or logits with `return_logits`), IoU predictions [C] and the low-resolution
        logits [C, 4h, 4w] (clamped to +-32) for a next `mask_input`; C is 3 with `multimask_output`, else 1."""
        if self._embedding is None:
            raise VitdeployError("no image set: call set_image(image) before predict")
        return self.decode(self._embedding, point_coords, point_labels, box, mask_input, multimask_output,
                           return_logits)

    def decode(self, embedding: Embedding, point_coords: Any = None, point_labels: Any = None, box: Any = None,
               mask_input: Any = None, multimask_output: bool = True, return_logits: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` on an embedding from `embed`."""
        prompt = prepare_prompt(self.decoder, embedding.orig_hw, point_coords, point_labels, box, mask_input)
        outputs = self.session.run({**embedding.features, **prompt.feed()})
        low_res, scores = ((outputs["masks"], outputs["iou_predictions"]) if multimask_output
                           else (outputs["mask"], outputs["iou_prediction"]))
        logits = upsample_masks(low_res[0], embedding.orig_hw)
        masks = logits if return_logits else logits > self.decoder.mask_threshold
        return masks, scores[0], np.clip(low_res[0], -LOGIT_CLAMP, LOGIT_CLAMP)

    def close(self) -> None:
        self.session.close()
        self.encoder.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
