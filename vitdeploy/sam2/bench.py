"""`vitdeploy bench-sam2`: what a SAM2 user waits for, per runtime on the CPU: the encoder (once per image:
SAM2's preprocessing + the encoder graph) and the decoder per prompt (prompt mapping, the decoder graph and
the upsampling of its masks to the photo's size), on a real photo, median of timed calls after warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vitdeploy.errors import VitdeployError
from vitdeploy.sam2.predictor import Predictor

# prompt kind -> Predictor.decode arguments for an image of (height, width)
PROMPTS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "1 point": lambda h, w: {"point_coords": [[w / 2, h / 2]], "point_labels": [1]},
    "3 points": lambda h, w: {"point_coords": [[w / 3, h / 3], [w / 2, h / 2], [w * 2 / 3, h / 2]],
                              "point_labels": [1, 0, 1]},
    "box": lambda h, w: {"box": [w / 4, h / 4, w * 3 / 4, h * 3 / 4]},
}


@dataclass(frozen=True)
class Sam2BenchRow:
    artifact: str
    size: int
    runtime: str  # encoder runtime (engine) / decoder graph
    encoder_ms: float  # set_image: preprocessing + encoder
    decoder_ms: dict[str, float]  # per prompt kind: one predict call


def _median_ms(call: Callable[[], Any], warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_sam2(artifact: Path, backends: list[str], photo: np.ndarray, warmup: int = 2, iterations: int = 5,
               threads: int | None = None) -> list[Sam2BenchRow]:
    rows = []
    for backend in backends:
        with Predictor(artifact, backend=backend, threads=threads) as predictor:
            engine = predictor.encoder.engine.name if predictor.encoder.engine else "model.onnx"
            encoder_ms = _median_ms(lambda: predictor.set_image(photo), warmup, iterations)
            height, width = photo.shape[:2]
            decoder_ms = {name: _median_ms(partial(predictor.predict, **prompt(height, width)), warmup, iterations)
                          for name, prompt in PROMPTS.items()}
            rows.append(Sam2BenchRow(artifact=artifact.name, size=predictor.image_size,
                                     runtime=f"{predictor.encoder.backend} ({engine} + {predictor.session.where})",
                                     encoder_ms=encoder_ms, decoder_ms=decoder_ms))
    if not rows:
        raise VitdeployError("no runtime to time: expected --backend onnxruntime_cpu and/or openvino")
    return rows


def format_rows(rows: list[Sam2BenchRow]) -> str:
    kinds = list(PROMPTS)
    header = f"{'artifact':<22} {'size':>5} {'runtime':<62} {'encoder ms':>10} " + " ".join(
        f"{'dec ' + k + ' ms':>16}" for k in kinds)
    lines = [header]
    for row in rows:
        lines.append(f"{row.artifact:<22} {row.size:>5} {row.runtime:<62} {row.encoder_ms:>10.1f} " + " ".join(
            f"{row.decoder_ms[k]:>16.1f}" for k in kinds))
    return "\n".join(lines)
