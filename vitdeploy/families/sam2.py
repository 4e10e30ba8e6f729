"""SAM2's image encoder: timm's HieraDet trunk (`sam2_hiera_*`) + SAM2's FPN neck, outputs named by stride.

The backbone is vitdeploy.sam2.encoder.Sam2ImageEncoder (the neck and position encoding written for
export); the outputs are the neck's 256-channel levels (`stride4`, `stride8`, `stride16`) and, with
`position_encodings`, their sine encodings (`pos_stride4` ..). Sizes: multiples of 32 (the trunk's rule),
any within the recipe's range. The eager reference of verify, bench and the torch runner is Meta's own
`ImageEncoder` from the `sam2` package, loaded with the artifact's weights: without that package those
say which extra to install. Checkpoints are SAM2's own files (only the image encoder's tensors are used).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from timm.models.hieradet_sam2 import HieraDet
from torch import nn

from vitdeploy.adapters.hiera import adapt_hiera, hiera_size_multiple
from vitdeploy.description import Neck, OutputLevel, SimplePyramid
from vitdeploy.errors import VitdeployError
from vitdeploy.families.base import Family, register
from vitdeploy.sam2 import checkpoint, encoder, reference
from vitdeploy.sam2.encoder import Sam2ImageEncoder


def _encoder(model: nn.Module) -> Sam2ImageEncoder:
    """The backbone that `Sam2.assemble` built, which every other method of the family gets."""
    if not isinstance(model, Sam2ImageEncoder):
        raise VitdeployError(f"family 'sam2' got a {type(model).__name__}; expected its Sam2ImageEncoder")
    return model


@register
class Sam2(Family):
    name = "sam2"
    timm_classes = ("HieraDet",)
    # one block per stage but two in the third: a windowed and a global block, as SAM2's trunks have there
    small_kwargs = {"stages": [1, 1, 2, 1], "global_att_blocks": [3]}
    no_pretrained = ("timm's sam2_hiera_* weights hold the trunk only (the FPN neck would stay random): use "
                     "--checkpoint with SAM2's own checkpoint, e.g. sam2.1_hiera_tiny.pt")
    recipe_only = "it adds SAM2's FPN neck, whose weights come from SAM2's checkpoint (use a sam2.1_* recipe)"

    def assemble(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, HieraDet):
            raise VitdeployError(f"family 'sam2' got a {type(model).__name__}; expected a timm HieraDet")
        return Sam2ImageEncoder(model)

    def load_checkpoint(self, model: nn.Module, path: Path) -> dict[str, Any]:
        return checkpoint.load_sam2_checkpoint(_encoder(model), path)

    def size_multiple(self, model: nn.Module) -> int:
        return hiera_size_multiple(_encoder(model).trunk)

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        adapt_hiera(_encoder(model).trunk, dynamic)
        return model

    def neck(self, model: nn.Module) -> Neck | None:
        return encoder.neck_description(_encoder(model))

    def position_outputs(self, model: nn.Module, features: Sequence[OutputLevel]) -> list[OutputLevel]:
        return encoder.position_outputs(features)

    def pyramid_module(self, backbone: nn.Module, outputs: Sequence[OutputLevel],
                       pyramid: SimplePyramid | None) -> nn.Module:
        return encoder.Sam2Pyramid(_encoder(backbone), outputs)

    def reference_pyramid(self, backbone: nn.Module, outputs: Sequence[OutputLevel],
                          pyramid: SimplePyramid | None) -> nn.Module:
        """Meta's ImageEncoder (sam2 package) with the artifact's weights, not vitdeploy's rewrite of it."""
        return reference.MetaSam2Pyramid(_encoder(backbone), outputs)

    def reference_label(self) -> str:
        return f"Meta's sam2 {reference.sam2_version()} ImageEncoder, eager torch {torch.__version__}"
