"""Local checkpoints at another resolution: loaded through timm's own checkpoint filter, recorded, verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import RECIPES, export_for_test
from vitdeploy.artifact import load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.models import Weights
from vitdeploy.verify import verify_onnx


def save_timm_weights(path: Path, timm_name: str, **kwargs) -> dict[str, torch.Tensor]:
    """A checkpoint as a fine-tuning script saves it: {"state_dict": ...} at timm's default 224 size."""
    torch.manual_seed(3)
    state = timm.create_model(timm_name, **kwargs).state_dict()
    torch.save({"state_dict": state, "epoch": 7}, path)
    return state


@pytest.mark.parametrize("dynamic", [False, True])
def test_vit_checkpoint_at_224_exports_at_64_with_resampled_position_embedding(tmp_path: Path, dynamic: bool):
    checkpoint = tmp_path / "vit_tiny_224.pt"
    save_timm_weights(checkpoint, "vit_tiny_patch16_224", depth=2, num_classes=10)
    out = export_for_test(str(RECIPES / "vit_tiny_dynamic.toml"), tmp_path / "art", dynamic=dynamic,
                          weights=Weights("checkpoint", checkpoint=checkpoint))
    weights = json.loads((out / "vitdeploy.json").read_text())["weights"]
    assert weights["checkpoint_key"] == "state_dict"
    assert weights["filter"] == "timm.models.vision_transformer.checkpoint_filter_fn"
    assert weights["adapted"] == [{"key": "pos_embed", "from": [1, 197, 192], "to": [1, 17, 192]}]
    assert weights["classifier_skipped"] == ["head.weight", "head.bias"]  # 10 classes; the pyramid has no head
    report = verify_onnx(load_artifact(out), batch_sizes=[1, 2])
    assert report.passed and len(report.checks) == (10 if dynamic else 2) * 2  # 5 sizes x 2 batches x 2 outputs


def test_plain_hiera_checkpoint_at_another_size_is_one_line(tmp_path: Path):
    """timm does not resample plain Hiera's per-token position embedding: a clear error, not a traceback."""
    checkpoint = tmp_path / "hiera.safetensors"
    torch.manual_seed(0)
    state = timm.create_model("hiera_tiny_224", img_size=(256, 256), stages=(1, 1, 1, 1)).state_dict()
    save_file(state, str(checkpoint))
    recipe = tmp_path / "hiera.toml"
    recipe.write_text('timm_name = "hiera_tiny_224"\nfamily = "hiera"\n[input]\nsize = [224, 224]\n'
                      '[timm_kwargs]\nstages = [1, 1, 1, 1]\n')
    with pytest.raises(VitdeployError) as error:
        export_for_test(str(recipe), tmp_path / "art", weights=Weights("checkpoint", checkpoint=checkpoint))
    assert str(error.value) == (
        f"checkpoint {checkpoint} does not fit Hiera: 1 tensors differ in shape, e.g. pos_embed [1, 4096, 96] "
        "(model: [1, 3136, 96]); timm's checkpoint filter does not resample them: export at the checkpoint's size")
    assert not (tmp_path / "art").exists()


def test_checkpoint_of_another_model_names_the_keys(tmp_path: Path):
    checkpoint = tmp_path / "other.pt"
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, checkpoint)
    with pytest.raises(VitdeployError, match=r"does not fit VisionTransformer: \d+ missing \(e\.g\. cls_token\) "
                                             r"and 1 unexpected \(e\.g\. encoder\.weight\) keys"):
        export_for_test(str(RECIPES / "vit_tiny_dynamic.toml"), tmp_path / "art",
                        weights=Weights("checkpoint", checkpoint=checkpoint))
