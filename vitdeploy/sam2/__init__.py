"""SAM2 in vitdeploy: its image encoder written for export (encoder), checkpoints (checkpoint), Meta's package
as the parity reference (reference), the prompt encoder + mask decoder graph (decoder: export, torch; graph:
its description, torch-free) and the Predictor that runs both graphs (predictor; numpy, no torch).

`vitdeploy.sam2.Predictor` is imported on first use, so importing this package stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from vitdeploy.sam2.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'vitdeploy.sam2' has no attribute {name!r}")
