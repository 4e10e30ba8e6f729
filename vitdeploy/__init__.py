"""vitdeploy: timm ViT and Hiera backbones as ONNX and TensorRT artifacts with named, verified pyramids."""

__version__ = "0.1.0"
