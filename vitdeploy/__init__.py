"""vitdeploy: timm ViT and Hiera backbones as ONNX and TensorRT artifacts with named, verified pyramids."""

__version__ = "0.1.0"

from vitdeploy.api import Model, Pyramid, load  # noqa: E402  (after __version__, which api's imports read)

__all__ = ["Model", "Pyramid", "load", "__version__"]
