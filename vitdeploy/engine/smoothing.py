"""SmoothQuant for the int8 QDQ graph: activation outlier channels migrated into the weights before calibration.

Trained ViTs put a few input channels of qkv, fc1 (and Hiera's stage projections) at tens of times
the rest; a per-tensor int8 activation scale then spends its range on them and rounds the other
channels to a few levels (SmoothQuant, Xiao et al. 2023). For every quantised MatMul input X with
weight W (X @ W, W's row j reads channel j), per-channel scales s_j = max|X_j|^a / max|W_j|^(1-a),
measured on the calibration photos, make X/s flat and W*s a little less so: X @ W = (X/s) @ (s*W).
1/s is folded into the LayerNorm that produces X (its gain and bias), or, where X has another
producer (GELU before fc2, attention before proj), applied by an explicit Mul that stays float. The
fp32 function is checked on the calibration photos before anything is quantised.

ONNX Runtime's own `SmoothQuant` extra option delegates to Intel Neural Compressor 2.x's ONNX adaptor
(gone from 3.x), and NNCF's runs only inside `nncf.quantize` (its own QDQ choices), so the graph
transform is done here, on the graph that ONNX Runtime's quantiser then calibrates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require

DEFAULT_ALPHA = 0.5  # SmoothQuant's: difficulty split evenly between activations and weights
OUTLIER_RATIO = 8.0  # auto: smooth an input whose largest channel range exceeds its median channel's this much
MIN_PHOTOS = 4  # channel ranges from fewer photos are too noisy to migrate into the weights
FP32_REL_L2 = 1e-4  # the smoothed fp32 graph's largest relative L2 change of any output on the calibration photos


@dataclass(frozen=True)
class Smoothing:
    """`auto` (outlier inputs only, alpha DEFAULT_ALPHA), `off`, or an alpha applied to every quantised input."""

    mode: str  # auto | off | alpha
    alpha: float | None

    @classmethod
    def parse(cls, text: str) -> Smoothing:
        if text in ("auto", "off"):
            return cls(text, DEFAULT_ALPHA if text == "auto" else None)
        try:
            alpha = float(text)
        except ValueError:
            alpha = -1.0
        if not 0.0 < alpha < 1.0:
            raise VitdeployError(f"--smooth {text}: expected auto, off or an alpha between 0 and 1 (exclusive), "
                                 "e.g. 0.5")
        return cls("alpha", alpha)


def check_photo_count(photos: int) -> None:
    if photos < MIN_PHOTOS:
        raise VitdeployError(f"smoothing estimates channel ranges from the calibration photos, and {photos} are "
                             f"too few: expected --samples {MIN_PHOTOS} or more, or --smooth off")


def smooth_graph(model: onnx.ModelProto, matmuls: Sequence[str], feeds: list[dict[str, np.ndarray]],
                 smoothing: Smoothing, scratch: Path) -> dict[str, Any]:
    """Smooth the inputs of the named MatMuls of `model` in place; returns the record for the description."""
    if smoothing.mode == "off":
        return {"mode": "off"}
    check_photo_count(len(feeds))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.name in matmuls:
            groups.setdefault(node.input[0], []).append(node)
    ranges = _channel_ranges(model, list(groups), feeds, scratch)
    alpha = float(smoothing.alpha or DEFAULT_ALPHA)
    smoothed = []
    muls: dict[str, list[onnx.NodeProto]] = {}  # reader name -> the Muls to place before it
    for tensor, nodes in groups.items():
        act = ranges[tensor]
        ratio = float(act.max() / max(float(np.median(act)), 1e-12))
        if smoothing.mode == "auto" and ratio <= OUTLIER_RATIO:
            continue
        w = np.max([np.abs(numpy_helper.to_array(weights[n.input[1]])).max(axis=1) for n in nodes], axis=0)
        scale = (np.maximum(act, 1e-5) ** alpha / np.maximum(w, 1e-5) ** (1 - alpha)).astype(np.float32)
        for node in nodes:
            _replace(graph, weights, node, 1, numpy_helper.to_array(weights[node.input[1]]) * scale[:, None])
        via = _fold_into_layernorm(graph, tensor, nodes, scale, weights)
        if via is None:
            mul = _mul(graph, tensor, nodes, scale)
            muls.setdefault(nodes[0].name, []).append(mul)
            via = mul.name
        smoothed.append({"input": tensor, "matmuls": [n.name for n in nodes], "channel_ratio": round(ratio, 1),
                         "via": via})
    if muls:  # one rebuild of the node list at the end: it detaches the node objects held above
        ordered = [new for node in graph.node for new in [*muls.get(node.name, []), node]]
        del graph.node[:]
        graph.node.extend(ordered)
    _drop_unused_initializers(graph)
    return {"mode": smoothing.mode, "alpha": alpha, "outlier_ratio": OUTLIER_RATIO if smoothing.mode == "auto"
            else None, "smoothed": smoothed}


def check_function(original: Path, smoothed: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """The largest relative L2 change of any output between the two fp32 graphs; raises past FP32_REL_L2."""
    ort = require("onnxruntime")
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (original, smoothed))
    worst = 0.0
    for feed in feeds:
        for a, b in zip(before.run(None, feed), after.run(None, feed)):
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            worst = max(worst, float(np.linalg.norm(b64 - a64)) / max(float(np.linalg.norm(a64)), 1e-30))
    if not worst <= FP32_REL_L2:
        raise VitdeployError(f"smoothing changed the fp32 graph's output by a relative L2 error of {worst:.1e} on the "
                             f"calibration photos: expected at most {FP32_REL_L2:.0e}; use a smaller --smooth alpha or "
                             "--smooth off")
    return worst


def _channel_ranges(model: onnx.ModelProto, tensors: list[str], feeds: list[dict[str, np.ndarray]],
                    scratch: Path) -> dict[str, np.ndarray]:
    """Per tensor, the largest |value| of each channel (last axis) over the feeds, from the fp32 graph."""
    ort = require("onnxruntime")
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in known)
    path = scratch / "smoothing-probe.onnx"
    onnx.save(probe, str(path), save_as_external_data=probe.ByteSize() > 1 << 30)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed)):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    for file in scratch.glob("smoothing-probe.onnx*"):
        file.unlink()
    return ranges


def _fold_into_layernorm(graph: Any, tensor: str, nodes: list[onnx.NodeProto], scale: np.ndarray,
                         weights: dict[str, onnx.TensorProto]) -> str | None:
    """Divide the producing LayerNorm's gain and bias by `scale` when only `nodes` read `tensor`; its name, or None."""
    producer = next((n for n in graph.node if tensor in n.output), None)
    readers = [n for n in graph.node if tensor in n.input]
    if (producer is None or producer.op_type != "LayerNormalization" or len(producer.input) < 3
            or not all(name in weights for name in producer.input[1:3]) or len(readers) != len(nodes)
            or tensor in {o.name for o in graph.output}):
        return None
    for index in (1, 2):
        _replace(graph, weights, producer, index, numpy_helper.to_array(weights[producer.input[index]]) / scale)
    return producer.name


def _mul(graph: Any, tensor: str, nodes: list[onnx.NodeProto], scale: np.ndarray) -> onnx.NodeProto:
    """A Mul computing tensor / scale, which `nodes` now read (the caller places it before the first of them).
    Names end in `_smoothquant*`: ONNX Runtime's quantiser names its own tensors `<tensor>_scale`."""
    name, inverse = f"{tensor}_smoothquant", f"{tensor}_smoothquant_inverse"
    graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
    for node in nodes:
        node.input[0] = name
    return onnx.helper.make_node("Mul", [tensor, inverse], [name], name=f"{name}_mul")


def _drop_unused_initializers(graph: Any) -> None:
    """The weights that smoothing replaced are read by nobody now."""
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _replace(graph: Any, weights: dict[str, onnx.TensorProto], node: onnx.NodeProto, index: int,
             value: np.ndarray) -> None:
    """Give `node` a new initializer at input `index` (its own copy: initializers may be shared)."""
    name = f"{node.name}_smoothed_{index}"
    tensor = numpy_helper.from_array(value.astype(np.float32), name)
    graph.initializer.append(tensor)
    weights[name] = tensor
    node.input[index] = name
