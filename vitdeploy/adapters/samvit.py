"""Export-friendly rewrite of timm's VisionTransformerSAM absolute position embedding.

SAM adds its pos-embed through ``resample_abs_pos_embed_nhwc``, which skips resampling when the size
already fits, except while exporting: then it always emits an antialiased bicubic ``Resize`` (to the
same size), which TensorRT's ONNX parser rejects. Small graphs hide this because the exporter folds
the Resize of a small constant away. SAM exports at its build size only (see families.FIXED_ONLY), so
the rewrite adds the stored embedding directly after the patch embedding: the same numbers as timm's
eager same-size path, with no Resize.
"""

from __future__ import annotations

from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import Tensor, nn

from vitdeploy.errors import VitdeployError


class PatchEmbedWithPosition(nn.Module):
    """SAM's patch embedding (NHWC out) followed by its position embedding at the build grid size."""

    def __init__(self, patch_embed: nn.Module, pos_embed: nn.Parameter):
        super().__init__()
        self.patch_embed, self.pos_embed = patch_embed, pos_embed

    def forward(self, x: Tensor) -> Tensor:
        return self.patch_embed(x) + self.pos_embed


def adapt_samvit(model: nn.Module) -> nn.Module:
    """Move the pos-embed add into the patch embedding; returns the same model (for export only)."""
    if not isinstance(model, VisionTransformerSAM):
        raise VitdeployError(f"adapt_samvit got a {type(model).__name__}; expected a timm VisionTransformerSAM")
    if model.pos_embed is not None:
        model.patch_embed = PatchEmbedWithPosition(model.patch_embed, model.pos_embed)
        model.register_parameter("pos_embed", None)  # what `model.pos_embed = None` does (timm types it non-None)
    return model
