"""Local checkpoints loaded the way timm loads its own weights.

timm passes every pretrained state dict through the model module's `checkpoint_filter_fn`, which
remaps foreign key layouts and resamples what depends on the input size (ViT/EVA absolute position
embeddings, BEiT/Swin relative-position tables, MViTv2 relative positions, patch embeddings). A
checkpoint fine-tuned at 224 and exported at 384 needs exactly that, so local checkpoints take the
same path; what it changed is recorded in the artifact and `verify` rebuilds the reference the same
way. The classifier is not part of any pyramid output, so a head of another size is left at its
seeded initialisation instead of failing the load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from timm.models import clean_state_dict
from torch import nn

from vitdeploy.errors import VitdeployError

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # timm's load_state_dict order


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict in a .safetensors or torch file, and the training-script key it sat under."""
    if not path.is_file():
        raise VitdeployError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VitdeployError(f"cannot read checkpoint {path}: {reason}") from None
    key = next((k for k in WRAPPER_KEYS if isinstance(state, dict) and isinstance(state.get(k), dict)), None)
    state = state[key] if key else state
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VitdeployError(f"checkpoint {path} holds no state dict (expected a mapping of names to tensors)")
    return clean_state_dict(state), key


def timm_filter(model: nn.Module) -> tuple[Any, str] | None:
    """The model module's `checkpoint_filter_fn` and its dotted name, if timm has one for this model."""
    module = type(model).__module__
    for cls in type(model).__mro__:  # vitdeploy's export subclasses live elsewhere; timm's base class is the key
        if cls.__module__.startswith("timm."):
            module = cls.__module__
            break
    fn = getattr(sys.modules.get(module), "checkpoint_filter_fn", None)
    return (fn, f"{module}.checkpoint_filter_fn") if callable(fn) else None


def _shape(tensor: torch.Tensor) -> list[int]:
    return list(tensor.shape)


def load_checkpoint(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load `path` into `model` through timm's filter; returns what was done, for the artifact."""
    state, key = read_state_dict(path)
    original = {k: _shape(v) for k, v in state.items()}
    record: dict[str, Any] = {"checkpoint_key": key, "filter": None, "adapted": [], "classifier_skipped": []}
    found = timm_filter(model)
    if found:
        fn, record["filter"] = found
        try:
            state = fn(state, model)
        except Exception as exc:  # a filter meeting a checkpoint of another architecture fails in its own way
            raise VitdeployError(f"checkpoint {path} does not fit {type(model).__name__}: timm's {record['filter']} "
                                 f"failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                                 ) from None
    record["adapted"] = [{"key": k, "from": original[k], "to": _shape(v)} for k, v in state.items()
                         if k in original and original[k] != _shape(v)]
    return load_filtered(model, state, path, record)


def load_filtered(model: nn.Module, state: dict[str, torch.Tensor], path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Load a filtered state dict (keys and shapes of `model`): a classifier of another size is skipped and
    recorded, anything else that does not fit is one error naming the keys. Returns `record`."""
    record.setdefault("classifier_skipped", [])
    target = model.state_dict()
    classifier = _classifier_keys(model)
    for k in [k for k in state if k in classifier and k in target and _shape(state[k]) != _shape(target[k])]:
        del state[k]
        record["classifier_skipped"].append(k)
    mismatched = [f"{k} {_shape(v)} (model: {_shape(target[k])})" for k, v in state.items()
                  if k in target and _shape(v) != _shape(target[k])]
    if mismatched:
        raise VitdeployError(f"checkpoint {path} does not fit {type(model).__name__}: {len(mismatched)} tensors "
                             f"differ in shape, e.g. {mismatched[0]}; timm's checkpoint filter does not resample "
                             "them: export at the checkpoint's size")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in classifier]
    problems = [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in
                (("missing", missing), ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise VitdeployError(f"checkpoint {path} does not fit {type(model).__name__}: {' and '.join(problems)} keys")
    return record


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier named in the model's pretrained_cfg (e.g. head.weight)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in model.state_dict() if any(k.startswith(f"{name}.") for name in names)}
