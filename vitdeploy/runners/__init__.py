"""Runners for an artifact: eager PyTorch (the reference), ONNX Runtime and TensorRT.

They are polygraphy runners (so polygraphy's Comparator drives them), with one addition: `infer`
checks the input against the artifact's size rules and range before any runtime is called.
"""
