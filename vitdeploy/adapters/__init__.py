"""Export-friendly rewrites of timm modules (same numbers, graphs that exporters and TensorRT accept)."""
