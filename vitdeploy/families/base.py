"""The Family base class and the registry decorator (vitdeploy.families lists and looks families up)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import timm
import torch
from torch import nn

from vitdeploy.checkpoints import load_checkpoint
from vitdeploy.description import Neck, OutputLevel, SimplePyramid
from vitdeploy.errors import VitdeployError
from vitdeploy.pyramid import pyramid_module

Rebuild = Callable[[tuple[int, int]], nn.Module]


class Family:
    """Defaults for a family whose timm model runs every size it was built for, unchanged."""

    name: ClassVar[str]
    timm_classes: ClassVar[tuple[str, ...]]  # timm class names (a subclass of one counts too)
    fixed_only: ClassVar[str | None] = None  # why no model of the family serves several sizes with one graph
    small_kwargs: ClassVar[dict[str, Any]] = {}  # fewer blocks, for tests and `matrix --small`
    unreduced: ClassVar[str | None] = None  # why small_kwargs cannot shrink the family
    no_pretrained: ClassVar[str | None] = None  # why timm's hub weights do not make the exported model
    recipe_only: ClassVar[str | None] = None  # why a bare timm name never picks this family (only a recipe does)
    probe_dynamic: ClassVar[bool] = False  # a dynamic graph is run at other sizes before it ships (no known rule)

    # The backbone: what the artifact exports, and whose weights it records.

    def assemble(self, model: nn.Module) -> nn.Module:
        """The backbone built around the timm model (already checked by `check`): timm's model itself, unless the
        family adds modules with weights of their own (SAM2: the FPN neck). It keeps timm's backbone interface
        (feature_info, forward_intermediates, pretrained_cfg), so levels, weights and checkpoints are handled
        the same for every family."""
        return model

    def random_init(self, model: nn.Module, seed: int) -> None:
        """Seeded random weights (no checkpoint, no hub), after timm's initialisation with `seed`: redraw the
        tensors that timm initialises so that a parity check could not see a branch (SwinV2's zeroed norms)."""

    def load_checkpoint(self, model: nn.Module, path: Path) -> dict[str, Any]:
        """Load a local checkpoint into the backbone; returns what loading did, for the artifact's weights record."""
        return load_checkpoint(model, path)

    def check(self, model: nn.Module) -> None:
        """`model` is one of the family's timm classes (a recipe naming the wrong family fails here)."""
        if not any(cls.__name__ in self.timm_classes for cls in type(model).__mro__):
            raise VitdeployError(f"family '{self.name}' expects a timm {' or '.join(self.timm_classes)}, got a "
                                 f"{type(model).__name__}: set the recipe's family to the model's own")

    def size_multiple(self, model: nn.Module) -> int:
        """Height and width must be multiples of every feature stride (patch size, then downsampling)."""
        levels: list[dict[str, Any]] = getattr(model, "feature_info")  # timm's, a plain attribute (no Module)
        return math.lcm(*(int(level["reduction"]) for level in levels))

    def dynamic_problem(self, model: nn.Module) -> str | None:
        """Why this built model cannot export with dynamic height and width; None if it can."""
        return self.fixed_only

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        """Rewrite `model` in place so torch.export and TensorRT's parser take it (same numbers); returns it."""
        return model

    def reference_for_size(self, base: nn.Module, hw: tuple[int, int], rebuild: Rebuild) -> nn.Module:
        """The eager model for inputs of `hw`: the exported one itself, unless the family builds per size."""
        return base

    # The outputs, and the module that computes them.

    def neck(self, model: nn.Module) -> Neck | None:
        """The description's `neck` section, for a backbone `assemble` gave a neck."""
        return None

    def position_outputs(self, model: nn.Module, features: Sequence[OutputLevel]) -> list[OutputLevel]:
        """The position-encoding outputs (`--position-encodings`) of the chosen feature levels."""
        raise VitdeployError(f"family '{self.name}' has no position encodings: expected a SAM2 recipe for "
                             "--position-encodings (position_encodings = true)")

    def pyramid_module(self, backbone: nn.Module, outputs: Sequence[OutputLevel],
                       pyramid: SimplePyramid | None) -> nn.Module:
        """The module whose outputs are a description's `outputs`: exported (on the adapted backbone) and,
        unless `reference_pyramid` says otherwise, the eager reference (on the unmodified one)."""
        return pyramid_module(backbone, outputs, pyramid)

    def reference_pyramid(self, backbone: nn.Module, outputs: Sequence[OutputLevel],
                          pyramid: SimplePyramid | None) -> nn.Module:
        """The eager module that verify, bench and the torch runner compare against, with the artifact's weights."""
        return self.pyramid_module(backbone, outputs, pyramid)

    def reference_label(self) -> str:
        """What `reference_pyramid` runs, for verify reports."""
        return f"eager torch {torch.__version__} / timm {timm.__version__}"

    def attention_shape(self, model: nn.Module) -> tuple[int, int]:
        """(heads, hidden size) for ONNX Runtime's transformer optimiser; (0, 0): let it detect them."""
        return 0, 0


def needs_dynamic_img_size(model: nn.Module) -> str | None:
    """Why a timm model that resamples its position embeddings only when built with dynamic_img_size
    (ViT, EVA, Swin) cannot export dynamic sizes; None if it was built so."""
    if not model.dynamic_img_size:
        return "it was built without dynamic_img_size (set timm_kwargs dynamic_img_size = true)"
    return None


def unfuse_attention(model: nn.Module) -> None:
    """timm's unfused attention path: the same softmax as its fused SDPA call, for families whose fused call
    has 3-D or 5-D tensors, which the ONNX exporter rejects (it takes 4-D only)."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", False)  # a plain bool attribute (Module.__setattr__ is typed for tensors)


REGISTRY: dict[str, Family] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make the family known by its `name`."""
    if cls.name in REGISTRY:
        raise ValueError(f"family {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    return cls
