"""Model building: a timm backbone of its family with its weights, and the eager reference (the outputs it
is described by are vitdeploy.pyramid's)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitdeploy.description import Description, OutputLevel, PyramidSpec, WeightsRecord
from vitdeploy.errors import VitdeployError
from vitdeploy.families.base import Family
from vitdeploy.pyramid import describe_outputs
ModelForSize = Callable[[tuple[int, int]], nn.Module]


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from: seeded random init, a local checkpoint, or timm's hub."""

    source: str  # "random" | "checkpoint" | "pretrained"
    seed: int = 0
    checkpoint: Path | None = None

    def describe(self) -> str:
        if self.source == "random":
            return f"random weights (seed {self.seed})"
        if self.source == "checkpoint":
            return f"checkpoint {self.checkpoint}"
        return "pretrained weights from the model hub"


def class_accepts(cls: type, keyword: str) -> bool:
    """Whether a timm class's constructor takes `keyword` (img_size, dynamic_img_size). A class that passes
    `**kwargs` on (DeiT distilled) takes what its base class takes."""
    base: type[object]  # a class: `base.__init__` is the class's initialiser to mypy, not type.__init__
    for base in cls.__mro__[:-1]:
        parameters = inspect.signature(base.__init__).parameters
        if keyword in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def _accepts_img_size(timm_name: str, timm_kwargs: dict[str, Any]) -> bool:
    """Whether the model is built for one input size (ViT, Hiera, Swin) or runs at any (ConvNeXt, HieraDet)."""
    with torch.device("meta"):
        model = timm.create_model(timm_name, **timm_kwargs)
    return class_accepts(type(model), "img_size")


