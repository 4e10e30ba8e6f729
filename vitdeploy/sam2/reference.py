"""Meta's SAM2 (the `sam2` package, vitdeploy[sam2]) as the parity reference: its `ImageEncoder` with an
artifact's weights (verify of the encoder), and its whole `SAM2ImagePredictor` built as the artifact was
exported (the decoder's parity, end to end). Imported only where a reference is needed.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Sequence

from timm.models.hieradet_sam2 import HieraDet, MultiScaleBlock
from torch import Tensor, nn

from vitdeploy.description import OutputLevel
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.sam2.encoder import TEMPERATURE, Sam2ImageEncoder


def sam2_version() -> str:
    """The installed sam2 package's version ("not installed" without it)."""
    try:
        return importlib.metadata.version("sam2")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _heads(trunk: HieraDet, block: int) -> int:
    """The attention heads of a trunk block (timm's HieraDet blocks are MultiScaleBlocks, typed as Modules)."""
    module = trunk.blocks[block]
    if not isinstance(module, MultiScaleBlock):
        raise VitdeployError(f"HieraDet block {block} is a {type(module).__name__}; expected a MultiScaleBlock")
    return module.attn.num_heads


def meta_trunk_config(trunk: HieraDet) -> dict[str, Any]:
    """The arguments of sam2's `Hiera` that build the same trunk as this timm HieraDet."""
    stages = [end - start for start, end in zip([-1, *trunk.stage_ends[:-1]], trunk.stage_ends)]
    embed_dim = int(trunk.patch_embed.proj.out_channels)
    dims = [int(level["num_chs"]) for level in trunk.feature_info]
    heads = [_heads(trunk, end) for end in trunk.stage_ends]
    proj = trunk.patch_embed.proj
    if (tuple(proj.kernel_size), tuple(proj.stride), tuple(proj.padding)) != ((7, 7), (4, 4), (3, 3)):
        raise VitdeployError("this HieraDet's patch embedding is not SAM2's (kernel 7, stride 4, padding 3): sam2's "
                             "Hiera cannot build it")
    return {"embed_dim": embed_dim, "num_heads": _heads(trunk, 0), "q_pool": len(trunk.q_pool_blocks),
            "q_stride": list(trunk.q_stride), "stages": stages, "dim_mul": dims[1] / dims[0],
            "head_mul": heads[1] / heads[0], "window_pos_embed_bkg_spatial_size": list(trunk.global_pos_size),
            "window_spec": list(trunk.window_spec), "global_att_blocks": list(trunk.global_att_blocks)}


def meta_image_encoder(encoder: Sam2ImageEncoder) -> nn.Module:
    """sam2's own `ImageEncoder` (Hiera trunk, FpnNeck, PositionEmbeddingSine; as SAM2.1's configs build it) with
    the encoder's weights. Needs the `sam2` package (vitdeploy[sam2])."""
    backbones = require("sam2.modeling.backbones.image_encoder")
    position = require("sam2.modeling.position_encoding")
    trunk = require("sam2.modeling.backbones.hieradet").Hiera(**meta_trunk_config(encoder.trunk))
    encoding = position.PositionEmbeddingSine(num_pos_feats=encoder.d_model, normalize=True, scale=None,
                                              temperature=int(TEMPERATURE))
    neck = backbones.FpnNeck(position_encoding=encoding, d_model=encoder.d_model,
                             backbone_channel_list=encoder.neck.backbone_channel_list,
                             fpn_top_down_levels=encoder.neck.fpn_top_down_levels, fpn_interp_model="nearest")
    meta = backbones.ImageEncoder(trunk=trunk, neck=neck, scalp=encoder.scalp)
    state = {k.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1"): v
             for k, v in encoder.state_dict().items()}  # timm's filter renames these two the other way
    meta.load_state_dict(state, strict=True)
    return meta.eval()


class MetaSam2Pyramid(nn.Module):
    """Meta's `ImageEncoder` with a description's outputs: `backbone_fpn[i]` and `vision_pos_enc[i]`."""

    def __init__(self, encoder: Sam2ImageEncoder, outputs: Sequence[OutputLevel]):
        super().__init__()
        self.backbone = encoder  # the artifact's backbone (bench reads it), not run here
        self.meta = meta_image_encoder(encoder)
        self.picks = [(o.kind, o.index) for o in outputs]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.meta(image)
        return tuple(out["backbone_fpn"][i] if kind == "feature" else out["vision_pos_enc"][i]
                     for kind, i in self.picks)


# ---- Meta's whole SAM2, the decoder's reference -----------------------------------------------------------

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"  # SAM2.1's model; the trunk's arguments are set from the artifact


def _override(value: Any) -> str:
    return str(list(value) if isinstance(value, tuple) else value).replace(" ", "")


def meta_sam2(trunk: HieraDet, checkpoint: str | None, image_size: int) -> nn.Module:
    """Meta's SAM2 model (build_sam2, as SAM2ImagePredictor.from_pretrained builds it: with its
    dynamic_multimask_via_stability) for `image_size`, with the trunk's arguments and `checkpoint`'s weights
    (None: sam2's own random init)."""
    hydra = require("hydra")
    from hydra.core.global_hydra import GlobalHydra

    build_sam2 = require("sam2.build_sam").build_sam2
    trunk_args = {k: v for k, v in meta_trunk_config(trunk).items() if k != "q_stride"}  # (2, 2) in every config
    channels = [int(level["num_chs"]) for level in trunk.feature_info][::-1]
    overrides = [f"++model.image_encoder.trunk.{k}={_override(v)}" for k, v in trunk_args.items()]
    overrides += [f"++model.image_encoder.neck.backbone_channel_list={_override(channels)}",
                  f"++model.image_size={image_size}"]
    GlobalHydra.instance().clear()
    with hydra.initialize_config_module("sam2", version_base="1.2"):
        return build_sam2(CONFIG, checkpoint, device="cpu", mode="eval", hydra_overrides_extra=overrides)


def meta_predictor(model: Any) -> Any:
    """SAM2ImagePredictor on `model`, its backbone sizes set from the model's image_size (it lists 1024's)."""
    predictor = require("sam2.sam2_image_predictor").SAM2ImagePredictor(model)
    size = int(model.image_size)
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return predictor


def set_features(predictor: Any, stride4: Tensor, stride8: Tensor, stride16: Tensor, orig_hw: tuple[int, int]) -> None:
    """What SAM2ImagePredictor.set_image keeps, from given pyramid levels (forward_image's conv_s0/conv_s1,
    then no_mem_embed on the coarsest level): the decoder's reference without running the encoder."""
    model = predictor.model
    decoder = model.sam_mask_decoder
    embed = stride16 + model.no_mem_embed.reshape(1, -1, 1, 1)
    predictor._features = {"image_embed": embed, "high_res_feats": [decoder.conv_s0(stride4), decoder.conv_s1(stride8)]}
    predictor._orig_hw = [orig_hw]
    predictor._is_image_set, predictor._is_batch = True, False
