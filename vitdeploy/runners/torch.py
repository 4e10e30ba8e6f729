"""Eager PyTorch: the unmodified timm model, the reference every export is compared against.

Also the torch peers a user would otherwise pick, which bench times beside it: autocast (bf16, fp16),
torch.compile (inductor with freezing: weights become constants, which its CPU kernels pre-pack) and
torchao's int8 for x86 (PT2E with the X86 Inductor quantizer, then torch.compile). Pixels an artifact
normalises in its graph are normalised here as the host would do it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdeploy import families
from vitdeploy.description import Description
from vitdeploy.errors import VitdeployError
from vitdeploy.models import ModelForSize, reference_pyramids
from vitdeploy.optional import require
from vitdeploy.preprocess import normalise
from vitdeploy.runners.base import Outputs, Prepared, Runner, host_outputs

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
CALIBRATION_SEED = 1  # torchao int8: calibrated on seeded inputs other than bench's (seed 0 by default)


class TorchRunner(Runner):
    """Runs the timm pyramid eagerly, per input size (a Hiera is built for one resolution: the reference at
    each size is the timm model created at that size, see vitdeploy.families); or a torch peer of it."""

    def __init__(self, description: Description, checkpoint: Path | None = None, device: str = "cpu",
                 autocast: str | None = None, compile: bool = False, int8: bool = False, name: str | None = None,
                 pyramid: ModelForSize | None = None):
        """`pyramid`: another runner's eager modules to reuse (autocast and torch.compile wrap, not change, them).
        `int8`: torchao's PT2E int8 for x86 CPUs, compiled (so `compile` is implied)."""
        tf32 = device == "cuda" and torch.backends.cuda.matmul.allow_tf32
        peak_key = (autocast or ("tf32" if tf32 else "fp32")) if device == "cuda" else None
        if int8:
            require("torchao")
            default_name, precision, compile = "torchao", "int8", True
        else:
            default_name = "torch-compile" if compile else ("torch-autocast" if autocast else "torch")
            precision = autocast or "fp32"
        super().__init__(description, name or default_name, precision=precision, peak_key=peak_key)
        self.device, self.autocast, self.compile, self.int8 = device, autocast, compile, int8
        self.family = families.get(description.family)  # where the description's family name becomes a Family
        self.pyramid = pyramid or reference_pyramids(description, self.family, checkpoint, device)  # hw -> module
        self._compiled: dict[tuple[int, int], Callable] = {}

    def module(self, hw: tuple[int, int]) -> Callable:
        if not self.compile:
            return self.pyramid(hw)
        if hw not in self._compiled:
            module = self._quantized(hw) if self.int8 else self.pyramid(hw)
            self._compiled[hw] = torch.compile(module)
        return self._compiled[hw]

    def _quantized(self, hw: tuple[int, int]) -> torch.nn.Module:
        """torchao's recipe for x86: export, X86InductorQuantizer's default (static, per-channel weights), calibrate
        on seeded image-like inputs, convert; torch.compile with freezing then lowers it to int8 kernels."""
        from vitdeploy.inputs import verification_feeds

        pt2e = require("torchao.quantization.pt2e.quantize_pt2e")
        x86 = require("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
        spec = self.description.input
        calibration = self._image(verification_feeds(spec, [hw], [2], CALIBRATION_SEED)[0][spec.name])
        batch = torch.export.Dim("batch", min=spec.batch.min, max=max(spec.batch.max, 2))
        with torch.no_grad():
            exported = torch.export.export(self.pyramid(hw), (calibration,), dynamic_shapes=({0: batch},)).module()
            quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
            prepared = pt2e.prepare_pt2e(exported, quantizer)
            prepared(calibration)
            return pt2e.convert_pt2e(prepared)

    def _image(self, batch: np.ndarray) -> torch.Tensor:
        spec = self.description.input
        image = normalise(batch, spec) if spec.normalised_in_graph else np.ascontiguousarray(batch)
        return torch.from_numpy(image).to(self.device)

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        image = self._image(feed_dict[self.description.input.name])  # untimed (well under 1% of a call)
        module = self.module((image.shape[2], image.shape[3]))
        autocast = (torch.autocast(self.device, dtype=AUTOCAST[self.autocast]) if self.autocast
                    else contextlib.nullcontext())
        cuda = self.device == "cuda"
        no_grad = torch.no_grad if self.int8 else torch.inference_mode  # a converted PT2E graph mutates no state,
        # but its compiled form is traced under no_grad by torchao's recipe

        def run() -> dict[str, torch.Tensor]:
            with no_grad(), autocast:
                outputs = module(image)
            if cuda:
                torch.cuda.synchronize()
            return dict(zip(self.output_names, outputs))

        if self.compile:
            self._compile(run)
        return Prepared(run=run, fetch=lambda outputs: host_outputs(outputs, self.output_names))

    def _compile(self, run: Callable[[], Any]) -> None:
        """Compile for this shape now, untimed, with freezing (weights as constants: inductor pre-packs them for
        oneDNN/AMX on a CPU, and torchao's int8 patterns need it). Inductor reads its config when it compiles,
        not as a guard, so the compiled code keeps running after the patch ends."""
        try:
            with torch._inductor.config.patch(freezing=True):
                run()
        except Exception as exc:  # inductor wraps what failed in its own error types
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VitdeployError(f"torch.compile failed for {self.name} {self.precision} on torch "
                                 f"{torch.__version__}: {message}") from None

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        return self.run_prepared(feed_dict)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass
