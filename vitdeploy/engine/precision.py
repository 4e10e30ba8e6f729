"""Reduced-precision ONNX for strongly typed TensorRT networks.

TensorRT-RTX (always) and TensorRT 11 (builder precision flags removed) build strongly typed networks:
a tensor's type is the ONNX graph's type, so fp16/bf16 means a half-precision graph. Weights and
activations become fp16/bf16 except
- inside the ops in `fp32_ops` (normalisations, softmax and reductions overflow or lose too much in
  fp16), which get Casts around them;
- in nodes that depend on shapes and constants only (index and coordinate maths, e.g. a ViT's
  position-embedding resampling at dynamic sizes): TensorRT's shape tensors must be int or float32.
The image input and the pyramid outputs stay float32, so the engine's interface is the same at every
precision.

fp16 also has a range (65504) and a step (4 at 5e3) that trained ViTs' massive activations reach
(bf16 has float32's range but a step of 32 there). A node stays fp32, with the reason and the measured
maximum recorded (`kept_fp32` in the engine description), when
- one of its weights lies beyond fp16's range (the converter would clamp it without a word), or
- one of its outputs, measured on the given inputs in fp32, comes within RANGE_MARGIN of that range.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

import onnx
from onnx import TensorProto, numpy_helper

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require

DEFAULT_FP32_OPS = ("LayerNormalization", "GroupNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt")
FP16_MAX = 65504.0
RANGE_MARGIN = 32.0  # an output measured above FP16_MAX / RANGE_MARGIN (2047) stays fp32: its fp16 step is 2 there


def reduced_precision_onnx(onnx_path: Path, precision: str, fp32_ops: Sequence[str] = DEFAULT_FP32_OPS,
                           feeds: list[dict[str, np.ndarray]] | None = None) -> tuple[Any, dict[str, Any]]:
    """The model at `onnx_path` converted to fp16 or bf16 (an onnx.ModelProto), float32 at its edges, and the
    range record: the nodes kept fp32 for their weights or for their outputs measured on `feeds`."""
    if precision not in ("fp16", "bf16"):
        raise VitdeployError(f"cannot convert an ONNX graph to {precision!r}: expected fp16 or bf16")
    convert_float_to_float16 = require("onnxruntime.transformers.float16").convert_float_to_float16
    OnnxModel = require("onnxruntime.transformers.onnx_model").OnnxModel
    original = onnx.load(str(onnx_path))
    kept = range_nodes(original, feeds or [])
    half = convert_float_to_float16(onnx.ModelProto.FromString(original.SerializeToString()),
                                    keep_io_types=True, op_block_list=list(fp32_ops),
                                    node_block_list=[*_image_independent_nodes(original.graph),
                                                     *(k["node"] for k in kept)])
    _merge_duplicate_casts(half.graph)
    _restore_fp32_weights(half.graph, original.graph, {k["node"] for k in kept})
    OnnxModel.graph_topological_sort(half.graph)  # the converter appends its input Casts last
    _drop_cast_round_trips(half)
    del half.graph.value_info[:]  # the converter leaves some stale; TensorRT and ONNX Runtime infer them
    record = {"fp16_max": FP16_MAX, "margin": RANGE_MARGIN, "measured_inputs": len(feeds or []), "nodes": kept}
    return (_fp16_to_bf16(half, original) if precision == "bf16" else half), record


def _restore_fp32_weights(graph: Any, original: Any, nodes: set[str]) -> None:
    """The converter stores every weight as fp16 and casts it back for an fp32 node (clamping, rounding): the
    `nodes` kept fp32 for their range read their original float32 weights instead."""
    fp32 = {t.name: t for t in original.initializer}
    converted = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    restored: set[str] = set()
    for node in graph.node:
        if node.name not in nodes:
            continue
        for index, name in enumerate(node.input):
            cast = producer.get(name)
            source = cast.input[0] if cast is not None and cast.op_type == "Cast" else None
            if source is not None and source in fp32 and source in converted:
                if source not in restored:
                    graph.initializer.append(onnx.TensorProto.FromString(fp32[source].SerializeToString()))
                    graph.initializer[-1].name = f"{source}_fp32"
                    restored.add(source)
                node.input[index] = f"{source}_fp32"


def range_nodes(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """The nodes that must stay fp32 in an fp16 or bf16 graph: which, why, and the measured maximum |value|."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    constants.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                      if a.HasField("t")})
    peaks = _output_peaks(model, feeds) if feeds else {}
    kept = []
    for node in graph.node:
        weights = [float(np.abs(numpy_helper.to_array(constants[i])).max()) for i in node.input if i in constants
                   and constants[i].data_type == TensorProto.FLOAT and np.prod(constants[i].dims) > 0]
        outputs = [peaks[o] for o in node.output if o in peaks]
        if weights and max(weights) > FP16_MAX:
            kept.append({"node": node.name, "op": node.op_type, "why": "weight beyond fp16's range",
                         "max_abs": float(f"{max(weights):.4g}")})
        elif outputs and max(outputs) > FP16_MAX / RANGE_MARGIN:
            kept.append({"node": node.name, "op": node.op_type,
                         "why": f"output within {RANGE_MARGIN:g}x of fp16's range",
                         "max_abs": float(f"{max(outputs):.4g}")})
    return kept


