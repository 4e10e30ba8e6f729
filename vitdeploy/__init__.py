"""vitdeploy: timm ViT and Hiera backbones as ONNX and TensorRT artifacts with named, verified pyramids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitdeploy.version import __version__
__all__ = ["Model", "Pyramid", "load", "__version__"]

if TYPE_CHECKING:
    from vitdeploy.api import Model, Pyramid, load


def __getattr__(name: str) -> Any:
    """`vitdeploy.load` and friends, imported on first use: importing a submodule (the CLI's, say) does not
    import the runtimes."""
    if name in ("Model", "Pyramid", "load"):
        from vitdeploy import api
        return getattr(api, name)
    raise AttributeError(f"module 'vitdeploy' has no attribute {name!r}")
