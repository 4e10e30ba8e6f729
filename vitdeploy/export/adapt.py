"""Family dispatch to the export adapters: size rules, dynamic support, and graph-friendly rewrites."""

from __future__ import annotations

from torch import nn

def size_multiple(model: nn.Module, family: str) -> int:
    """What height and width must be multiples of for this backbone."""
    if family == "hiera":
        from vitdeploy.adapters.hiera import hiera_size_multiple

        return hiera_size_multiple(model)
    if family != "vit":
        from vitdeploy.adapters.families import family_size_multiple

        return family_size_multiple(model)
    from vitdeploy.adapters.vit import vit_size_multiple

    return vit_size_multiple(model)


def supports_dynamic(model: nn.Module, family: str) -> bool:
    if family == "hiera":
        from vitdeploy.adapters.hiera import hiera_supports_dynamic

        return hiera_supports_dynamic(model)
    if family != "vit":
        from vitdeploy.adapters.families import family_supports_dynamic

        return family_supports_dynamic(model, family)
    return bool(getattr(model, "dynamic_img_size", False))


def adapt_for_export(model: nn.Module, family: str, dynamic: bool) -> nn.Module:
    """Rewrite the model in place so torch.export and TensorRT's parser take it; numbers stay the same."""
    if family == "hiera":
        from vitdeploy.adapters.hiera import adapt_hiera

        return adapt_hiera(model, dynamic)
    if family != "vit":
        from vitdeploy.adapters.families import adapt_family

        return adapt_family(model, family, dynamic)
    from vitdeploy.adapters.vit import adapt_vit

    return adapt_vit(model, dynamic)
