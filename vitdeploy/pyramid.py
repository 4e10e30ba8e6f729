"""The pyramid: its outputs as the description names them, and the module computing them, timm's
`forward_intermediates` levels as a tuple, optionally resampled in the graph.

The outputs are timm's `feature_info` levels (channels, reduction) for the indices `forward_intermediates`
takes (`describe_outputs`), and `PyramidModel` returns whatever timm's own `forward_intermediates`
returns for them (and the pooled embedding), so vitdeploy never re-implements a backbone.

A ViTDet-style simple feature pyramid without weights (`SimpleFeaturePyramid`) turns single-scale
outputs into strides: ViTDet does it with trained deconvolutions; a fixed resampling gives any
checkpoint a multi-scale pyramid with nothing to train. Upsampling is bilinear interpolation
(align_corners=False, no antialias: ONNX Resize linear/half_pixel, which TensorRT parses) and
downsampling is max pooling with kernel = stride = the factor (ViTDet's pooling for stride 32). The
chosen blocks feed the strides one to one, fine to coarse; a single block feeds every stride, as in
ViTDet. The eager reference of `vitdeploy verify` runs this same module on eager timm features, so
parity compares the graph's resampling with PyTorch's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitdeploy.description import OutputLevel, PyramidSpec, SimplePyramid
from vitdeploy.errors import VitdeployError

EMBEDDING_NAME = "embedding"
UPSAMPLE = "bilinear interpolation (align_corners=False, no antialias)"
DOWNSAMPLE = "max pooling (kernel = stride = factor)"


PositionOutputs = Callable[[list[OutputLevel]], list[OutputLevel]]  # feature levels -> their position encodings


class PyramidModel(nn.Module):
    """The exported graph's module: image -> tuple of pyramid levels (and the pooled embedding)."""

    def __init__(self, backbone: nn.Module, indices: tuple[int, ...], embedding: bool):
        super().__init__()
        self.backbone = backbone
        self.indices = list(indices)
        self.embedding = embedding

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # timm's feature API (checked by feature_levels); its signature and return vary by model class
        forward_intermediates: Callable[..., Any] = getattr(self.backbone, "forward_intermediates")
        if not self.embedding:
            levels = forward_intermediates(image, indices=self.indices, intermediates_only=True, output_fmt="NCHW")
            return tuple(levels)
        final, levels = forward_intermediates(
            image, indices=self.indices, intermediates_only=False, output_fmt="NCHW", stop_early=False)
        forward_head: Callable[..., torch.Tensor] = getattr(self.backbone, "forward_head")
        return (*levels, forward_head(final, pre_logits=True))


