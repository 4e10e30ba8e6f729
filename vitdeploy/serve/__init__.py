"""Serving at scale: `vitdeploy serve` (Ray Serve), its client, `vitdeploy extract` (Ray Data) and Triton
model repositories. Ray and tritonclient are extras (`vitdeploy[serve]`, `vitdeploy[triton]`), imported
only where used; the client needs neither."""

from vitdeploy.serve.client import Client

__all__ = ["Client"]
