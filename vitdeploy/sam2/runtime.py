"""Running the SAM2 decoder graph: ONNX Runtime (CPU) on decoder.onnx, or OpenVINO (CPU) on its engine
(`decoder.openvino.<precision>.xml`, built by `vitdeploy build --backend openvino` with the encoder's) or,
without one, on decoder.onnx at f32. Numpy in, numpy out; no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.sam2.graph import OUTPUTS, DecoderDescription, decoder_path

if TYPE_CHECKING:
    from vitdeploy.engine.descriptions import Engine


class DecoderSession:
    """One runtime's session of the decoder graph: `run(feed)` -> the four outputs by name."""

    def __init__(self, runtime: str, run: Any, close: Any, where: str):
        self.runtime, self._run, self._close, self.where = runtime, run, close, where

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(feed)

    def close(self) -> None:
        self._close()


def onnxruntime_session(path: Path, threads: int | None = None) -> DecoderSession:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {name: feed[name] for name in names})))

    return DecoderSession("onnxruntime_cpu", run, lambda: None, path.name)


def openvino_session(path: Path, inference_precision: str = "f32", threads: int | None = None) -> DecoderSession:
    ov = require("openvino")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = request.infer({name: feed[name] for name in names})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return {name: np.array(by_name[name], copy=True) for name in OUTPUTS}  # buffers are reused

    return DecoderSession("openvino", run, lambda: None, path.name)


def open_decoder(directory: Path, decoder: DecoderDescription, encoder_backend: str, encoder_engine: Engine | None,
                 threads: int | None = None) -> DecoderSession:
    """The decoder on the encoder's runtime where it can: OpenVINO with its engine of the encoder engine's
    precision (else decoder.onnx at f32); ONNX Runtime on the CPU otherwise."""
    if encoder_backend == "openvino":
        from vitdeploy.sam2.engines import decoder_engine  # the engine record's reader

        precision = encoder_engine.precision if encoder_engine is not None else "fp32"
        engine = decoder_engine(directory, "openvino", precision, decoder)
        if engine is not None:
            return openvino_session(directory / engine.file, engine.inference_precision or "f32", threads)
        return openvino_session(decoder_path(directory), "f32", threads)
    if encoder_backend.startswith(("onnxruntime", "tensorrt", "torch")):
        return onnxruntime_session(decoder_path(directory), threads)
    raise VitdeployError(f"the SAM2 decoder has no runner for {encoder_backend}: expected onnxruntime or openvino")
