"""Families beyond ViT and Hiera, exported for real at small sizes, and the coverage matrix command.

Each family has a test recipe in tests/recipes/family_*.toml (few blocks, ~64 px); the shipped recipes
in export_recipes/ keep the real sizes and are checked here only for what needs no export.
"""

import json
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner

from conftest import RECIPES, export_for_test, requires
from vitdeploy import families
from vitdeploy.cli.matrix import matrix
from vitdeploy.tools.coverage import small_variant, try_mode
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import is_installed
from vitdeploy.models import describe_recipe_pyramid
from vitdeploy.recipes import available_recipes, load_recipe, load_recipe_file

def parameter_count(timm_name: str, kwargs: dict) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(timm_name, **kwargs).parameters())


FAMILY_RECIPES = sorted(RECIPES.glob("family_*.toml"))
FIXED_ONLY = ["family_beit", "family_samvit", "family_mvitv2"]


@pytest.mark.parametrize("path", FAMILY_RECIPES, ids=[p.stem for p in FAMILY_RECIPES])
def test_family_exports_matches_eager_and_builds(path: Path, tmp_path: Path):
    """The recipe's own mode (dynamic where the family allows it): export, ONNX Runtime parity, TensorRT-RTX."""
    recipe = load_recipe_file(path)
    result = try_mode(recipe, recipe.input.mode, tmp_path / "artifact", None, lambda message: None)
    assert result.export.startswith("ok"), result.export
    assert result.parity.startswith("pass") and result.max_abs <= recipe.tolerance["fp32"].max_abs, result.parity
    assert result.engine.startswith("ok" if is_installed("tensorrt_rtx") else "not run: tensorrt_rtx is not "
                                    "installed: pip install 'vitdeploy[trt-rtx]'"), result.engine


@pytest.mark.parametrize("name", FIXED_ONLY)
def test_fixed_only_families_refuse_dynamic_export(name: str, tmp_path: Path):
    with pytest.raises(VitdeployError, match="runs at one resolution only"):
        export_for_test(str(RECIPES / f"{name}.toml"), tmp_path / "x", dynamic=True)
    assert list(tmp_path.iterdir()) == []


def test_family_must_match_the_timm_class(tmp_path: Path):
    path = tmp_path / "wrong.toml"
    path.write_text('timm_name = "swin_tiny_patch4_window7_224"\nfamily = "twins"\n[input]\nsize = [224, 224]\n')
    with pytest.raises(VitdeployError, match="family 'twins' expects a timm Twins, got a SwinTransformer: set the"):
        export_for_test(str(path), tmp_path / "x")
    path.write_text('timm_name = "convnext_tiny"\nfamily = "convnext"\n[input]\nsize = [224, 224]\n'
                    '[timm_kwargs]\ncolour = 3\n')
    with pytest.raises(VitdeployError, match=r"cannot build convnext_tiny with \['colour'\]: .*unexpected keyword "
                                             r"argument 'colour'; expected only arguments its timm class takes"):
        export_for_test(str(path), tmp_path / "x")


@pytest.mark.parametrize("name", available_recipes())
def test_small_variant_of_every_shipped_recipe_is_valid(name: str):
    """--small keeps the family and size rule: its sizes pass the rule and the model describes a pyramid."""
    full = load_recipe(name)
    family = families.get(full.family)
    recipe = small_variant(full, family)
    assert recipe.family == full.family
    assert family.small_kwargs.items() <= recipe.timm_kwargs.items()
    if family.unreduced is None:  # fewer blocks, so fewer weights
        assert parameter_count(recipe.timm_name, recipe.timm_kwargs) < parameter_count(full.timm_name, full.timm_kwargs)
    outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                      recipe.pyramid, family=family)
    assert outputs and all(o.stride for o in outputs)
    assert max(recipe.input.size) <= 96


@requires("tensorrt_rtx")
def test_matrix_command_writes_the_table(tmp_path: Path):
    """Three kinds of row: measured both ways with recorded GPU parity, fixed only, unsupported."""
    unsupported = tmp_path / "resnet_like.toml"
    unsupported.write_text('timm_name = "vit_tiny_patch16_224"\nfamily = "vit"\n'
                           'unsupported = "no feature pyramid in this sketch"\n[input]\nsize = [224, 224]\n')
    results = tmp_path / "gpu.json"
    results.write_text(json.dumps({"convnext_tiny --small": {
        "modes": {"fixed": "pass 2.0e-06"}, "gpu": "NVIDIA H100 (sm 9.0)", "date": "2026-11-01"}}))
    output = tmp_path / "coverage.md"
    recipes = f"convnext_tiny,{RECIPES / 'family_beit.toml'},{unsupported}"
    run = CliRunner().invoke(matrix, ["--recipes", recipes, "--small", "-o", str(output),
                                      "--gpu-results", str(results)])
    assert run.exit_code == 0, run.output
    assert f"wrote {output} (3 recipes)" in run.output
    table = output.read_text()
    assert f"Generated by `vitdeploy matrix --recipes {recipes} --small --output {output}" in table
    convnext = next(line for line in table.splitlines() if line.startswith("| convnext_tiny |"))
    cells = [cell.strip() for cell in convnext.split("|")[1:-1]]
    assert cells[2:4] == ["convnext", "64x64 (dynamic 32x32..96x96); --small: depths=[1, 1, 1, 1]"]
    assert cells[4].startswith("fixed: ok (") and "<br>dynamic: ok (" in cells[4]
    assert cells[5].startswith("fixed: pass ") and cells[5].endswith("(5 sizes)")
    assert cells[6].startswith("fixed: ok (") and "<br>dynamic: ok (" in cells[6]
    assert cells[7] == "fixed: pass 2.0e-06<br>(NVIDIA H100 (sm 9.0), 2026-11-01)"
    beit = next(line for line in table.splitlines() if line.startswith("| family_beit |"))
    assert "| fixed: ok (" in beit and "<br>" not in beit.split("|")[5]
    assert beit.endswith("| not measured (no GPU) | fixed size only: timm's Beit asserts the input size it was "
                         "built for |")
    assert "| resnet_like | `vit_tiny_patch16_224` | vit | - | unsupported: no feature pyramid in this sketch " \
           "| - | - | - |  |" in table
