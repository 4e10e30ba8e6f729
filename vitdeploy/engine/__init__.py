"""TensorRT and TensorRT-RTX engines: build from an artifact's ONNX, describe, check before loading."""

from vitdeploy.engine.build import build_engine, engine_profile
from vitdeploy.engine.sidecar import check_engine, describe_engine, engine_file_name, read_sidecar

__all__ = ["build_engine", "check_engine", "describe_engine", "engine_file_name", "engine_profile", "read_sidecar"]
