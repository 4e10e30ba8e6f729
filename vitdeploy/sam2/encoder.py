"""SAM2's image encoder, written for export: timm's HieraDet trunk + SAM2's FPN neck + sine position encoding.

timm's `sam2_hiera_{tiny,small,base_plus,large}` is SAM2's trunk (same modules; its checkpoint filter maps
SAM2's keys), but timm has no neck, and SAM2's mask decoder reads the neck's 256-channel maps. SAM2's own
`ImageEncoder` does not export well: its `PositionEmbeddingSine` keeps a cache keyed by (H, W) that a warm
module (any eager call, or construction on a machine with a GPU) bakes into the graph as a constant of one
size, so a "dynamic" export silently returns position encodings of the wrong size; its nearest upsampling
is a `Resize` that TensorRT-RTX's dynamic build rejects; and its export is minutes slower. So vitdeploy
builds the same computation from parts that export: the timm trunk (adapted by vitdeploy.adapters.hiera),
`FpnNeck` (SAM2's state-dict keys, nearest x2 upsampling as Expand + Reshape, exact) and a stateless
`SinePositionEncoding` (SAM2's formula, recomputed from each input's size). Parity is checked against
SAM2's own `ImageEncoder` (vitdeploy.sam2.reference, needs the `sam2` package): vitdeploy.families.sam2.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from timm.models.hieradet_sam2 import HieraDet
from torch import Tensor, nn

from vitdeploy.description import Neck, OutputLevel
from vitdeploy.errors import VitdeployError

D_MODEL = 256  # every SAM2 / SAM2.1 config
TOP_DOWN_LEVELS = (2, 3)  # levels 0 and 1 (strides 4, 8) take the trunk's features alone
SCALP = 1  # the stride-32 level feeds stride 16's top-down path but is not an output
TEMPERATURE = 10000.0
UPSAMPLE = "nearest x2 (Expand + Reshape; = F.interpolate(scale_factor=2, mode='nearest'))"
POSITION_ENCODING = (f"sine, {D_MODEL} channels (y then x), temperature {TEMPERATURE:g}, positions normalised to "
                     "(0, 2*pi] (sam2 PositionEmbeddingSine(normalize=True)); computed from the level's size")
REFERENCE = "sam2.modeling.backbones.image_encoder.ImageEncoder (Meta's sam2 package)"


def pretrained_cfg(trunk: HieraDet) -> dict[str, Any]:
    """timm's pretrained_cfg, which timm.create_model sets on the model (HieraDet declares no such attribute)."""
    cfg: dict[str, Any] = getattr(trunk, "pretrained_cfg")
    return cfg


