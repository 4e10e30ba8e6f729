from pathlib import Path

import pytest

from vitdeploy.errors import VitdeployError
from vitdeploy.recipes import available_recipes, load_recipe, load_recipe_file

REQUIRED = {"vit_small", "vit_base", "vit_large", "hiera_tiny", "hiera_small", "hiera_base", "hiera_base_plus",
            "hiera_large"}


def test_required_recipes_are_shipped_and_valid():
    assert REQUIRED <= set(available_recipes())
    for name in available_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.timm_name


def test_hiera_base_recipe_values():
    recipe = load_recipe("hiera_base")
    assert recipe.timm_name == "hiera_base_224"
    assert recipe.input.size == (224, 224) and recipe.input.mode == "fixed"
    assert recipe.tolerance["fp32"].max_abs == 1e-4


def test_unknown_recipe_names_the_choices():
    with pytest.raises(VitdeployError, match=r"^unknown recipe 'hiera_giant': expected one of .*hiera_base.*"):
        load_recipe("hiera_giant")


@pytest.mark.parametrize("text, message", [
    ('timm_name = "x"\nfamily = "vit"\ncolour = 1\n[input]\nsize = [224, 224]\n',
     r"recipe 'bad': colour: unknown key \(allowed: "),
    ('timm_name = "x"\nfamily = "vit"\n[input]\nsize = [224, 224]\nsizes = 3\n',
     r"recipe 'bad': input\.sizes: unknown key"),
    ('timm_name = "x"\nfamily = "resnet"\n[input]\nsize = [224, 224]\n',
     r"recipe 'bad': family: expected one of beit, convnext, .*, vit, got 'resnet'"),
    ('timm_name = "x"\nfamily = "vit"\n[input]\nsize = [224, -4]\n',
     r"recipe 'bad': input\.size: expected integers >= 1, got \[224, -4\]"),
    ('timm_name = "x"\nfamily = "vit"\n[input]\nmode = "dynamic"\nsize = [224, 224]\nmin = [256, 256]\n',
     r"recipe 'bad': input\.size: expected min <= size <= max per axis"),
    ('timm_name = "x"\nfamily = "vit"\n[input]\nsize = [224, 224]\nbatch = [4, 2, 8]\n',
     r"recipe 'bad': input\.batch: expected \[min, opt, max\] with min <= opt <= max, got \[4, 2, 8\]"),
    ('timm_name = "x"\nfamily = "vit"\n[input]\nsize = [224, 224]\n[tolerance.fp32]\nmax_abs = true\n',
     r"recipe 'bad': tolerance\.fp32\.max_abs: expected int or float, got True"),
    ('timm_name = "x"\nfamily = "vit"\noutputs = [1, 1]\n[input]\nsize = [224, 224]\n',
     r"recipe 'bad': outputs: expected distinct indices, got \[1, 1\]"),
    ('family = "vit"\n[input]\nsize = [224, 224]\n', r"recipe 'bad': timm_name: missing required key"),
])
def test_bad_recipes_are_rejected_with_the_key_named(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(VitdeployError, match=message):
        load_recipe_file(path)
