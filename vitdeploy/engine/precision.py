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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

import onnx
from onnx import TensorProto, numpy_helper

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require

DEFAULT_FP32_OPS = ("LayerNormalization", "GroupNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt")


def reduced_precision_onnx(onnx_path: Path, precision: str, fp32_ops: Sequence[str] = DEFAULT_FP32_OPS):
    """The model at `onnx_path` converted to fp16 or bf16 (an onnx.ModelProto), float32 at its edges."""
    if precision not in ("fp16", "bf16"):
        raise VitdeployError(f"cannot convert an ONNX graph to {precision!r}: expected fp16 or bf16")
    convert_float_to_float16 = require("onnxruntime.transformers.float16").convert_float_to_float16
    OnnxModel = require("onnxruntime.transformers.onnx_model").OnnxModel
    original = onnx.load(str(onnx_path))
    half = convert_float_to_float16(onnx.ModelProto.FromString(original.SerializeToString()),
                                    keep_io_types=True, op_block_list=list(fp32_ops),
                                    node_block_list=_image_independent_nodes(original.graph))
    _merge_duplicate_casts(half.graph)
    OnnxModel.graph_topological_sort(half.graph)  # the converter appends its input Casts last
    _drop_cast_round_trips(half)
    del half.graph.value_info[:]  # the converter leaves some stale; TensorRT and ONNX Runtime infer them
    return _fp16_to_bf16(half, original) if precision == "bf16" else half


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

    def cast_to(node) -> int:
        return next(a.i for a in node.attribute if a.name == "to")

    rewire = {}
    for node in graph.node:
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (first is not None and first.op_type == "Cast" and cast_to(first) == TensorProto.FLOAT16
                and types.get(first.input[0]) == cast_to(node)):
            rewire[node.output[0]] = first.input[0]
    outputs = {output.name for output in graph.output}
    for node in graph.node:
        node.input[:] = [rewire.get(name, name) for name in node.input]
    while True:  # drop the Casts nobody reads any more (a graph output's Cast stays: it names the output)
        used = {name for node in graph.node for name in node.input} | outputs
        live = [node for node in graph.node if any(output in used for output in node.output)]
        if len(live) == len(graph.node):
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