def upsample2x_nearest(x: Tensor) -> Tensor:
    """`F.interpolate(x, scale_factor=2, mode="nearest")`, exactly, as Expand + Reshape (no Resize)."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, h * 2, w * 2)


class SinePositionEncoding(nn.Module):
    """sam2's `PositionEmbeddingSine(num_pos_feats, normalize=True)` without its cache: [B, C, H, W] of x's size."""

    def __init__(self, channels: int = D_MODEL, temperature: float = TEMPERATURE, scale: float = 2 * math.pi):
        super().__init__()
        self.axis_channels, self.temperature, self.scale = channels // 2, temperature, scale

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        eps = 1e-6
        y = torch.arange(1, height + 1, dtype=torch.float32, device=x.device)
        xs = torch.arange(1, width + 1, dtype=torch.float32, device=x.device)
        y = y / (y[-1:] + eps) * self.scale  # sam2: embed / (embed[-1] + eps) * scale, embed[-1] = H (W)
        xs = xs / (xs[-1:] + eps) * self.scale
        dim_t = torch.arange(self.axis_channels, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.axis_channels)
        py, px = y[:, None] / dim_t, xs[:, None] / dim_t  # [H, half], [W, half]
        py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
        px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
        pos = torch.cat((py[:, None, :].expand(height, width, self.axis_channels),
                         px[None, :, :].expand(height, width, self.axis_channels)), dim=2)
        return pos.permute(2, 0, 1)[None].expand(batch, 2 * self.axis_channels, height, width).to(x.dtype)


class FpnNeck(nn.Module):
    """sam2's `FpnNeck` (1x1 lateral convs; nearest x2 top-down on `fpn_top_down_levels`; sum), its keys
    (`convs.{i}.conv.*`, coarse to fine) and its numbers."""

    def __init__(self, backbone_channel_list: Sequence[int], d_model: int = D_MODEL,
                 fpn_top_down_levels: Sequence[int] = TOP_DOWN_LEVELS):
        super().__init__()
        self.backbone_channel_list = list(backbone_channel_list)  # coarse to fine, as sam2 lists it
        self.convs = nn.ModuleList()
        for channels in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        n = len(self.convs) - 1
        out: list[Tensor] = [None] * len(self.convs)  # type: ignore[list-item]  # all set below
        previous = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and previous is not None:
                previous = lateral + upsample2x_nearest(previous)
            else:
                previous = lateral
            out[i] = previous
        return out


class Sam2ImageEncoder(nn.Module):
    """SAM2's image encoder (trunk + neck, scalp 1) with timm's backbone interface: `feature_info` lists the
    neck's levels (256 channels at strides 4, 8, 16), `forward_intermediates` returns them, and
    `position_encoding(level)` gives a level's encoding. State dict: `trunk.*` (timm's HieraDet keys, without
    its classifier head, which SAM2 does not have) and `neck.convs.*` (SAM2's)."""

    def __init__(self, trunk: HieraDet, d_model: int = D_MODEL, scalp: int = SCALP,
                 fpn_top_down_levels: Sequence[int] = TOP_DOWN_LEVELS):
        super().__init__()
        # SAM2's trunk ends at its last block; forward_intermediates never uses the head. (What `trunk.head =
        # nn.Identity()` does; timm types `head` as its classifier.)
        trunk.add_module("head", nn.Identity())
        self.trunk = trunk
        self.trunk_channels = [int(level["num_chs"]) for level in trunk.feature_info]
        self.neck = FpnNeck(self.trunk_channels[::-1], d_model, fpn_top_down_levels)
        self.position = SinePositionEncoding(d_model)
        self.d_model, self.scalp = d_model, scalp
        kept = len(trunk.feature_info) - scalp
        self.feature_info = [dict(num_chs=d_model, reduction=int(level["reduction"]),
                                  module=f"neck.convs.{len(trunk.feature_info) - 1 - i}")
                             for i, level in enumerate(trunk.feature_info[:kept])]
        self.pretrained_cfg = {**pretrained_cfg(trunk), "classifier": None}

    def forward_levels(self, image: Tensor) -> list[Tensor]:
        """Every neck level the encoder outputs (fine to coarse, after the scalp)."""
        trunk = self.trunk.forward_intermediates(image, indices=list(range(len(self.trunk_channels))),
                                                 intermediates_only=True, output_fmt="NCHW")
        levels = self.neck(trunk)
        return levels[:len(levels) - self.scalp]

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None, intermediates_only: bool = True,
                              output_fmt: str = "NCHW", **_: Any) -> list[Tensor]:
        """timm's call with SAM2's neck levels; the neck needs every trunk stage, so there is no early stop."""
        if not intermediates_only or output_fmt != "NCHW":
            raise VitdeployError("SAM2's image encoder gives its neck levels only: expected intermediates_only=True, "
                                 "output_fmt='NCHW'")
        levels = self.forward_levels(x)
        return [levels[i] for i in (range(len(levels)) if indices is None else indices)]

    def position_encoding(self, level: Tensor) -> Tensor:
        return self.position(level)

    def forward(self, image: Tensor) -> list[Tensor]:
        return self.forward_levels(image)


class Sam2Pyramid(nn.Module):
    """The exported module: the chosen neck levels, then their position encodings (as the description lists)."""

    def __init__(self, encoder: Sam2ImageEncoder, outputs: Sequence[OutputLevel]):
        super().__init__()
        self.backbone = encoder
        unknown = sorted({o.kind for o in outputs} - {"feature", "position"})
        if unknown:
            raise VitdeployError(f"SAM2's image encoder has no {unknown[0]} output: expected feature levels and "
                                 "their position encodings")
        self.picks = [(o.kind, o.feature_index()) for o in outputs]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        levels = self.backbone.forward_levels(image)
        return tuple(levels[i] if kind == "feature" else self.backbone.position_encoding(levels[i])
                     for kind, i in self.picks)


def neck_description(encoder: Sam2ImageEncoder) -> Neck:
    return Neck(kind="sam2_fpn", trunk_channels=tuple(encoder.trunk_channels), d_model=encoder.d_model,
                fpn_top_down_levels=tuple(encoder.neck.fpn_top_down_levels), scalp=encoder.scalp, upsample=UPSAMPLE,
                fuse="sum", position_encoding=POSITION_ENCODING, reference=REFERENCE)


def position_outputs(features: Sequence[OutputLevel]) -> list[OutputLevel]:
    """`pos_stride{s}` for each chosen level: its sine encoding, [B, 256, H/s, W/s] (SAM2's vision_pos_enc)."""
    return [OutputLevel(name=f"pos_{o.name}", kind="position", index=o.index, channels=o.channels, stride=o.stride,
                        layout="NCHW") for o in features]
