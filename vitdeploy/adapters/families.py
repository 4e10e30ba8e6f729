"""timm backbones beyond ViT and Hiera: the timm class of each family, its size rule, whether one graph
serves every size, and the rewrites they need (EVA's and SAM's pos-embed, unfused attention).

Every rule here was found by exporting the backbone (torch.export -> ONNX), comparing ONNX Runtime with
eager timm and parsing the graph with TensorRT-RTX; docs/coverage.md is the generated record.
"""

from __future__ import annotations

import math

from torch import nn

from vitdeploy.errors import VitdeployError

CLASSES = {"eva": "Eva", "beit": "Beit", "samvit": "VisionTransformerSAM", "mvitv2": "MultiScaleVit",
           "twins": "Twins", "swin": "SwinTransformer", "convnext": "ConvNeXt"}
# One graph serves every size of the range: always (convolutions, windows padded at run time), or only
# when built with dynamic_img_size (EVA, Swin); the other families build position tables for one size.
ANY_SIZE = {"convnext", "twins"}
WITH_DYNAMIC_IMG_SIZE = {"eva", "swin"}
FIXED_ONLY = {  # why, as found by exporting them with dynamic height/width
    "beit": "timm's Beit asserts the input size it was built for",
    "samvit": "torch.export fixes its relative-position table resizing at the export size (the graph fails "
              "in ONNX Runtime at other sizes)",
    "mvitv2": "its relative-position pooling sizes become symbolic floats the ONNX exporter cannot translate",
}
# Their attention calls scaled_dot_product_attention with 3-D (SAM: batch * heads) or 5-D (Twins' local
# windows) tensors; the ONNX exporter takes 4-D only, and timm's unfused path computes the same softmax.
UNFUSED_ATTENTION = {"samvit", "twins"}


def check_family(model: nn.Module, family: str) -> None:
    expected = CLASSES[family]
    if type(model).__name__ != expected:
        raise VitdeployError(f"family '{family}' expects a timm {expected}, got a {type(model).__name__}: "
                             "set the recipe's family to the model's own")


def family_size_multiple(model: nn.Module) -> int:
    """Height and width must be multiples of every feature stride (patch size, then patch merging)."""
    return math.lcm(*(int(level["reduction"]) for level in model.feature_info))


def family_supports_dynamic(model: nn.Module, family: str) -> bool:
    if family in WITH_DYNAMIC_IMG_SIZE:
        return bool(model.dynamic_img_size)
    return family in ANY_SIZE


def adapt_family(model: nn.Module, family: str, dynamic: bool) -> nn.Module:
    """Rewrite `model` in place for export; numbers stay the same within float32 rounding."""
    check_family(model, family)
    if family == "eva":
        from vitdeploy.adapters.eva import adapt_eva

        return adapt_eva(model, dynamic)
    if family == "samvit":
        from vitdeploy.adapters.samvit import adapt_samvit

        adapt_samvit(model)
    if family in UNFUSED_ATTENTION:
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    return model
