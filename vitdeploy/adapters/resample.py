"""Bicubic resampling as two matmuls whose weights are computed in the graph from the runtime size.

``F.interpolate(mode='bicubic', antialias=True)`` exports as ``Resize(antialias=1)``, which
TensorRT's ONNX parser rejects, and ``Resize(mode=cubic)`` without antialias uses a different
kernel. Building the per-axis ``[out, in]`` weight matrix from arange/abs/where ops with PyTorch's
own formulas (aten/src/ATen/native/cpu/UpSampleKernel.cpp: ``_compute_indices_min_size_weights_aa``
for antialias, ``HelperInterpCubic::compute_indices_weights`` otherwise) gives the same numbers for
every output size, up- or downsampling, with only MatMul and elementwise ops in the graph.
"""

from typing import Sequence, Union, cast

import torch
from torch import Tensor

SizeLike = Union[int, torch.SymInt]

_AA_A = -0.5  # Keys' kernel, used by the antialiased path (PIL compatible)
_PLAIN_A = -0.75  # the non-antialiased path (OpenCV compatible)


def _cubic(x: Tensor, a: float) -> Tensor:
    """Cubic convolution kernel of |x| (same operation order as ATen's cubic_convolution1/2)."""
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _scale(in_size: int, out_size: SizeLike, device: torch.device) -> Tensor:
    """``in / out`` in float32 as a 0-d tensor, like ATen's area_pixel_compute_scale<float>."""
    # Tensor / SymInt is a Tensor; torch's stub of Tensor.__truediv__ omits SymInt (mypy then picks SymFloat).
    return cast(Tensor, torch.full((), in_size, dtype=torch.float32, device=device) / out_size)


def _weights_aa(in_size: int, out_size: SizeLike, device: torch.device) -> Tensor:
    """Antialiased bicubic weights ``[out, in]``: the kernel widens by ``scale`` when downsampling."""
    scale = _scale(in_size, out_size, device)
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    center = scale * (torch.arange(out_size, dtype=torch.float32, device=device) + 0.5)
    src = torch.arange(in_size, dtype=torch.float32, device=device)
    # Taps outside the kernel support get weight 0, which is the [xmin, xmin + xsize) window of
    # ATen; taps past the border are absent, and normalising each row renormalises like ATen does.
    w = _cubic((src[None, :] - center[:, None] + 0.5) * invscale, _AA_A)
    total = w.sum(dim=1, keepdim=True)
    return w / torch.where(total != 0.0, total, torch.ones_like(total))


def _weights_plain(in_size: int, out_size: SizeLike, device: torch.device) -> Tensor:
    """Non-antialiased bicubic weights ``[out, in]``: 4 taps, border taps clamped to the edge."""
    scale = _scale(in_size, out_size, device)
    real = scale * (torch.arange(out_size, dtype=torch.float32, device=device) + 0.5) - 0.5
    index = torch.clamp(torch.floor(real), max=in_size - 1)
    t = torch.clamp(real - index, 0.0, 1.0)
    src = torch.arange(in_size, dtype=torch.float32, device=device)
    taps = []
    for offset, dist in zip((-1, 0, 1, 2), (t + 1.0, t, 1.0 - t, 2.0 - t)):
        tap = torch.clamp(index + offset, 0.0, in_size - 1.0)
        taps.append(torch.where(tap[:, None] == src[None, :], _cubic(dist, _PLAIN_A)[:, None], 0.0))
    return taps[0] + taps[1] + taps[2] + taps[3]


def resample_bicubic(x: Tensor, size: Sequence[SizeLike], antialias: bool = True) -> Tensor:
    """Same numbers as ``F.interpolate(x, size, mode='bicubic', align_corners=False, antialias=antialias)``.

    ``x`` is ``[N, C, h, w]`` float with static ``h, w``; ``size`` may hold SymInts under
    torch.export, so one exported graph serves every output size.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"resample_bicubic got a {x.dim()}-d {x.dtype} tensor; expected N,C,H,W float")
    weights = _weights_aa if antialias else _weights_plain
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    w_w = weights(in_w, size[1], x.device).to(x.dtype)
    w_h = weights(in_h, size[0], x.device).to(x.dtype)
    # Width first, then height: the order ATen's separable kernel uses.
    return torch.matmul(w_h, torch.matmul(x, w_w.transpose(0, 1)))
