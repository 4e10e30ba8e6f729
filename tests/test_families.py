"""The family registry: every registered family is tested, declares itself fully, and recognises its own models."""

from __future__ import annotations

import pytest
import timm
import torch

from conftest import RECIPES
from vitdeploy import families
from vitdeploy.errors import VitdeployError
from vitdeploy.recipes import available_recipes, load_recipe, load_recipe_file

# One timm model per family, built on the meta device to check the declarations against.
EXAMPLES = {"vit": "vit_tiny_patch16_224", "hiera": "hiera_tiny_224", "eva": "eva02_tiny_patch14_224",
            "beit": "beit_base_patch16_224", "samvit": "samvit_base_patch16", "mvitv2": "mvitv2_tiny",
            "twins": "twins_svt_small", "swin": "swin_tiny_patch4_window7_224", "convnext": "convnext_tiny",
            "sam2": "sam2_hiera_tiny", "swinv2": "swinv2_tiny_window8_256", "generic": "resnet18",
            "naflexvit": "naflexvit_base_patch16_gap", "gemma4": "gemma4_vit_167m"}


def test_every_registered_family_has_a_test_recipe():
    """tests/recipes holds the small recipes the export, parity and engine tests run; a family without one
    would ship untested."""
    tested = {load_recipe_file(path).family for path in RECIPES.glob("*.toml")}
    assert sorted(set(families.names()) - tested) == []


def test_every_registered_family_has_an_example_here():
    assert sorted(EXAMPLES) == families.names()


def test_every_shipped_recipe_names_a_registered_family():
    assert {load_recipe(name).family for name in available_recipes()} <= set(families.names())


@pytest.mark.parametrize("name", families.names())
def test_declarations_fit_the_family_models(name: str):
    family = families.get(name)
    with torch.device("meta"):
        model = timm.create_model(EXAMPLES[name])
        other = timm.create_model(EXAMPLES["convnext" if name != "convnext" else "vit"])
    family.check(model)
    with pytest.raises(VitdeployError, match=f"family '{name}' expects a timm"):
        family.check(other)
    with torch.device("meta"):
        model = family.assemble(model)  # the backbone the family exports (SAM2: trunk + neck)
    # every level's grid is whole: the size rule is a multiple of the coarsest feature stride
    assert family.size_multiple(model) % max(level["reduction"] for level in model.feature_info) == 0
    assert bool(family.small_kwargs) != bool(family.unreduced)  # reduced for tests, or why not
    if family.fixed_only:
        assert family.dynamic_problem(model) == family.fixed_only
    else:  # the family's dynamic test recipe builds a model that exports dynamic sizes
        recipe = next(r for r in map(load_recipe_file, sorted(RECIPES.glob("*.toml")))
                      if r.family == name and r.input.dynamic)
        with torch.device("meta"):
            dynamic = family.assemble(timm.create_model(recipe.timm_name, **recipe.timm_kwargs))
        assert family.dynamic_problem(dynamic) is None


def test_unknown_family_is_one_line(tmp_path):
    with pytest.raises(VitdeployError) as error:
        families.get("resnet")
    assert str(error.value) == f"unknown family 'resnet': expected one of {', '.join(families.names())}"
    recipe = tmp_path / "r.toml"
    recipe.write_text('timm_name = "resnet50"\nfamily = "resnet"\n[input]\nsize = [224, 224]\n')
    with pytest.raises(VitdeployError, match=r"^recipe 'r': family: expected one of beit, convnext, .*got 'resnet'$"):
        load_recipe_file(recipe)


def test_swinv2_random_weights_reach_every_branch():
    """timm zero-initialises SwinV2's res-post-norms, so with its random init every attention and MLP branch adds
    nothing and parity could not see them; vitdeploy's seeded random weights draw them, reproducibly."""
    from vitdeploy.models import Weights, create_model, state_dict_sha256

    kwargs = {"depths": [1, 1], "num_heads": [3, 6], "img_size": 64}
    with torch.no_grad():
        torch.manual_seed(0)
        plain = timm.create_model("swinv2_tiny_window8_256", **kwargs).eval()
        assert all(float(b.norm1.weight.abs().max()) == 0 for stage in plain.layers for b in stage.blocks)
        swinv2 = families.get("swinv2")
        model, _ = create_model("swinv2_tiny_window8_256", kwargs, Weights("random", seed=0), family=swinv2)
        again, _ = create_model("swinv2_tiny_window8_256", kwargs, Weights("random", seed=0), family=swinv2)
        norms = [norm.weight for stage in model.layers for b in stage.blocks for norm in (b.norm1, b.norm2)]
        assert all(float(w.abs().min()) > 0 for w in norms) and abs(float(torch.cat(norms).mean()) - 1) < 0.1
        assert state_dict_sha256(model) == state_dict_sha256(again)
        image = torch.randn(1, 3, 64, 64)  # the blocks now change the features: without them, other numbers
        assert float((model.forward_features(image) - plain.forward_features(image)).abs().max()) > 1e-2
