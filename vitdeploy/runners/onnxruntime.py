"""ONNX Runtime: polygraphy's OnnxrtRunner over a session vitdeploy configures (providers, threads), on the
artifact's ONNX file or on its int8 graph (built by vitdeploy.engine.onnxruntime).

On CUDA, `prepare` binds the input and outputs to GPU memory (IO binding), so bench times the
inference alone and no host copy.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

from polygraphy.backend.onnxrt import OnnxrtRunner

from vitdeploy.artifact import Artifact
from vitdeploy.description import Description
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.runners.base import Outputs, Prepared, Runner

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def available_providers() -> list[str]:
    return require("onnxruntime").get_available_providers()


def create_session(path: Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An InferenceSession; `providers` default to CPU, and an unavailable one is a clear error."""
    ort = require("onnxruntime")
    providers = providers or CPU
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise VitdeployError(f"ONNX Runtime provider {missing[0]} is not available: this onnxruntime offers "
                             f"{', '.join(ort.get_available_providers())} (CUDA needs vitdeploy[ort-gpu] and a GPU)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise VitdeployError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None


def optimized_onnx(artifact: Artifact, out_dir: Path, cuda: bool) -> tuple[Path, dict[str, int]]:
    """The artifact's graph after onnxruntime.transformers' optimiser (model_type 'vit': attention, LayerNorm and
    GELU fusions), written to `out_dir`, and how many of each op it fused. The heads and width it needs are read
    from the backbone built on the meta device (no weights)."""
    from vitdeploy import families  # the export side (bench's), needed for this graph rewrite only
    from vitdeploy.models import meta_backbone

    optimizer = require("onnxruntime.transformers.optimizer")
    description = artifact.description
    family = families.get(description.family)
    num_heads, hidden_size = family.attention_shape(meta_backbone(description.timm_name, description.timm_kwargs,
                                                                  family))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its shape-inference failures (Hiera) to stdout
        model = optimizer.optimize_model(str(artifact.checked_onnx), model_type="vit", num_heads=num_heads,
                                         hidden_size=hidden_size, use_gpu=cuda)
    path = out_dir / "model.ort_optimized.onnx"
    model.save_model_to_file(str(path))
    return path, {op: count for op, count in model.get_fused_operator_statistics().items() if count}


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file described by `description` (an artifact's, or a graph derived from it); the
    session is created on activation."""

    def __init__(self, description: Description, onnx_path: Path, providers: list[str] | None = None,
                 threads: int | None = None, name: str = "onnxruntime", precision: str = "fp32"):
        require("onnxruntime")  # fail at construction, not deep inside activate()
        self.providers = providers or CPU
        self.cuda = self.providers[0] == "CUDAExecutionProvider"
        peak_key = ("tf32" if precision == "fp32" else None) if self.cuda else None  # its use_tf32 defaults on
        super().__init__(description, name, precision=precision, peak_key=peak_key)
        self._polygraphy = OnnxrtRunner(lambda: create_session(onnx_path, self.providers, threads), name=name)

    def activate_impl(self) -> None:
        self._polygraphy.activate()

    def deactivate_impl(self) -> None:
        self._polygraphy.deactivate()

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        outputs = self._polygraphy.infer(feed_dict, check_inputs=False)
        self.inference_time = self._polygraphy.last_inference_time()
        return OrderedDict((name, outputs[name]) for name in self.output_names)

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        if not self.cuda:
            return super().prepare_impl(feed_dict)
        ort = require("onnxruntime")
        session = self._polygraphy.sess
        binding = session.io_binding()
        name = self.description.input.name
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(feed_dict[name], "cuda", 0))
        for output in self.output_names:
            binding.bind_output(output, "cuda", 0)

        def run() -> Any:
            session.run_with_iobinding(binding)  # returns once the CUDA stream is synchronised
            return binding

        return Prepared(run=run, fetch=lambda bound: OrderedDict(zip(self.output_names, bound.copy_outputs_to_cpu())))
