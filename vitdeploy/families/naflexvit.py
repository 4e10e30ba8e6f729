"""timm NaFlexVit (SigLIP2-style NaFlex ViT) on its standard image path: an NCHW image, padded to whole patches.

The patch-dictionary input (`patches`, `patch_coord`, `patch_valid` of any aspect ratio) stays out: an
artifact has one image input. On the image path timm resamples the learned position-embedding grid to
the input's patch grid with an antialiased bicubic F.interpolate, exported as Resize(antialias=1),
which TensorRT's ONNX parser rejects; the family computes it with vitdeploy.adapters.resample (same
numbers, MatMul and elementwise ops only), so one graph serves every size.
"""

from __future__ import annotations

import types

from timm.models.naflexvit import NaFlexEmbeds
from torch import Tensor, nn

from vitdeploy.adapters.resample import resample_bicubic
from vitdeploy.families.base import Family, register, unfuse_attention


def _apply_learned_pos_embed(self: NaFlexEmbeds, x: Tensor, grid_size: list[int]) -> None:
    """NaFlexEmbeds._apply_learned_pos_embed with resample_bicubic, and no same-size early-out (the grid
    size is symbolic under a dynamic export)."""
    assert self.pos_embed is not None  # _rewritable: only learned position embeddings are rewritten
    pos_embed = self.pos_embed.permute(0, 3, 1, 2).float()
    size = (max(grid_size), max(grid_size)) if self.pos_embed_ar_preserving else (grid_size[0], grid_size[1])
    grid = resample_bicubic(pos_embed, size, antialias=self.pos_embed_antialias)
    x.add_(grid[:, :, :grid_size[0], :grid_size[1]].flatten(2).transpose(1, 2).to(dtype=x.dtype))


def _rewritable(embeds: NaFlexEmbeds) -> bool:
    """Learned 2-D embeddings resampled bicubically without corner alignment: what resample_bicubic computes."""
    return (embeds.pos_embed_type == "learned" and embeds.pos_embed is not None
            and embeds.pos_embed_interp_mode == "bicubic" and not embeds.pos_embed_align_corners)


@register
class NaFlexVit(Family):
    name = "naflexvit"
    timm_classes = ("NaFlexVit",)
    small_kwargs = {"depth": 2}  # NaFlexVitCfg fields are keywords of timm's builder

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        for module in model.modules():
            if isinstance(module, NaFlexEmbeds) and _rewritable(module):
                setattr(module, "_apply_learned_pos_embed", types.MethodType(_apply_learned_pos_embed, module))
        unfuse_attention(model)
        return model
