"""SAM2 checkpoints: Meta's files (`{"model": state dict of the whole SAM2 model}`) hold the image encoder, the
prompt encoder and mask decoder, and the memory modules. The encoder export loads the image encoder's tensors
(after checking that the trunk is the recipe's size); the decoder export those of the prompt encoder, the
mask decoder and `no_mem_embed` (vitdeploy.sam2.decoder).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from timm.models.hieradet_sam2 import checkpoint_filter_fn
from torch import Tensor

from vitdeploy.checkpoints import load_filtered, read_state_dict
from vitdeploy.errors import VitdeployError
from vitdeploy.sam2.encoder import Sam2ImageEncoder, pretrained_cfg

# Official SAM2.1 trunks: (blocks, embed width) -> recipe
VARIANTS = {(12, 96): "sam2.1_hiera_tiny", (16, 96): "sam2.1_hiera_small", (24, 112): "sam2.1_hiera_base_plus",
            (48, 144): "sam2.1_hiera_large"}


def _trunk_shape(state: dict[str, Tensor], prefix: str) -> tuple[int, int]:
    """(block count, embed width) of the trunk under `prefix` in a state dict."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    return (max(blocks) + 1 if blocks else 0), int(state[prefix + "patch_embed.proj.weight"].shape[0])


def _grouped(keys: Sequence[str]) -> dict[str, int]:
    """Key counts by top-level module (`memory_attention.`), or the key itself for a bare tensor."""
    return dict(sorted(Counter(k.split(".")[0] + ("." if "." in k else "") for k in keys).items()))


def load_sam2_checkpoint(encoder: Sam2ImageEncoder, path: Path) -> dict[str, Any]:
    """Load the image encoder's tensors of a SAM2 checkpoint (a whole SAM2 model's state dict, under "model"
    as Meta ships it, or an image encoder's own); returns the weights record's checkpoint fields."""
    state, key = read_state_dict(path)
    prefix = next((p for p in ("image_encoder.", "") if f"{p}trunk.patch_embed.proj.weight" in state), None)
    if prefix is None:
        raise VitdeployError(f"checkpoint {path} has no image_encoder.trunk.patch_embed.proj.weight (its keys start "
                             f"e.g. {next(iter(state))}): expected a SAM2 checkpoint ({{'model': state dict of a SAM2 "
                             "model}, keys image_encoder.trunk.* and image_encoder.neck.*)")
    trunk_prefix, neck_prefix = f"{prefix}trunk.", f"{prefix}neck."
    found = _trunk_shape(state, trunk_prefix)
    expected = (len(encoder.trunk.blocks), int(encoder.trunk.patch_embed.proj.out_channels))
    if found != expected:
        model = pretrained_cfg(encoder.trunk).get("architecture", "the recipe's model")
        fits = f"; export it with recipe {VARIANTS[found]}" if found in VARIANTS else ""
        raise VitdeployError(
            f"checkpoint {path} holds a SAM2 trunk of {found[0]} blocks, embed width {found[1]} ({trunk_prefix}blocks.*, "
            f"{trunk_prefix}patch_embed.proj.weight): expected {expected[0]} blocks of width {expected[1]} ({model})"
            f"{fits}")
    used = [k for k in state if k.startswith((trunk_prefix, neck_prefix))]
    trunk = checkpoint_filter_fn(state, None, prefix=trunk_prefix)  # timm's own mapping of SAM2 trunk keys
    neck = {k[len(neck_prefix):]: v for k, v in state.items() if k.startswith(neck_prefix)}
    if not neck:
        raise VitdeployError(f"checkpoint {path} has a SAM2 trunk but no {neck_prefix}* tensors: expected SAM2's "
                             "image encoder with its FPN neck (timm's sam2_hiera_* weights hold the trunk only)")
    filtered = {**{f"trunk.{k}": v for k, v in trunk.items()}, **{f"neck.{k}": v for k, v in neck.items()}}
    record = {"checkpoint_key": key, "filter": "vitdeploy.sam2.checkpoint.load_sam2_checkpoint (trunk through "
              f"timm.models.hieradet_sam2.checkpoint_filter_fn, prefix {trunk_prefix!r})", "adapted": [],
              "classifier_skipped": [], "used_prefixes": [trunk_prefix, neck_prefix],
              "ignored_prefixes": _grouped([k for k in state if k not in set(used)])}
    return load_filtered(encoder, filtered, path, record)