def default_strides(source: int) -> tuple[int, ...]:
    """ViTDet's scales of the block stride, 4x, 2x, 1x and 1/2x (4, 8, 16, 32 for a patch-16 ViT); where
    4x up is not a whole stride (patch 14), 2x up to 1/4x (7, 14, 28, 56)."""
    return (source // 4, source // 2, source, source * 2) if source % 4 == 0 else \
        (source // 2, source, source * 2, source * 4) if source % 2 == 0 else (source, source * 2, source * 4)


def feature_levels(model: nn.Module, timm_name: str) -> list[dict[str, Any]]:
    """timm's feature_info entries (num_chs, reduction, module), checked to exist."""
    info = getattr(model, "feature_info", None)
    if not hasattr(model, "forward_intermediates") or not isinstance(info, list) or not info:
        raise VitdeployError(f"timm model '{timm_name}' has no feature support (no forward_intermediates "
                             "or feature_info): it cannot export a feature pyramid")
    return info


def _single_scale(levels: list[dict[str, Any]]) -> bool:
    return len({level["reduction"] for level in levels}) == 1 and len(levels) > 4


def default_outputs(levels: list[dict[str, Any]]) -> tuple[int, ...]:
    """Every level of a hierarchical model; four evenly spaced blocks of a single-scale one (ViTDet)."""
    if not _single_scale(levels):
        return tuple(range(len(levels)))
    n = len(levels)
    return tuple(round((k + 1) * n / 4) - 1 for k in range(4))


def check_outputs(timm_name: str, levels: list[dict[str, Any]], outputs: tuple[int, ...]) -> None:
    n = len(levels)
    kind = "blocks" if _single_scale(levels) else "feature levels"
    if not outputs:
        raise VitdeployError(f"no outputs chosen for {timm_name}: expected indices in 0..{n - 1}")
    for index in outputs:
        if not 0 <= index < n:
            raise VitdeployError(f"output index {index} is out of range for {timm_name}: it has {n} {kind} "
                                 f"(valid indices 0..{n - 1})")
    if list(outputs) != sorted(set(outputs)):
        raise VitdeployError(f"output indices {list(outputs)} for {timm_name}: expected distinct indices in "
                             "increasing order (pyramid order)")


def level_outputs(model: nn.Module, levels: list[dict[str, Any]], outputs: tuple[int, ...],
                     embedding: bool) -> list[OutputLevel]:
    """Output names, channels and strides: `stride{s}` for a hierarchical backbone (every level has its own
    stride), `block{i}` for a single-scale one such as ViT."""
    by_stride = len({level["reduction"] for level in levels}) == len(levels)
    described = [OutputLevel(name=f"stride{levels[i]['reduction']}" if by_stride else f"block{i}", kind="feature",
                             index=i, channels=int(levels[i]["num_chs"]), stride=int(levels[i]["reduction"]),
                             layout="NCHW") for i in outputs]
    if embedding:
        if not hasattr(model, "forward_head"):
            raise VitdeployError(f"{type(model).__name__} has no pooled embedding: expected no embedding output "
                                 "(drop --embedding / embedding = true)")
        channels: int = getattr(model, "head_hidden_size", None) or getattr(model, "num_features")  # timm's ints
        described.append(OutputLevel(name=EMBEDDING_NAME, kind="embedding", index=None, channels=int(channels),
                                     stride=None, layout="NC"))
    return described


def describe_outputs(model: nn.Module, timm_name: str, outputs: tuple[int, ...] | None, embedding: bool,
                     pyramid: PyramidSpec | None = None, positions: PositionOutputs | None = None
                     ) -> tuple[list[OutputLevel], SimplePyramid | None]:
    """The outputs of a backbone for the chosen feature indices (None: the default levels): feature levels
    (resampled by a simple pyramid when given), their position encodings if `positions` (the family's) is
    given, the embedding; and the description's `pyramid` section."""
    levels = feature_levels(model, timm_name)
    chosen = outputs if outputs is not None else default_outputs(levels)
    check_outputs(timm_name, levels, chosen)
    described, section = level_outputs(model, levels, chosen, embedding), None
    if pyramid:
        described, section = describe_pyramid(described, pyramid, timm_name)
    if positions:
        features = [o for o in described if o.kind == "feature"]
        described = features + positions(features) + [o for o in described if o.kind != "feature"]
    return described, section


def describe_pyramid(outputs: list[OutputLevel], spec: PyramidSpec,
                     timm_name: str) -> tuple[list[OutputLevel], SimplePyramid]:
    """The outputs renamed `stride{s}` with their new strides, and the description's `pyramid` section."""
    features = [o for o in outputs if o.kind == "feature"]
    rest = [o for o in outputs if o.kind != "feature"]
    sources = sorted({o.feature_stride() for o in features})
    if len(sources) != 1:
        raise VitdeployError(f"pyramid '{spec.kind}' for {timm_name}: its outputs already have strides {sources}; "
                             "expected a single-scale backbone (one stride, e.g. a plain ViT)")
    source = sources[0]
    strides = list(spec.strides or default_strides(source))
    if len(features) not in (1, len(strides)):
        raise VitdeployError(f"pyramid strides {strides} for {timm_name} got {len(features)} feature outputs "
                             f"{[o.index for o in features]}: expected {len(strides)} (one per stride) or 1 "
                             "(feeding every stride)")
    uneven = [s for s in strides if source % s and s % source]
    if uneven:
        raise VitdeployError(f"pyramid stride {uneven[0]} for {timm_name}: expected a divisor or multiple of its "
                             f"feature stride {source}")
    if len(features) == 1:
        features = features * len(strides)
    described = [replace(o, name=f"stride{s}", stride=s) for o, s in zip(features, strides)]
    section = SimplePyramid(kind=spec.kind, source_stride=source, strides=tuple(strides), upsample=UPSAMPLE,
                            downsample=DOWNSAMPLE)
    return described + rest, section


def pyramid_size_multiple(multiple: int, strides: tuple[int, ...] = ()) -> int:
    """Pooling to stride s needs height and width divisible by s, so the size rule grows to cover `strides`."""
    return math.lcm(multiple, *strides)


class SimpleFeaturePyramid(nn.Module):
    """Resamples a PyramidModel's single-scale features to the pyramid strides; other outputs pass through."""

    def __init__(self, model: PyramidModel, sources: list[int], source_stride: int, strides: list[int]):
        super().__init__()
        self.model, self.sources = model, sources
        self.scales = [(source_stride // s, s // source_stride) for s in strides]  # (up, down), one of them 0
        self.num_features = len(model.indices)

    @property
    def backbone(self) -> nn.Module:
        """The timm model, as on a PyramidModel."""
        return self.model.backbone

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(image)
        levels = []
        for source, (up, down) in zip(self.sources, self.scales):
            x = outputs[source]
            if up > 1:
                x = F.interpolate(x, size=(x.shape[-2] * up, x.shape[-1] * up), mode="bilinear",
                                  align_corners=False, antialias=False)
            elif down > 1:
                x = F.max_pool2d(x, kernel_size=down, stride=down)
            levels.append(x)
        return (*levels, *outputs[self.num_features:])


def pyramid_module(backbone: nn.Module, outputs: Sequence[OutputLevel],
                   pyramid: SimplePyramid | None) -> nn.Module:
    """The module whose outputs are a description's `outputs`: used by the export and the eager reference."""
    features = [o for o in outputs if o.kind == "feature"]
    indices = sorted({o.feature_index() for o in features})
    embedding = any(o.kind == "embedding" for o in outputs)
    model = PyramidModel(backbone, tuple(indices), embedding).eval()
    if pyramid is None:
        return model
    sources = [indices.index(o.feature_index()) for o in features]
    return SimpleFeaturePyramid(model, sources, pyramid.source_stride, [o.feature_stride() for o in features]).eval()