def create_model(timm_name: str, timm_kwargs: dict[str, Any], weights: Weights,
                 img_size: tuple[int, int] | None = None, *,
                 family: Family) -> tuple[nn.Module, dict[str, Any] | None]:
    """A backbone in eval mode with the requested weights, and for a checkpoint what loading it did
    (vitdeploy.checkpoints). The timm model is created (random init is seeded, so reproducible), checked
    against its `family` and assembled by it (vitdeploy.families: SAM2 adds its neck) before any weights
    are loaded; `img_size` is passed on to models built for one input size."""
    if not timm.is_model(timm_name):
        raise VitdeployError(f"unknown timm model '{timm_name}' (timm {timm.__version__}); "
                             "see timm.list_models() for the names it knows")
    if family.no_pretrained and weights.source == "pretrained":
        raise VitdeployError(f"--pretrained for {timm_name} (family '{family.name}'): {family.no_pretrained}")
    kwargs = dict(timm_kwargs)
    try:
        if img_size is not None and _accepts_img_size(timm_name, timm_kwargs):
            kwargs["img_size"] = tuple(img_size)
        torch.manual_seed(weights.seed)
        model = timm.create_model(timm_name, pretrained=weights.source == "pretrained", **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise VitdeployError(f"cannot build {timm_name} with {sorted(kwargs)}: {exc}; expected only arguments its "
                             "timm class takes (check the recipe's timm_kwargs and family)") from None
    except (OSError, RuntimeError) as exc:
        if weights.source != "pretrained":
            raise
        raise VitdeployError(f"cannot download pretrained weights for {timm_name}: "
                             f"{str(exc).splitlines()[0]}; use --checkpoint FILE for local weights") from None
    family.check(model)
    model = family.assemble(model)
    if weights.source == "random":
        family.random_init(model, weights.seed)
    record = None
    if weights.source == "checkpoint":
        if weights.checkpoint is None:
            raise VitdeployError(f"checkpoint weights for {timm_name} name no file: expected --checkpoint FILE")
        record = family.load_checkpoint(model, weights.checkpoint)
    return model.eval(), record


def meta_backbone(timm_name: str, timm_kwargs: dict[str, Any], family: Family) -> nn.Module:
    """The backbone on the meta device (no memory, no weights), assembled by its family: for its levels and
    size rule."""
    if not timm.is_model(timm_name):
        raise VitdeployError(f"unknown timm model '{timm_name}' (timm {timm.__version__})")
    with torch.device("meta"):
        model = timm.create_model(timm_name, **timm_kwargs)
        return family.assemble(model)


def state_dict_sha256(model: nn.Module) -> str:
    """A fingerprint of the weights, recorded in artifacts so verify rebuilds the very same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def weights_record(weights: Weights, model: nn.Module, loaded: dict[str, Any] | None) -> WeightsRecord:
    """What the artifact records of the weights: their source, fingerprint, and any checkpoint adaptation."""
    return WeightsRecord(source=weights.source, seed=weights.seed,
                         checkpoint=str(weights.checkpoint) if weights.checkpoint else None,
                         sha256=state_dict_sha256(model), **(loaded or {}))


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding NaN or infinity (a diverged fine-tune, a bad conversion)."""
    return [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def describe_recipe_pyramid(timm_name: str, timm_kwargs: dict[str, Any], outputs: tuple[int, ...] | None,
                            embedding: bool, pyramid: PyramidSpec | None = None, *, family: Family,
                            position_encodings: bool = False) -> list[OutputLevel]:
    """A recipe's outputs without building weights: the backbone is created on the meta device."""
    model = meta_backbone(timm_name, timm_kwargs, family)
    positions = (lambda features: family.position_outputs(model, features)) if position_encodings else None
    return describe_outputs(model, timm_name, outputs, embedding, pyramid, positions)[0]


def reference_models(description: Description, family: Family, checkpoint: Path | None = None) -> ModelForSize:
    """hw -> the eager timm model the artifact was exported from (of `family`, the description's), at that input
    size, with the very same weights (rebuilt from the recorded seed, checkpoint or hub, and checked against their
    sha256)."""
    source = description.weights
    if checkpoint is None and source.checkpoint:
        checkpoint = Path(source.checkpoint)
    weights = Weights("checkpoint" if checkpoint else source.source, source.seed, checkpoint)
    opt_hw = description.input.opt_hw
    base, _ = create_model(description.timm_name, description.timm_kwargs, weights, img_size=opt_hw, family=family)
    if state_dict_sha256(base) != source.sha256:
        raise VitdeployError(f"the weights rebuilt from {weights.describe()} differ from the exported ones "
                             "(sha256 mismatch): pass --checkpoint with the weights the artifact was exported from")
    built = {opt_hw: base}

    def rebuild(hw: tuple[int, int]) -> nn.Module:
        model, _ = create_model(description.timm_name, description.timm_kwargs, Weights("random"), img_size=hw,
                                family=family)
        model.load_state_dict(base.state_dict())
        return model

    def model_for_size(hw: tuple[int, int]) -> nn.Module:
        if hw not in built:
            built[hw] = family.reference_for_size(base, hw, rebuild)
        return built[hw]

    return model_for_size


def reference_pyramids(description: Description, family: Family, checkpoint: Path | None = None,
                       device: str = "cpu") -> ModelForSize:
    """hw -> the eager pyramid module (the description's outputs) on `device`: the one eager reference that
    verify, bench and the torch runner use (the family's reference_pyramid; built once per backbone, so a
    backbone that runs every size gives one module for all sizes)."""
    model_for_size = reference_models(description, family, checkpoint)
    built: dict[int, tuple[nn.Module, nn.Module]] = {}  # id(backbone) -> (backbone, its pyramid)

    def pyramid(hw: tuple[int, int]) -> nn.Module:
        backbone = model_for_size(hw)
        if id(backbone) not in built:
            module = family.reference_pyramid(backbone, description.outputs, description.pyramid).eval()
            built[id(backbone)] = backbone, module.to(device)
        return built[id(backbone)][1]

    return pyramid
