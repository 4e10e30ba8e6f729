"""`POST /v1/sam2` of a served SAM2 artifact with its decoder: an image (or the id of one sent before) and
prompts in, masks and scores out.

Request: the body is a PNG or JPEG image, or empty with `?image_id=ID` (an image this replica embedded
recently: the last CACHED_IMAGES are kept). Prompts are query parameters, as the C++ demo takes them:
`point=X,Y[,LABEL]` (repeatable; LABEL 1 foreground, the default, or 0 background), `box=X0,Y0,X1,Y1`,
`multimask=true|false` (default true), all in the original image's pixels. Answer: the wire format with
`masks` (uint8 [C, H, W], 1 inside) and `scores` (float32 [C], SAM2's IoU predictions), its meta holding
`image_id`, `image_hw` and `scores`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitdeploy.errors import VitdeployError
from vitdeploy.sam2.predictor import Embedding, Predictor

CACHED_IMAGES = 16
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def parse_numbers(text: str, what: str, counts: Sequence[int], form: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise VitdeployError(f"{what} {text!r}: expected {form}")
    return values


def parse_prompts(points: Sequence[str], boxes: Sequence[str], multimask: str | None) -> dict[str, Any]:
    """Query parameters -> Predictor.decode's keyword arguments (the point grammar is the C++ demo's)."""
    parsed = [parse_numbers(p, "point", (2, 3), "X,Y or X,Y,LABEL") for p in points]
    if len(boxes) > 1:
        raise VitdeployError(f"{len(boxes)} boxes: expected at most one box=X0,Y0,X1,Y1 per request")
    if multimask is not None and multimask.lower() not in FLAGS:
        raise VitdeployError(f"multimask={multimask}: expected true or false")
    prompt: dict[str, Any] = {"multimask_output": FLAGS[(multimask or "true").lower()]}
    if parsed:
        prompt["point_coords"] = [p[:2] for p in parsed]
        prompt["point_labels"] = [p[2] if len(p) == 3 else 1.0 for p in parsed]
    if boxes:
        prompt["box"] = parse_numbers(boxes[0], "box", (4,), "X0,Y0,X1,Y1")
    return prompt


class Sam2Route:
    """The replica's SAM2 predictor and its cache of embedded images (decoder calls one at a time)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self._images: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, image: np.ndarray) -> tuple[str, Embedding]:
        image_id = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]
        with self._lock:
            cached = self._images.get(image_id)
        embedding = cached or self.predictor.embed(image)
        with self._lock:
            self._images[image_id] = embedding
            self._images.move_to_end(image_id)
            while len(self._images) > CACHED_IMAGES:
                self._images.popitem(last=False)
        return image_id, embedding

    def cached(self, image_id: str) -> Embedding:
        with self._lock:
            if image_id not in self._images:
                raise KeyError(image_id)
            return self._images[image_id]

    def predict(self, image_id: str, embedding: Embedding, prompt: dict[str, Any]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        with self._lock:  # an OpenVINO infer request serves one call at a time
            masks, scores, _ = self.predictor.decode(embedding, **prompt)
        meta = {"image_id": image_id, "image_hw": list(embedding.orig_hw), "scores": [float(s) for s in scores]}
        return {"masks": masks.astype(np.uint8), "scores": scores.astype(np.float32)}, meta
