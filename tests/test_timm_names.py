"""`vitdeploy export TIMM_NAME` without a recipe: the family from the class, the rest from timm, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
from click.testing import CliRunner
from torch import nn

from vitdeploy import families
from vitdeploy.cli import main
from vitdeploy.errors import VitdeployError
from vitdeploy.timm_recipes import recipe_from_timm, resolve, timm_entry


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_the_most_specific_registered_class_wins():
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.hieradet_sam2 import HieraDet
    from timm.models.resnet import ResNet

    assert families.for_class(VisionTransformerDistilled, "x").name == "vit"  # through its base class
    assert families.for_class(HieraDet, "x").name == "hiera"  # sam2 is picked by its recipes only
    assert families.for_class(ResNet, "x").name == "generic"
    with pytest.raises(VitdeployError, match=r"^timm model 'x' \(Linear\) has no forward_intermediates, so it has no "
                                             r"feature pyramid to export: expected a backbone class"):
        families.for_class(nn.Linear, "x")


def test_recipe_inferred_from_timm():
    recipe = recipe_from_timm("resnet18")
    cfg = timm.get_pretrained_cfg("resnet18").to_dict()
    assert (recipe.family, recipe.input.size, recipe.outputs) == ("generic", (224, 224), None)
    assert (list(recipe.mean), list(recipe.std)) == (list(cfg["mean"]), list(cfg["std"]))
    assert recipe.input.min == (128, 128) and recipe.input.max == (320, 320)  # 0.5x..1.5x, nearest multiples of 32
    assert recipe.inferred["outputs"] == "feature_info: default levels [0, 1, 2, 3, 4] of 5"
    dynamic = resolve("deit_tiny_patch16_224", dynamic=True)  # a ViT: dynamic_img_size where the class takes it
    assert dynamic.family == "vit" and dynamic.timm_kwargs == {"dynamic_img_size": True}
    assert resolve("vit_small").inferred is None  # a shipped recipe's name stays the recipe


def test_list_timm_names_the_family_without_building_weights():
    code, output = run("list", "--timm", "resnet1*")
    assert code == 0 and "resnet18 " in output
    line = next(row for row in output.splitlines() if row.startswith("resnet18 "))
    assert line.split()[1:4] == ["ResNet", "generic", "224x224"] and line.endswith("probed at export")
    assert timm_entry("vit_small_patch16_dinov3").family == "eva" and timm_entry("vit_small_patch16_dinov3").dynamic == "yes"
    assert run("list", "--timm", "zzz*") == (1, "Error: no timm model matches 'zzz*' (timm "
                                                f"{timm.__version__}): expected a pattern such as 'resnet*' or "
                                                "'*dinov3*'\n")


@pytest.mark.parametrize("args, message", [
    (["resnet5O"], "Error: 'resnet5O' is neither a recipe nor a timm model (timm {v}): did you mean resnet50, "),
    (["test_resnet", "--outputs", "0,7"],
     "Error: output index 7 is out of range for test_resnet: it has 5 feature levels (valid indices 0..4)"),
    (["test_resnet", "--size", "65x64"], "Error: test_resnet (no recipe): size 65x64 is not a multiple of 32 (the "
                                         "backbone's size rule): expected --size HxW with multiples of 32"),
    (["test_resnet", "--size", "32x32", "--timm-kwarg", "colour=3"], "Error: cannot build test_resnet with "
                                                                      "['colour']: "),
    (["inception_v3", "--size", "64x64"], "Error: inception_v3 does not run at 64x64 in eager timm (Calculated "
                                          "padded input size per channel: (2 x 2)."),
    # the size rule from feature_info (strides 12 and 17: its second branch rescales the input) moved the size
    (["crossvit_tiny_240"], "Error: crossvit_tiny_240 does not run at 204x204 (inferred: 204x204 from pretrained_cfg "
                            "input_size [3, 240, 240] (multiples of 204)) in eager timm ("),
    # the range's min, not the graph: the dynamic-size probe blamed the graph for it ("does not export dynamic")
    (["inception_v3", "--dynamic", "--size", "96x96"], "Error: inception_v3 does not run at 64x64, its dynamic "
                                                       "range's min, in eager timm (Calculated padded input "
                                                       "size"),
])
def test_user_mistakes_with_timm_names_are_one_line(args: list[str], message: str, tmp_path: Path):
    code, output = run("export", *args, "-o", str(tmp_path / "a"))
    error = [line for line in output.splitlines() if line.startswith("Error")]
    assert code == 1 and len(error) == 1 and error[0].startswith(message.format(v=timm.__version__)), output
    assert "Traceback" not in output and not (tmp_path / "a").exists()


def test_export_by_timm_name_records_what_was_inferred(tmp_path: Path):
    """A tiny ResNet by name, dynamic: probed at other sizes at export, verified, the inference recorded."""
    code, output = run("export", "test_resnet", "--dynamic", "--size", "64x64", "-o", str(tmp_path / "a"))
    assert code == 0, output
    description = json.loads((tmp_path / "a" / "vitdeploy.json").read_text())
    assert description["recipe"] is None and description["family"] == "generic"
    assert description["inferred"]["size"] == "64x64 from --size"
    assert description["input"]["mode"] == "dynamic" and description["input"]["min_hw"] == [32, 32]
    code, output = run("verify", str(tmp_path / "a"))
    assert code == 0 and "parity passed" in output, output