def _output_peaks(model: Any, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Every float32 node output's largest |value| over `feeds`, run in fp32 by ONNX Runtime."""
    ort = require("onnxruntime")
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    floats = {v.name for v in [*inferred.value_info, *inferred.output]
              if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    known = {o.name for o in probe.graph.output}
    names = [o for n in probe.graph.node if n.op_type != "Constant" for o in n.output if o in floats]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    peaks: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            if not np.isfinite(value).all():
                producer = next(n for n in probe.graph.node if name in n.output)
                raise VitdeployError(f"the fp32 graph itself computes non-finite values at {producer.name} "
                                     f"({producer.op_type}) on seeded image-like inputs, so no fp16 or bf16 graph "
                                     "of it can be made safe: check the checkpoint's weights (re-export from "
                                     "finite ones) or keep fp32")
            peaks[name] = max(peaks.get(name, 0.0), float(np.abs(value).max()) if value.size else 0.0)
    return peaks


def _image_independent_nodes(graph) -> list[str]:
    """Names of the nodes whose inputs come from shapes and constants only, not the image's values."""
    dependent = {graph_input.name for graph_input in graph.input}
    independent = []
    for node in graph.node:  # exported graphs are topologically sorted
        if node.op_type in ("Shape", "Size") or not dependent.intersection(node.input):
            independent.append(node.name)
        else:
            dependent.update(node.output)
    return independent


def _merge_duplicate_casts(graph) -> None:
    """Keep the first of identical Casts that write one tensor name.

    onnxruntime before 1.32 adds a Cast for every fp32 op that reads an fp16 tensor, all named
    `<tensor>_cast_to_fp32`: a tensor read by two such ops (a ViT's position embedding) gives a graph that
    breaks single assignment, which onnx.checker and TensorRT reject. 1.32 shares one Cast, as this does.
    """
    producers: dict[str, onnx.NodeProto] = {}
    kept = []
    for node in graph.node:
        first = next((producers[name] for name in node.output if name in producers), None)
        if first is None:
            producers.update((name, node) for name in node.output)
            kept.append(node)
        elif not (node.op_type == first.op_type == "Cast" and node.input == first.input
                  and node.output == first.output and node.attribute == first.attribute):
            raise VitdeployError(f"the fp16 conversion wrote {first.output[0]!r} twice with different nodes "
                                 f"({first.name}, {node.name}): expected identical Casts; please report it")
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _drop_cast_round_trips(model) -> None:
    """Rewire Cast(Cast(x: float32, to=fp16), to=float32) to x.

    The converter puts such a pair between every two adjacent fp32 nodes. Besides losing precision for
    nothing, the pairs inside shape maths make TensorRT-RTX's optimiser fail (Myelin type mismatch).
    """
    graph = model.graph
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    del bare.graph.value_info[:]  # the converter's value_info contradicts inference in places
    inferred = onnx.shape_inference.infer_shapes(bare).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    producer = {output: node for node in graph.node for output in node.output}

    rewire = {}
    outputs = {output.name for output in graph.output}
    for node in graph.node:
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (first is not None and first.op_type == "Cast" and _cast_to(first) == TensorProto.FLOAT16
                and types.get(first.input[0]) == _cast_to(node)):
            if node.output[0] in outputs:  # it names a graph output: it stays, as a float32 -> float32 Cast
                node.input[0] = first.input[0]
            else:
                rewire[node.output[0]] = first.input[0]
    for node in graph.node:
        node.input[:] = [rewire.get(name, name) for name in node.input]
    while True:  # drop the Casts nobody reads any more (a graph output's Cast stays: it names the output)
        used = {name for node in graph.node for name in node.input} | outputs
        live = [node for node in graph.node if any(output in used for output in node.output)]
        if len(live) == len(graph.node):
            weights = [t for t in graph.initializer if t.name in used]  # and weights replaced by fp32 ones
            del graph.initializer[:]
            graph.initializer.extend(weights)
            return
        del graph.node[:]
        graph.node.extend(live)


def _fp16_to_bf16(half, original):
    """Retype an fp16 conversion as bf16, re-rounding weights from the float32 originals."""
    fp32 = {t.name: t for t in original.graph.initializer}
    fp32.update({f"{n.name}/{a.name}": a.t for n in original.graph.node for a in n.attribute if a.HasField("t")})

    def retype(tensor, key: str) -> None:
        if tensor.data_type != TensorProto.FLOAT16:
            return
        source = numpy_helper.to_array(fp32[key]) if key in fp32 else numpy_helper.to_array(tensor)
        tensor.CopyFrom(numpy_helper.from_array(source.astype(np.float32).astype(ml_dtypes.bfloat16), tensor.name))

    graph = half.graph
    for tensor in graph.initializer:
        retype(tensor, tensor.name)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                retype(attribute.t, f"{node.name}/{attribute.name}")
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.BFLOAT16
    for info in [*graph.input, *graph.output]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.BFLOAT16
    return half


def bf16_on_cpu(model: Any) -> Any:
    """A float32 graph that rounds every bf16 tensor of `model` to bf16 where it is made (Cast to bf16 and back),
    so ONNX Runtime's CPU provider, which has few bf16 kernels, computes what the bf16 graph stores: bf16 values,
    float32 arithmetic (as TensorRT's bf16 kernels accumulate)."""
    emulated = onnx.ModelProto.FromString(model.SerializeToString())
    graph = emulated.graph
    inferred = onnx.shape_inference.infer_shapes(emulated).graph
    bf16 = {v.name for v in inferred.value_info if v.type.tensor_type.elem_type == TensorProto.BFLOAT16}

    def as_float(tensor: Any) -> None:
        if tensor.data_type == TensorProto.BFLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for tensor in graph.initializer:
        as_float(tensor)
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.HasField("t"):
                as_float(attribute.t)
        to_bf16 = node.op_type == "Cast" and _cast_to(node) == TensorProto.BFLOAT16
        rounded = [o for o in node.output if o in bf16 or to_bf16]
        for output in rounded:
            raw = f"{output}_bf16_compute"
            node.output[list(node.output).index(output)] = raw
            if node.op_type == "Cast":
                nodes.append(onnx.helper.make_node("Cast", [raw], [output], to=TensorProto.FLOAT,
                                                   name=f"{raw}_to_float"))
            else:
                nodes += [onnx.helper.make_node("Cast", [raw], [f"{raw}_rounded"], to=TensorProto.BFLOAT16,
                                                name=f"{raw}_round"),
                          onnx.helper.make_node("Cast", [f"{raw}_rounded"], [output], to=TensorProto.FLOAT,
                                                name=f"{raw}_to_float")]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return emulated


def _cast_to(node: Any) -> int:
    return next(a.i for a in node.attribute if a.name == "to")
