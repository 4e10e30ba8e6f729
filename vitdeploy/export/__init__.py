"""Recipe -> model -> ONNX artifact."""

from vitdeploy.export.onnx_export import ExportOptions, export_artifact

__all__ = ["ExportOptions", "export_artifact"]
